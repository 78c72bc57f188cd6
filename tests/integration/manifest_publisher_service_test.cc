// elfdeploy-manifest-publisher as users drive it (buf curl) against a real git daemon; the git CLI
// and kubectl read the result back.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kDeployment[] = R"(# executive team, made by make-deployable-team
apiVersion: apps/v1
kind: Deployment
metadata:
  name: executive-team
spec:
  replicas: 1
  selector:
    matchLabels:
      app: executive-team
  template:
    metadata:
      labels:
        app: executive-team
    spec:
      containers:
        - name: executive-team
          image: elf-automations/executive-team:latest   # rewritten by elfdeploy
          ports:
            - containerPort: 8090
)";

absl::StatusOr<nlohmann::json> Call(const std::string& addr, const std::string& method,
                                    const nlohmann::json& body, std::string* raw = nullptr) {
  ProcessOptions options;
  options.argv = {BufPath(),
                  "curl",
                  "--protocol",
                  "grpc",
                  "--http2-prior-knowledge",
                  "-d",
                  body.dump(),
                  absl::StrCat("http://", addr, "/elfdeploy.v1.ManifestPublisherService/", method)};
  options.env = {{"BUF_CACHE_DIR", absl::StrCat(::testing::TempDir(), "/buf-cache")}};
  absl::StatusOr<CommandResult> result = RunCommand(std::move(options), absl::Seconds(120));
  if (!result.ok()) return result.status();
  if (raw != nullptr) *raw = result->output;
  if (result->exit_code != 0) return absl::UnknownError(result->output);
  return nlohmann::json::parse(result->output.substr(result->output.find('{')));
}

TEST(ManifestPublisherServiceTest, PublishesTheSeedTreeOnceAndRendersDiffs) {
  absl::StatusOr<TempDir> dir = TempDir::Create("publisher-service-");
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<std::unique_ptr<GitDaemonFixture>> git = GitDaemonFixture::Start();
  ASSERT_TRUE(git.ok()) << git.status();
  ASSERT_TRUE((*git)->CreateBareRepo("gitops").ok());
  absl::StatusOr<std::unique_ptr<ServiceProcess>> service =
      ServiceProcess::Start({.binary = "elfdeploy-manifest-publisher",
                             .env = {{"ELFDEPLOY_PUBLISHER_CACHE_DIR", dir->Join("cache")}}});
  ASSERT_TRUE(service.ok()) << service.status();

  std::string digest = "sha256:" + std::string(64, 'a');
  nlohmann::json request = {
      {"apps",
       {{{"name", "executive-team"},
         {"group", "teams"},
         {"image", "127.0.0.1:5000/elf-automations/executive-team:v1@" + digest},
         {"deploymentYaml", kDeployment}}}},
      {"target",
       {{"url", (*git)->url("gitops")}, {"branch", "main"}, {"pathPrefix", "elf-automations"}}},
      {"destination", {{"namespace", "elf-automations"}}},
      {"correlationId", "rollout-1"}};

  std::string raw;
  absl::StatusOr<nlohmann::json> rendered = Call((*service)->grpc_addr(), "Render", request, &raw);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_THAT((*rendered)["diff"].get<std::string>(),
              HasSubstr("+          image: \"127.0.0.1:5000/elf-automations/executive-team:v1@" +
                        digest + "\"   # rewritten by elfdeploy"));
  EXPECT_FALSE(rendered->value("noOp", false));

  absl::StatusOr<nlohmann::json> published = Call((*service)->grpc_addr(), "Publish", request);
  ASSERT_TRUE(published.ok()) << published.status();
  std::string commit = (*published)["commit"];
  EXPECT_EQ(commit.size(), 40u);
  EXPECT_EQ((*published)["applications"][0]["path"], "elf-automations/applications/teams-app.yaml");

  // The git CLI sees one commit with the trailers and the seed's tree.
  absl::StatusOr<CommandResult> log =
      (*git)->Git({"--git-dir", (*git)->repo_path("gitops"), "log", "--format=%H%n%B", "main"});
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(log->output, HasSubstr(commit));
  EXPECT_THAT(log->output, HasSubstr("Elfdeploy-Rollout: rollout-1"));
  EXPECT_THAT(log->output, HasSubstr("Image: executive-team=" + digest));
  absl::StatusOr<CommandResult> tree = (*git)->Git(
      {"--git-dir", (*git)->repo_path("gitops"), "ls-tree", "-r", "--name-only", "main"});
  EXPECT_THAT(tree->output,
              HasSubstr("elf-automations/manifests/teams/executive-team/deployment.yaml"));
  EXPECT_THAT(tree->output,
              HasSubstr("elf-automations/manifests/teams/executive-team/service.yaml"));
  EXPECT_THAT(tree->output, HasSubstr("elf-automations/manifests/teams/kustomization.yaml"));
  EXPECT_THAT(tree->output, HasSubstr("elf-automations/applications/teams-app.yaml"));
  absl::StatusOr<CommandResult> deployment =
      (*git)->Git({"--git-dir", (*git)->repo_path("gitops"), "show",
                   "main:elf-automations/manifests/teams/executive-team/deployment.yaml"});
  EXPECT_THAT(deployment->output, HasSubstr("# executive team, made by make-deployable-team"));
  EXPECT_THAT(deployment->output, HasSubstr("   # rewritten by elfdeploy"));

  // kubectl renders the group from a clone.
  std::string clone = dir->Join("clone");
  ASSERT_EQ((*git)->Git({"clone", "-q", (*git)->url("gitops"), clone})->exit_code, 0);
  ProcessOptions kustomize;
  kustomize.argv = {"kubectl", "kustomize", clone + "/elf-automations/manifests/teams"};
  absl::StatusOr<CommandResult> kubectl = RunCommand(std::move(kustomize));
  ASSERT_TRUE(kubectl.ok());
  ASSERT_EQ(kubectl->exit_code, 0) << kubectl->output;
  EXPECT_THAT(kubectl->output, HasSubstr("@" + digest));
  EXPECT_THAT(kubectl->output, HasSubstr("imagePullSecrets"));

  // The same request again: no commit.
  absl::StatusOr<nlohmann::json> again = Call((*service)->grpc_addr(), "Publish", request);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->value("noOp", false));
  EXPECT_EQ((*again)["commit"], commit);
  absl::StatusOr<CommandResult> count =
      (*git)->Git({"--git-dir", (*git)->repo_path("gitops"), "rev-list", "--count", "main"});
  EXPECT_EQ(count->output, "1\n");

  absl::StatusOr<std::string> metrics = ScrapeMetrics((*service)->metrics_addr());
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_publish_commits_total").value_or(-1), 1);
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_publish_noop_total").value_or(-1), 1);
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_publish_seconds_count").value_or(-1), 2);

  // Bad input: nothing is committed.
  nlohmann::json bad = request;
  bad["apps"][0]["name"] = "../escape";
  absl::StatusOr<nlohmann::json> refused = Call((*service)->grpc_addr(), "Publish", bad, &raw);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(raw, HasSubstr("invalid_argument"));
  count = (*git)->Git({"--git-dir", (*git)->repo_path("gitops"), "rev-list", "--count", "main"});
  EXPECT_EQ(count->output, "1\n");
}

}  // namespace
}  // namespace elfdeploy::testing
