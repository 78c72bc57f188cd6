#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace elfdeploy {

// One HTTP request. Header names are matched case-insensitively by servers; keep them as sent.
struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
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
  // Disables certificate and host name checks. Only for tests and explicitly insecure config.
  bool insecure_skip_verify = false;
  absl::Duration timeout = absl::Seconds(30);
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

  // Performs `request`. Transport failures (refused, TLS, timeout) are UNAVAILABLE or
  // DEADLINE_EXCEEDED with curl's message; any HTTP status is a successful response.
  absl::StatusOr<HttpResponse> Do(const HttpRequest& request);

  // GET `url`.
  absl::StatusOr<HttpResponse> Get(const std::string& url);

 private:
  HttpClientOptions options_;
  void* curl_;  // CURL*
};

}  // namespace elfdeploy
