#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/agent_link.grpc.pb.h"
#include "services/cluster_watcher/state.h"
#include "services/common/log.h"

namespace elfdeploy::watcher {

struct AgentLinkOptions {
  // Bearer tokens agents may present ("authorization: Bearer <token>"); empty accepts none.
  std::vector<Secret> tokens;
  // Sent to agents in the welcome; a connection with no message for three intervals is dropped.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // This instance's id, for logs.
  std::string watcher_id;
};

struct AgentLinkMetrics {
  std::function<void(size_t events)> received;
  std::function<void(int connected)> agents_connected;
  // Seconds from the agent's observation to the watcher's receipt, per event.
  std::function<void(double seconds)> lag;
};

// The connected agents' request lanes: what ClusterWatcherService uses to run work on a cluster.
class AgentHub {
 public:
  virtual ~AgentHub() = default;
  // Sends `request` (request_id and deadline are set here) to the cluster's connected agent and
  // waits for its reply until `timeout`. UNAVAILABLE when no agent of the cluster is connected or
  // the connection ends first; DEADLINE_EXCEEDED when the agent does not answer in time.
  virtual absl::StatusOr<v1::AgentReply> Call(const std::string& cluster, v1::AgentRequest request,
                                              absl::Duration timeout) = 0;
};

// elfdeploy.v1.AgentLinkService over a ClusterState: authenticates the token before reading
// anything, takes the hello, welcomes with the acked sequence of the agent's epoch, stores each
// batch durably (ClusterState::Apply) and acks it on a lane of its own (only the latest ack is
// kept, and it is written before any queued request), sends heartbeats when idle, drops a silent
// connection after three intervals, and replaces an older connection of the same cluster (which
// ends with ABORTED).
class AgentLinkService final : public v1::AgentLinkService::Service, public AgentHub {
 public:
  AgentLinkService(ClusterState& state, AgentLinkOptions options, AgentLinkMetrics metrics = {});
  ~AgentLinkService() override;

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>* stream) override;

  absl::StatusOr<v1::AgentReply> Call(const std::string& cluster, v1::AgentRequest request,
                                      absl::Duration timeout) override;

  // Ends every connection (their streams end with UNAVAILABLE).
  void Shutdown();

 private:
  class Connection;

  bool Authorized(const grpc::ServerContext& context) const;

  ClusterState& state_;
  const AgentLinkOptions options_;
  const AgentLinkMetrics metrics_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace elfdeploy::watcher
