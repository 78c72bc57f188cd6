#include "services/builder/builder_service.h"

namespace elfdeploy {

namespace {

constexpr char kMissing[] =
    "daemonless Dockerfile builds and Scaffold land with the builder issue (#4)";

}  // namespace

grpc::Status BuilderServiceImpl::Build(grpc::ServerContext* /*context*/,
                                       const v1::BuildRequest* /*request*/,
                                       grpc::ServerWriter<v1::BuildResponse>* /*writer*/) {
  return NotImplementedYet("elfdeploy.v1.BuilderService/Build", kMissing);
}

grpc::Status BuilderServiceImpl::Scaffold(grpc::ServerContext* /*context*/,
                                          const v1::ScaffoldRequest* /*request*/,
                                          v1::ScaffoldResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.BuilderService/Scaffold", kMissing);
}

std::unique_ptr<ServiceSet> MakeBuilderServices() {
  auto services = std::make_unique<ServiceSet>();
  services->Add(v1::BuilderService::service_full_name(), std::make_unique<BuilderServiceImpl>());
  return services;
}

}  // namespace elfdeploy
