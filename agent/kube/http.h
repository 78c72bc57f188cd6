#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace httplib {
class ClientImpl;
}  // namespace httplib

namespace elfdeploy::agent {

// TLS and timeouts of the connection to one API server.
struct KubeHttpOptions {
  // "https://host:port" or "http://host:port" (a path prefix is not supported).
  std::string server;
  // CA bundle verifying the server, as a file or as PEM text; both empty means the system store.
  std::string ca_file;
  std::string ca_pem;
  // Client certificate and key (mutual TLS), as files or as PEM text.
  std::string client_cert_file;
  std::string client_key_file;
  std::string client_cert_pem;
  std::string client_key_pem;
  // Skips certificate and host name checks (kubeconfig insecure-skip-tls-verify).
  bool insecure_skip_verify = false;
  absl::Duration connect_timeout = absl::Seconds(10);
  // Longest wait for the next bytes of a response; zero means none (watches, which end by their
  // own timeoutSeconds).
  absl::Duration read_timeout = absl::Seconds(60);
};

struct KubeHttpResponse {
  int status = 0;
  // The body; for a streamed 2xx response, empty (it went to the sink).
  std::string body;
};

// One keep-alive HTTP/1.1 connection to an API server over cpp-httplib and OpenSSL (the library
// gRPC already loads): the agent needs no libcurl and none of its dependencies, which keeps its
// footprint on the Argo CD machine small. Not thread-safe; pool one per thread.
class KubeHttp {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // INVALID_ARGUMENT for a bad server URL or unreadable TLS material.
  static absl::StatusOr<std::unique_ptr<KubeHttp>> Create(const KubeHttpOptions& options);
  ~KubeHttp();
  KubeHttp(const KubeHttp&) = delete;
  KubeHttp& operator=(const KubeHttp&) = delete;

  // Sends `method path` (path with its query); any HTTP status is a response. Transport failures
  // (refused, reset, TLS, timeout) are UNAVAILABLE with what failed.
  absl::StatusOr<KubeHttpResponse> Do(const std::string& method, const std::string& path,
                                      const Headers& headers, const std::string& content_type,
                                      const std::string& body);

  // GET whose 2xx body goes to `sink` chunk by chunk as it arrives (a non-2xx body is returned
  // in the response). `sink` returning false ends the request (ABORTED); `cancelled` is polled
  // about every 200 ms, also while no bytes arrive, and ends it with CANCELLED.
  absl::StatusOr<KubeHttpResponse> Stream(const std::string& path, const Headers& headers,
                                          const std::function<bool(absl::string_view)>& sink,
                                          const std::function<bool()>& cancelled);

 private:
  KubeHttp(std::unique_ptr<httplib::ClientImpl> client, int ca_fd);

  std::unique_ptr<httplib::ClientImpl> client_;
  int ca_fd_;  // memfd holding the CA given as PEM text; -1 when none
};

}  // namespace elfdeploy::agent
