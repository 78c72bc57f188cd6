#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/orchestrator/rollout_store.h"
#include "services/orchestrator/stages.h"

namespace elfdeploy::orchestrator {

struct RunnerOptions {
  // Builds and pushes running at once.
  int max_parallel_builds = 2;
  // How often verification asks cluster-watcher for a diagnosis.
  absl::Duration poll_interval = absl::Milliseconds(500);
  // Deadline of a rollout whose request sets none.
  absl::Duration default_timeout = absl::Minutes(15);
  // An app counts as verified once it has stayed ready this long: a container that crashes
  // seconds after its first start is caught, not reported as a success.
  absl::Duration settle = absl::Seconds(5);
  std::function<absl::Time()> now = absl::Now;
};

// Carries one rollout from its stored state to a terminal one, storing every stage change as it
// happens (so a restarted orchestrator resumes where the record says):
//   each app: BUILDING -> PUSHING (image pinned by digest) — skipped for apps whose image is
//   already recorded; then one PUBLISHING for all apps (skipped when the commit is recorded; a
//   repeated publish of the same tree is a no-op, so never two commits); then the group
//   Applications and the image pull Secret are ensured and refreshed; SYNCING until the
//   Application reports the commit, VERIFYING until Diagnose says healthy -> SUCCEEDED.
// A stage error or a fatal finding fails the rollout at once (FAILED, with the findings); the
// deadline makes it TIMED_OUT with the last findings; `cancelled` makes it CANCELLED (a commit
// already pushed stays).
class Runner {
 public:
  Runner(RolloutStore& store, Builder& builder, Registry& registry, Publisher& publisher,
         Cluster& cluster, RunnerOptions options = {});

  // Runs (or resumes) rollout `id` until it is terminal. `live_request`, when given, is the
  // request as Deploy received it, inline credentials included (the store keeps none); a resumed
  // rollout runs with the stored one. Errors only when the store fails.
  // `interrupted` (the process is stopping) makes it return at the next check with the rollout
  // left unfinished, to be resumed; `cancelled` ends it CANCELLED.
  absl::Status Run(const std::string& id, const CancelledFn& cancelled,
                   const v1::DeployRequest* live_request = nullptr,
                   const CancelledFn& interrupted = nullptr);

 private:
  RolloutStore& store_;
  Builder& builder_;
  Registry& registry_;
  Publisher& publisher_;
  Cluster& cluster_;
  const RunnerOptions options_;
};

// "elf-automations/executive-team" for a Deployment whose container image is
// "elf-automations/executive-team:latest" and app "executive-team": the repository path of the
// first container whose image's last path component is the app name (registry, tag and digest
// dropped); the app name when none is.
std::string ImageRepository(const std::string& deployment_yaml, const std::string& app);

}  // namespace elfdeploy::orchestrator
