#include <malloc.h>

#include "services/cluster_watcher/cluster_watcher_service.h"
#include "services/common/service_main.h"

int main(int argc, char** argv) {
  // Event batches come and go by the thousand per second: keep freed memory in the heap for the
  // next batch instead of returning it to the kernel (and faulting it back in) every time.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  elfdeploy::ClusterWatcherOptions options;
  elfdeploy::BinarySpec spec;
  spec.name = "cluster-watcher";
  spec.default_grpc_addr = "0.0.0.0:7404";
  spec.default_metrics_addr = "0.0.0.0:9404";
  spec.bind_config = [&options](elfdeploy::ConfigBinder& binder) {
    elfdeploy::BindClusterWatcherConfig(binder, &options);
  };
  return elfdeploy::RunBinary(
      argc, argv, spec,
      [&options](const elfdeploy::ComponentContext& context)
          -> absl::StatusOr<std::unique_ptr<elfdeploy::Component>> {
        absl::StatusOr<std::unique_ptr<elfdeploy::ClusterWatcherComponent>> component =
            elfdeploy::MakeClusterWatcherServices(options, context.metrics);
        if (!component.ok()) return component.status();
        return std::unique_ptr<elfdeploy::Component>(*std::move(component));
      });
}
