#include <malloc.h>

#include "agent/agent.h"
#include "services/common/service_main.h"

int main(int argc, char** argv) {
  // One arena per core is plenty for the agent's few threads, and keeps its footprint small on
  // the Argo CD machine (glibc's default is eight per core).
  mallopt(M_ARENA_MAX, 2);
  elfdeploy::AgentOptions options;
  elfdeploy::BinarySpec spec;
  spec.name = "agent";
  spec.default_metrics_addr = "0.0.0.0:9405";
  spec.bind_config = [&options](elfdeploy::ConfigBinder& binder) {
    elfdeploy::BindAgentConfig(binder, &options);
  };
  return elfdeploy::RunBinary(argc, argv, spec,
                              [&options](const elfdeploy::ComponentContext& context) {
                                return elfdeploy::MakeAgent(options, context.metrics);
                              });
}
