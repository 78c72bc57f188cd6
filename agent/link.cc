#include "agent/link.h"

#include <grpcpp/grpcpp.h>
#include <malloc.h>

#include <algorithm>
#include <deque>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "elfdeploy/v1/agent_link.grpc.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "services/common/grpc_status.h"
#include "services/common/proto_time.h"

namespace elfdeploy::agent {
namespace {

constexpr uint64_t kTrimAfterEvents = 4096;

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read the ", what, " ", path));
  }
  return text.str();
}

google::protobuf::Timestamp Now() { return ToTimestamp(absl::Now()); }

// The link's stream carries raw bytes: event batches are assembled from the events' encodings
// in the buffer (see EncodedEvents); every other message is serialized as usual.
using RawStream = grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;

// Opens AgentLinkService.Connect with raw messages. This is what the generated stub's Connect
// does, with ByteBuffer in place of the message types.
std::unique_ptr<RawStream> OpenConnect(const std::shared_ptr<grpc::Channel>& channel,
                                       grpc::ClientContext* context) {
  static const std::string* const kMethod =
      new std::string(absl::StrCat("/", v1::AgentLinkService::service_full_name(), "/Connect"));
  grpc::internal::RpcMethod method(kMethod->c_str(), grpc::internal::RpcMethod::BIDI_STREAMING,
                                   channel);
  return std::unique_ptr<RawStream>(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(), method, context));
}

bool WriteMessage(RawStream& stream, const v1::ConnectRequest& message) {
  grpc::ByteBuffer buffer;
  bool own = false;
  if (!grpc::SerializationTraits<v1::ConnectRequest>::Serialize(message, &buffer, &own).ok()) {
    return false;
  }
  return stream.Write(buffer);
}

// Sends `events` as one ConnectRequest{events: AgentEventBatch}, handing the body to gRPC
// without a copy.
bool WriteEvents(RawStream& stream, EncodedEvents events) {
  std::string header;
  {
    google::protobuf::io::StringOutputStream raw(&header);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.WriteTag((v1::ConnectRequest::kEventsFieldNumber << 3) | 2);
    coded.WriteVarint32(static_cast<uint32_t>(events.body.size()));
  }
  auto* body = new std::string(std::move(events.body));
  grpc::Slice slices[] = {grpc::Slice(header),
                          grpc::Slice(
                              body->data(), body->size(),
                              [](void* owned) { delete static_cast<std::string*>(owned); }, body)};
  grpc::ByteBuffer buffer(slices, 2);
  return stream.Write(buffer);
}

bool ReadMessage(RawStream& stream, v1::ConnectResponse* message) {
  grpc::ByteBuffer buffer;
  if (!stream.Read(&buffer)) return false;
  message->Clear();
  grpc::Status parsed =
      grpc::SerializationTraits<v1::ConnectResponse>::Deserialize(&buffer, message);
  if (!parsed.ok()) {
    log::Warning("unreadable message from cluster-watcher; reconnecting",
                 {{"error", parsed.error_message()}});
  }
  return parsed.ok();
}

// Replies of finished requests, waiting for the writer. Shared with request threads, which may
// outlive the connection they came on.
struct ReplyQueue {
  absl::Mutex mu;
  std::deque<v1::ConnectRequest> replies ABSL_GUARDED_BY(mu);
};

}  // namespace

AgentLink::AgentLink(LinkOptions options, uint64_t epoch, EventBuffer& buffer,
                     RequestHandler handler, std::function<std::string()> kubernetes_version,
                     LinkMetrics metrics)
    : options_(std::move(options)),
      epoch_(epoch),
      buffer_(buffer),
      handler_(std::move(handler)),
      kubernetes_version_(std::move(kubernetes_version)),
      metrics_(std::move(metrics)) {}

void AgentLink::Run(const std::function<bool()>& cancelled) {
  thread_local std::mt19937_64 random{std::random_device{}()};
  absl::Duration backoff = options_.initial_backoff;
  bool first = true;
  while (!cancelled()) {
    if (!first && metrics_.reconnected) metrics_.reconnected();
    first = false;
    absl::Time started = absl::Now();
    absl::Status ended = Session(cancelled);
    if (cancelled()) return;
    if (absl::Now() - started > absl::Seconds(10)) backoff = options_.initial_backoff;
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    absl::Duration wait = backoff * jitter(random);
    log::Warning("link to cluster-watcher ended; reconnecting",
                 {{"watcher", options_.watcher_addr},
                  {"error", ended},
                  {"retry_in_ms", absl::ToInt64Milliseconds(wait)}});
    absl::Time until = absl::Now() + wait;
    while (absl::Now() < until && !cancelled()) {
      absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

absl::Status AgentLink::Session(const std::function<bool()>& cancelled) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options_.insecure) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    absl::StatusOr<std::string> ca = ReadPem(options_.ca_file, "pinned CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!options_.client_cert_file.empty()) {
      absl::StatusOr<std::string> cert = ReadPem(options_.client_cert_file, "client certificate");
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadPem(options_.client_key_file, "client key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  if (!options_.tls_server_name.empty()) args.SetSslTargetNameOverride(options_.tls_server_name);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options_.watcher_addr, credentials, args);
  grpc::ClientContext context;
  if (!options_.token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.token.Reveal()));
  }
  std::unique_ptr<RawStream> stream = OpenConnect(channel, &context);

  v1::ConnectRequest hello_message;
  v1::AgentHello* hello = hello_message.mutable_hello();
  hello->set_cluster(options_.cluster);
  hello->set_agent_epoch(epoch_);
  hello->set_first_unacked_sequence(buffer_.first_unacked());
  hello->set_last_sequence(buffer_.last_sequence());
  hello->set_agent_version(options_.agent_version);
  hello->set_kubernetes_version(kubernetes_version_ ? kubernetes_version_() : "");
  hello->set_argocd_namespace(options_.argocd_namespace);
  for (const std::string& ns : options_.namespaces) hello->add_namespaces(ns);

  // A watcher that never answers the hello must not hold the agent forever.
  absl::Notification welcomed;
  absl::Duration hello_timeout = std::max(absl::Seconds(10), 3 * options_.heartbeat_interval);
  std::thread watchdog([&] {
    if (!welcomed.WaitForNotificationWithTimeout(hello_timeout)) context.TryCancel();
  });
  v1::ConnectResponse first;
  bool read = WriteMessage(*stream, hello_message) && ReadMessage(*stream, &first);
  bool timed_out = !welcomed.HasBeenNotified() && !read;
  welcomed.Notify();
  watchdog.join();
  if (!read || !first.has_welcome()) {
    // A stream the watcher ended carries its status (e.g. UNAUTHENTICATED); cancel only one that
    // is still open.
    if (read) context.TryCancel();
    grpc::Status status = stream->Finish();
    if (status.ok()) return absl::UnavailableError("the watcher did not welcome the agent");
    absl::Status error = FromGrpcStatus(status);
    if (absl::IsUnauthenticated(error)) {
      log::Error("cluster-watcher refused the agent's token",
                 {{"watcher", options_.watcher_addr}, {"error", error}});
    }
    return timed_out && absl::IsCancelled(error)
               ? absl::DeadlineExceededError("the watcher did not answer the hello in time")
               : error;
  }
  const v1::AgentWelcome& welcome = first.welcome();
  buffer_.Ack(welcome.acked_sequence());
  uint64_t cursor = welcome.acked_sequence();
  absl::Duration interval = options_.heartbeat_interval;
  if (welcome.has_heartbeat_interval()) {
    absl::Duration given = absl::Seconds(welcome.heartbeat_interval().seconds()) +
                           absl::Nanoseconds(welcome.heartbeat_interval().nanos());
    if (given > absl::ZeroDuration()) interval = given;
  }
  log::Info("linked to cluster-watcher", {{"watcher", options_.watcher_addr},
                                          {"watcher_id", welcome.watcher_id()},
                                          {"epoch", static_cast<int64_t>(epoch_)},
                                          {"acked", static_cast<int64_t>(cursor)},
                                          {"unacked", static_cast<int64_t>(buffer_.size())}});
  connected_ = true;

  std::atomic<int64_t> last_received(absl::ToUnixNanos(absl::Now()));
  std::atomic<bool> reader_done{false};
  auto replies = std::make_shared<ReplyQueue>();
  std::thread reader([&] {
    v1::ConnectResponse message;
    uint64_t acked = 0;
    uint64_t trimmed_at = 0;
    while (ReadMessage(*stream, &message)) {
      last_received = absl::ToUnixNanos(absl::Now());
      if (message.has_ack()) {
        if (message.ack().agent_epoch() != epoch_) continue;
        buffer_.Ack(message.ack().sequence());
        acked = std::max(acked, message.ack().sequence());
        // A burst (a list of thousands of objects) leaves freed pages behind once acked; give
        // them back when the buffer has drained.
        if (acked - trimmed_at >= kTrimAfterEvents && buffer_.size() == 0) {
          malloc_trim(0);
          trimmed_at = acked;
        }
      } else if (message.has_request()) {
        // Requests run beside the stream: a slow log read never holds up events or acks.
        std::thread([request = message.request(), replies, handler = handler_,
                     &buffer = buffer_]() {
          v1::ConnectRequest reply_message;
          *reply_message.mutable_reply() = handler(request);
          reply_message.mutable_reply()->set_request_id(request.request_id());
          {
            absl::MutexLock lock(&replies->mu);
            replies->replies.push_back(std::move(reply_message));
          }
          buffer.Wake();
        }).detach();
      }
    }
    reader_done = true;
    buffer_.Wake();
  });

  absl::Time last_sent = absl::Now();
  absl::Status ended = absl::OkStatus();
  while (!reader_done && !cancelled()) {
    std::deque<v1::ConnectRequest> ready;
    {
      absl::MutexLock lock(&replies->mu);
      ready.swap(replies->replies);
    }
    bool write_failed = false;
    for (const v1::ConnectRequest& reply : ready) {
      if (!WriteMessage(*stream, reply)) {
        write_failed = true;
        break;
      }
    }
    if (write_failed) break;
    EncodedEvents events = buffer_.Next(
        cursor, options_.batch_size, absl::Now() + std::min(interval / 2, absl::Milliseconds(200)),
        options_.batch_linger);
    absl::Time now = absl::Now();
    if (!events.empty()) {
      const uint64_t last = events.last_sequence;
      const size_t count = events.count;
      if (!WriteEvents(*stream, std::move(events))) break;
      cursor = last;
      last_sent = now;
      if (metrics_.sent) metrics_.sent(count);
    } else if (now - last_sent >= interval) {
      v1::ConnectRequest heartbeat;
      *heartbeat.mutable_heartbeat()->mutable_sent_time() = Now();
      if (!WriteMessage(*stream, heartbeat)) break;
      last_sent = now;
    }
    if (now - absl::FromUnixNanos(last_received.load()) > 3 * interval) {
      ended = absl::DeadlineExceededError(
          absl::StrCat("no message from the watcher for ", absl::FormatDuration(3 * interval)));
      break;
    }
  }
  connected_ = false;
  context.TryCancel();
  reader.join();
  grpc::Status status = stream->Finish();
  if (!ended.ok()) return ended;
  if (cancelled()) return absl::CancelledError("the agent is stopping");
  return status.ok() ? absl::UnavailableError("the watcher ended the stream")
                     : FromGrpcStatus(status);
}

}  // namespace elfdeploy::agent
