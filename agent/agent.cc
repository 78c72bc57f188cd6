#include "agent/agent.h"

#include "services/common/log.h"

namespace elfdeploy {

void BindAgentConfig(ConfigBinder& binder, AgentOptions* options) {
  binder.Bind("agent.watcher_addr", &options->watcher_addr);
  binder.Bind("agent.cluster_name", &options->cluster_name);
}

std::unique_ptr<Component> MakeAgent(const AgentOptions& options) {
  log::Warning(
      "not implemented yet: the Kubernetes watch and the link to cluster-watcher land "
      "with the agent issue (#7); this agent streams nothing",
      {{"watcher_addr", options.watcher_addr}, {"cluster", options.cluster_name}});
  return std::make_unique<Component>();
}

}  // namespace elfdeploy
