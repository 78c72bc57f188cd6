#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tests/kubesim/git_source.h"
#include "tests/kubesim/store.h"

// kubesim's Argo CD: the application controller and repo-server for the Applications in the Argo
// CD namespace of the store, as far as elfdeploy uses them (git sources, kustomize or directory,
// automated sync with prune and selfHeal, CreateNamespace=true).
namespace elfdeploy::kubesim {

struct ArgoOptions {
  std::string argocd_namespace = "argocd";
  // When set, Applications are read from <prefix>/applications/*.yaml of this repository's
  // branch and created or updated in argocd_namespace whenever the branch head moves.
  std::string gitops_repo = {};
  std::string gitops_branch = "main";
  std::string gitops_prefix = {};
  // Mirrors of the repositories live here.
  std::string cache_dir = {};
  // Every Application is compared again this often (Argo CD's timeout.reconciliation).
  absl::Duration app_resync = absl::Minutes(3);
  // Branch heads are polled this often; a moved head refreshes the Applications that follow it
  // (Argo CD learns it from a webhook).
  absl::Duration repo_poll = absl::Seconds(1);
  std::function<absl::Time()> now = absl::Now;
};

// Runs in its own threads between Start and Stop. An Application is reconciled when it appears,
// when its spec changes, when it carries the argocd.argoproj.io/refresh annotation (removed once
// done, as Argo CD does), when its source's branch head moves, every app_resync, and its health
// is re-evaluated whenever a resource it manages changes.
class ArgoController {
 public:
  ArgoController(ObjectStore& store, ArgoOptions options);
  ~ArgoController();
  ArgoController(const ArgoController&) = delete;
  ArgoController& operator=(const ArgoController&) = delete;

  void Start();
  void Stop();

  // Synchronously: loads Applications from gitops_repo (when set), then reconciles every
  // Application once. For tests and tools; safe while the threads run.
  absl::Status ReconcileAll();

 private:
  struct AppState {
    std::string revision;     // last compared commit
    uint64_t generation = 0;  // last reconciled metadata.generation
    std::vector<nlohmann::json> desired;
    std::string desired_hash;
    std::string failed_sync;  // "<revision>/<hash>" of the last failed automated sync
    std::vector<nlohmann::json> history;
    int64_t next_history_id = 0;
    bool comparison_error = false;
  };

  void WatchApplications();
  void WatchResources(std::string resource);
  void PollRepositories();
  void Work();
  void Enqueue(const std::string& name, bool fetch);

  absl::Status LoadApplicationsFromRepo();
  // Compares and, when automated, syncs one Application. `fetch`: fetch the repository first.
  void Reconcile(const std::string& name, bool fetch);
  // Recomputes sync status and health of an Application from the live objects, without git.
  void Refresh(const std::string& name);
  // Compares the live objects with state.desired, syncs when `allow_sync` and the Application is
  // automated, and writes `status` (with what was found) to the Application.
  void Evaluate(const std::string& name, const nlohmann::json& app, AppState& state,
                nlohmann::json status, bool allow_sync)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reconcile_mu_);
  absl::StatusOr<GitSource*> Source(const std::string& url);

  ObjectStore& store_;
  const ArgoOptions options_;

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<GitSource>> sources_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> heads_ ABSL_GUARDED_BY(mu_);  // url -> last polled head
  // Pending reconciles: name -> fetch first.
  std::map<std::string, bool> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> health_queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Serializes reconciles (the worker and ReconcileAll).
  absl::Mutex reconcile_mu_;
  std::map<std::string, AppState> apps_ ABSL_GUARDED_BY(reconcile_mu_);
  std::vector<std::thread> threads_;
};

}  // namespace elfdeploy::kubesim
