#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::testing {

// Where the build put the binaries and tools; set by CMake.
std::string BinaryPath(absl::string_view name);  // "elfdeploy-builder" -> <build>/bin/...
std::string BufPath();
std::string PromtoolPath();

struct ServiceProcessOptions {
  // "elfdeploy-builder", ...
  std::string binary;
  // Extra flags after --grpc_addr/--metrics_addr (which pick free ports on 127.0.0.1).
  std::vector<std::string> args = {};
  std::vector<std::pair<std::string, std::string>> env = {};
  // False for binaries that serve no gRPC (the agent).
  bool grpc = true;
  // The CA of a TLS gRPC port (server.tls_cert_file); empty for plain text. With a client CA on
  // the server, the health check presents this client certificate and key.
  std::string tls_ca_file = {};
  std::string tls_client_cert_file = {};
  std::string tls_client_key_file = {};
  absl::Duration start_timeout = absl::Seconds(30);
};

// One elfdeploy binary started as a child process on free ports, ready when Start returns: its
// "serving" log line was seen and, for gRPC binaries, grpc.health.v1 reports SERVING.
class ServiceProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServiceProcess>> Start(ServiceProcessOptions options);

  const std::string& grpc_addr() const { return grpc_addr_; }
  const std::string& metrics_addr() const { return metrics_addr_; }
  ChildProcess& process() { return *process_; }
  std::string Log() const { return process_->ReadLog(); }

 private:
  ServiceProcess() = default;

  std::optional<TempDir> dir_;  // declared first: removed after the process stops
  std::unique_ptr<ChildProcess> process_;
  std::string grpc_addr_;
  std::string metrics_addr_;
};

// The value of `key` in a logfmt line (unquoted), or "" when absent.
std::string LogfmtValue(absl::string_view line, absl::string_view key);

// Writes a kubeconfig whose current context reaches `server` (a kubesim URL) without credentials.
absl::Status WriteKubeconfig(const std::string& path, absl::string_view server);

// Health of `service` ("" = the server) at `grpc_addr`: "SERVING", "NOT_SERVING", ... or an error.
absl::StatusOr<std::string> CheckHealth(const std::string& grpc_addr,
                                        const std::string& service = "");
// The same over TLS, verified against the PEM CA in `ca_file`.
absl::StatusOr<std::string> CheckHealthTls(const std::string& grpc_addr, const std::string& ca_file,
                                           const std::string& client_cert_file = "",
                                           const std::string& client_key_file = "");

// Parses the Prometheus text exposition: the value of the sample `name` whose labels include
// all of `labels`; NOT_FOUND when no sample matches.
absl::StatusOr<double> MetricValue(absl::string_view exposition, absl::string_view name,
                                   const std::map<std::string, std::string>& labels = {});

// GET http://<metrics_addr>/metrics.
absl::StatusOr<std::string> ScrapeMetrics(const std::string& metrics_addr);

}  // namespace elfdeploy::testing
