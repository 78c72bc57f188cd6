#pragma once

#include <memory>
#include <string>
#include <vector>

#include "elfdeploy/v1/builder.grpc.pb.h"
#include "services/builder/build.h"
#include "services/common/config.h"
#include "services/common/oci/registry_client.h"
#include "services/common/service_main.h"

namespace elfdeploy {

// The builder binary's settings (`builder.*` and the `registry.*` used to pull FROM images).
struct BuilderServiceOptions {
  builder::BuilderOptions builder;
  std::string auth_file;
  std::vector<std::string> insecure_registries;
  std::string ca_file;
};

void BindBuilderConfig(ConfigBinder& binder, BuilderServiceOptions* options);

// elfdeploy.v1.BuilderService: a thin adapter over builder::Builder and builder::Scaffold.
class BuilderServiceImpl final : public v1::BuilderService::Service {
 public:
  explicit BuilderServiceImpl(std::unique_ptr<builder::Builder> builder)
      : builder_(std::move(builder)) {}

  grpc::Status Build(grpc::ServerContext* context, const v1::BuildRequest* request,
                     grpc::ServerWriter<v1::BuildResponse>* writer) override;
  grpc::Status Scaffold(grpc::ServerContext* context, const v1::ScaffoldRequest* request,
                        v1::ScaffoldResponse* response) override;

 private:
  std::unique_ptr<builder::Builder> builder_;
};

absl::StatusOr<std::unique_ptr<Component>> MakeBuilderComponent(
    const BuilderServiceOptions& options, const ComponentContext& context);

}  // namespace elfdeploy
