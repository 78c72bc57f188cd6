#include "services/cluster_watcher/agent_link_service.h"

#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "services/common/grpc_status.h"
#include "services/common/proto_time.h"

namespace elfdeploy::watcher {
namespace {

// Equal strings in time independent of where they differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Event batches received and not stored yet; one consumer takes them all at once.
class PendingBatches {
 public:
  void Add(std::vector<v1::AgentEvent> events) {
    absl::MutexLock lock(&mu_);
    for (v1::AgentEvent& event : events) events_.push_back(std::move(event));
  }
  // Waits for events and moves every queued one to `out`; false once closed and drained.
  bool Take(std::vector<v1::AgentEvent>* out) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](PendingBatches* p) { return p->closed_ || !p->events_.empty(); }, this));
    if (events_.empty()) return false;
    out->clear();
    out->swap(events_);
    return true;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::AgentEvent> events_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

// One agent connection: its outgoing lanes (the latest ack first, then requests, then
// heartbeats), written by one writer thread, and the requests waiting for replies.
class AgentLinkService::Connection {
 public:
  Connection(grpc::ServerContext* context, std::string cluster, uint64_t epoch)
      : context_(context), cluster_(std::move(cluster)), epoch_(epoch) {}

  const std::string& cluster() const { return cluster_; }
  uint64_t epoch() const { return epoch_; }

  void Touch() { last_received_ = absl::ToUnixNanos(absl::Now()); }

  void SetAck(uint64_t sequence) {
    absl::MutexLock lock(&mu_);
    if (sequence > ack_) {
      ack_ = sequence;
      ack_pending_ = true;
    }
  }

  // Ends the connection with `status` (the first reason wins); `cancel` also ends a Read that
  // would otherwise wait for the agent's next message.
  void End(grpc::Status status, bool cancel) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;
      ended_ = true;
      end_status_ = std::move(status);
      for (auto& [id, pending] : pending_) {
        pending->failure = absl::UnavailableError(
            absl::StrCat("the connection of cluster ", cluster_, "'s agent ended"));
        pending->done.Notify();
      }
      pending_.clear();
    }
    if (cancel) context_->TryCancel();
  }

  bool ended() {
    absl::MutexLock lock(&mu_);
    return ended_;
  }

  grpc::Status end_status() {
    absl::MutexLock lock(&mu_);
    return end_status_;
  }

  absl::StatusOr<v1::AgentReply> Request(v1::AgentRequest request, absl::Time deadline) {
    auto pending = std::make_shared<Pending>();
    std::string id = request.request_id();
    {
      absl::MutexLock lock(&mu_);
      if (ended_) {
        return absl::UnavailableError(
            absl::StrCat("the agent of cluster ", cluster_, " is disconnecting"));
      }
      pending_[id] = pending;
      requests_.push_back(std::move(request));
    }
    if (!pending->done.WaitForNotificationWithDeadline(deadline)) {
      absl::MutexLock lock(&mu_);
      pending_.erase(id);
      return absl::DeadlineExceededError(
          absl::StrCat("the agent of cluster ", cluster_, " did not answer in time"));
    }
    if (!pending->failure.ok()) return pending->failure;
    return pending->reply;
  }

  void Resolve(const v1::AgentReply& reply) {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(reply.request_id());
    if (it == pending_.end()) return;  // answered after its deadline
    it->second->reply = reply;
    it->second->done.Notify();
    pending_.erase(it);
  }

  // Writes the lanes until the connection ends; ends it when the agent is silent for three
  // heartbeat intervals.
  void WriterLoop(grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>* stream,
                  absl::Duration interval) {
    absl::Time last_sent = absl::Now();
    while (true) {
      v1::ConnectResponse ack;
      std::deque<v1::AgentRequest> requests;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return ended_ || ack_pending_ || !requests_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&ready), std::min(interval / 2, absl::Seconds(1)));
        if (ended_) return;
        if (ack_pending_) {
          ack.mutable_ack()->set_agent_epoch(epoch_);
          ack.mutable_ack()->set_sequence(ack_);
          ack_pending_ = false;
        }
        requests.swap(requests_);
      }
      bool ok = true;
      if (ack.has_ack()) ok = stream->Write(ack);
      for (v1::AgentRequest& request : requests) {
        if (!ok) break;
        v1::ConnectResponse message;
        *message.mutable_request() = std::move(request);
        ok = stream->Write(message);
      }
      absl::Time now = absl::Now();
      if (ok && (ack.has_ack() || !requests.empty())) last_sent = now;
      if (ok && now - last_sent >= interval) {
        v1::ConnectResponse heartbeat;
        *heartbeat.mutable_heartbeat()->mutable_sent_time() = ToTimestamp(now);
        ok = stream->Write(heartbeat);
        last_sent = now;
      }
      if (!ok) {
        End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "writing to the agent failed"), true);
        return;
      }
      if (now - absl::FromUnixNanos(last_received_.load()) > 3 * interval) {
        End(grpc::Status(
                grpc::StatusCode::DEADLINE_EXCEEDED,
                absl::StrCat("no message from the agent for ", absl::FormatDuration(3 * interval))),
            true);
        return;
      }
    }
  }

 private:
  struct Pending {
    absl::Notification done;
    v1::AgentReply reply;
    absl::Status failure;
  };

  grpc::ServerContext* const context_;
  const std::string cluster_;
  const uint64_t epoch_;
  std::atomic<int64_t> last_received_{absl::ToUnixNanos(absl::Now())};
  absl::Mutex mu_;
  uint64_t ack_ ABSL_GUARDED_BY(mu_) = 0;
  bool ack_pending_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::AgentRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
};

AgentLinkService::AgentLinkService(ClusterState& state, AgentLinkOptions options,
                                   AgentLinkMetrics metrics)
    : state_(state), options_(std::move(options)), metrics_(std::move(metrics)) {}

AgentLinkService::~AgentLinkService() { Shutdown(); }

void AgentLinkService::Shutdown() {
  std::map<std::string, std::shared_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    connections.swap(connections_);
  }
  for (auto& [cluster, connection] : connections) {
    connection->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "cluster-watcher is stopping"),
                    true);
  }
}

bool AgentLinkService::Authorized(const grpc::ServerContext& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return false;
  absl::string_view value(it->second.data(), it->second.size());
  if (!absl::ConsumePrefix(&value, "Bearer ")) return false;
  bool match = false;
  for (const Secret& token : options_.tokens) {
    if (!token.empty() && ConstantTimeEquals(value, token.Reveal())) match = true;
  }
  return match;
}

grpc::Status AgentLinkService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>* stream) {
  if (!Authorized(*context)) {
    log::Warning("agent refused: missing or wrong bearer token", {{"peer", context->peer()}});
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong bearer token");
  }
  v1::ConnectRequest first;
  if (!stream->Read(&first)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the agent left before its hello");
  }
  if (!first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a hello");
  }
  const v1::AgentHello& hello = first.hello();
  absl::StatusOr<uint64_t> acked = state_.Connected(hello, context->peer());
  if (!acked.ok()) return ToGrpcStatus(acked.status());
  const std::string cluster = hello.cluster();
  const uint64_t epoch = hello.agent_epoch();
  auto connection = std::make_shared<Connection>(context, cluster, epoch);
  std::shared_ptr<Connection> replaced;
  int connected = 0;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cluster-watcher is stopping");
    }
    std::shared_ptr<Connection>& slot = connections_[cluster];
    replaced = std::move(slot);
    slot = connection;
    connected = static_cast<int>(connections_.size());
  }
  if (replaced != nullptr) {
    // The older stream ends with ABORTED at its next message (or its silence timeout).
    replaced->End(grpc::Status(grpc::StatusCode::ABORTED,
                               "replaced by a newer connection of the same cluster"),
                  false);
  }
  if (metrics_.agents_connected) metrics_.agents_connected(connected);
  log::Info("agent connected", {{"cluster", cluster},
                                {"epoch", static_cast<int64_t>(epoch)},
                                {"acked", static_cast<int64_t>(*acked)},
                                {"peer", context->peer()},
                                {"agent_version", hello.agent_version()}});

  v1::ConnectResponse welcome;
  welcome.mutable_welcome()->set_acked_sequence(*acked);
  welcome.mutable_welcome()->mutable_heartbeat_interval()->set_seconds(
      absl::ToInt64Seconds(options_.heartbeat_interval));
  welcome.mutable_welcome()->mutable_heartbeat_interval()->set_nanos(
      static_cast<int32_t>(absl::ToInt64Nanoseconds(options_.heartbeat_interval) % 1000000000));
  welcome.mutable_welcome()->set_watcher_id(options_.watcher_id);
  grpc::Status result;
  if (!stream->Write(welcome)) {
    result = grpc::Status(grpc::StatusCode::UNAVAILABLE, "writing the welcome failed");
    connection->End(result, true);
  }
  std::thread writer([&] { connection->WriterLoop(stream, options_.heartbeat_interval); });
  // Group commit: while one batch is being stored (an fsync), the batches that arrive meanwhile
  // queue up and are stored together with the next one, then acked at once.
  PendingBatches pending;
  std::thread applier([&] {
    std::vector<v1::AgentEvent> events;
    while (pending.Take(&events)) {
      absl::StatusOr<uint64_t> stored = state_.Apply(cluster, epoch, std::move(events));
      if (!stored.ok()) {
        connection->End(ToGrpcStatus(stored.status()), true);
        return;
      }
      connection->SetAck(*stored);
    }
  });

  v1::ConnectRequest message;
  while (!connection->ended() && stream->Read(&message)) {
    connection->Touch();
    if (connection->ended()) break;
    state_.Seen(cluster);
    if (message.has_events()) {
      std::vector<v1::AgentEvent> events;
      events.reserve(message.events().events_size());
      for (v1::AgentEvent& event : *message.mutable_events()->mutable_events()) {
        events.push_back(std::move(event));
      }
      if (metrics_.lag) {
        absl::Time now = absl::Now();
        for (const v1::AgentEvent& event : events) {
          absl::Time observed = FromTimestamp(event.observed_time());
          metrics_.lag(std::max(0.0, absl::ToDoubleSeconds(now - observed)));
        }
      }
      if (metrics_.received) metrics_.received(events.size());
      pending.Add(std::move(events));
    } else if (message.has_reply()) {
      connection->Resolve(message.reply());
    } else if (message.has_hello()) {
      connection->End(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a second hello on one connection"),
          true);
      break;
    }
  }
  pending.Close();
  applier.join();
  connection->End(grpc::Status(grpc::StatusCode::CANCELLED, "the agent closed the stream"), false);
  writer.join();
  {
    absl::MutexLock lock(&mu_);
    auto it = connections_.find(cluster);
    if (it != connections_.end() && it->second == connection) connections_.erase(it);
    connected = static_cast<int>(connections_.size());
  }
  if (metrics_.agents_connected) metrics_.agents_connected(connected);
  grpc::Status status = connection->end_status();
  state_.Disconnected(cluster, epoch, status.error_message());
  log::Info("agent disconnected", {{"cluster", cluster},
                                   {"epoch", static_cast<int64_t>(epoch)},
                                   {"reason", status.error_message()}});
  return status;
}

absl::StatusOr<v1::AgentReply> AgentLinkService::Call(const std::string& cluster,
                                                      v1::AgentRequest request,
                                                      absl::Duration timeout) {
  std::shared_ptr<Connection> connection;
  {
    absl::MutexLock lock(&mu_);
    auto it = connections_.find(cluster);
    if (it == connections_.end()) {
      return absl::UnavailableError(absl::StrCat("no agent of cluster ", cluster, " is connected"));
    }
    connection = it->second;
    request.set_request_id(absl::StrCat(next_request_++));
  }
  absl::Time deadline = absl::Now() + timeout;
  *request.mutable_deadline() = ToTimestamp(deadline);
  return connection->Request(std::move(request), deadline);
}

}  // namespace elfdeploy::watcher
