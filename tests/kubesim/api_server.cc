#include "tests/kubesim/api_server.h"

#include <httplib.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;

// How often a blocked stream returns to the HTTP library, which checks that the client is still
// there between two calls.
constexpr absl::Duration kLivenessTick = absl::Seconds(1);
// After writing a few events a watch stream lets more gather for this long before it looks again:
// a thread per watch that woke for every change of a busy cluster would cost the simulator more
// than everything else it does (the API server's goroutines wake far more cheaply).
constexpr absl::Duration kWatchGather = absl::Milliseconds(1);
constexpr size_t kWatchGatherBelow = 64;

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

void WriteJson(httplib::Response& res, int code, std::string body) {
  res.status = code;
  res.set_content(std::move(body), "application/json");
}

void WriteError(httplib::Response& res, const absl::Status& status) {
  WriteJson(res, HttpCodeFor(status), Dump(StatusFor(status)));
}

void WriteStatus(httplib::Response& res, int code, absl::string_view reason,
                 absl::string_view message) {
  WriteJson(res, code, Dump(MakeStatus(code, reason, message)));
}

void WriteNotFound(httplib::Response& res, absl::string_view path) {
  WriteStatus(res, 404, "NotFound",
              absl::StrCat("the server could not find the requested resource (path ", path, ")"));
}

bool ParamTrue(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return false;
  std::string value = req.get_param_value(name);
  return value == "1" || value == "true" || value == "True";
}

// Compares in time independent of where the strings differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// What a request path addresses under /api/v1 or /apis/GROUP/VERSION.
struct Target {
  const ResourceType* type = nullptr;
  std::string namespace_name;  // from /namespaces/{ns}/...
  std::string name;
  std::string subresource;  // "status", "log"
};

}  // namespace

class ApiServer::Handler {
 public:
  Handler(ObjectStore* store, const ApiServerOptions& options, std::string address)
      : store_(store), options_(options), address_(std::move(address)) {}

  void Handle(const httplib::Request& req, httplib::Response& res) {
    const std::string& path = req.path;
    if (path == "/healthz" || path == "/livez" || path == "/readyz") {
      res.status = 200;
      res.set_content("ok", "text/plain");
      return;
    }
    if (path == "/version") {
      HandleVersion(res);
      return;
    }
    if (!Authorized(req)) {
      WriteStatus(res, 401, "Unauthorized", "Unauthorized");
      return;
    }
    std::vector<std::string> segments =
        absl::StrSplit(absl::StripPrefix(path, "/"), '/', absl::SkipEmpty());
    if (segments.empty()) {
      WriteNotFound(res, path);
      return;
    }
    std::string group;
    std::string version;
    size_t rest = 0;
    if (segments[0] == "api" && segments.size() >= 2) {
      version = segments[1];
      rest = 2;
    } else if (segments[0] == "apis" && segments.size() >= 3) {
      group = segments[1];
      version = segments[2];
      rest = 3;
    } else if ((segments[0] == "api" || segments[0] == "apis") && segments.size() <= 2 &&
               req.method == "GET") {
      HandleDiscovery(segments, res);
      return;
    } else {
      WriteNotFound(res, path);
      return;
    }
    if (rest == segments.size()) {
      if (req.method == "GET" && HandleResourceList(group, version, res)) return;
      WriteNotFound(res, path);
      return;
    }
    std::optional<Target> target = ParseTarget(group, version, segments, rest);
    if (!target.has_value()) {
      WriteNotFound(res, path);
      return;
    }
    Dispatch(req, res, *target);
  }

 private:
  bool Authorized(const httplib::Request& req) const {
    if (options_.token.empty()) return true;
    std::string header = req.get_header_value("Authorization");
    absl::string_view value = header;
    if (!absl::ConsumePrefix(&value, "Bearer ")) return false;
    return ConstantTimeEquals(value, options_.token.Reveal());
  }

  std::optional<Target> ParseTarget(const std::string& group, const std::string& version,
                                    const std::vector<std::string>& segments, size_t at) const {
    Target target;
    size_t n = segments.size() - at;
    auto segment = [&](size_t i) -> const std::string& { return segments[at + i]; };
    size_t next;
    if (segment(0) == "namespaces" && n >= 3) {
      // /namespaces/{ns}/{resource}[/{name}[/{subresource}]]
      target.namespace_name = segment(1);
      target.type = FindResource(segment(2));
      if (target.type == nullptr || !target.type->namespaced) {
        // /namespaces/{name}/status and the like: the Namespace object's subresource.
        if (n != 3) return std::nullopt;
        target.type = FindResource("namespaces");
        target.name = segment(1);
        target.namespace_name.clear();
        target.subresource = segment(2);
        next = n;
      } else {
        next = 3;
      }
    } else {
      target.type = FindResource(segment(0));
      if (target.type == nullptr) return std::nullopt;
      next = 1;
    }
    if (target.type->group != group || target.type->version != version) return std::nullopt;
    if (next < n) target.name = segment(next++);
    if (next < n) target.subresource = segment(next++);
    if (next < n) return std::nullopt;
    // A namespaced type's object needs its namespace in the path.
    if (target.type->namespaced && target.namespace_name.empty() && !target.name.empty()) {
      return std::nullopt;
    }
    if (!target.subresource.empty() && target.subresource != "status" &&
        !(target.subresource == "log" && target.type->resource == "pods")) {
      return std::nullopt;
    }
    return target;
  }

  void Dispatch(const httplib::Request& req, httplib::Response& res, const Target& target) {
    const std::string& method = req.method;
    bool collection = target.name.empty();
    if (method == "GET" || method == "HEAD") {
      if (collection && (ParamTrue(req, "watch"))) return HandleWatch(req, res, target);
      if (collection) return HandleList(req, res, target);
      if (target.subresource == "log") return HandleLog(req, res, target);
      return Reply(res, 200,
                   store_->Get(target.type->resource, target.namespace_name, target.name));
    }
    if (method == "POST" && collection) return HandleCreate(req, res, target);
    if (method == "PUT" && !collection) return HandleReplace(req, res, target);
    if (method == "PATCH" && !collection) return HandlePatch(req, res, target);
    if (method == "DELETE" && !collection && target.subresource.empty()) {
      return HandleDelete(req, res, target);
    }
    WriteStatus(res, 405, "MethodNotAllowed",
                absl::StrCat("the server does not allow this method on the requested resource"));
  }

  void Reply(httplib::Response& res, int code, const absl::StatusOr<ObjectPtr>& object) {
    if (!object.ok()) return WriteError(res, object.status());
    WriteJson(res, code, Dump(**object));
  }

  absl::StatusOr<json> ParseBody(const httplib::Request& req) const {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) {
      return absl::InvalidArgumentError("the request body is not valid JSON");
    }
    return body;
  }

  void HandleList(const httplib::Request& req, httplib::Response& res, const Target& target) {
    ListOptions options;
    options.namespace_name = target.namespace_name;
    options.label_selector = req.get_param_value("labelSelector");
    options.field_selector = req.get_param_value("fieldSelector");
    options.continue_token = req.get_param_value("continue");
    options.resource_version = req.get_param_value("resourceVersion");
    options.resource_version_match = req.get_param_value("resourceVersionMatch");
    std::string limit = req.get_param_value("limit");
    if (!limit.empty() && !absl::SimpleAtoi(limit, &options.limit)) {
      return WriteError(res, absl::InvalidArgumentError("limit must be an integer"));
    }
    absl::StatusOr<ListResult> list = store_->List(target.type->resource, options);
    if (!list.ok()) return WriteError(res, list.status());
    json metadata = {{"resourceVersion", absl::StrCat(list->resource_version)}};
    if (!list->continue_token.empty()) metadata["continue"] = list->continue_token;
    if (list->remaining_item_count.has_value()) {
      metadata["remainingItemCount"] = *list->remaining_item_count;
    }
    std::string body = absl::StrCat(R"({"kind":")", target.type->ListKind(), R"(","apiVersion":")",
                                    target.type->ApiVersion(), R"(","metadata":)", Dump(metadata),
                                    R"(,"items":[)");
    for (size_t i = 0; i < list->texts.size(); ++i) {
      if (i > 0) body.push_back(',');
      body.append(*list->texts[i]);
    }
    body.append("]}");
    WriteJson(res, 200, std::move(body));
  }

  // State of one streaming watch, shared with the HTTP library's content provider.
  struct WatchStream {
    std::unique_ptr<Watcher> watcher;
    const ResourceType* type;
    absl::Time deadline;
    bool bookmarks = false;
    absl::Time next_bookmark;
    bool done = false;
  };

  void HandleWatch(const httplib::Request& req, httplib::Response& res, const Target& target) {
    WatchOptions options;
    options.namespace_name = target.namespace_name;
    options.label_selector = req.get_param_value("labelSelector");
    options.field_selector = req.get_param_value("fieldSelector");
    options.resource_version = req.get_param_value("resourceVersion");
    absl::Duration timeout = options_.max_watch_timeout;
    std::string timeout_text = req.get_param_value("timeoutSeconds");
    if (!timeout_text.empty()) {
      int64_t seconds = 0;
      if (!absl::SimpleAtoi(timeout_text, &seconds) || seconds < 0) {
        return WriteError(res, absl::InvalidArgumentError("timeoutSeconds must be an integer"));
      }
      if (seconds > 0) timeout = absl::Seconds(seconds);
    }
    absl::StatusOr<std::unique_ptr<Watcher>> watcher =
        store_->Watch(target.type->resource, options);
    if (!watcher.ok()) return WriteError(res, watcher.status());
    auto stream = std::make_shared<WatchStream>();
    stream->watcher = *std::move(watcher);
    stream->type = target.type;
    stream->deadline = absl::Now() + timeout;
    stream->bookmarks = ParamTrue(req, "allowWatchBookmarks");
    stream->next_bookmark = absl::Now() + options_.bookmark_interval;
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json",
        [this, stream](size_t, httplib::DataSink& sink) { return PumpWatch(*stream, sink); });
  }

  // Writes what is due on one watch; false aborts the connection.
  bool PumpWatch(WatchStream& stream, httplib::DataSink& sink) {
    if (stream.done) {
      sink.done();
      return true;
    }
    absl::Time wake = std::min(stream.deadline, absl::Now() + kLivenessTick);
    if (stream.bookmarks) wake = std::min(wake, stream.next_bookmark);
    std::vector<WatchEvent> events;
    absl::Status status = stream.watcher->Next(wake, &events);
    std::string out;
    for (const WatchEvent& event : events) {
      absl::StrAppend(&out, R"({"type":")", EventTypeName(event.type), R"(","object":)",
                      *event.text, "}\n");
    }
    if (absl::IsOutOfRange(status)) {
      absl::StrAppend(&out, R"({"type":"ERROR","object":)", Dump(StatusFor(status)), "}\n");
      stream.done = true;
    } else if (!status.ok()) {
      stream.done = true;  // the server is stopping: end the stream cleanly
    }
    absl::Time now = absl::Now();
    if (!stream.done && stream.bookmarks && now >= stream.next_bookmark) {
      absl::StrAppend(&out, R"({"type":"BOOKMARK","object":{"kind":")", stream.type->kind,
                      R"(","apiVersion":")", stream.type->ApiVersion(),
                      R"(","metadata":{"resourceVersion":")", stream.watcher->resource_version(),
                      "\"}}}\n");
      stream.next_bookmark = now + options_.bookmark_interval;
    }
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;
    if (now >= stream.deadline) stream.done = true;
    if (!stream.done && !events.empty() && events.size() < kWatchGatherBelow) {
      absl::SleepFor(kWatchGather);
    }
    if (stream.done) sink.done();
    return true;
  }

  struct LogStream {
    std::string namespace_name;
    std::string pod;
    std::string container;
    std::string pod_uid;
    size_t offset = 0;
    std::string pending;  // the lines read before the stream started
    bool done = false;
  };

  void HandleLog(const httplib::Request& req, httplib::Response& res, const Target& target) {
    LogOptions options;
    options.container = req.get_param_value("container");
    std::string tail = req.get_param_value("tailLines");
    if (!tail.empty() && !absl::SimpleAtoi(tail, &options.tail_lines)) {
      return WriteError(res, absl::InvalidArgumentError("tailLines must be an integer"));
    }
    absl::StatusOr<LogChunk> chunk = store_->ReadLog(target.namespace_name, target.name, options);
    if (!chunk.ok()) return WriteError(res, chunk.status());
    std::string text;
    for (const std::string& line : chunk->lines) absl::StrAppend(&text, line, "\n");
    if (!ParamTrue(req, "follow")) {
      res.status = 200;
      res.set_content(std::move(text), "text/plain");
      return;
    }
    auto stream = std::make_shared<LogStream>();
    stream->namespace_name = target.namespace_name;
    stream->pod = target.name;
    stream->container = chunk->container;
    stream->pod_uid = chunk->pod_uid;
    stream->offset = chunk->next_offset;
    stream->pending = std::move(text);
    res.status = 200;
    res.set_chunked_content_provider("text/plain", [this, stream](size_t, httplib::DataSink& sink) {
      return PumpLog(*stream, sink);
    });
  }

  bool PumpLog(LogStream& stream, httplib::DataSink& sink) {
    if (stream.done) {
      sink.done();
      return true;
    }
    std::string out = std::move(stream.pending);
    stream.pending.clear();
    if (out.empty()) {
      absl::StatusOr<LogChunk> chunk =
          store_->WaitLog(stream.namespace_name, stream.pod, stream.container, stream.pod_uid,
                          stream.offset, absl::Now() + kLivenessTick);
      if (!chunk.ok()) {
        stream.done = true;
      } else {
        for (const std::string& line : chunk->lines) absl::StrAppend(&out, line, "\n");
        stream.offset = chunk->next_offset;
        stream.done = chunk->ended;
      }
    }
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;
    if (stream.done) sink.done();
    return true;
  }

  void HandleCreate(const httplib::Request& req, httplib::Response& res, const Target& target) {
    if (!target.subresource.empty()) {
      return WriteStatus(res, 405, "MethodNotAllowed", "cannot create a subresource");
    }
    absl::StatusOr<json> body = ParseBody(req);
    if (!body.ok()) return WriteError(res, body.status());
    if (!body->is_object()) {
      return WriteError(res, absl::InvalidArgumentError("the body must be a JSON object"));
    }
    if (target.type->namespaced) {
      json& metadata = (*body)["metadata"];
      if (!metadata.is_object()) metadata = json::object();
      std::string ns = metadata.value("namespace", "");
      if (ns.empty()) {
        metadata["namespace"] = target.namespace_name;
      } else if (ns != target.namespace_name) {
        return WriteError(res, absl::InvalidArgumentError(
                                   "the namespace of the provided object does not match the "
                                   "namespace sent on the request"));
      }
    }
    Reply(res, 201, store_->Create(target.type->resource, *std::move(body)));
  }

  // Fills in or checks the URL's name and namespace in a PUT body.
  absl::Status MatchUrl(json& body, const Target& target) const {
    if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
    json& metadata = body["metadata"];
    if (!metadata.is_object()) metadata = json::object();
    std::string name = metadata.value("name", "");
    if (name != target.name) {
      return absl::InvalidArgumentError(absl::StrCat("the name of the object (", name,
                                                     ") does not match the name on the URL (",
                                                     target.name, ")"));
    }
    if (target.type->namespaced) {
      std::string ns = metadata.value("namespace", "");
      if (ns.empty()) {
        metadata["namespace"] = target.namespace_name;
      } else if (ns != target.namespace_name) {
        return absl::InvalidArgumentError(
            "the namespace of the provided object does not match the namespace sent on the "
            "request");
      }
    }
    return absl::OkStatus();
  }

  void HandleReplace(const httplib::Request& req, httplib::Response& res, const Target& target) {
    absl::StatusOr<json> body = ParseBody(req);
    if (!body.ok()) return WriteError(res, body.status());
    absl::Status matched = MatchUrl(*body, target);
    if (!matched.ok()) return WriteError(res, matched);
    if (target.subresource == "status") {
      return Reply(res, 200, store_->UpdateStatus(target.type->resource, *std::move(body)));
    }
    Reply(res, 200,
          store_->Update(target.type->resource, *std::move(body), target.type->status_subresource));
  }

  void HandlePatch(const httplib::Request& req, httplib::Response& res, const Target& target) {
    std::string content_type = req.get_header_value("Content-Type");
    absl::string_view media = content_type;
    media = media.substr(0, media.find(';'));
    media = absl::StripAsciiWhitespace(media);
    bool builtin = target.type->group != "argoproj.io";
    bool merge = media == "application/merge-patch+json" ||
                 (builtin && media == "application/strategic-merge-patch+json");
    bool json_patch = media == "application/json-patch+json";
    if (!merge && !json_patch) {
      return WriteStatus(res, 415, "UnsupportedMediaType",
                         absl::StrCat("the body of the request was in an unknown format - accepted "
                                      "media types include: application/json-patch+json, "
                                      "application/merge-patch+json",
                                      builtin ? ", application/strategic-merge-patch+json" : ""));
    }
    absl::StatusOr<json> body = ParseBody(req);
    if (!body.ok()) return WriteError(res, body.status());
    if (target.subresource == "log") {
      return WriteStatus(res, 405, "MethodNotAllowed", "cannot patch logs");
    }
    if (json_patch) {
      return Reply(
          res, 200,
          store_->JsonPatch(target.type->resource, target.namespace_name, target.name, *body));
    }
    Reply(res, 200,
          store_->MergePatch(target.type->resource, target.namespace_name, target.name, *body,
                             target.subresource == "status"));
  }

  void HandleDelete(const httplib::Request& req, httplib::Response& res, const Target& target) {
    std::string precondition;
    if (!req.body.empty()) {
      absl::StatusOr<json> body = ParseBody(req);
      if (!body.ok()) return WriteError(res, body.status());
      if (body->is_object()) {
        precondition = body->value(json::json_pointer("/preconditions/resourceVersion"), "");
      }
    }
    Reply(res, 200,
          store_->Delete(target.type->resource, target.namespace_name, target.name, precondition));
  }

  void HandleVersion(httplib::Response& res) const {
    json version = {{"major", "1"},
                    {"minor", "29"},
                    {"gitVersion", options_.git_version},
                    {"gitCommit", "0000000000000000000000000000000000000000"},
                    {"gitTreeState", "clean"},
                    {"buildDate", "2024-01-01T00:00:00Z"},
                    {"goVersion", "go1.21.0"},
                    {"compiler", "gc"},
                    {"platform", "linux/amd64"}};
    WriteJson(res, 200, Dump(version));
  }

  void HandleDiscovery(const std::vector<std::string>& segments, httplib::Response& res) const {
    if (segments.size() == 1 && segments[0] == "api") {
      json versions = {{"kind", "APIVersions"},
                       {"versions", {"v1"}},
                       {"serverAddressByClientCIDRs",
                        {{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", address_}}}}};
      return WriteJson(res, 200, Dump(versions));
    }
    if (segments.size() == 1 && segments[0] == "apis") {
      json groups = json::array();
      std::vector<std::string> seen;
      for (const ResourceType& type : ResourceTypes()) {
        if (type.group.empty() || absl::c_linear_search(seen, type.group)) continue;
        seen.push_back(type.group);
        json gv = {{"groupVersion", type.ApiVersion()}, {"version", type.version}};
        groups.push_back({{"name", type.group}, {"versions", {gv}}, {"preferredVersion", gv}});
      }
      return WriteJson(res, 200,
                       Dump({{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}}));
    }
    WriteNotFound(res, absl::StrCat("/", absl::StrJoin(segments, "/")));
  }

  bool HandleResourceList(const std::string& group, const std::string& version,
                          httplib::Response& res) const {
    json resources = json::array();
    for (const ResourceType& type : ResourceTypes()) {
      if (type.group != group || type.version != version) continue;
      resources.push_back(
          {{"name", type.resource},
           {"singularName", ""},
           {"namespaced", type.namespaced},
           {"kind", type.kind},
           {"verbs", {"create", "delete", "get", "list", "patch", "update", "watch"}}});
      if (type.status_subresource) {
        resources.push_back({{"name", type.resource + "/status"},
                             {"singularName", ""},
                             {"namespaced", type.namespaced},
                             {"kind", type.kind},
                             {"verbs", {"get", "patch", "update"}}});
      }
      if (type.resource == "pods") {
        resources.push_back({{"name", "pods/log"},
                             {"singularName", ""},
                             {"namespaced", true},
                             {"kind", "Pod"},
                             {"verbs", {"get"}}});
      }
    }
    if (resources.empty()) return false;
    std::string group_version = group.empty() ? version : absl::StrCat(group, "/", version);
    WriteJson(res, 200,
              Dump({{"kind", "APIResourceList"},
                    {"apiVersion", "v1"},
                    {"groupVersion", group_version},
                    {"resources", resources}}));
    return true;
  }

  ObjectStore* store_;
  const ApiServerOptions& options_;
  std::string address_;
};

ApiServer::ApiServer(ObjectStore* store, Options options)
    : store_(store), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(ObjectStore* store, Options options) {
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  size_t colon = options.listen_addr.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(options.listen_addr.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", options.listen_addr, "\" is not HOST:PORT"));
  }
  std::string host = options.listen_addr.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";

  auto server = std::unique_ptr<ApiServer>(new ApiServer(store, std::move(options)));
  const Options& opts = server->options_;
  if (opts.tls_cert_file.empty()) {
    server->server_ = std::make_unique<httplib::Server>();
  } else {
    server->server_ =
        std::make_unique<httplib::SSLServer>(opts.tls_cert_file.c_str(), opts.tls_key_file.c_str());
  }
  httplib::Server& http = *server->server_;
  if (!http.is_valid()) {
    return absl::UnavailableError(absl::StrCat("cannot load the TLS certificate ",
                                               opts.tls_cert_file, " and key ", opts.tls_key_file));
  }
  int threads = std::max(opts.threads, 4);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_keep_alive_max_count(1000);
  // Stop() waits this long for idle keep-alive connections.
  http.set_keep_alive_timeout(2);
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  http.set_payload_max_length(64 << 20);
  int bound = port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", opts.listen_addr));
  }
  server->host_ = host;
  server->port_ = bound;
  server->handler_ = std::make_unique<Handler>(store, server->options_, server->address());
  Handler* handler = server->handler_.get();
  auto handle = [handler](const httplib::Request& req, httplib::Response& res) {
    handler->Handle(req, res);
    log::Debug("request", {{"method", req.method}, {"path", req.path}, {"code", res.status}});
  };
  http.Get(".*", handle);
  http.Post(".*", handle);
  http.Put(".*", handle);
  http.Patch(".*", handle);
  http.Delete(".*", handle);
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 404) {
          WriteNotFound(res, req.path);
        } else {
          WriteStatus(res, res.status, "BadRequest", absl::StrCat("HTTP ", res.status));
        }
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        WriteStatus(res, 500, "InternalError", what);
      });
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  return server;
}

ApiServer::~ApiServer() { Stop(); }

void ApiServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  store_->Shutdown();
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string ApiServer::address() const {
  bool v6 = host_.find(':') != std::string::npos;
  return v6 ? absl::StrCat("[", host_, "]:", port_) : absl::StrCat(host_, ":", port_);
}

std::string ApiServer::base_url() const {
  return absl::StrCat(tls() ? "https://" : "http://", address());
}

}  // namespace elfdeploy::kubesim
