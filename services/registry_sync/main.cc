#include "services/common/service_main.h"
#include "services/registry_sync/registry_sync_service.h"

int main(int argc, char** argv) {
  elfdeploy::RegistrySyncOptions options;
  elfdeploy::BinarySpec spec;
  spec.name = "registry-sync";
  spec.default_grpc_addr = "0.0.0.0:7402";
  spec.default_metrics_addr = "0.0.0.0:9402";
  spec.bind_config = [&options](elfdeploy::ConfigBinder& binder) {
    elfdeploy::BindRegistrySyncConfig(binder, &options);
  };
  return elfdeploy::RunBinary(argc, argv, spec,
                              [&options](const elfdeploy::ComponentContext& context) {
                                return elfdeploy::MakeRegistrySyncComponent(options, context);
                              });
}
