#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "elfdeploy/v1/orchestrator.pb.h"
#include "services/orchestrator/rollout_store.h"
#include "services/orchestrator/runner.h"
#include "services/orchestrator/stages.h"

namespace elfdeploy::orchestrator {

// What a DeployRequest falls back on.
struct DeployDefaults {
  std::string registry;
  std::string gitops_repo;
  std::string gitops_branch = "main";
  std::string gitops_path_prefix = "elf-automations";
  std::string namespace_ = "elf-automations";
};

// Hooks for metrics (all optional).
struct OrchestratorMetrics {
  // A rollout ended: its terminal state's name ("SUCCEEDED", ...) and each finished stage's
  // duration.
  std::function<void(const v1::Rollout&)> finished;
  // Rollouts running in this process now.
  std::function<void(int)> in_progress;
};

// Rollouts, free of gRPC: Deploy validates and records a rollout and runs it on its own thread;
// rollouts a previous process left unfinished are resumed by Start. Thread-safe.
class Orchestrator {
 public:
  // The stage interfaces must outlive the orchestrator.
  Orchestrator(std::unique_ptr<RolloutStore> store, Builder& builder, Registry& registry,
               Publisher& publisher, Cluster& cluster, DeployDefaults defaults,
               RunnerOptions runner_options = {}, OrchestratorMetrics metrics = {});
  ~Orchestrator();

  // Resumes every unfinished rollout of the store.
  void Start();
  // Stops every runner (their rollouts stay unfinished, to be resumed) and joins them.
  void Stop();

  // Fills defaults, checks the request (errors as OrchestratorService.Deploy lists them), records
  // the rollout and starts it. A request_id seen before returns that rollout.
  absl::StatusOr<v1::Rollout> Deploy(v1::DeployRequest request);
  absl::StatusOr<v1::Rollout> Get(const std::string& id) const;
  absl::StatusOr<v1::ListRolloutsResponse> List(const v1::ListRolloutsRequest& request) const;
  // Asks the rollout to stop (CANCELLED); idempotent on a CANCELLED rollout,
  // FAILED_PRECONDITION on another terminal one.
  absl::StatusOr<v1::Rollout> Cancel(const std::string& id, const std::string& reason);

  // Sends rollout `id`'s stored events after sequence `from` to `emit`, as they are stored, with
  // live build and push progress between them (sequence 0), until the terminal event (OK).
  // INVALID_ARGUMENT for an empty id, NOT_FOUND for an unknown one; CANCELLED when `cancelled`
  // turns true or `emit` returns false (the client went away).
  absl::Status Watch(const std::string& id, uint64_t from, const std::function<bool()>& cancelled,
                     const std::function<bool(const v1::WatchRolloutResponse&)>& emit);

  RolloutStore& store() { return *store_; }
  // Build and push progress of the running rollouts (the runner options' board, else this one's).
  ProgressBoard& progress() { return *runner_options_.progress; }

 private:
  struct Running {
    std::atomic<bool> cancel{false};
    absl::Mutex mu;
    std::string cancel_reason ABSL_GUARDED_BY(mu);
    std::thread thread;
  };
  void Launch(const std::string& id, std::unique_ptr<v1::DeployRequest> live_request);

  std::unique_ptr<RolloutStore> store_;
  Builder& builder_;
  Registry& registry_;
  Publisher& publisher_;
  Cluster& cluster_;
  const DeployDefaults defaults_;
  CommitLineage lineage_;   // shared by the runners unless the options bring one
  ProgressBoard progress_;  // likewise
  const RunnerOptions runner_options_;
  const OrchestratorMetrics metrics_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mu_;
  // Rollouts whose thread is running here, and finished threads waiting to be joined.
  std::map<std::string, std::unique_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Running>> finished_ ABSL_GUARDED_BY(mu_);
};

}  // namespace elfdeploy::orchestrator
