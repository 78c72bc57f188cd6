// Fakes of the four services a rollout calls, shared by the orchestrator's tests.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "services/orchestrator/stages.h"

namespace elfdeploy::orchestrator {

inline std::string Digest(const std::string& app) {
  std::string hex(64, '0');
  for (size_t i = 0; i < app.size() && i < 64; ++i) hex[i] = "0123456789abcdef"[app[i] % 16];
  return "sha256:" + hex;
}

// Builds, pushes and publishes at once; Diagnose syncs at the second call and is healthy after
// `diagnoses_until_healthy` calls, or fatal with `fatal_finding`.
struct Fakes final : Builder, Registry, Publisher, Cluster {
  absl::Mutex mu;
  std::vector<std::string> built ABSL_GUARDED_BY(mu);
  std::vector<std::string> pushed ABSL_GUARDED_BY(mu);
  std::vector<std::vector<PublishApp>> published ABSL_GUARDED_BY(mu);
  std::vector<std::string> applied ABSL_GUARDED_BY(mu);
  std::string fail_build;
  bool hang_builds = false;  // builds run until cancelled
  // When set, builds report progress and then wait until it is notified.
  absl::Notification* hold_builds = nullptr;
  int cancelled_builds ABSL_GUARDED_BY(mu) = 0;
  int diagnoses_until_healthy = 2;
  std::atomic<int> diagnoses{0};
  std::atomic<int> applications_asked{0};
  std::optional<v1::Finding> fatal_finding;
  // Called with the call's number as each Diagnose starts.
  std::function<void(int)> on_diagnose;

  absl::StatusOr<BuildResult> Build(const DiscoveredApp& app, const std::string& tag, bool,
                                    const ProgressFn& progress,
                                    const CancelledFn& cancelled) override {
    if (progress) progress({.bytes_done = 42, .bytes_total = 100, .message = "step 1/2"});
    if (hold_builds != nullptr) {  // until released, like a long build
      while (!hold_builds->HasBeenNotified() && !(cancelled && cancelled())) {
        absl::SleepFor(absl::Milliseconds(5));
      }
    }
    if (hang_builds) {  // a build that never ends by itself, like a hung peer
      while (!(cancelled && cancelled())) absl::SleepFor(absl::Milliseconds(5));
      absl::MutexLock lock(&mu);
      ++cancelled_builds;
      return absl::CancelledError("BuilderService.Build: cancelled");
    }
    absl::MutexLock lock(&mu);
    built.push_back(app.name);
    if (app.name == fail_build) return absl::InvalidArgumentError("Dockerfile:3: bad COPY");
    return BuildResult{absl::StrCat("oci:/store:", app.name, "-", tag), Digest(app.name), false,
                       ""};
  }
  absl::StatusOr<PushResult> Push(const std::string& layout, const std::string& image,
                                  const v1::RegistryTarget&, const ProgressFn& progress,
                                  const CancelledFn&) override {
    if (progress) progress({.bytes_done = 1000, .bytes_total = 1000, .message = "pushed"});
    absl::MutexLock lock(&mu);
    pushed.push_back(image);
    (void)layout;
    return PushResult{Digest(image.substr(image.rfind('/') + 1)), 1000};
  }
  absl::StatusOr<std::string> Resolve(const std::string&, const v1::RegistryTarget&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<PublishResult> Publish(const std::vector<PublishApp>& apps,
                                        const v1::GitOpsTarget& gitops,
                                        const v1::ClusterDestination& destination,
                                        const std::string&, const std::string&) override {
    absl::MutexLock lock(&mu);
    published.push_back(apps);
    PublishResult result = ApplicationsOf(apps, gitops, destination);
    result.commit = "c0ffee";
    return result;
  }
  absl::StatusOr<PublishResult> Applications(const std::vector<PublishApp>& apps,
                                             const v1::GitOpsTarget& gitops,
                                             const v1::ClusterDestination& destination) override {
    ++applications_asked;
    return ApplicationsOf(apps, gitops, destination);
  }
  // One Application per group, as the publisher names and places them.
  static PublishResult ApplicationsOf(const std::vector<PublishApp>& apps,
                                      const v1::GitOpsTarget& gitops,
                                      const v1::ClusterDestination& destination) {
    PublishResult result;
    std::set<std::string> groups;
    for (const PublishApp& app : apps) groups.insert(app.group);
    for (const std::string& group : groups) {
      result.applications.emplace_back("elf-" + group, group);
      v1::ApplicationDefinition& definition = result.definitions.emplace_back();
      definition.set_name("elf-" + group);
      definition.mutable_spec()->set_path(absl::StrCat(
          gitops.path_prefix().empty() ? "" : gitops.path_prefix() + "/", "manifests/", group));
      definition.mutable_spec()->set_destination_namespace(destination.namespace_());
    }
    return result;
  }
  absl::Status ApplyApplication(const std::string&,
                                const v1::ApplicationDefinition& application) override {
    absl::MutexLock lock(&mu);
    applied.push_back(absl::StrCat(application.name(), " ", application.spec().path(), " ",
                                   application.spec().destination_namespace()));
    return absl::OkStatus();
  }
  absl::Status EnsureImagePullSecret(const std::string&, const std::string&, const std::string&,
                                     const std::string&, const v1::RegistryCredentials&) override {
    return absl::OkStatus();
  }
  absl::Status Refresh(const std::string&, const std::string&) override { return absl::OkStatus(); }
  absl::StatusOr<v1::DiagnoseResponse> Diagnose(const v1::DiagnoseRequest& request) override {
    int n = ++diagnoses;
    if (on_diagnose) on_diagnose(n);
    v1::DiagnoseResponse response;
    response.mutable_application()->set_sync_revision(n >= 2 ? request.expected_revision() : "old");
    for (const auto& [app, digest] : request.expected_digests()) {
      v1::WorkloadStatus* workload = response.add_workloads();
      workload->set_app(app);
      workload->set_pods_ready(n > diagnoses_until_healthy ? 1 : 0);
      workload->set_ready(n > diagnoses_until_healthy);
      workload->set_discovered(n > diagnoses_until_healthy);
    }
    if (fatal_finding.has_value()) {
      *response.add_findings() = *fatal_finding;
      response.set_fatal(true);
    }
    response.set_healthy(!fatal_finding.has_value() && n > diagnoses_until_healthy);
    return response;
  }
};

}  // namespace elfdeploy::orchestrator
