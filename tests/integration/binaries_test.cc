// End-to-end checks of the six binaries as users run them: real processes on free ports, a
// reflection-only client (buf curl), promtool, signals.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy::testing {
namespace {

using ::testing::HasSubstr;

struct BinaryCase {
  std::string binary;
  // Services reflection must list (besides grpc.health.v1.Health); empty for the agent.
  std::vector<std::string> services;
};

void PrintTo(const BinaryCase& c, std::ostream* os) { *os << c.binary; }

std::string CaseName(const ::testing::TestParamInfo<BinaryCase>& info) {
  std::string name = info.param.binary.substr(std::string("elfdeploy-").size());
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

absl::StatusOr<CommandResult> Buf(std::vector<std::string> args) {
  ProcessOptions options;
  options.argv = {BufPath(), "curl", "--protocol", "grpc", "--http2-prior-knowledge"};
  for (std::string& arg : args) options.argv.push_back(std::move(arg));
  // buf keeps a cache under $HOME; keep it out of the user's home.
  options.env = {{"BUF_CACHE_DIR", absl::StrCat(::testing::TempDir(), "/buf-cache")}};
  return RunCommand(std::move(options), absl::Seconds(60));
}

class BinaryTest : public ::testing::TestWithParam<BinaryCase> {
 protected:
  void SetUp() override {
    ServiceProcessOptions options;
    options.binary = GetParam().binary;
    options.grpc = !GetParam().services.empty();
    // Open Watch streams are cancelled when the grace ends; keep the SIGTERM test short.
    options.env = {{"ELFDEPLOY_SERVER_SHUTDOWN_GRACE", "2s"}};
    if (GetParam().binary == "elfdeploy-orchestrator") {
      absl::StatusOr<TempDir> dir = TempDir::Create("orchestrator-");
      ASSERT_TRUE(dir.ok()) << dir.status();
      dir_.emplace(*std::move(dir));
      options.env.emplace_back("ELFDEPLOY_ORCHESTRATOR_DATA_DIR", dir_->Join("data"));
    }
    if (GetParam().binary == "elfdeploy-cluster-watcher") {
      absl::StatusOr<TempDir> dir = TempDir::Create("watcher-");
      ASSERT_TRUE(dir.ok()) << dir.status();
      dir_.emplace(*std::move(dir));
      options.env.emplace_back("ELFDEPLOY_WATCHER_DATA_DIR", dir_->Join("data"));
    }
    if (GetParam().binary == "elfdeploy-agent") {
      // A cluster and a watcher that are not there: the agent starts and keeps retrying both.
      absl::StatusOr<TempDir> dir = TempDir::Create("agent-");
      ASSERT_TRUE(dir.ok()) << dir.status();
      dir_.emplace(*std::move(dir));
      std::string kubeconfig = dir_->Join("kubeconfig");
      ASSERT_TRUE(WriteFile(kubeconfig, R"(apiVersion: v1
kind: Config
current-context: none
clusters: [{name: none, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: none, user: {token: x}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
)")
                      .ok());
      options.env.emplace_back("ELFDEPLOY_AGENT_KUBECONFIG", kubeconfig);
      options.env.emplace_back("ELFDEPLOY_AGENT_INSECURE", "true");
      options.env.emplace_back("ELFDEPLOY_AGENT_WATCHER_ADDR", "127.0.0.1:1");
    }
    absl::StatusOr<std::unique_ptr<ServiceProcess>> service = ServiceProcess::Start(options);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<ServiceProcess> service_;
};

// Binaries that serve gRPC.
class GrpcBinaryTest : public BinaryTest {};

TEST_P(GrpcBinaryTest, HealthIsServingForEachService) {
  for (const std::string& name : GetParam().services) {
    EXPECT_EQ(CheckHealth(service_->grpc_addr(), name).value_or("error"), "SERVING") << name;
  }
}

TEST_P(GrpcBinaryTest, ReflectionListsServicesAndDescribesHealth) {
  std::string url = absl::StrCat("http://", service_->grpc_addr());
  absl::StatusOr<CommandResult> list = Buf({"--list-services", url});
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->exit_code, 0) << list->output;
  std::vector<std::string> listed = absl::StrSplit(list->output, '\n', absl::SkipEmpty());
  EXPECT_THAT(listed, ::testing::Contains("grpc.health.v1.Health"));
  for (const std::string& name : GetParam().services) {
    EXPECT_THAT(listed, ::testing::Contains(name));
  }

  // Health/Check through reflection alone: the schema must be describable.
  absl::StatusOr<CommandResult> check =
      Buf({"-d", "{}", absl::StrCat(url, "/grpc.health.v1.Health/Check")});
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->exit_code, 0) << check->output;
  EXPECT_THAT(check->output, HasSubstr("\"status\": \"SERVING\""));
}

// Every elfdeploy RPC given an empty request fails with a reason: INVALID_ARGUMENT naming the
// missing input, or, until its issue lands, UNIMPLEMENTED naming what is missing. None fakes
// success.
TEST_P(GrpcBinaryTest, EveryRpcRejectsAnEmptyRequestWithAReason) {
  std::string url = absl::StrCat("http://", service_->grpc_addr());
  absl::StatusOr<CommandResult> list = Buf({"--list-methods", url});
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->exit_code, 0) << list->output;
  // Where an empty request is valid, the answer it must get instead ("ok" for success); Watch
  // streams until cancelled and is left to the watcher's own tests.
  const std::map<std::string, std::string> kValidWhenEmpty = {
      {"elfdeploy.v1.ClusterWatcherService/ListClusters", "ok"},
      {"elfdeploy.v1.OrchestratorService/ListRollouts", "ok"},
      {"elfdeploy.v1.ClusterWatcherService/ListPods", "not_found"},  // no cluster known yet
      {"elfdeploy.v1.ClusterWatcherService/Watch", ""},
      {"elfdeploy.v1.AgentLinkService/Connect", "unauthenticated"},  // no token
  };
  int calls = 0;
  for (absl::string_view method : absl::StrSplit(list->output, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(method, "elfdeploy.v1.")) continue;
    auto valid = kValidWhenEmpty.find(std::string(method));
    if (valid != kValidWhenEmpty.end() && valid->second.empty()) continue;
    absl::StatusOr<CommandResult> call = Buf({"-d", "{}", absl::StrCat(url, "/", method)});
    ASSERT_TRUE(call.ok()) << call.status();
    if (valid != kValidWhenEmpty.end()) {
      if (valid->second == "ok") {
        EXPECT_EQ(call->exit_code, 0) << method << ": " << call->output;
      } else {
        EXPECT_THAT(call->output, HasSubstr(absl::StrCat("\"code\": \"", valid->second, "\"")))
            << method;
      }
      ++calls;
      continue;
    }
    EXPECT_NE(call->exit_code, 0) << method;
    if (absl::StrContains(call->output, "\"code\": \"unimplemented\"")) {
      EXPECT_THAT(call->output, HasSubstr(absl::StrCat(method, " is not implemented yet: ")))
          << call->output;
    } else {
      EXPECT_THAT(call->output, HasSubstr("\"code\": \"invalid_argument\"")) << call->output;
    }
    ++calls;
  }
  EXPECT_GE(calls, 2) << list->output;
}

TEST_P(BinaryTest, MetricsPassPromtoolAndCountRpcs) {
  absl::StatusOr<std::string> before = ScrapeMetrics(service_->metrics_addr());
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(MetricValue(*before, "process_resident_memory_bytes").value_or(0), 0);
  EXPECT_GT(MetricValue(*before, "process_start_time_seconds").value_or(0), 0);

  const std::map<std::string, std::string> check = {
      {"grpc_service", "grpc.health.v1.Health"}, {"grpc_method", "Check"}, {"grpc_code", "OK"}};
  double handled_before = 0;
  if (!GetParam().services.empty()) {
    handled_before = MetricValue(*before, "grpc_server_handled_total", check).value_or(0);
    ASSERT_TRUE(CheckHealth(service_->grpc_addr()).ok());
  }
  absl::StatusOr<std::string> after = ScrapeMetrics(service_->metrics_addr());
  ASSERT_TRUE(after.ok()) << after.status();
  if (!GetParam().services.empty()) {
    EXPECT_EQ(MetricValue(*after, "grpc_server_handled_total", check).value_or(-1),
              handled_before + 1);
  }

  absl::StatusOr<TempDir> dir = TempDir::Create("promtool-");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteFile(dir->Join("metrics.txt"), *after).ok());
  ProcessOptions promtool;
  promtool.argv = {"/bin/sh", "-c",
                   absl::StrCat(PromtoolPath(), " check metrics < ", dir->Join("metrics.txt"))};
  absl::StatusOr<CommandResult> result = RunCommand(std::move(promtool));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->output;
  EXPECT_EQ(result->output, "") << "promtool found problems";
}

TEST_P(BinaryTest, SigtermDrainsAndExitsZero) {
  std::thread watcher;
  std::atomic<bool> saw_not_serving{false};
  if (!GetParam().services.empty()) {
    auto channel = grpc::CreateChannel(service_->grpc_addr(), grpc::InsecureChannelCredentials());
    auto stub = grpc::health::v1::Health::NewStub(channel);
    auto context = std::make_shared<grpc::ClientContext>();
    auto reader = std::shared_ptr<grpc::ClientReader<grpc::health::v1::HealthCheckResponse>>(
        stub->Watch(context.get(), grpc::health::v1::HealthCheckRequest()));
    grpc::health::v1::HealthCheckResponse first;
    ASSERT_TRUE(reader->Read(&first));
    ASSERT_EQ(first.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    watcher = std::thread([reader, context, stub = std::move(stub), &saw_not_serving] {
      grpc::health::v1::HealthCheckResponse update;
      while (reader->Read(&update)) {
        if (update.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING) {
          saw_not_serving = true;
        }
      }
      reader->Finish();
    });
  }
  ASSERT_TRUE(service_->process().Signal(SIGTERM).ok());
  absl::StatusOr<int> code = service_->process().WaitForExit(absl::Seconds(30));
  if (watcher.joinable()) watcher.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << service_->Log();
  std::string log = service_->Log();
  EXPECT_THAT(log, HasSubstr("msg=draining signal=SIGTERM drain_delay=0 shutdown_grace=2s"));
  EXPECT_THAT(log, HasSubstr("msg=stopped"));
  if (!GetParam().services.empty()) {
    EXPECT_TRUE(saw_not_serving);
  }
}

const BinaryCase kGrpcBinaries[] = {
    {"elfdeploy-orchestrator", {"elfdeploy.v1.OrchestratorService"}},
    {"elfdeploy-builder", {"elfdeploy.v1.BuilderService"}},
    {"elfdeploy-registry-sync", {"elfdeploy.v1.RegistrySyncService"}},
    {"elfdeploy-manifest-publisher", {"elfdeploy.v1.ManifestPublisherService"}},
    {"elfdeploy-cluster-watcher",
     {"elfdeploy.v1.ClusterWatcherService", "elfdeploy.v1.AgentLinkService"}},
};
const BinaryCase kAgent = {"elfdeploy-agent", {}};

INSTANTIATE_TEST_SUITE_P(AllBinaries, BinaryTest,
                         ::testing::Values(kGrpcBinaries[0], kGrpcBinaries[1], kGrpcBinaries[2],
                                           kGrpcBinaries[3], kGrpcBinaries[4], kAgent),
                         CaseName);
INSTANTIATE_TEST_SUITE_P(GrpcBinaries, GrpcBinaryTest, ::testing::ValuesIn(kGrpcBinaries),
                         CaseName);

// Start-up failures: a bad config key, a bad flag value, the version flag.
class StartupTest : public ::testing::TestWithParam<std::string> {
 protected:
  absl::StatusOr<CommandResult> Run(std::vector<std::string> args,
                                    std::vector<std::pair<std::string, std::string>> env = {}) {
    ProcessOptions options;
    options.argv = {BinaryPath(GetParam())};
    for (std::string& arg : args) options.argv.push_back(std::move(arg));
    options.env = std::move(env);
    return RunCommand(std::move(options), absl::Seconds(30));
  }
};

TEST_P(StartupTest, UnknownConfigKeyExitsTwoNamingKeyAndLine) {
  absl::StatusOr<TempDir> dir = TempDir::Create("config-");
  ASSERT_TRUE(dir.ok());
  std::string config = dir->Join("config.yaml");
  ASSERT_TRUE(WriteFile(config, "log:\n  level: debug\nserver:\n  grcp_addr: 127.0.0.1:1\n").ok());
  absl::StatusOr<CommandResult> result = Run({"--config", config});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 2) << result->output;
  EXPECT_THAT(result->output,
              HasSubstr(absl::StrCat(config, ":4:3: unknown key \"server.grcp_addr\"")));
}

TEST_P(StartupTest, BadEnvironmentOverrideExitsTwo) {
  absl::StatusOr<CommandResult> result = Run({}, {{"ELFDEPLOY_SERVER_SHUTDOWN_GRACE", "soon"}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 2) << result->output;
  EXPECT_THAT(result->output, HasSubstr("ELFDEPLOY_SERVER_SHUTDOWN_GRACE"));
}

TEST_P(StartupTest, VersionFlagPrintsVersion) {
  absl::StatusOr<CommandResult> result = Run({"--version"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_THAT(result->output, HasSubstr(absl::StrCat(GetParam(), " 0.1.0")));
}

TEST_P(StartupTest, HelpListsFlagsAndConfigKeysAndExitsZero) {
  absl::StatusOr<CommandResult> result = Run({"--help"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_THAT(result->output, HasSubstr("--config FILE"));
  EXPECT_THAT(result->output,
              HasSubstr("server.shutdown_grace\n      env ELFDEPLOY_SERVER_SHUTDOWN_GRACE"));
}

TEST_P(StartupTest, MissingConfigFileFailsStartup) {
  absl::StatusOr<CommandResult> result = Run({"--config", "/nonexistent/elfdeploy.yaml"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 2);
  EXPECT_THAT(result->output, HasSubstr("/nonexistent/elfdeploy.yaml"));
}

INSTANTIATE_TEST_SUITE_P(AllBinaries, StartupTest,
                         ::testing::Values("elfdeploy-orchestrator", "elfdeploy-builder",
                                           "elfdeploy-registry-sync",
                                           "elfdeploy-manifest-publisher",
                                           "elfdeploy-cluster-watcher", "elfdeploy-agent"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(10);
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(OrchestratorConfigTest, SeedEnvironmentVariablesAndConfigFileApply) {
  absl::StatusOr<TempDir> dir = TempDir::Create("config-");
  ASSERT_TRUE(dir.ok());
  std::string config = dir->Join("orchestrator.yaml");
  ASSERT_TRUE(WriteFile(config, "gitops:\n  branch: release\n  path_prefix: apps\n").ok());
  ServiceProcessOptions options;
  options.binary = "elfdeploy-orchestrator";
  options.args = {"--config", config};
  options.env = {{"DOCKER_REGISTRY", "registry.example.com:5000"},
                 {"GITOPS_REPO", "https://ci:s3cr3t@git.example.com/org/gitops.git"},
                 {"ELFDEPLOY_GITOPS_PATH_PREFIX", "elf-automations"},
                 {"ELFDEPLOY_ORCHESTRATOR_DATA_DIR", dir->Join("data")}};
  absl::StatusOr<std::unique_ptr<ServiceProcess>> service = ServiceProcess::Start(options);
  ASSERT_TRUE(service.ok()) << service.status();
  std::string line;
  ASSERT_TRUE((*service)->process().WaitForLogLine("msg=config", absl::Seconds(5), &line).ok());
  EXPECT_EQ(LogfmtValue(line, "registry"), "registry.example.com:5000");
  EXPECT_EQ(LogfmtValue(line, "gitops.branch"), "release");
  EXPECT_EQ(LogfmtValue(line, "gitops.path_prefix"), "elf-automations");
  EXPECT_EQ(LogfmtValue(line, "gitops.repo"),
            "https://ci:[REDACTED]@git.example.com/org/gitops.git");
  EXPECT_THAT((*service)->Log(), ::testing::Not(HasSubstr("s3cr3t")));
}

}  // namespace
}  // namespace elfdeploy::testing
