#pragma once

#include <memory>

#include "elfdeploy/v1/builder.grpc.pb.h"
#include "services/common/service_main.h"

namespace elfdeploy {

// elfdeploy.v1.BuilderService. Every RPC answers UNIMPLEMENTED until its logic lands: daemonless
// Dockerfile builds and Scaffold land with the builder issue (#4).
class BuilderServiceImpl final : public v1::BuilderService::Service {
 public:
  grpc::Status Build(grpc::ServerContext* context, const v1::BuildRequest* request,
                     grpc::ServerWriter<v1::BuildResponse>* writer) override;
  grpc::Status Scaffold(grpc::ServerContext* context, const v1::ScaffoldRequest* request,
                        v1::ScaffoldResponse* response) override;
};

// The builder binary's services.
std::unique_ptr<ServiceSet> MakeBuilderServices();

}  // namespace elfdeploy
