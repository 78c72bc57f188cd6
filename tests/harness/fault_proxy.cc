#include "tests/harness/fault_proxy.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace elfdeploy::testing {

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(std::string upstream_host,
                                                              int upstream_port) {
  std::unique_ptr<FaultProxy> proxy(new FaultProxy(std::move(upstream_host), upstream_port));
  absl::StatusOr<std::unique_ptr<TcpServer>> server =
      TcpServer::Start([p = proxy.get()](HttpConnection& client) { p->Serve(client); });
  if (!server.ok()) return server.status();
  proxy->server_ = *std::move(server);
  return proxy;
}

FaultProxy::~FaultProxy() {
  stopping_.Notify();
  server_.reset();
}

void FaultProxy::AddFault(FaultRule rule) {
  absl::MutexLock lock(&mu_);
  rules_.push_back(std::move(rule));
}

void FaultProxy::ClearFaults() {
  absl::MutexLock lock(&mu_);
  rules_.clear();
}

int FaultProxy::requests_seen() const {
  absl::MutexLock lock(&mu_);
  return requests_seen_;
}

int FaultProxy::faults_injected() const {
  absl::MutexLock lock(&mu_);
  return faults_injected_;
}

std::vector<ProxyLogEntry> FaultProxy::Log() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

std::optional<FaultRule> FaultProxy::TakeFault(const std::string& method, const std::string& path) {
  absl::MutexLock lock(&mu_);
  ++requests_seen_;
  for (auto it = rules_.begin(); it != rules_.end(); ++it) {
    if ((!it->method.empty() && it->method != method) ||
        !absl::StrContains(path, it->path_contains)) {
      continue;
    }
    FaultRule rule = *it;
    if (--it->count <= 0) rules_.erase(it);
    ++faults_injected_;
    return rule;
  }
  return std::nullopt;
}

void FaultProxy::Record(std::string method, std::string path, int status) {
  absl::MutexLock lock(&mu_);
  log_.push_back({std::move(method), std::move(path), status});
}

void FaultProxy::Serve(HttpConnection& client) {
  while (true) {
    absl::StatusOr<HttpMessage> request = client.ReadRequest();
    if (!request.ok()) return;
    const std::string method = request->Method();
    const std::string path = request->Target();
    const bool close = request->HeaderContains("Connection", "close") ||
                       absl::EndsWith(request->start_line, "HTTP/1.0");
    const std::optional<FaultRule> fault = TakeFault(method, path);
    auto is = [&fault](FaultKind kind) { return fault.has_value() && fault->kind == kind; };
    if (is(FaultKind::kReset)) {
      Record(method, path, 0);
      client.ResetOnClose();
      return;
    }
    if (is(FaultKind::kDelay)) stopping_.WaitForNotificationWithTimeout(fault->delay);
    absl::StatusOr<HttpMessage> response;
    if (is(FaultKind::kStatus)) {
      response = MakeResponse(fault->status, "fault injected by elfdeploy FaultProxy\n");
    } else if (is(FaultKind::kTooManyRequests)) {
      response = MakeResponse(429, "too many requests\n",
                              {{"Retry-After", std::to_string(fault->retry_after_seconds)}});
    } else {
      response = Forward(*std::move(request));
      if (!response.ok()) response = MakeResponse(502, response.status().ToString() + "\n");
    }
    Record(method, path, response->Status());
    if (close) response->SetHeader("Connection", "close");
    std::string wire = response->Serialize();
    if (is(FaultKind::kResetMidResponse)) {
      client.Write(wire.substr(0, wire.size() - (response->body.size() + 1) / 2)).IgnoreError();
      client.ResetOnClose();
      return;
    }
    if (!client.Write(wire).ok() || close) return;
  }
}

absl::StatusOr<HttpMessage> FaultProxy::Forward(HttpMessage request) const {
  const std::string method = request.Method();
  const std::string upstream = absl::StrCat(upstream_host_, ":", upstream_port_);
  const bool has_body =
      request.HasHeader("Content-Length") || request.HasHeader("Transfer-Encoding");
  for (const char* name : {"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
                           "TE", "Upgrade", "Expect", "Content-Length"}) {
    request.RemoveHeader(name);
  }
  request.SetHeader("Host", upstream);
  request.SetHeader("Connection", "close");
  if (has_body) request.SetHeader("Content-Length", std::to_string(request.body.size()));

  absl::StatusOr<std::unique_ptr<HttpConnection>> connection =
      ConnectTcp(upstream_host_, upstream_port_);
  if (!connection.ok()) return connection.status();
  absl::Status status = (*connection)->Write(request.Serialize());
  if (!status.ok()) return status;
  absl::StatusOr<HttpMessage> response = (*connection)->ReadResponse(method);
  while (response.ok() && response->Status() >= 100 && response->Status() < 200) {
    response = (*connection)->ReadResponse(method);
  }
  if (!response.ok()) return response.status();

  for (const char* name : {"Connection", "Keep-Alive", "Transfer-Encoding"}) {
    response->RemoveHeader(name);
  }
  const int code = response->Status();
  if (method != "HEAD" && code != 204 && code != 304) {
    response->SetHeader("Content-Length", std::to_string(response->body.size()));
  }
  std::string location = response->Header("Location");
  const std::string prefix = absl::StrCat("http://", upstream, "/");
  if (absl::StartsWith(location, prefix)) {
    response->SetHeader("Location",
                        absl::StrCat("http://", host(), "/", location.substr(prefix.size())));
  }
  return response;
}

}  // namespace elfdeploy::testing
