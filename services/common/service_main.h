#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/service_type.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/common/config.h"

namespace elfdeploy {

// Settings every binary has, under `server:` and `log:` in its config file.
struct ServerConfig {
  std::string grpc_addr;
  std::string metrics_addr;
  // TLS for the gRPC port: certificate chain and key (PEM files); plain text when both are empty.
  // With tls_client_ca_file, clients must present a certificate that chains to it (mutual TLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // After SIGTERM: how long health reports NOT_SERVING before the listener closes.
  absl::Duration drain_delay = absl::ZeroDuration();
  // After the listener closes: how long in-flight RPCs may run before they are cancelled.
  absl::Duration shutdown_grace = absl::Seconds(10);
  std::string log_level = "info";
  std::string log_format = "logfmt";
};

// What a binary adds to the chassis.
struct BinarySpec {
  // Short name used in logs and usage, e.g. "builder".
  std::string name;
  // Default listen addresses (DESIGN.md's ports). An empty gRPC address means no gRPC server.
  std::string default_grpc_addr;
  std::string default_metrics_addr;
  // Binds the binary's own config fields; their current values are the defaults.
  std::function<void(ConfigBinder&)> bind_config;
};

// What a started binary runs until SIGTERM/SIGINT.
class Component {
 public:
  virtual ~Component() = default;
  // gRPC services to serve, by full name; owned by the component.
  virtual std::vector<std::pair<std::string, grpc::Service*>> Services() { return {}; }
  // Called once after a termination signal, before the server drains.
  virtual void Stop() {}
};

struct ComponentContext {
  const ServerConfig& server;
  // Registry for the component's domain metrics; served on the metrics address.
  std::shared_ptr<prometheus::Registry> metrics;
};

using ComponentFactory =
    std::function<absl::StatusOr<std::unique_ptr<Component>>(const ComponentContext&)>;

// Flags (--config, --grpc_addr, --metrics_addr, --help, --version), config (defaults < YAML <
// environment < flags), logging, metrics, the gRPC server and signal handling for one binary.
// Returns the process exit code: 0 after a clean drain, 2 for bad flags or config, 1 when the
// component or the server cannot start.
int RunBinary(int argc, char** argv, const BinarySpec& spec, const ComponentFactory& factory);

// Fills `config` and the spec's own fields from the defaults, `config_file` (when not empty) and
// `getenv`. `effective` (optional) receives every field's final value, secrets redacted.
absl::Status LoadServerConfig(
    const BinarySpec& spec, const std::string& config_file, const ConfigBinder::Getenv& getenv,
    ServerConfig* config, std::vector<std::pair<std::string, std::string>>* effective = nullptr);

}  // namespace elfdeploy

namespace elfdeploy {

// A component that only serves gRPC services it owns.
class ServiceSet : public Component {
 public:
  // `full_name` is the proto service name, e.g. "elfdeploy.v1.BuilderService".
  void Add(std::string full_name, std::unique_ptr<grpc::Service> service) {
    services_.emplace_back(std::move(full_name), std::move(service));
  }
  std::vector<std::pair<std::string, grpc::Service*>> Services() override {
    std::vector<std::pair<std::string, grpc::Service*>> out;
    for (auto& [name, service] : services_) out.emplace_back(name, service.get());
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::unique_ptr<grpc::Service>>> services_;
};

// UNIMPLEMENTED for an RPC whose logic has not landed: names the RPC and what is missing.
grpc::Status NotImplementedYet(absl::string_view rpc, absl::string_view missing);

}  // namespace elfdeploy
