#include "services/common/server.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <optional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "elfdeploy/v1/builder.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "services/common/client_tls.h"
#include "services/common/grpc_status.h"
#include "tests/harness/pki.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy {
namespace {

using ::elfdeploy::testing::CheckHealth;
using ::elfdeploy::testing::MetricValue;
using ::elfdeploy::testing::ScrapeMetrics;
using ::testing::HasSubstr;

// Scaffold waits until released (or 10 s), then succeeds; Build is left to the generated base.
class SlowBuilder final : public v1::BuilderService::Service {
 public:
  grpc::Status Scaffold(grpc::ServerContext*, const v1::ScaffoldRequest*,
                        v1::ScaffoldResponse*) override {
    started.Notify();
    release.WaitForNotificationWithTimeout(absl::Seconds(10));
    return grpc::Status::OK;
  }
  absl::Notification started;
  absl::Notification release;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.services = {{v1::BuilderService::service_full_name(), &builder_}};
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->grpc_addr(), grpc::InsecureChannelCredentials());
    stub_ = v1::BuilderService::NewStub(channel_);
  }

  grpc::Status CallScaffold() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::ScaffoldResponse response;
    return stub_->Scaffold(&context, v1::ScaffoldRequest(), &response);
  }

  SlowBuilder builder_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BuilderService::Stub> stub_;
};

TEST_F(ServerTest, HealthIsServingForServerAndEachService) {
  EXPECT_EQ(CheckHealth(server_->grpc_addr()).value_or("error"), "SERVING");
  EXPECT_EQ(CheckHealth(server_->grpc_addr(), "elfdeploy.v1.BuilderService").value_or("error"),
            "SERVING");
  EXPECT_EQ(CheckHealth(server_->grpc_addr(), "no.such.Service").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ServerTest, MetricsCountEveryRpcWithItsCode) {
  builder_.release.Notify();
  ASSERT_TRUE(CallScaffold().ok());
  {
    grpc::ClientContext context;
    auto reader = stub_->Build(&context, v1::BuildRequest());
    v1::BuildResponse event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  absl::StatusOr<std::string> text = ScrapeMetrics(server_->metrics_addr());
  ASSERT_TRUE(text.ok()) << text.status();
  const std::map<std::string, std::string> scaffold = {
      {"grpc_service", "elfdeploy.v1.BuilderService"},
      {"grpc_method", "Scaffold"},
      {"grpc_type", "unary"}};
  EXPECT_EQ(MetricValue(*text, "grpc_server_started_total", scaffold).value_or(-1), 1);
  auto ok = scaffold;
  ok["grpc_code"] = "OK";
  EXPECT_EQ(MetricValue(*text, "grpc_server_handled_total", ok).value_or(-1), 1);
  EXPECT_EQ(MetricValue(*text, "grpc_server_handling_seconds_count", scaffold).value_or(-1), 1);
  EXPECT_EQ(MetricValue(*text, "grpc_server_msg_received_total", scaffold).value_or(-1), 1);
  EXPECT_EQ(MetricValue(*text, "grpc_server_handled_total",
                        {{"grpc_method", "Build"},
                         {"grpc_type", "server_stream"},
                         {"grpc_code", "Unimplemented"}})
                .value_or(-1),
            1);
  EXPECT_GT(MetricValue(*text, "process_resident_memory_bytes").value_or(0), 1e6);
  EXPECT_GT(MetricValue(*text, "process_start_time_seconds").value_or(0), 1.7e9);
  EXPECT_GE(MetricValue(*text, "process_cpu_seconds_total").value_or(-1), 0);
}

TEST_F(ServerTest, ShutdownReportsNotServingAndLetsInFlightRpcsFinish) {
  std::atomic<int> code{-1};
  std::thread call([&] { code = CallScaffold().error_code(); });
  ASSERT_TRUE(builder_.started.WaitForNotificationWithTimeout(absl::Seconds(10)));

  std::thread shutdown([&] { server_->Shutdown(absl::Milliseconds(800), absl::Seconds(10)); });
  // During the drain delay health reports NOT_SERVING while the RPC is still running.
  absl::StatusOr<std::string> health;
  for (int i = 0; i < 50; ++i) {
    health = CheckHealth(server_->grpc_addr());
    if (health.ok() && *health == "NOT_SERVING") break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(health.value_or("error"), "NOT_SERVING");
  EXPECT_EQ(code.load(), -1);
  builder_.release.Notify();
  call.join();
  shutdown.join();
  EXPECT_EQ(code.load(), static_cast<int>(grpc::StatusCode::OK));
  EXPECT_FALSE(CheckHealth(server_->grpc_addr()).ok());  // the listener is closed
}

TEST(ServerStartTest, AddressInUseIsUnavailable) {
  absl::StatusOr<std::unique_ptr<Server>> first = Server::Start(ServerOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions options;
  options.grpc_addr = (*first)->grpc_addr();
  absl::StatusOr<std::unique_ptr<Server>> second = Server::Start(std::move(options));
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr((*first)->grpc_addr()));

  ServerOptions metrics_clash;
  metrics_clash.metrics_addr = (*first)->metrics_addr();
  EXPECT_EQ(Server::Start(std::move(metrics_clash)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(GrpcStatusTest, ConvertsCodesAndMessagesBothWays) {
  absl::Status s = absl::NotFoundError("image docker://x/y:1 not found");
  grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "image docker://x/y:1 not found");
  EXPECT_EQ(FromGrpcStatus(g), s);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::FAILED_PRECONDITION), "FailedPrecondition");
}

}  // namespace
}  // namespace elfdeploy

namespace elfdeploy {
namespace {

// A CA, and a server and a client certificate it signed.
class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("server-tls-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    absl::Status pki = testing::WriteTestPki(dir_->path(), {"server", "client"});
    ASSERT_TRUE(pki.ok()) << pki;
  }

  std::string Read(const std::string& name) {
    absl::StatusOr<std::string> text = testing::ReadFile(dir_->Join(name));
    EXPECT_TRUE(text.ok());
    return text.value_or("");
  }

  std::optional<testing::TempDir> dir_;
};

absl::StatusOr<std::string> HealthOver(const std::string& addr,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials,
                                       int deadline_seconds = 2) {
  auto channel = grpc::CreateChannel(addr, credentials);
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(deadline_seconds));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

TEST_F(TlsServerTest, ServesTlsAndRequiresClientCertificatesWithAClientCa) {
  ServerOptions options;
  options.tls_cert_file = dir_->Join("server.pem");
  options.tls_key_file = dir_->Join("server.key");
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  grpc::SslCredentialsOptions pinned;
  pinned.pem_root_certs = Read("ca.pem");
  EXPECT_EQ(HealthOver((*server)->grpc_addr(), grpc::SslCredentials(pinned), 20).value_or("error"),
            "SERVING");
  EXPECT_FALSE(HealthOver((*server)->grpc_addr(), grpc::InsecureChannelCredentials()).ok());
  grpc::SslCredentialsOptions other_ca;
  other_ca.pem_root_certs = Read("client.pem");  // not the CA that signed the server
  EXPECT_FALSE(HealthOver((*server)->grpc_addr(), grpc::SslCredentials(other_ca)).ok());
  (*server)->Shutdown(absl::ZeroDuration(), absl::Seconds(1));

  options.tls_client_ca_file = dir_->Join("ca.pem");
  absl::StatusOr<std::unique_ptr<Server>> mutual = Server::Start(options);
  ASSERT_TRUE(mutual.ok()) << mutual.status();
  EXPECT_FALSE(HealthOver((*mutual)->grpc_addr(), grpc::SslCredentials(pinned)).ok());
  grpc::SslCredentialsOptions with_cert = pinned;
  with_cert.pem_cert_chain = Read("client.pem");
  with_cert.pem_private_key = Read("client.key");
  EXPECT_EQ(
      HealthOver((*mutual)->grpc_addr(), grpc::SslCredentials(with_cert), 20).value_or("error"),
      "SERVING");
  (*mutual)->Shutdown(absl::ZeroDuration(), absl::Seconds(1));

  ServerOptions half;
  half.tls_cert_file = dir_->Join("server.pem");
  EXPECT_EQ(Server::Start(half).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TlsServerTest, ClientCredentialsDialTlsPeersAndRefuseBadFiles) {
  ServerOptions options;
  options.tls_cert_file = dir_->Join("server.pem");
  options.tls_key_file = dir_->Join("server.key");
  options.tls_client_ca_file = dir_->Join("ca.pem");
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> mutual =
      ClientCredentials({dir_->Join("ca.pem"), dir_->Join("client.pem"), dir_->Join("client.key")});
  ASSERT_TRUE(mutual.ok()) << mutual.status();
  EXPECT_EQ(HealthOver((*server)->grpc_addr(), *mutual, 20).value_or("error"), "SERVING");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> no_cert =
      ClientCredentials({dir_->Join("ca.pem")});
  ASSERT_TRUE(no_cert.ok());
  EXPECT_FALSE(HealthOver((*server)->grpc_addr(), *no_cert).ok());
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> plain = ClientCredentials({});
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(HealthOver((*server)->grpc_addr(), *plain).ok());
  (*server)->Shutdown(absl::ZeroDuration(), absl::Seconds(1));

  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> missing =
      ClientCredentials({dir_->Join("nope.pem")});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), ::testing::HasSubstr("nope.pem"));
  EXPECT_EQ(ClientCredentials({dir_->Join("ca.pem"), dir_->Join("client.pem")}).status().code(),
            absl::StatusCode::kInvalidArgument);  // certificate without key
  EXPECT_EQ(
      ClientCredentials({"", dir_->Join("client.pem"), dir_->Join("client.key")}).status().code(),
      absl::StatusCode::kInvalidArgument);  // client certificate without a CA
}

}  // namespace
}  // namespace elfdeploy
