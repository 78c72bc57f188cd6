#pragma once

#include <memory>

#include "elfdeploy/v1/manifest_publisher.grpc.pb.h"
#include "services/common/service_main.h"

namespace elfdeploy {

// elfdeploy.v1.ManifestPublisherService. Every RPC answers UNIMPLEMENTED until its logic lands:
// GitOps rendering and publishing land with the manifest-publisher issue (#5).
class ManifestPublisherServiceImpl final : public v1::ManifestPublisherService::Service {
 public:
  grpc::Status Render(grpc::ServerContext* context, const v1::RenderRequest* request,
                      v1::RenderResponse* response) override;
  grpc::Status Publish(grpc::ServerContext* context, const v1::PublishRequest* request,
                       v1::PublishResponse* response) override;
};

// The manifest-publisher binary's services.
std::unique_ptr<ServiceSet> MakeManifestPublisherServices();

}  // namespace elfdeploy
