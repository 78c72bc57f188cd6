#pragma once

#include <memory>

#include "elfdeploy/v1/agent_link.grpc.pb.h"
#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
#include "services/common/service_main.h"

namespace elfdeploy {

// elfdeploy.v1.ClusterWatcherService. Every RPC answers UNIMPLEMENTED until its logic lands: live
// cluster state and the agent link land with the agent and cluster-watcher issue (#7).
class ClusterWatcherServiceImpl final : public v1::ClusterWatcherService::Service {
 public:
  grpc::Status ListClusters(grpc::ServerContext* context, const v1::ListClustersRequest* request,
                            v1::ListClustersResponse* response) override;
  grpc::Status GetApplication(grpc::ServerContext* context,
                              const v1::GetApplicationRequest* request,
                              v1::GetApplicationResponse* response) override;
  grpc::Status ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::WatchResponse>* writer) override;
  grpc::Status Diagnose(grpc::ServerContext* context, const v1::DiagnoseRequest* request,
                        v1::DiagnoseResponse* response) override;
  grpc::Status GetLogs(grpc::ServerContext* context, const v1::GetLogsRequest* request,
                       v1::GetLogsResponse* response) override;
  grpc::Status Refresh(grpc::ServerContext* context, const v1::RefreshRequest* request,
                       v1::RefreshResponse* response) override;
  grpc::Status ApplyApplication(grpc::ServerContext* context,
                                const v1::ApplyApplicationRequest* request,
                                v1::ApplyApplicationResponse* response) override;
  grpc::Status EnsureImagePullSecret(grpc::ServerContext* context,
                                     const v1::EnsureImagePullSecretRequest* request,
                                     v1::EnsureImagePullSecretResponse* response) override;
};

// elfdeploy.v1.AgentLinkService. Every RPC answers UNIMPLEMENTED until its logic lands: live
// cluster state and the agent link land with the agent and cluster-watcher issue (#7).
class AgentLinkServiceImpl final : public v1::AgentLinkService::Service {
 public:
  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>* stream) override;
};

// The cluster-watcher binary's services.
std::unique_ptr<ServiceSet> MakeClusterWatcherServices();

}  // namespace elfdeploy
