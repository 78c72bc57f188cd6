#include "services/orchestrator/progress_board.h"

#include <utility>

namespace elfdeploy::orchestrator {

void ProgressBoard::Post(const std::string& rollout_id, v1::AppProgress progress) {
  absl::MutexLock lock(&mu_);
  Posted& posted = posted_[rollout_id][progress.app()];
  posted.version = next_version_++;
  posted.progress = std::move(progress);
}

std::vector<v1::AppProgress> ProgressBoard::Since(const std::string& rollout_id,
                                                  uint64_t* version) const {
  std::vector<v1::AppProgress> out;
  absl::MutexLock lock(&mu_);
  auto rollout = posted_.find(rollout_id);
  if (rollout == posted_.end()) return out;
  uint64_t newest = *version;
  for (const auto& [app, posted] : rollout->second) {
    if (posted.version <= *version) continue;
    out.push_back(posted.progress);
    newest = std::max(newest, posted.version);
  }
  *version = newest;
  return out;
}

void ProgressBoard::Forget(const std::string& rollout_id) {
  absl::MutexLock lock(&mu_);
  posted_.erase(rollout_id);
}

}  // namespace elfdeploy::orchestrator
