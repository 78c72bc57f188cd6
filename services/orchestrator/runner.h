#pragma once

#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/orchestrator/progress_board.h"
#include "services/orchestrator/rollout_store.h"
#include "services/orchestrator/stages.h"

namespace elfdeploy::orchestrator {

// Parent links of the commits published through this process. Publishes to a branch are
// serialised by git (each is made on the head it found), so a rollout whose commit was followed by
// another rollout's on the same branch sees Argo CD sync the later one: that sync includes its
// commit. Thread-safe.
class CommitLineage {
 public:
  void Record(const std::string& commit, const std::string& parent) ABSL_LOCKS_EXCLUDED(mu_);
  // True when `descendant` is `ancestor` or reaches it through recorded parents.
  bool Descends(const std::string& descendant, const std::string& ancestor) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> parent_ ABSL_GUARDED_BY(mu_);
};

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
  // Commits published by every runner of the process; null means only the rollout's own commit
  // counts as synced.
  CommitLineage* lineage = nullptr;
  // Where build and push progress goes for WatchRollout streams; null drops it.
  ProgressBoard* progress = nullptr;
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
  // `cancel_reason`, when given, is asked for the reason once `cancelled` turned true.
  absl::Status Run(const std::string& id, const CancelledFn& cancelled,
                   const v1::DeployRequest* live_request = nullptr,
                   const CancelledFn& interrupted = nullptr,
                   const std::function<std::string()>& cancel_reason = nullptr);

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
