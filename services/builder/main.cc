#include "services/builder/builder_service.h"
#include "services/common/service_main.h"

int main(int argc, char** argv) {
  elfdeploy::BinarySpec spec;
  spec.name = "builder";
  spec.default_grpc_addr = "0.0.0.0:7401";
  spec.default_metrics_addr = "0.0.0.0:9401";
  return elfdeploy::RunBinary(argc, argv, spec, [](const elfdeploy::ComponentContext&) {
    return absl::StatusOr<std::unique_ptr<elfdeploy::Component>>(elfdeploy::MakeBuilderServices());
  });
}
