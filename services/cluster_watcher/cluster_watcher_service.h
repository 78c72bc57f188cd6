#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/agent_link.grpc.pb.h"
#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/cluster_watcher/agent_link_service.h"
#include "services/cluster_watcher/state.h"
#include "services/common/client_tls.h"
#include "services/common/config.h"
#include "services/common/service_main.h"

namespace elfdeploy {

// The cluster-watcher's own settings (config keys `watcher.*`).
struct ClusterWatcherOptions {
  // Where the change log lives (`watcher.data_dir`).
  std::string data_dir = "/var/lib/elfdeploy/cluster-watcher";
  // Watch resume window, in changes (`watcher.retention`); at least 1.
  int64_t retention = 200000;
  // Keep-alive interval of idle Watch streams (`watcher.watch_heartbeat`); positive.
  absl::Duration watch_heartbeat = absl::Seconds(5);
  // Bearer token agents present (`watcher.agent_token`, or one per line in
  // `watcher.agent_token_file`); without any, no agent is accepted.
  Secret agent_token;
  std::string agent_token_file;
  // Heartbeat interval of agent connections (`watcher.agent_heartbeat`).
  absl::Duration agent_heartbeat = absl::Seconds(5);
  // How long requests carried out by an agent may take (`watcher.agent_request_timeout`).
  absl::Duration agent_request_timeout = absl::Seconds(20);
  // registry-sync, which Diagnose asks whether an image exists (`watcher.registry_sync_addr`);
  // empty: image pull findings keep the kubelet's reason.
  std::string registry_sync_addr;
  // TLS towards it (`watcher.registry_sync_tls_ca_file`, `_cert_file`, `_key_file`); plain text
  // without a CA.
  ClientTlsOptions registry_sync_tls;
  // The credentials EnsureImagePullSecret writes when a request names none: a docker
  // config.json (`watcher.registry_auth_file`; else $REGISTRY_AUTH_FILE, ~/.docker/config.json).
  std::string registry_auth_file;
};

// Binds the `watcher.*` keys of ClusterWatcherOptions.
void BindClusterWatcherConfig(ConfigBinder& binder, ClusterWatcherOptions* options);

// elfdeploy.v1.ClusterWatcherService: thin adapters over ClusterState (ListClusters,
// GetApplication, ListPods, Watch), over the connected agents (GetLogs, Refresh,
// ApplyApplication, EnsureImagePullSecret) and over Diagnose.
class ClusterWatcherServiceImpl final : public v1::ClusterWatcherService::Service {
 public:
  // `watch_heartbeat`: a Watch stream idle this long gets a WatchHeartbeat. `hub` (may be null:
  // agent-carried RPCs answer UNAVAILABLE) must outlive the service. `registry_sync` (may be
  // null: Diagnose does not ask whether images exist) reaches RegistrySyncService.
  ClusterWatcherServiceImpl(std::shared_ptr<watcher::ClusterState> state,
                            absl::Duration watch_heartbeat, watcher::AgentHub* hub = nullptr,
                            ClusterWatcherOptions options = {},
                            std::shared_ptr<grpc::Channel> registry_sync = nullptr);

  grpc::Status ListClusters(grpc::ServerContext* context, const v1::ListClustersRequest* request,
                            v1::ListClustersResponse* response) override;
  grpc::Status GetApplication(grpc::ServerContext* context,
                              const v1::GetApplicationRequest* request,
                              v1::GetApplicationResponse* response) override;
  grpc::Status ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override;
  // WatchStarted, then the subscription's items; a heartbeat when idle for `watch_heartbeat`;
  // ends when the client cancels (CANCELLED), on OUT_OF_RANGE, or with UNAVAILABLE when the
  // watcher shuts down.
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

 private:
  // Runs a request on the cluster's agent; the reply, or its error as a status.
  absl::StatusOr<v1::AgentReply> CallAgent(const std::string& cluster, v1::AgentRequest request);
  absl::StatusOr<std::vector<std::string>> ReadLogs(const std::string& cluster,
                                                    const std::string& ns, const std::string& pod,
                                                    const std::string& container, int tail_lines,
                                                    bool previous);

  std::shared_ptr<watcher::ClusterState> state_;
  const absl::Duration watch_heartbeat_;
  watcher::AgentHub* const hub_;
  const ClusterWatcherOptions options_;
  const std::shared_ptr<grpc::Channel> registry_sync_;
};

namespace internal {
// Declared as the first base so that the state outlives every service (bases die in reverse).
struct ClusterStateHolder {
  std::shared_ptr<watcher::ClusterState> state_;
};
}  // namespace internal

// The cluster-watcher binary's component: owns the ClusterState and the services over it; the
// state outlives the services. Stop() shuts the state down (Watch streams end with UNAVAILABLE,
// writes are refused).
class ClusterWatcherComponent : private internal::ClusterStateHolder, public ServiceSet {
 public:
  explicit ClusterWatcherComponent(std::shared_ptr<watcher::ClusterState> state)
      : internal::ClusterStateHolder{std::move(state)} {}
  // The state the services share (e.g. for the agent link).
  const std::shared_ptr<watcher::ClusterState>& state() const { return state_; }
  ~ClusterWatcherComponent() override;
  // The agent link, set once by MakeClusterWatcherServices.
  void set_link(watcher::AgentLinkService* link) { link_ = link; }
  // Keeps elfdeploy_watcher_pods_not_ready{cluster,namespace,reason} up to date every `period`.
  void ExportPodsNotReady(prometheus::Family<prometheus::Gauge>& family, absl::Duration period);
  void Stop() override;

 private:
  void RefreshPodsNotReady(prometheus::Family<prometheus::Gauge>& family);

  watcher::AgentLinkService* link_ = nullptr;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread refresher_;
  // The series set last time, to remove those whose pods recovered.
  std::map<std::vector<std::string>, prometheus::Gauge*> not_ready_;
};

// Opens the ClusterState in options.data_dir (INVALID_ARGUMENT for bad options, INTERNAL when the
// log cannot be read, FAILED_PRECONDITION when the agent token file cannot be read) and returns
// the component serving ClusterWatcherService and AgentLinkService over it; their metrics go to
// `metrics` (may be null).
absl::StatusOr<std::unique_ptr<ClusterWatcherComponent>> MakeClusterWatcherServices(
    const ClusterWatcherOptions& options, std::shared_ptr<prometheus::Registry> metrics = nullptr);

}  // namespace elfdeploy
