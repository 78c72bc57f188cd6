#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/common/metrics.h"

namespace elfdeploy {

struct ServerOptions {
  // "host:port"; port 0 picks a free port (see Server::grpc_addr()).
  std::string grpc_addr = "127.0.0.1:0";
  std::string metrics_addr = "127.0.0.1:0";
  // TLS (PEM files); plain text when both are empty. A client CA requires client certificates.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Services to serve by full name ("elfdeploy.v1.BuilderService"); not owned, must outlive the
  // server. Health reports each name.
  std::vector<std::pair<std::string, grpc::Service*>> services;
  // Registry the services' own metrics live in; served beside the gRPC and process metrics.
  std::shared_ptr<prometheus::Registry> metrics_registry;
  // Largest message accepted, in bytes.
  int max_message_bytes = 64 << 20;
};

// A gRPC server with server reflection, grpc.health.v1.Health (overall "" and each service name),
// per-RPC metrics and the /metrics endpoint. Health is SERVING once Start returns.
class Server {
 public:
  // Binds both addresses and starts serving. UNAVAILABLE when an address cannot be bound;
  // INVALID_ARGUMENT when only one of the TLS files is set or one cannot be read.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);
  ~Server();

  // The addresses actually bound, "host:port".
  const std::string& grpc_addr() const { return grpc_addr_; }
  const std::string& metrics_addr() const { return metrics_->address(); }

  // Sets health of "" and every service to NOT_SERVING (draining) or back to SERVING.
  void SetServing(bool serving);

  // Drains: health NOT_SERVING at once, waits `drain_delay` so clients and load balancers see it,
  // stops accepting RPCs, lets in-flight RPCs finish until `grace` has passed, then cancels the
  // rest. Idempotent.
  void Shutdown(absl::Duration drain_delay, absl::Duration grace);

 private:
  Server() = default;

  std::unique_ptr<MetricsExposer> metrics_;
  std::shared_ptr<prometheus::Registry> grpc_registry_;
  std::shared_ptr<prometheus::Collectable> process_collector_;
  std::unique_ptr<GrpcServerMetrics> grpc_metrics_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::string> service_names_;
  std::string grpc_addr_;
  bool shut_down_ = false;
};

}  // namespace elfdeploy
