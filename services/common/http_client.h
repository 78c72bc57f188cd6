#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace elfdeploy {

// One HTTP request. Header names are matched case-insensitively by servers; keep them as sent.
struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // When set, the body is read from this file instead: `body_length` bytes from `body_offset`.
  std::string body_file;
  int64_t body_offset = 0;
  int64_t body_length = 0;
  // When set (and body_file is not), the body is `body_length` bytes pulled from this function:
  // it fills up to `max` bytes of `buffer` and returns how many (blocking until some are there),
  // or -1 to abort the request (the call fails with UNAVAILABLE).
  std::function<int64_t(char* buffer, size_t max)> body_reader;
  // When set, a 2xx response's body is handed to this function chunk by chunk instead of being
  // kept in HttpResponse::body; returning false aborts the transfer (the call fails with ABORTED).
  std::function<bool(absl::string_view)> body_sink;
  // Skips certificate checks for this request (registries configured as insecure).
  bool skip_tls_verify = false;
  // Polled about once a second and on progress; returning true aborts the transfer (the call
  // fails with CANCELLED). Lets a long watch or download end promptly on shutdown.
  std::function<bool()> cancelled;
  // Basic auth; the password is never logged.
  std::string username;
  std::string password;
};

struct HttpResponse {
  long status = 0;
  // Lower-cased header names; the last value wins for repeated headers.
  std::map<std::string, std::string> headers;
  std::string body;

  // The value of `name` (lower-case), or "" when absent.
  std::string Header(const std::string& name) const;
};

struct HttpClientOptions {
  // PEM bundle to verify servers with; empty means the system store.
  std::string ca_file;
  // The same as PEM text (e.g. a kubeconfig's certificate-authority-data); used when set.
  std::string ca_pem;
  // With ca_file or ca_pem: trust them in addition to the system store (Docker's certs.d), not
  // instead of it (a kubeconfig's CA).
  bool ca_extends_system_store = false;
  // Client certificate and key for mutual TLS, as files or as PEM text.
  std::string client_cert_file;
  std::string client_key_file;
  std::string client_cert_pem;
  std::string client_key_pem;
  // Disables certificate and host name checks. Only for tests and explicitly insecure config.
  bool insecure_skip_verify = false;
  // Whole-transfer limit; 0 means none (large blobs), see low_speed_timeout instead.
  absl::Duration timeout = absl::Seconds(30);
  // Aborts a transfer that moves fewer than 1 KiB/s for this long; 0 disables.
  absl::Duration low_speed_timeout = absl::ZeroDuration();
  absl::Duration connect_timeout = absl::Seconds(10);
  bool follow_redirects = true;
};

// A blocking HTTP/1.1 client over libcurl. Connections are reused across calls on one client.
// Not thread-safe: use one client per thread.
class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Performs `request`. Transport failures (refused, reset, TLS, timeout) are UNAVAILABLE or
  // DEADLINE_EXCEEDED with curl's message; any HTTP status is a successful response.
  absl::StatusOr<HttpResponse> Do(const HttpRequest& request);

  // GET `url`.
  absl::StatusOr<HttpResponse> Get(const std::string& url);

 private:
  HttpClientOptions options_;
  void* curl_;  // CURL*
};

}  // namespace elfdeploy
