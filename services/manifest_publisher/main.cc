#include "services/common/service_main.h"
#include "services/manifest_publisher/manifest_publisher_service.h"

int main(int argc, char** argv) {
  elfdeploy::ManifestPublisherServiceOptions options;
  elfdeploy::BinarySpec spec;
  spec.name = "manifest-publisher";
  spec.default_grpc_addr = "0.0.0.0:7403";
  spec.default_metrics_addr = "0.0.0.0:9403";
  spec.bind_config = [&options](elfdeploy::ConfigBinder& binder) {
    elfdeploy::BindManifestPublisherConfig(binder, &options);
  };
  return elfdeploy::RunBinary(argc, argv, spec,
                              [&options](const elfdeploy::ComponentContext& context) {
                                return elfdeploy::MakeManifestPublisherComponent(options, context);
                              });
}
