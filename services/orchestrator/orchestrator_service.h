#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "prometheus/registry.h"
#include "services/common/client_tls.h"
#include "services/common/config.h"
#include "services/common/service_main.h"
#include "services/orchestrator/orchestrator.h"

namespace elfdeploy {

// elfdeploy.v1.OrchestratorService: thin adapters over orchestrator::Orchestrator (which must
// outlive the service).
class OrchestratorServiceImpl final : public v1::OrchestratorService::Service {
 public:
  explicit OrchestratorServiceImpl(orchestrator::Orchestrator& orchestrator)
      : orchestrator_(orchestrator) {}

  grpc::Status Deploy(grpc::ServerContext* context, const v1::DeployRequest* request,
                      v1::DeployResponse* response) override;
  grpc::Status WatchRollout(grpc::ServerContext* context, const v1::WatchRolloutRequest* request,
                            grpc::ServerWriter<v1::WatchRolloutResponse>* writer) override;
  grpc::Status GetRollout(grpc::ServerContext* context, const v1::GetRolloutRequest* request,
                          v1::GetRolloutResponse* response) override;
  grpc::Status ListRollouts(grpc::ServerContext* context, const v1::ListRolloutsRequest* request,
                            v1::ListRolloutsResponse* response) override;
  grpc::Status CancelRollout(grpc::ServerContext* context, const v1::CancelRolloutRequest* request,
                             v1::CancelRolloutResponse* response) override;

 private:
  orchestrator::Orchestrator& orchestrator_;
};

// Defaults a DeployRequest falls back on, and the services a rollout calls.
struct OrchestratorOptions {
  // Registry images are pushed to ("registry.example.com[:port][/prefix]"); env DOCKER_REGISTRY.
  std::string registry;
  // GitOps repository URL; env GITOPS_REPO.
  std::string gitops_repo;
  std::string gitops_branch = "main";
  std::string gitops_path_prefix = "elf-automations";
  std::string builder_addr = "127.0.0.1:7401";
  std::string registry_sync_addr = "127.0.0.1:7402";
  std::string manifest_publisher_addr = "127.0.0.1:7403";
  std::string cluster_watcher_addr = "127.0.0.1:7404";
  // Where rollout records are kept.
  std::string data_dir = "/var/lib/elfdeploy/orchestrator";
  // Namespace apps are deployed into when a request names none.
  std::string namespace_ = "elf-automations";
  // Builds and pushes at once, verification poll, time an app must stay ready, and the deadline
  // of a rollout whose request sets none (RunnerOptions).
  int max_parallel_builds = 2;
  absl::Duration poll_interval = absl::Milliseconds(500);
  absl::Duration settle = absl::Seconds(5);
  absl::Duration default_timeout = absl::Minutes(15);
  // Deadline of each unary call to a peer (publish, cluster-watcher calls); builds and pushes
  // stream and end with the rollout's deadline instead.
  absl::Duration peer_call_timeout = absl::Minutes(2);
  // TLS towards builder, registry-sync, manifest-publisher and cluster-watcher
  // (orchestrator.tls_ca_file, tls_cert_file, tls_key_file); plain text without a CA.
  ClientTlsOptions peer_tls;
};

// Binds `registry`, `gitops.*` and `orchestrator.*` config keys, with the seed's environment
// variables DOCKER_REGISTRY and GITOPS_REPO as aliases.
void BindOrchestratorConfig(ConfigBinder& binder, OrchestratorOptions* options);

// The orchestrator binary's component: opens the rollout store in options.data_dir, connects to
// the other services (plain-text gRPC on their configured addresses), resumes unfinished
// rollouts and serves OrchestratorService. INTERNAL when the store cannot be opened.
absl::StatusOr<std::unique_ptr<Component>> MakeOrchestratorServices(
    const OrchestratorOptions& options, std::shared_ptr<prometheus::Registry> metrics = nullptr);

}  // namespace elfdeploy
