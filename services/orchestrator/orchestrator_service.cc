#include "services/orchestrator/orchestrator_service.h"

namespace elfdeploy {

namespace {

constexpr char kMissing[] = "rollouts land with the orchestrator issue (#8)";

}  // namespace

grpc::Status OrchestratorServiceImpl::Deploy(grpc::ServerContext* /*context*/,
                                             const v1::DeployRequest* /*request*/,
                                             v1::DeployResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.OrchestratorService/Deploy", kMissing);
}

grpc::Status OrchestratorServiceImpl::WatchRollout(
    grpc::ServerContext* /*context*/, const v1::WatchRolloutRequest* /*request*/,
    grpc::ServerWriter<v1::WatchRolloutResponse>* /*writer*/) {
  return NotImplementedYet("elfdeploy.v1.OrchestratorService/WatchRollout", kMissing);
}

grpc::Status OrchestratorServiceImpl::GetRollout(grpc::ServerContext* /*context*/,
                                                 const v1::GetRolloutRequest* /*request*/,
                                                 v1::GetRolloutResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.OrchestratorService/GetRollout", kMissing);
}

grpc::Status OrchestratorServiceImpl::ListRollouts(grpc::ServerContext* /*context*/,
                                                   const v1::ListRolloutsRequest* /*request*/,
                                                   v1::ListRolloutsResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.OrchestratorService/ListRollouts", kMissing);
}

grpc::Status OrchestratorServiceImpl::CancelRollout(grpc::ServerContext* /*context*/,
                                                    const v1::CancelRolloutRequest* /*request*/,
                                                    v1::CancelRolloutResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.OrchestratorService/CancelRollout", kMissing);
}

void BindOrchestratorConfig(ConfigBinder& binder, OrchestratorOptions* options) {
  binder.Bind("registry", &options->registry);
  binder.EnvAlias("DOCKER_REGISTRY", "registry");
  binder.Bind("gitops.repo", &options->gitops_repo);
  binder.EnvAlias("GITOPS_REPO", "gitops.repo");
  binder.Bind("gitops.branch", &options->gitops_branch);
  binder.Bind("gitops.path_prefix", &options->gitops_path_prefix);
  binder.Bind("orchestrator.builder_addr", &options->builder_addr);
  binder.Bind("orchestrator.registry_sync_addr", &options->registry_sync_addr);
  binder.Bind("orchestrator.manifest_publisher_addr", &options->manifest_publisher_addr);
  binder.Bind("orchestrator.cluster_watcher_addr", &options->cluster_watcher_addr);
  binder.Bind("orchestrator.data_dir", &options->data_dir);
}

std::unique_ptr<ServiceSet> MakeOrchestratorServices() {
  auto services = std::make_unique<ServiceSet>();
  services->Add(v1::OrchestratorService::service_full_name(),
                std::make_unique<OrchestratorServiceImpl>());
  return services;
}

}  // namespace elfdeploy
