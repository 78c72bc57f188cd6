#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "elfdeploy/v1/orchestrator.pb.h"

namespace elfdeploy::orchestrator {

// The latest progress of each app of the running rollouts, in memory only (the store keeps stage
// changes, not progress): runners post it, WatchRollout streams send what is new. Thread-safe.
class ProgressBoard {
 public:
  // Replaces what rollout `rollout_id` last posted for `progress.app()`.
  void Post(const std::string& rollout_id, v1::AppProgress progress) ABSL_LOCKS_EXCLUDED(mu_);

  // What was posted for the rollout after `*version` (0 at first), one per app, the latest; sets
  // `*version` past it.
  std::vector<v1::AppProgress> Since(const std::string& rollout_id, uint64_t* version) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Drops the rollout's progress (it ended).
  void Forget(const std::string& rollout_id) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Posted {
    uint64_t version = 0;
    v1::AppProgress progress;
  };

  mutable absl::Mutex mu_;
  uint64_t next_version_ ABSL_GUARDED_BY(mu_) = 1;
  // rollout id -> app -> the latest.
  std::map<std::string, std::map<std::string, Posted>> posted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace elfdeploy::orchestrator
