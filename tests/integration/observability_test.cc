// Issue 9 item 4: the dashboards and rules in deploy/ checked against real data. The whole stack
// runs as real binaries (registry, git daemon, kubesim, the five services, the agent), a real
// Prometheus (Debian's) scrapes every service and evaluates deploy/prometheus/rules, and two
// rollouts produce data — the examples (SUCCEEDED) and an app whose image does not exist
// (FAILED). Then every panel expression of every dashboard in deploy/grafana/dashboards and every
// rule expression is run through Prometheus' query API: each must return data, unless
// deploy/grafana/expected_empty.yml lists it with its reason.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/common/http_client.h"
#include "tests/harness/net.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"
#include "tests/support/stack.h"
#include "yaml-cpp/yaml.h"

namespace elfdeploy::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kDeploy = absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy");

// One expression to check, and where it comes from.
struct Expression {
  std::string where;  // "dashboard <uid> panel <title>" or "rule <file> <name>"
  std::string expr;
};

// Grafana's template variables made concrete for a query: every `$var`/`${var}` in a label
// matcher matches anything, the interval variables become 1m.
std::string Concrete(std::string expr) {
  static const std::regex kEquals(R"re((\w+)\s*(=|=~)\s*"\$\{?\w+(:\w+)?\}?")re");
  expr = std::regex_replace(expr, kEquals, R"($1=~".+")");
  static const std::regex kMatch(R"re((\w+)\s*=~\s*"[^"]*\$\{?\w+(:\w+)?\}?[^"]*")re");
  expr = std::regex_replace(expr, kMatch, R"($1=~".+")");
  for (const char* var : {"$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}",
                          "$__range", "${__range}"}) {
    expr = absl::StrReplaceAll(expr, {{var, "1m"}});
  }
  return expr;
}

void CollectPanels(const json& panels, const std::string& uid, std::vector<Expression>* out) {
  if (!panels.is_array()) return;
  for (const json& panel : panels) {
    CollectPanels(panel.value("panels", json::array()), uid, out);  // rows
    if (!panel.contains("targets")) continue;
    for (const json& target : panel["targets"]) {
      std::string expr = target.value("expr", "");
      if (expr.empty()) continue;
      out->push_back(
          {absl::StrCat("dashboard ", uid, " panel \"", panel.value("title", ""), "\""), expr});
    }
  }
}

std::vector<Expression> DashboardExpressions(std::vector<std::string>* uids) {
  std::vector<Expression> out;
  for (const auto& entry : fs::directory_iterator(kDeploy + "/grafana/dashboards")) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    json dashboard = json::parse(in, nullptr, false);
    EXPECT_FALSE(dashboard.is_discarded()) << entry.path();
    if (dashboard.is_discarded()) continue;
    std::string uid = dashboard.value("uid", entry.path().filename().string());
    uids->push_back(uid);
    CollectPanels(dashboard.value("panels", json::array()), uid, &out);
  }
  return out;
}

std::vector<std::string> RuleFiles() {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(kDeploy + "/prometheus/rules")) {
    if (entry.path().extension() == ".yml" || entry.path().extension() == ".yaml") {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<Expression> RuleExpressions() {
  std::vector<Expression> out;
  for (const std::string& file : RuleFiles()) {
    YAML::Node root = YAML::LoadFile(file);
    for (const YAML::Node& group : root["groups"]) {
      for (const YAML::Node& rule : group["rules"]) {
        std::string name =
            rule["record"] ? rule["record"].as<std::string>() : rule["alert"].as<std::string>("");
        out.push_back({absl::StrCat("rule ", fs::path(file).filename().string(), " ", name),
                       rule["expr"].as<std::string>()});
      }
    }
  }
  return out;
}

// expected_empty.yml: the expressions (or dashboard panels / rules by the name `where` uses) that
// may return nothing after this run, each with a reason.
std::map<std::string, std::string> ExpectedEmpty() {
  std::map<std::string, std::string> out;
  YAML::Node root = YAML::LoadFile(kDeploy + "/grafana/expected_empty.yml");
  std::function<void(const YAML::Node&)> walk = [&](const YAML::Node& node) {
    if (node.IsSequence()) {
      for (const YAML::Node& item : node) walk(item);
    } else if (node.IsMap()) {
      std::string reason = node["reason"] ? node["reason"].as<std::string>() : "";
      for (const char* key : {"expr", "panel", "title", "rule", "alert", "record", "name"}) {
        if (node[key] && node[key].IsScalar()) out[node[key].as<std::string>()] = reason;
      }
      for (const auto& kv : node) {
        if (kv.second.IsSequence() || kv.second.IsMap()) walk(kv.second);
      }
    }
  };
  walk(root);
  return out;
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Stack>> stack =
        Stack::Start({.dir_prefix = "observability-",
                      .kubesim_flags = {"--repo_poll=200ms", "--container_start_delay=50ms",
                                        "--resolve_cache_ttl=50ms"},
                      .orchestrator_env = {{"ELFDEPLOY_ORCHESTRATOR_SETTLE", "1s"}}});
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
  }

  void TearDown() override {
    if (prometheus_ != nullptr) prometheus_->Stop(absl::Seconds(10)).IgnoreError();
    stack_.reset();
  }

  // Prometheus scraping every service each second and evaluating the repo's rules each second.
  void StartPrometheus() {
    std::string config = "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files:\n";
    for (const std::string& file : RuleFiles()) absl::StrAppend(&config, "  - ", file, "\n");
    absl::StrAppend(&config, "scrape_configs:\n");
    const std::vector<std::pair<std::string, ServiceProcess*>> services = stack_->services();
    for (const auto& [job, service] : services) {
      absl::StrAppend(&config, "  - job_name: ", job, "\n    static_configs: [{targets: ['",
                      service->metrics_addr(), "']}]\n");
    }
    ASSERT_TRUE(WriteFile(stack_->dir().Join("prometheus.yml"), config).ok());
    absl::StatusOr<CommandResult> checked = RunCommand(
        {.argv = {PromtoolPath(), "check", "config", stack_->dir().Join("prometheus.yml")}});
    ASSERT_TRUE(checked.ok() && checked->exit_code == 0) << (checked.ok() ? checked->output : "");
    int prometheus_port = 0;
    absl::StatusOr<std::unique_ptr<ChildProcess>> prometheus = StartOnFreePort(
        stack_->dir().Join("prometheus.log"),
        [&](int port) -> absl::StatusOr<ProcessOptions> {
          return ProcessOptions{.argv = {"/usr/bin/prometheus",
                                         "--config.file=" + stack_->dir().Join("prometheus.yml"),
                                         "--storage.tsdb.path=" + stack_->dir().Join("tsdb"),
                                         absl::StrCat("--web.listen-address=127.0.0.1:", port)}};
        },
        "Server is ready to receive web requests", &prometheus_port);
    ASSERT_TRUE(prometheus.ok()) << prometheus.status();
    prometheus_url_ = absl::StrCat("http://127.0.0.1:", prometheus_port);
    prometheus_ = *std::move(prometheus);
    // Every target up.
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    size_t up = 0;
    while (absl::Now() < deadline && up < services.size()) {
      absl::SleepFor(absl::Milliseconds(500));
      absl::StatusOr<json> result = Query("up == 1");
      if (result.ok()) up = result->size();
    }
    ASSERT_EQ(up, services.size()) << prometheus_->ReadLog();
  }

  // An instant query's result vector; an error for a bad expression.
  absl::StatusOr<json> Query(const std::string& expr) {
    HttpClient http;
    HttpRequest request;
    request.method = "POST";
    request.url = prometheus_url_ + "/api/v1/query";
    request.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
    std::string encoded;
    for (unsigned char c : expr) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        encoded.push_back(static_cast<char>(c));
      } else {
        absl::StrAppend(&encoded, "%", absl::Hex(c, absl::kZeroPad2));
      }
    }
    request.body = "query=" + encoded;
    absl::StatusOr<HttpResponse> response = http.Do(request);
    if (!response.ok()) return response.status();
    json body = json::parse(response->body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") {
      return absl::InvalidArgumentError(response->body);
    }
    return body["data"]["result"];
  }

  v1::WatchRolloutResponse DeployAndFollow(const v1::DeployRequest& request) {
    grpc::ClientContext context;
    v1::DeployResponse deployed;
    grpc::Status status = stack_->stub().Deploy(&context, request, &deployed);
    EXPECT_TRUE(status.ok()) << status.error_message();
    absl::StatusOr<v1::WatchRolloutResponse> last = stack_->Follow(deployed.rollout().id());
    EXPECT_TRUE(last.ok()) << last.status();
    return last.ok() ? *std::move(last) : v1::WatchRolloutResponse();
  }

  std::unique_ptr<Stack> stack_;  // each service is a Prometheus job named after its binary
  std::unique_ptr<ChildProcess> prometheus_;
  std::string prometheus_url_;
};

TEST_F(ObservabilityTest, EveryPanelAndRuleExpressionHasDataOrAReason) {
  ASSERT_NO_FATAL_FAILURE(StartPrometheus());

  // A rollout that succeeds and one that fails (an image that does not exist).
  v1::DeployRequest examples;
  examples.set_source_dir(kDeploy + "/local/examples");
  (*examples.mutable_build_args())["BASE"] =
      absl::StrCat(stack_->registry().host(), "/elf/python-base:3.11");
  examples.mutable_verify()->set_skip_discovery(true);
  examples.mutable_destination()->set_no_image_pull_secret(true);
  ASSERT_EQ(DeployAndFollow(examples).state().state(), v1::ROLLOUT_STATE_SUCCEEDED);
  const std::string broken = stack_->dir().Join("broken");
  ASSERT_TRUE(WriteFile(broken + "/teams/ghost-team/Dockerfile", "ARG BASE\nFROM ${BASE}\n").ok());
  ASSERT_TRUE(WriteFile(broken + "/teams/ghost-team/k8s/deployment.yaml",
                        absl::StrCat("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
                                     "  name: ghost-team\nspec:\n  selector:\n"
                                     "    matchLabels: {app: ghost-team}\n  template:\n"
                                     "    metadata:\n      labels: {app: ghost-team}\n"
                                     "    spec:\n      containers:\n"
                                     "        - name: ghost-team\n"
                                     "          image: elf-automations/ghost-team:latest\n"
                                     "        - name: sidecar\n          image: ",
                                     stack_->registry().host(), "/elf/never-pushed:1\n"))
                  .ok());
  v1::DeployRequest failing = examples;
  failing.set_source_dir(broken);
  ASSERT_EQ(DeployAndFollow(failing).state().state(), v1::ROLLOUT_STATE_FAILED);
  // Enough scrapes after the last change for rates and the pods gauge (refreshed every 5 s).
  absl::SleepFor(absl::Seconds(8));

  std::vector<std::string> uids;
  std::vector<Expression> expressions = DashboardExpressions(&uids);
  EXPECT_GE(uids.size(), 5u) << "pipeline, registry, gitops, clusters, gRPC";
  const size_t panels = expressions.size();
  std::vector<Expression> rules = RuleExpressions();
  EXPECT_FALSE(rules.empty());
  expressions.insert(expressions.end(), rules.begin(), rules.end());
  const std::map<std::string, std::string> expected_empty = ExpectedEmpty();

  std::vector<std::string> allowed_empty;
  for (const Expression& e : expressions) {
    absl::StatusOr<json> result = Query(Concrete(e.expr));
    ASSERT_TRUE(result.ok()) << e.where << ": " << Concrete(e.expr) << ": " << result.status();
    if (!result->empty()) continue;
    auto reason = expected_empty.find(e.expr);
    if (reason == expected_empty.end()) {
      for (const auto& [key, why] : expected_empty) {
        if (absl::StrContains(e.where, key)) reason = expected_empty.find(key);
      }
    }
    if (reason != expected_empty.end()) {
      allowed_empty.push_back(absl::StrCat(e.where, " (", reason->second, ")"));
      continue;
    }
    ADD_FAILURE() << e.where
                  << " returned no data and is not in expected_empty.yml: " << Concrete(e.expr);
  }
  std::printf("%zu panel and %zu rule expressions checked; empty as expected:\n  %s\n", panels,
              rules.size(), absl::StrJoin(allowed_empty, "\n  ").c_str());
}

}  // namespace
}  // namespace elfdeploy::testing
