#include "services/common/service_main.h"
#include "services/orchestrator/orchestrator_service.h"

int main(int argc, char** argv) {
  elfdeploy::OrchestratorOptions options;
  elfdeploy::BinarySpec spec;
  spec.name = "orchestrator";
  spec.default_grpc_addr = "0.0.0.0:7400";
  spec.default_metrics_addr = "0.0.0.0:9400";
  spec.bind_config = [&options](elfdeploy::ConfigBinder& binder) {
    elfdeploy::BindOrchestratorConfig(binder, &options);
  };
  return elfdeploy::RunBinary(
      argc, argv, spec, [&options](const elfdeploy::ComponentContext& context) {
        return elfdeploy::MakeOrchestratorServices(options, context.metrics);
      });
}
