#pragma once

#include <grpcpp/channel.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/builder.grpc.pb.h"
#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
#include "elfdeploy/v1/manifest_publisher.grpc.pb.h"
#include "elfdeploy/v1/registry_sync.grpc.pb.h"
#include "services/orchestrator/stages.h"

// The stage interfaces of stages.h over gRPC, one client per service. Every call gets the
// constructor's `timeout` as its deadline (absl::InfiniteDuration(): none). A failed call returns
// the service's status code with the message prefixed by "<Service>.<Method>: "; a call whose
// CancelledFn turns true stops (ClientContext::TryCancel) and returns CANCELLED. Thread-safe:
// calls may run concurrently on one object.
namespace elfdeploy::orchestrator {

// BuilderService.Build. The image is stored in the builder's content store under the ref name
// "<app.group>/<app.name>:<tag>", or under `tag` itself when it holds a ':' (a full ref name).
// Progress: steps from the step events, bytes from base image pulls and written layers; the
// message is the current instruction, pull, warning or RUN output line.
class GrpcBuilder : public Builder {
 public:
  explicit GrpcBuilder(std::shared_ptr<grpc::Channel> channel,
                       absl::Duration timeout = absl::InfiniteDuration());

  absl::StatusOr<BuildResult> Build(const DiscoveredApp& app, const std::string& tag, bool no_cache,
                                    const ProgressFn& progress,
                                    const CancelledFn& cancelled) override;

  // The ref name Build stores the image under (see the class comment).
  static std::string RefName(const DiscoveredApp& app, const std::string& tag);

 private:
  std::unique_ptr<v1::BuilderService::Stub> stub_;
  absl::Duration timeout_;
};

// RegistrySyncService.Copy and Resolve; `image` may carry the "docker://" transport or not. The
// target's `credentials` (when set) authenticate the push and the resolve. Push progress: blobs
// done of total, bytes summed over the blobs; bytes_pushed counts only bytes transferred (0 when
// the registry already had every blob).
class GrpcRegistry : public Registry {
 public:
  explicit GrpcRegistry(std::shared_ptr<grpc::Channel> channel,
                        absl::Duration timeout = absl::InfiniteDuration());

  absl::StatusOr<PushResult> Push(const std::string& layout_reference, const std::string& image,
                                  const v1::RegistryTarget& target, const ProgressFn& progress,
                                  const CancelledFn& cancelled) override;
  absl::StatusOr<std::string> Resolve(const std::string& image,
                                      const v1::RegistryTarget& target) override;

 private:
  std::unique_ptr<v1::RegistrySyncService::Stub> stub_;
  absl::Duration timeout_;
};

// ManifestPublisherService.Publish: each PublishApp becomes an AppManifest (name, group, image,
// deployment_yaml; the rest defaulted by the publisher).
class GrpcPublisher : public Publisher {
 public:
  explicit GrpcPublisher(std::shared_ptr<grpc::Channel> channel,
                         absl::Duration timeout = absl::InfiniteDuration());

  absl::StatusOr<PublishResult> Publish(const std::vector<PublishApp>& apps,
                                        const v1::GitOpsTarget& gitops,
                                        const v1::ClusterDestination& destination,
                                        const std::string& correlation_id,
                                        const std::string& message) override;
  absl::StatusOr<PublishResult> Applications(const std::vector<PublishApp>& apps,
                                             const v1::GitOpsTarget& gitops,
                                             const v1::ClusterDestination& destination) override;

 private:
  std::unique_ptr<v1::ManifestPublisherService::Stub> stub_;
  absl::Duration timeout_;
};

// ClusterWatcherService, 1:1. EnsureImagePullSecret asks for the namespace to be created when
// missing (Argo CD has not synced it yet on a first rollout). Refresh is a normal (not hard)
// refresh of the Application in the watcher's default Argo CD namespace.
class GrpcCluster : public Cluster {
 public:
  explicit GrpcCluster(std::shared_ptr<grpc::Channel> channel,
                       absl::Duration timeout = absl::InfiniteDuration());

  absl::Status ApplyApplication(const std::string& cluster,
                                const v1::ApplicationDefinition& application) override;
  absl::Status EnsureImagePullSecret(const std::string& cluster, const std::string& ns,
                                     const std::string& name, const std::string& registry,
                                     const v1::RegistryCredentials& credentials) override;
  absl::Status Refresh(const std::string& cluster, const std::string& application) override;
  absl::StatusOr<v1::DiagnoseResponse> Diagnose(const v1::DiagnoseRequest& request) override;

 private:
  std::unique_ptr<v1::ClusterWatcherService::Stub> stub_;
  absl::Duration timeout_;
};

}  // namespace elfdeploy::orchestrator
