#include "services/cluster_watcher/cluster_watcher_service.h"

namespace elfdeploy {

namespace {

constexpr char kMissing[] =
    "live cluster state and the agent link land with the agent and cluster-watcher issue (#7)";

}  // namespace

grpc::Status ClusterWatcherServiceImpl::ListClusters(grpc::ServerContext* /*context*/,
                                                     const v1::ListClustersRequest* /*request*/,
                                                     v1::ListClustersResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/ListClusters", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::GetApplication(grpc::ServerContext* /*context*/,
                                                       const v1::GetApplicationRequest* /*request*/,
                                                       v1::GetApplicationResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/GetApplication", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::ListPods(grpc::ServerContext* /*context*/,
                                                 const v1::ListPodsRequest* /*request*/,
                                                 v1::ListPodsResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/ListPods", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::Watch(grpc::ServerContext* /*context*/,
                                              const v1::WatchRequest* /*request*/,
                                              grpc::ServerWriter<v1::WatchResponse>* /*writer*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/Watch", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::Diagnose(grpc::ServerContext* /*context*/,
                                                 const v1::DiagnoseRequest* /*request*/,
                                                 v1::DiagnoseResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/Diagnose", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::GetLogs(grpc::ServerContext* /*context*/,
                                                const v1::GetLogsRequest* /*request*/,
                                                v1::GetLogsResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/GetLogs", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::Refresh(grpc::ServerContext* /*context*/,
                                                const v1::RefreshRequest* /*request*/,
                                                v1::RefreshResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/Refresh", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::ApplyApplication(
    grpc::ServerContext* /*context*/, const v1::ApplyApplicationRequest* /*request*/,
    v1::ApplyApplicationResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/ApplyApplication", kMissing);
}

grpc::Status ClusterWatcherServiceImpl::EnsureImagePullSecret(
    grpc::ServerContext* /*context*/, const v1::EnsureImagePullSecretRequest* /*request*/,
    v1::EnsureImagePullSecretResponse* /*response*/) {
  return NotImplementedYet("elfdeploy.v1.ClusterWatcherService/EnsureImagePullSecret", kMissing);
}

grpc::Status AgentLinkServiceImpl::Connect(
    grpc::ServerContext* /*context*/,
    grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>* /*stream*/) {
  return NotImplementedYet("elfdeploy.v1.AgentLinkService/Connect", kMissing);
}

std::unique_ptr<ServiceSet> MakeClusterWatcherServices() {
  auto services = std::make_unique<ServiceSet>();
  services->Add(v1::ClusterWatcherService::service_full_name(),
                std::make_unique<ClusterWatcherServiceImpl>());
  services->Add(v1::AgentLinkService::service_full_name(),
                std::make_unique<AgentLinkServiceImpl>());
  return services;
}

}  // namespace elfdeploy
