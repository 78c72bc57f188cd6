#pragma once

#include <memory>
#include <string>

#include "elfdeploy/v1/manifest_publisher.grpc.pb.h"
#include "services/common/config.h"
#include "services/common/service_main.h"
#include "services/manifest_publisher/publisher.h"

namespace elfdeploy {

// The manifest-publisher binary's settings.
struct ManifestPublisherServiceOptions {
  std::string cache_dir = "/var/lib/elfdeploy/manifest-publisher";
  int max_attempts = 8;
  std::string author_name = "elfdeploy";
  std::string author_email = "elfdeploy@localhost";
  // Credentials for GitOps repositories when a request brings none.
  std::string git_username;
  Secret git_password;
  std::string git_ssh_key;
  Secret git_ssh_passphrase;
  std::string git_ca_file;
};

void BindManifestPublisherConfig(ConfigBinder& binder, ManifestPublisherServiceOptions* options);

// elfdeploy.v1.ManifestPublisherService: a thin adapter over publisher::ManifestPublisher.
class ManifestPublisherServiceImpl final : public v1::ManifestPublisherService::Service {
 public:
  ManifestPublisherServiceImpl(ManifestPublisherServiceOptions options,
                               std::unique_ptr<publisher::ManifestPublisher> logic)
      : options_(std::move(options)), logic_(std::move(logic)) {}

  grpc::Status Render(grpc::ServerContext* context, const v1::RenderRequest* request,
                      v1::RenderResponse* response) override;
  grpc::Status Publish(grpc::ServerContext* context, const v1::PublishRequest* request,
                       v1::PublishResponse* response) override;

 private:
  ManifestPublisherServiceOptions options_;
  std::unique_ptr<publisher::ManifestPublisher> logic_;
};

absl::StatusOr<std::unique_ptr<Component>> MakeManifestPublisherComponent(
    const ManifestPublisherServiceOptions& options, const ComponentContext& context);

}  // namespace elfdeploy
