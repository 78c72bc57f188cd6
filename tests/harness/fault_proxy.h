#pragma once

#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "tests/harness/http_wire.h"

namespace elfdeploy::testing {

enum class FaultKind {
  // Aborts the client connection (RST, the client sees ECONNRESET) without forwarding.
  kReset,
  // Forwards, relays the response head and half its body, then aborts the client connection.
  kResetMidResponse,
  // Answers `status` with a short text body without forwarding.
  kStatus,
  // Answers 429 with `Retry-After: <retry_after_seconds>` without forwarding.
  kTooManyRequests,
  // Waits `delay`, then forwards.
  kDelay,
};

// A fault for the next `count` requests that match `method` (exact, empty: any) and contain
// `path_contains` in their request target (empty: any).
struct FaultRule {
  FaultKind kind = FaultKind::kStatus;
  std::string method = {};
  std::string path_contains = {};
  int count = 1;
  int status = 503;
  int retry_after_seconds = 1;
  absl::Duration delay = absl::Seconds(1);
};

struct ProxyLogEntry {
  std::string method;
  // The request target: path and query.
  std::string path;
  // The status sent (or relayed in part) to the client; 0 when the connection was reset first.
  int status = 0;
};

// An HTTP/1.1 reverse proxy on 127.0.0.1 in front of a plain-http upstream, injecting queued
// faults. Each request is forwarded on a fresh upstream connection (Host set to the upstream) and
// its response relayed whole, re-framed with Content-Length; chunked request bodies are forwarded
// with Content-Length as well. Location headers that point at the upstream are rewritten to the
// proxy. Client connections are kept alive until the client closes them or a reset fault aborts
// them. Note that libcurl silently retries a request whose reused connection is reset before any
// response byte arrives, so a kReset is only seen by a client on a fresh connection. Thread-safe.
class FaultProxy {
 public:
  // Starts proxying to `upstream_host`:`upstream_port` on its own threads.
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(std::string upstream_host,
                                                           int upstream_port);
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;
  // Stops accepting, cuts open client connections and waits for every thread (delays included).
  ~FaultProxy();

  // "127.0.0.1:PORT", the authority clients talk to.
  std::string host() const { return server_->host(); }
  int port() const { return server_->port(); }

  // Queues `rule` behind the rules already queued; the first matching rule with requests left
  // applies to a request.
  void AddFault(FaultRule rule);
  // Drops every queued rule.
  void ClearFaults();
  // Requests read from clients so far, faulted ones included.
  int requests_seen() const;
  // Requests a fault applied to so far.
  int faults_injected() const;
  // Every request read so far, in order of completion.
  std::vector<ProxyLogEntry> Log() const;

 private:
  FaultProxy(std::string upstream_host, int upstream_port)
      : upstream_host_(std::move(upstream_host)), upstream_port_(upstream_port) {}
  void Serve(HttpConnection& client);
  std::optional<FaultRule> TakeFault(const std::string& method, const std::string& path);
  absl::StatusOr<HttpMessage> Forward(HttpMessage request) const;
  void Record(std::string method, std::string path, int status);

  const std::string upstream_host_;
  const int upstream_port_;
  absl::Notification stopping_;
  mutable absl::Mutex mu_;
  std::list<FaultRule> rules_ ABSL_GUARDED_BY(mu_);
  int requests_seen_ ABSL_GUARDED_BY(mu_) = 0;
  int faults_injected_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<ProxyLogEntry> log_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<TcpServer> server_;
};

}  // namespace elfdeploy::testing
