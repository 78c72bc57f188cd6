#include "services/common/service_main.h"
#include "services/registry_sync/registry_sync_service.h"

int main(int argc, char** argv) {
  elfdeploy::BinarySpec spec;
  spec.name = "registry-sync";
  spec.default_grpc_addr = "0.0.0.0:7402";
  spec.default_metrics_addr = "0.0.0.0:9402";
  return elfdeploy::RunBinary(argc, argv, spec, [](const elfdeploy::ComponentContext&) {
    return absl::StatusOr<std::unique_ptr<elfdeploy::Component>>(
        elfdeploy::MakeRegistrySyncServices());
  });
}
