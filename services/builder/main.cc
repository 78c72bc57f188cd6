#include "services/builder/builder_service.h"
#include "services/common/service_main.h"

int main(int argc, char** argv) {
  elfdeploy::BuilderServiceOptions options;
  elfdeploy::BinarySpec spec;
  spec.name = "builder";
  spec.default_grpc_addr = "0.0.0.0:7401";
  spec.default_metrics_addr = "0.0.0.0:9401";
  spec.bind_config = [&options](elfdeploy::ConfigBinder& binder) {
    elfdeploy::BindBuilderConfig(binder, &options);
  };
  return elfdeploy::RunBinary(argc, argv, spec,
                              [&options](const elfdeploy::ComponentContext& context) {
                                return elfdeploy::MakeBuilderComponent(options, context);
                              });
}
