#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/link.h"
#include "prometheus/registry.h"
#include "services/common/config.h"
#include "services/common/log.h"
#include "services/common/service_main.h"

namespace elfdeploy {

struct AgentOptions {
  // cluster-watcher's AgentLinkService address the agent dials out to.
  std::string watcher_addr = "127.0.0.1:7404";
  // Name the cluster is known by in cluster-watcher.
  std::string cluster_name = "default";
  // TLS to the watcher: the pinned CA (required unless insecure), an optional server name, and an
  // optional client certificate (mutual TLS).
  std::string ca_file;
  std::string tls_server_name;
  std::string client_cert_file;
  std::string client_key_file;
  // Plain-text gRPC: the local demo and tests only.
  bool insecure = false;
  // Bearer token for the watcher, or a file holding it.
  Secret token;
  std::string token_file;
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // Kubernetes: a kubeconfig (and context) or, when empty, the in-cluster config.
  std::string kubeconfig;
  std::string kube_context;
  std::string argocd_namespace = "argocd";
  // Namespaces whose Pods, Deployments and Events are watched; empty means all.
  std::vector<std::string> namespaces;
  // Unacked events kept before coalescing per object starts.
  int64_t buffer_events = 100000;
  // How long a batch may wait to fill up before it is sent (0 sends at once): under load, fewer and
  // larger messages for the link, the watcher's log and its subscribers.
  absl::Duration batch_linger = agent::LinkOptions{}.batch_linger;
  // timeoutSeconds of each Kubernetes watch request.
  absl::Duration watch_timeout = absl::Minutes(5);
};

// Binds `agent.*` config keys to `options`.
void BindAgentConfig(ConfigBinder& binder, AgentOptions* options);

// The agent: watches Applications (Argo CD namespace) and Pods, Deployments and Events (app
// namespaces) and streams every change to cluster-watcher, answering its requests (logs, refresh,
// apply Application, image pull Secret). Metrics go to `metrics`. FAILED_PRECONDITION when no
// Kubernetes config can be found or the watcher's CA or token cannot be read.
absl::StatusOr<std::unique_ptr<Component>> MakeAgent(const AgentOptions& options,
                                                     std::shared_ptr<prometheus::Registry> metrics);

}  // namespace elfdeploy
