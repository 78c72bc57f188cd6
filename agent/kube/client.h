#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/kube/config.h"
#include "agent/kube/http.h"
#include "nlohmann/json.hpp"
#include "simdjson.h"

namespace elfdeploy::agent {

// The Kubernetes REST API over KubeHttp. Thread-safe; connections are pooled and reused.
//
// Errors come from the API server's Status object: 404 NOT_FOUND, 401 UNAUTHENTICATED,
// 403 PERMISSION_DENIED, 409 ALREADY_EXISTS (AlreadyExists) or ABORTED (Conflict),
// 410 OUT_OF_RANGE (Expired/Gone), 422/400 INVALID_ARGUMENT, 429 and 5xx UNAVAILABLE, transport
// failures UNAVAILABLE; each message names the method and path and carries the Status message.
class KubeClient {
 public:
  explicit KubeClient(KubeConfig config);
  ~KubeClient();

  // `path` is the request path and query, e.g. "/api/v1/namespaces/a/pods?limit=500".
  absl::StatusOr<nlohmann::json> Get(const std::string& path);
  absl::StatusOr<nlohmann::json> Create(const std::string& path, const nlohmann::json& object);
  absl::StatusOr<nlohmann::json> Replace(const std::string& path, const nlohmann::json& object);
  // RFC 7386 JSON merge patch.
  absl::StatusOr<nlohmann::json> MergePatch(const std::string& path, const nlohmann::json& patch);
  // A GET whose body is text (pod logs).
  absl::StatusOr<std::string> GetText(const std::string& path);

  // One watch request (`path` includes watch=1 and its query). Calls `on_event` with each event's
  // type ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR") and object, in order, until the
  // server ends the stream (OK), `on_event` returns false or `cancelled` returns true (CANCELLED),
  // or the request fails (the initial response's status as above).
  absl::Status Watch(const std::string& path,
                     const std::function<bool(std::string_view, simdjson::dom::element)>& on_event,
                     const std::function<bool()>& cancelled);

  // The server's gitVersion, e.g. "v1.29.2".
  absl::StatusOr<std::string> ServerVersion();

  const KubeConfig& config() const { return config_; }

 private:
  absl::StatusOr<std::unique_ptr<KubeHttp>> Take();
  void Give(std::unique_ptr<KubeHttp> client);
  absl::StatusOr<std::string> Token();
  absl::StatusOr<KubeHttp::Headers> MakeHeaders();
  absl::StatusOr<nlohmann::json> Call(const std::string& method, const std::string& path,
                                      const std::string& content_type, const std::string& body);

  const KubeConfig config_;
  KubeHttpOptions http_options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<KubeHttp>> idle_ ABSL_GUARDED_BY(mu_);
  std::string token_ ABSL_GUARDED_BY(mu_);
  absl::Time token_mtime_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// The absl::Status for a non-2xx response whose body may be a Kubernetes Status object.
absl::Status KubeError(long http_status, const std::string& body, const std::string& what);

}  // namespace elfdeploy::agent
