#include "agent/kube/client.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace elfdeploy::agent {
namespace {

using json = nlohmann::json;

// Enough for list pages of thousands of objects; watches run with their own timeoutSeconds.
constexpr absl::Duration kRequestTimeout = absl::Seconds(60);

}  // namespace

absl::Status KubeError(long http_status, const std::string& body, const std::string& what) {
  json status = json::parse(body, nullptr, false);
  std::string message =
      status.is_object() && status.contains("message") && status["message"].is_string()
          ? status["message"].get<std::string>()
          : std::string(absl::StripAsciiWhitespace(body.substr(0, 200)));
  std::string reason = status.is_object() ? status.value("reason", "") : "";
  std::string text = absl::StrCat(what, ": ", http_status, " ", reason.empty() ? "" : reason,
                                  reason.empty() ? "" : ": ", message);
  switch (http_status) {
    case 400:
    case 422:
      return absl::InvalidArgumentError(text);
    case 401:
      return absl::UnauthenticatedError(text);
    case 403:
      return absl::PermissionDeniedError(text);
    case 404:
      return absl::NotFoundError(text);
    case 409:
      return reason == "AlreadyExists" ? absl::AlreadyExistsError(text) : absl::AbortedError(text);
    case 410:
      return absl::OutOfRangeError(text);
    case 415:
      return absl::UnimplementedError(text);
    default:
      return http_status == 429 || http_status >= 500 ? absl::UnavailableError(text)
                                                      : absl::UnknownError(text);
  }
}

KubeClient::KubeClient(KubeConfig config) : config_(std::move(config)) {
  http_options_.server = config_.server;
  http_options_.ca_file = config_.ca_file;
  http_options_.ca_pem = config_.ca_pem;
  http_options_.insecure_skip_verify = config_.insecure_skip_tls_verify;
  http_options_.client_cert_file = config_.client_cert_file;
  http_options_.client_key_file = config_.client_key_file;
  http_options_.client_cert_pem = config_.client_cert_pem;
  http_options_.client_key_pem = config_.client_key_pem.Reveal();
  http_options_.read_timeout = kRequestTimeout;
}

KubeClient::~KubeClient() = default;

absl::StatusOr<std::unique_ptr<KubeHttp>> KubeClient::Take() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      std::unique_ptr<KubeHttp> client = std::move(idle_.back());
      idle_.pop_back();
      return client;
    }
  }
  return KubeHttp::Create(http_options_);
}

void KubeClient::Give(std::unique_ptr<KubeHttp> client) {
  absl::MutexLock lock(&mu_);
  if (idle_.size() < 8) idle_.push_back(std::move(client));
}

absl::StatusOr<std::string> KubeClient::Token() {
  if (config_.token_file.empty()) return config_.token.Reveal();
  struct stat info;
  if (stat(config_.token_file.c_str(), &info) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the token file ", config_.token_file, " cannot be read"));
  }
  absl::Time mtime = absl::TimeFromTimespec(info.st_mtim);
  absl::MutexLock lock(&mu_);
  if (mtime != token_mtime_) {
    std::ifstream in(config_.token_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      return absl::FailedPreconditionError(
          absl::StrCat("the token file ", config_.token_file, " cannot be read"));
    }
    token_ = std::string(absl::StripAsciiWhitespace(text.str()));
    token_mtime_ = mtime;
  }
  return token_;
}

absl::StatusOr<KubeHttp::Headers> KubeClient::MakeHeaders() {
  absl::StatusOr<std::string> token = Token();
  if (!token.ok()) return token.status();
  KubeHttp::Headers headers = {{"Accept", "application/json"}, {"User-Agent", "elfdeploy-agent"}};
  if (!token->empty()) headers.emplace_back("Authorization", absl::StrCat("Bearer ", *token));
  return headers;
}

absl::StatusOr<json> KubeClient::Call(const std::string& method, const std::string& path,
                                      const std::string& content_type, const std::string& body) {
  absl::StatusOr<KubeHttp::Headers> headers = MakeHeaders();
  if (!headers.ok()) return headers.status();
  absl::StatusOr<std::unique_ptr<KubeHttp>> client = Take();
  if (!client.ok()) return client.status();
  absl::StatusOr<KubeHttpResponse> response =
      (*client)->Do(method, path, *headers, content_type, body);
  if (response.ok()) Give(*std::move(client));
  std::string what = absl::StrCat(method, " ", path);
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status >= 300) {
    return KubeError(response->status, response->body, what);
  }
  json parsed = json::parse(response->body, nullptr, false);
  if (parsed.is_discarded()) {
    return absl::DataLossError(absl::StrCat(what, ": the response is not JSON"));
  }
  return parsed;
}

absl::StatusOr<json> KubeClient::Get(const std::string& path) { return Call("GET", path, "", ""); }

absl::StatusOr<json> KubeClient::Create(const std::string& path, const json& object) {
  return Call("POST", path, "application/json", object.dump());
}

absl::StatusOr<json> KubeClient::Replace(const std::string& path, const json& object) {
  return Call("PUT", path, "application/json", object.dump());
}

absl::StatusOr<json> KubeClient::MergePatch(const std::string& path, const json& patch) {
  return Call("PATCH", path, "application/merge-patch+json", patch.dump());
}

absl::StatusOr<std::string> KubeClient::GetText(const std::string& path) {
  absl::StatusOr<KubeHttp::Headers> headers = MakeHeaders();
  if (!headers.ok()) return headers.status();
  absl::StatusOr<std::unique_ptr<KubeHttp>> client = Take();
  if (!client.ok()) return client.status();
  absl::StatusOr<KubeHttpResponse> response = (*client)->Do("GET", path, *headers, "", "");
  if (response.ok()) Give(*std::move(client));
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status >= 300) {
    return KubeError(response->status, response->body, absl::StrCat("GET ", path));
  }
  return std::move(response->body);
}

absl::Status KubeClient::Watch(
    const std::string& path,
    const std::function<bool(std::string_view, simdjson::dom::element)>& on_event,
    const std::function<bool()>& cancelled) {
  absl::StatusOr<KubeHttp::Headers> headers = MakeHeaders();
  if (!headers.ok()) return headers.status();
  std::string pending;
  absl::Status stopped;
  // Reused for every event: simdjson parses into the parser's buffers, so a busy watch allocates
  // nothing per event.
  simdjson::dom::parser parser;
  auto sink = [&](absl::string_view chunk) {
    pending.append(chunk.data(), chunk.size());
    size_t start = 0;
    for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos;
         start = newline + 1) {
      absl::string_view line(pending.data() + start, newline - start);
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      simdjson::dom::element event;
      std::string_view type;
      simdjson::dom::element object;
      if (parser.parse(line.data(), line.size()).get(event) != simdjson::SUCCESS ||
          event["type"].get(type) != simdjson::SUCCESS ||
          event["object"].get(object) != simdjson::SUCCESS) {
        stopped = absl::DataLossError(
            absl::StrCat("GET ", path, ": a watch event is not JSON with a type and an object"));
        return false;
      }
      if (!on_event(type, object)) {
        stopped = absl::CancelledError("the watch was stopped");
        return false;
      }
      if (cancelled && cancelled()) {
        stopped = absl::CancelledError("the watch was cancelled");
        return false;
      }
    }
    pending.erase(0, start);
    return true;
  };
  // A watch has its own connection: it lasts until the server's timeoutSeconds.
  absl::StatusOr<std::unique_ptr<KubeHttp>> client = KubeHttp::Create(http_options_);
  if (!client.ok()) return client.status();
  absl::StatusOr<KubeHttpResponse> response = (*client)->Stream(path, *headers, sink, cancelled);
  if (!stopped.ok()) return stopped;
  if (!response.ok()) return response.status();
  if (response->status < 200 || response->status >= 300) {
    return KubeError(response->status, response->body, absl::StrCat("GET ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> KubeClient::ServerVersion() {
  absl::StatusOr<json> version = Get("/version");
  if (!version.ok()) return version.status();
  return version->value("gitVersion", "");
}

}  // namespace elfdeploy::agent
