#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/cluster_watcher.pb.h"
#include "elfdeploy/v1/common.pb.h"
#include "services/orchestrator/discovery.h"

// What a rollout asks of the other elfdeploy services, one interface per service, free of gRPC
// (grpc_stages.h holds the real clients; tests use fakes).
namespace elfdeploy::orchestrator {

// Progress inside a stage: bytes and steps done and expected (0 when unknown), and a detail.
struct Progress {
  int64_t bytes_done = 0;
  int64_t bytes_total = 0;
  int32_t steps_done = 0;
  int32_t steps_total = 0;
  std::string message;
};
using ProgressFn = std::function<void(const Progress&)>;
// True once the rollout is cancelled: long calls stop as soon as they can (CANCELLED).
using CancelledFn = std::function<bool()>;

struct BuildResult {
  // Where the image is: an OCI layout reference "oci:<dir>:<ref>" registry-sync can copy from.
  std::string layout_reference;
  // Manifest digest of the image built.
  std::string digest;
  // True when every layer came from the builder's cache (the inputs did not change).
  bool cached = false;
  // Git revision of the source folder; empty when not in a git repository.
  std::string source_revision;
};

// BuilderService.Build.
class Builder {
 public:
  virtual ~Builder() = default;
  virtual absl::StatusOr<BuildResult> Build(const DiscoveredApp& app, const std::string& tag,
                                            bool no_cache, const ProgressFn& progress,
                                            const CancelledFn& cancelled) = 0;
};

struct PushResult {
  // Manifest digest in the registry, "sha256:...".
  std::string digest;
  int64_t bytes_pushed = 0;
};

// RegistrySyncService.Copy (layout -> registry) and Resolve.
class Registry {
 public:
  virtual ~Registry() = default;
  // Copies `layout_reference` to "docker://<image>" (image: "<registry>/<repo>:<tag>").
  virtual absl::StatusOr<PushResult> Push(const std::string& layout_reference,
                                          const std::string& image,
                                          const v1::RegistryTarget& target,
                                          const ProgressFn& progress,
                                          const CancelledFn& cancelled) = 0;
  // The digest "docker://<image>" names now; NOT_FOUND when missing.
  virtual absl::StatusOr<std::string> Resolve(const std::string& image,
                                              const v1::RegistryTarget& target) = 0;
};

struct PublishApp {
  std::string name;
  std::string group;
  // "<registry>/<repo>:<tag>@sha256:<hex>".
  std::string image;
  std::string deployment_yaml;
};

struct PublishResult {
  std::string commit;
  bool no_op = false;
  // The head the commit was made on; empty for the first commit or a no-op.
  std::string parent;
  // (Application name, group) of each group's Argo CD Application in the tree.
  std::vector<std::pair<std::string, std::string>> applications;
  // The same Applications as written to the tree (PublishedApplication.application), when the
  // publisher returns them; the runner applies exactly these on the cluster.
  std::vector<v1::ApplicationDefinition> definitions;
};

// ManifestPublisherService.Publish: one commit for every app of the rollout.
class Publisher {
 public:
  virtual ~Publisher() = default;
  virtual absl::StatusOr<PublishResult> Publish(const std::vector<PublishApp>& apps,
                                                const v1::GitOpsTarget& gitops,
                                                const v1::ClusterDestination& destination,
                                                const std::string& correlation_id,
                                                const std::string& message) = 0;
  // The Applications a publish of `apps` writes (ManifestPublisherService.Render: nothing is
  // committed); only `applications` and `definitions` of the result are set.
  virtual absl::StatusOr<PublishResult> Applications(const std::vector<PublishApp>& apps,
                                                     const v1::GitOpsTarget& gitops,
                                                     const v1::ClusterDestination& destination) = 0;
};

// ClusterWatcherService: the cluster side of a rollout, through the agent.
class Cluster {
 public:
  virtual ~Cluster() = default;
  virtual absl::Status ApplyApplication(const std::string& cluster,
                                        const v1::ApplicationDefinition& application) = 0;
  virtual absl::Status EnsureImagePullSecret(const std::string& cluster, const std::string& ns,
                                             const std::string& name, const std::string& registry,
                                             const v1::RegistryCredentials& credentials) = 0;
  virtual absl::Status Refresh(const std::string& cluster, const std::string& application) = 0;
  virtual absl::StatusOr<v1::DiagnoseResponse> Diagnose(const v1::DiagnoseRequest& request) = 0;
};

}  // namespace elfdeploy::orchestrator
