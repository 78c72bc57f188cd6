#include "services/manifest_publisher/manifest_publisher_service.h"

namespace elfdeploy {

namespace {

constexpr char kMissing[] =
    "GitOps rendering and publishing land with the manifest-publisher issue (#5)";

}  // namespace

grpc::Status ManifestPublisherServiceImpl::Render(grpc::ServerContext* /*context*/,
                                                  const v1::RenderRequest* /*request*/,
                                                  v1::RenderResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ManifestPublisherService/Render", kMissing);
}

grpc::Status ManifestPublisherServiceImpl::Publish(grpc::ServerContext* /*context*/,
                                                   const v1::PublishRequest* /*request*/,
                                                   v1::PublishResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ManifestPublisherService/Publish", kMissing);
}

std::unique_ptr<ServiceSet> MakeManifestPublisherServices() {
  auto services = std::make_unique<ServiceSet>();
  services->Add(v1::ManifestPublisherService::service_full_name(),
                std::make_unique<ManifestPublisherServiceImpl>());
  return services;
}

}  // namespace elfdeploy
