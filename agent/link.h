#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/event_buffer.h"
#include "elfdeploy/v1/agent_link.pb.h"
#include "services/common/log.h"

namespace elfdeploy::agent {

struct LinkOptions {
  // cluster-watcher's address, "host:port".
  std::string watcher_addr;
  std::string cluster;
  // Plain-text gRPC (local demo and tests only); otherwise TLS verified against ca_file.
  bool insecure = false;
  // The CA the watcher's certificate must chain to (pinned: the system store is not used).
  std::string ca_file;
  // Name expected in the watcher's certificate when it differs from the address's host.
  std::string tls_server_name;
  // Optional client certificate for mutual TLS.
  std::string client_cert_file;
  std::string client_key_file;
  // Sent as "authorization: Bearer <token>".
  Secret token;
  // Used until the watcher's welcome says otherwise.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  // Events per message, and how long a message may wait for that many.
  size_t batch_size = 512;
  absl::Duration batch_linger = absl::Milliseconds(1);
  // Hello fields.
  std::string agent_version;
  std::string argocd_namespace;
  std::vector<std::string> namespaces;
};

// Carries out a watcher's request; returns the reply (request_id filled in by the link).
using RequestHandler = std::function<v1::AgentReply(const v1::AgentRequest&)>;

struct LinkMetrics {
  std::function<void(size_t events)> sent;
  std::function<void()> reconnected;
};

// The agent's side of AgentLinkService.Connect: dials the watcher, says hello with the epoch and
// the resume point, replays every unacked event after the welcome's acked sequence, then streams
// new ones in batches while acks drop them from the buffer. Heartbeats keep the stream alive
// through proxies; no message from the watcher for three intervals ends the connection.
// Requests run on their own threads and never hold up events. Reconnects with backoff and
// jitter until cancelled.
class AgentLink {
 public:
  AgentLink(LinkOptions options, uint64_t epoch, EventBuffer& buffer, RequestHandler handler,
            std::function<std::string()> kubernetes_version, LinkMetrics metrics = {});

  // Runs until `cancelled` returns true.
  void Run(const std::function<bool()>& cancelled);

  bool connected() const { return connected_.load(); }
  uint64_t epoch() const { return epoch_; }

 private:
  // One connection; returns how it ended.
  absl::Status Session(const std::function<bool()>& cancelled);

  const LinkOptions options_;
  const uint64_t epoch_;
  EventBuffer& buffer_;
  const RequestHandler handler_;
  const std::function<std::string()> kubernetes_version_;
  const LinkMetrics metrics_;
  std::atomic<bool> connected_{false};
};

}  // namespace elfdeploy::agent
