#include "services/common/service_main.h"
#include "services/manifest_publisher/manifest_publisher_service.h"

int main(int argc, char** argv) {
  elfdeploy::BinarySpec spec;
  spec.name = "manifest-publisher";
  spec.default_grpc_addr = "0.0.0.0:7403";
  spec.default_metrics_addr = "0.0.0.0:9403";
  return elfdeploy::RunBinary(argc, argv, spec, [](const elfdeploy::ComponentContext&) {
    return absl::StatusOr<std::unique_ptr<elfdeploy::Component>>(
        elfdeploy::MakeManifestPublisherServices());
  });
}
