#include "services/common/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "services/common/log.h"

namespace elfdeploy {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  // Debian links with --as-needed: without this call the reflection library is dropped.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Registers grpc.health.v1 in the generated pool so reflection clients can describe Health.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);

  std::unique_ptr<Server> server(new Server());
  absl::StatusOr<std::unique_ptr<MetricsExposer>> metrics =
      MetricsExposer::Start(options.metrics_addr);
  if (!metrics.ok()) return metrics.status();
  server->metrics_ = *std::move(metrics);
  server->grpc_registry_ = std::make_shared<prometheus::Registry>();
  server->grpc_metrics_ = std::make_unique<GrpcServerMetrics>(*server->grpc_registry_);
  server->process_collector_ = std::make_shared<ProcessCollector>();
  server->metrics_->Register(server->grpc_registry_);
  server->metrics_->Register(server->process_collector_);
  if (options.metrics_registry != nullptr) server->metrics_->Register(options.metrics_registry);

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    auto read = [](const std::string& path, const char* what) -> absl::StatusOr<std::string> {
      std::ifstream in(path);
      std::stringstream text;
      text << in.rdbuf();
      if (path.empty() || !in || text.str().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("server.", what, " \"", path, "\" cannot be read"));
      }
      return text.str();
    };
    absl::StatusOr<std::string> cert = read(options.tls_cert_file, "tls_cert_file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = read(options.tls_key_file, "tls_key_file");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    if (!options.tls_client_ca_file.empty()) {
      absl::StatusOr<std::string> ca = read(options.tls_client_ca_file, "tls_client_ca_file");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.grpc_addr, credentials, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // gRPC sets SO_REUSEPORT by default: a second server on a taken port would silently share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (const auto& [name, service] : options.services) {
    builder.RegisterService(service);
    server->service_names_.push_back(name);
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(server->grpc_metrics_->MakeInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("gRPC address ", options.grpc_addr, " cannot be served (in use or invalid)"));
  }
  server->grpc_addr_ =
      absl::StrCat(options.grpc_addr.substr(0, options.grpc_addr.rfind(':')), ":", port);

  server->SetServing(true);
  return server;
}

Server::~Server() { Shutdown(absl::ZeroDuration(), absl::ZeroDuration()); }

void Server::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  for (const std::string& name : service_names_) health->SetServingStatus(name, serving);
  health->SetServingStatus(serving);
}

void Server::Shutdown(absl::Duration drain_delay, absl::Duration grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  SetServing(false);
  if (drain_delay > absl::ZeroDuration()) absl::SleepFor(drain_delay);
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(grace)));
  server_->Wait();
}

}  // namespace elfdeploy
