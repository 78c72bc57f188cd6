#pragma once

#include <memory>
#include <string>

#include "services/common/config.h"
#include "services/common/service_main.h"

namespace elfdeploy {

struct AgentOptions {
  // cluster-watcher's AgentLinkService address the agent dials out to.
  std::string watcher_addr = "127.0.0.1:7404";
  // Name the cluster is known by in cluster-watcher.
  std::string cluster_name = "default";
};

// Binds `agent.*` config keys to `options`.
void BindAgentConfig(ConfigBinder& binder, AgentOptions* options);

// The agent's component. Until the agent issue (#7) lands it watches nothing: it serves its
// metrics and says at start-up that the Kubernetes watch and the link to cluster-watcher are
// missing.
std::unique_ptr<Component> MakeAgent(const AgentOptions& options);

}  // namespace elfdeploy
