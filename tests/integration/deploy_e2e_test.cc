// The whole flow with every part real: elfdeploy-orchestrator builds the example apps
// (deploy/local/examples: the seed's tree) with elfdeploy-builder, pushes them with
// elfdeploy-registry-sync to a docker-registry, publishes one GitOps commit with
// elfdeploy-manifest-publisher to a git daemon, and follows kubesim's Argo CD and kubelet through
// elfdeploy-agent and elfdeploy-cluster-watcher until every app runs on its new digest.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/common/http_client.h"
#include "services/common/proto_time.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"
#include "tests/support/stack.h"

namespace elfdeploy::testing {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class DeployE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Stack>> stack =
        Stack::Start({.dir_prefix = "deploy-e2e-",
                      .kubesim_flags = {"--repo_poll=100ms", "--container_start_delay=50ms",
                                        "--resolve_cache_ttl=50ms"},
                      .tls = tls_});
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
  }

  bool tls_ = false;

  // Apps of `source_dir` built FROM the registry's base image; discovery is not part of these
  // tests.
  v1::DeployRequest ExamplesRequest(const std::string& source_dir) const {
    v1::DeployRequest request;
    request.set_source_dir(source_dir);
    (*request.mutable_build_args())["BASE"] =
        absl::StrCat(stack_->registry().host(), "/elf/python-base:3.11");
    request.mutable_verify()->set_skip_discovery(true);
    request.mutable_destination()->set_no_image_pull_secret(true);
    return request;
  }

  v1::Rollout MustDeploy(const v1::DeployRequest& request) {
    grpc::ClientContext context;
    v1::DeployResponse deployed;
    grpc::Status status = stack_->stub().Deploy(&context, request, &deployed);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return deployed.rollout();
  }

  // Reads the rollout's events until one matches `until`; false when the stream ended first.
  bool WaitForEvent(const std::string& id,
                    const std::function<bool(const v1::WatchRolloutResponse&)>& until) {
    return stack_->Follow(id, until).ok();
  }

  // Commits on the GitOps branch whose message carries `correlation_id`'s trailer.
  int CommitsOf(const std::string& correlation_id) {
    absl::StatusOr<CommandResult> log = stack_->git().Git(
        {"--git-dir", stack_->git().repo_path("gitops"), "log", "--format=%B%x00", "main"});
    if (!log.ok() || log->exit_code != 0) return 0;  // no branch yet: no commit
    int commits = 0;
    for (absl::string_view message : absl::StrSplit(log->output, '\0')) {
      commits += absl::StrContains(message, absl::StrCat("Elfdeploy-Rollout: ", correlation_id));
    }
    return commits;
  }

  // Follows a rollout to its end; the terminal event.
  v1::WatchRolloutResponse Follow(const std::string& id) {
    absl::StatusOr<v1::WatchRolloutResponse> last = stack_->Follow(id);
    EXPECT_TRUE(last.ok()) << last.status();
    return last.ok() ? *std::move(last) : v1::WatchRolloutResponse();
  }

  std::unique_ptr<Stack> stack_;
};

TEST_F(DeployE2eTest, TheExampleAppsRunOnTheirNewDigests) {
  const v1::DeployRequest request =
      ExamplesRequest(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
  grpc::ClientContext context;
  v1::DeployResponse deployed;
  grpc::Status status = stack_->stub().Deploy(&context, request, &deployed);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::WatchRolloutResponse last = Follow(deployed.rollout().id());
  ASSERT_TRUE(last.has_state()) << last.DebugString();
  const v1::Rollout& rollout = last.state().rollout();
  ASSERT_EQ(last.state().state(), v1::ROLLOUT_STATE_SUCCEEDED)
      << rollout.DebugString() << "\norchestrator:\n"
      << Tail(stack_->orchestrator().Log(), 30);
  EXPECT_EQ(rollout.apps_size(), 4);

  // The commit on the GitOps repo carries the rollout and the digests.
  absl::StatusOr<CommandResult> log = stack_->git().Git(
      {"--git-dir", stack_->git().repo_path("gitops"), "log", "-1", "--format=%H%n%B", "main"});
  ASSERT_TRUE(log.ok() && log->exit_code == 0);
  EXPECT_THAT(log->output, HasSubstr(rollout.commit()));
  EXPECT_THAT(log->output,
              HasSubstr(absl::StrCat("Elfdeploy-Rollout: ", rollout.correlation_id())));
  // Each app's pod runs the digest the rollout pushed.
  HttpClient http;
  for (const v1::AppRollout& app : rollout.apps()) {
    EXPECT_EQ(app.observed_revision(), rollout.commit()) << app.name();
    absl::StatusOr<HttpResponse> pods = http.Get(
        absl::StrCat(stack_->kubesim_url(),
                     "/api/v1/namespaces/elf-automations/pods?labelSelector=app%3D", app.name()));
    ASSERT_TRUE(pods.ok());
    json list = json::parse(pods->body);
    ASSERT_FALSE(list["items"].empty()) << app.name();
    EXPECT_THAT(list["items"][0]["status"]["containerStatuses"][0].value("imageID", ""),
                HasSubstr(app.image_digest()));
  }

  // The same deploy again: nothing changed, so no new commit.
  grpc::ClientContext again_context;
  v1::DeployResponse again;
  ASSERT_TRUE(stack_->stub().Deploy(&again_context, request, &again).ok());
  v1::WatchRolloutResponse second = Follow(again.rollout().id());
  EXPECT_EQ(second.state().state(), v1::ROLLOUT_STATE_SUCCEEDED);

  // The orchestrator's metrics saw both.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  double succeeded = 0;
  absl::StatusOr<std::string> metrics;
  while (absl::Now() < deadline && succeeded < 2) {
    metrics = ScrapeMetrics(stack_->orchestrator().metrics_addr());
    if (metrics.ok()) {
      succeeded =
          MetricValue(*metrics, "elfdeploy_rollouts_total", {{"result", "succeeded"}}).value_or(0);
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(succeeded, 2);
  ASSERT_TRUE(metrics.ok());
  EXPECT_GT(MetricValue(*metrics, "elfdeploy_rollout_stage_seconds_count", {{"stage", "building"}})
                .value_or(0),
            0);
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_rollouts_in_progress").value_or(-1), 0);
}

TEST_F(DeployE2eTest, AMissingImageFailsFastAndACrashLoopTimesOutWithItsFinding) {
  // An app whose Deployment also runs a sidecar image nobody pushed.
  std::string source = stack_->dir().Join("source");
  std::string app = source + "/teams/sidecar-team";
  ASSERT_TRUE(
      WriteFile(app + "/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY server.py /app/\n").ok());
  ASSERT_TRUE(WriteFile(app + "/server.py", "print('hi')\n").ok());
  ASSERT_TRUE(WriteFile(app + "/k8s/deployment.yaml",
                        absl::StrCat("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
                                     "  name: sidecar-team\nspec:\n  selector:\n"
                                     "    matchLabels: {app: sidecar-team}\n  template:\n"
                                     "    metadata:\n      labels: {app: sidecar-team}\n"
                                     "    spec:\n      containers:\n"
                                     "        - name: sidecar-team\n"
                                     "          image: elf-automations/sidecar-team:latest\n"
                                     "        - name: proxy\n          image: ",
                                     stack_->registry().host(), "/elf/never-pushed:1\n"))
                  .ok());
  const v1::DeployRequest missing = ExamplesRequest(source);
  grpc::ClientContext context;
  v1::DeployResponse deployed;
  ASSERT_TRUE(stack_->stub().Deploy(&context, missing, &deployed).ok());
  v1::WatchRolloutResponse failed = Follow(deployed.rollout().id());
  ASSERT_EQ(failed.state().state(), v1::ROLLOUT_STATE_FAILED) << failed.DebugString();
  const v1::Rollout& rollout = failed.state().rollout();
  bool image_not_found = false;
  for (const v1::AppRollout& a : rollout.apps()) {
    for (const v1::Finding& f : a.findings()) image_not_found |= f.reason() == "ImageNotFound";
  }
  for (const v1::Finding& f : rollout.findings()) image_not_found |= f.reason() == "ImageNotFound";
  EXPECT_TRUE(image_not_found) << rollout.DebugString();
  // Fatal at once: FAILED by the finding, not TIMED_OUT by the (default, 10 min) deadline. The
  // time from the commit's sync starting to the verdict is printed, not asserted.
  for (const v1::AppRollout& a : rollout.apps()) {
    for (const v1::StageTiming& t : a.stage_timings()) {
      if (t.stage() != v1::STAGE_SYNCING) continue;
      absl::Duration verdict = FromTimestamp(failed.event_time()) - FromTimestamp(t.start_time());
      std::printf("%s: FAILED %s after its sync began\n", a.name().c_str(),
                  absl::FormatDuration(verdict).c_str());
    }
  }

  // The demo's broken app crash-loops: the rollout times out with the crash loop and its log.
  v1::DeployRequest broken =
      ExamplesRequest(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/broken"));
  broken.mutable_timeout()->set_seconds(15);
  grpc::ClientContext broken_context;
  v1::DeployResponse broken_deployed;
  ASSERT_TRUE(stack_->stub().Deploy(&broken_context, broken, &broken_deployed).ok());
  v1::WatchRolloutResponse timed_out = Follow(broken_deployed.rollout().id());
  ASSERT_EQ(timed_out.state().state(), v1::ROLLOUT_STATE_TIMED_OUT) << timed_out.DebugString();
  std::string evidence;
  for (const v1::AppRollout& a : timed_out.state().rollout().apps()) {
    for (const v1::Finding& f : a.findings()) {
      if (f.kind() == v1::FINDING_KIND_CRASH_LOOP) evidence = absl::StrJoin(f.evidence(), "\n");
    }
  }
  for (const v1::Finding& f : timed_out.state().rollout().findings()) {
    if (f.kind() == v1::FINDING_KIND_CRASH_LOOP) evidence = absl::StrJoin(f.evidence(), "\n");
  }
  // The crash loop is the reason, with its exit code and the tail of the container's log.
  EXPECT_THAT(evidence, HasSubstr("exit code 1")) << timed_out.DebugString();
  EXPECT_THAT(evidence, HasSubstr("exiting with code 1")) << timed_out.DebugString();
  EXPECT_THAT(timed_out.state().message(), HasSubstr("deadline"));
}

// Every gRPC hop over TLS with client certificates: orchestrator -> builder, registry-sync,
// manifest-publisher, cluster-watcher; cluster-watcher -> registry-sync; agent -> cluster-watcher.
class DeployE2eTlsTest : public DeployE2eTest {
 protected:
  void SetUp() override {
    tls_ = true;
    DeployE2eTest::SetUp();
  }
};

TEST_F(DeployE2eTlsTest, TheExamplesDeployWithEveryHopOverMutualTls) {
  v1::WatchRolloutResponse last;
  {
    v1::Rollout started =
        MustDeploy(ExamplesRequest(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples")));
    ASSERT_FALSE(started.id().empty());
    last = Follow(started.id());
  }
  ASSERT_EQ(last.state().state(), v1::ROLLOUT_STATE_SUCCEEDED)
      << last.DebugString() << "\norchestrator:\n"
      << Tail(stack_->orchestrator().Log(), 30);
  // A missing image is told from refused credentials by cluster-watcher asking registry-sync,
  // over its own TLS connection.
  const std::string source = stack_->dir().Join("ghost");
  ASSERT_TRUE(WriteFile(source + "/teams/ghost-team/Dockerfile", "ARG BASE\nFROM ${BASE}\n").ok());
  ASSERT_TRUE(WriteFile(source + "/teams/ghost-team/k8s/deployment.yaml",
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
  v1::DeployRequest ghost = ExamplesRequest(source);
  ghost.mutable_timeout()->set_seconds(90);
  v1::WatchRolloutResponse failed = Follow(MustDeploy(ghost).id());
  ASSERT_EQ(failed.state().state(), v1::ROLLOUT_STATE_FAILED) << failed.DebugString();
  EXPECT_THAT(failed.state().message(), HasSubstr("does not exist in the registry"))
      << failed.DebugString();

  // The TLS is real: without the client certificate, or in plain text, a peer is refused.
  const std::string ca = stack_->ca_file();
  for (ServiceProcess* peer :
       {&stack_->builder(), &stack_->registry_sync(), &stack_->publisher(), &stack_->watcher()}) {
    const std::string& addr = peer->grpc_addr();
    EXPECT_TRUE(
        CheckHealthTls(addr, ca, stack_->client_cert_file(), stack_->client_key_file()).ok())
        << addr;
    EXPECT_FALSE(CheckHealthTls(addr, ca).ok()) << addr << " accepted a client without certificate";
    EXPECT_FALSE(CheckHealth(addr).ok()) << addr << " answered in plain text";
  }
}

TEST_F(DeployE2eTest, AnOrchestratorKilledMidRolloutFinishesItWithOneCommit) {
  v1::DeployRequest request =
      ExamplesRequest(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
  v1::Rollout started = MustDeploy(request);
  ASSERT_FALSE(started.id().empty());
  // SIGKILL as the commit is being published: the restarted orchestrator must neither lose the
  // rollout nor publish the commit twice.
  ASSERT_TRUE(WaitForEvent(started.id(), [](const v1::WatchRolloutResponse& e) {
    return e.has_app_stage() && e.app_stage().stage() == v1::STAGE_PUBLISHING;
  }));
  ASSERT_TRUE(stack_->orchestrator().process().Signal(SIGKILL).ok());
  ASSERT_TRUE(stack_->orchestrator().process().WaitForExit(absl::Seconds(10)).ok());
  ASSERT_TRUE(stack_->RestartOrchestrator().ok());

  v1::WatchRolloutResponse last = Follow(started.id());
  ASSERT_EQ(last.state().state(), v1::ROLLOUT_STATE_SUCCEEDED)
      << last.DebugString() << "\norchestrator:\n"
      << Tail(stack_->orchestrator().Log(), 30);
  const v1::Rollout& rollout = last.state().rollout();
  EXPECT_EQ(CommitsOf(rollout.correlation_id()), 1);
  for (const v1::AppRollout& app : rollout.apps()) {
    EXPECT_EQ(app.observed_revision(), rollout.commit()) << app.name();
    EXPECT_EQ(app.stage(), v1::STAGE_SUCCEEDED) << app.name();
  }
}

TEST_F(DeployE2eTest, TwoConcurrentRolloutsOnOneRepoBothLand) {
  // A second source with one more team, deployed while the examples are.
  const std::string source = stack_->dir().Join("solo");
  const std::string app = source + "/teams/solo-team";
  ASSERT_TRUE(
      WriteFile(app + "/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY server.py /app/\n").ok());
  ASSERT_TRUE(WriteFile(app + "/server.py", "print('solo')\n").ok());
  ASSERT_TRUE(WriteFile(app + "/k8s/deployment.yaml",
                        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: solo-team\n"
                        "spec:\n  selector:\n    matchLabels: {app: solo-team}\n  template:\n"
                        "    metadata:\n      labels: {app: solo-team}\n    spec:\n"
                        "      containers:\n        - name: solo-team\n"
                        "          image: elf-automations/solo-team:latest\n")
                  .ok());
  v1::Rollout examples =
      MustDeploy(ExamplesRequest(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples")));
  v1::Rollout solo = MustDeploy(ExamplesRequest(source));
  ASSERT_FALSE(examples.id().empty() || solo.id().empty());

  v1::WatchRolloutResponse examples_done;
  std::thread follower([&] { examples_done = Follow(examples.id()); });
  v1::WatchRolloutResponse solo_done = Follow(solo.id());
  follower.join();
  ASSERT_EQ(examples_done.state().state(), v1::ROLLOUT_STATE_SUCCEEDED)
      << examples_done.DebugString();
  ASSERT_EQ(solo_done.state().state(), v1::ROLLOUT_STATE_SUCCEEDED) << solo_done.DebugString();
  // Each landed as its own commit, and neither removed the other's apps from the teams group.
  EXPECT_EQ(CommitsOf(examples_done.state().rollout().correlation_id()), 1);
  EXPECT_EQ(CommitsOf(solo_done.state().rollout().correlation_id()), 1);
  absl::StatusOr<CommandResult> kustomization =
      stack_->git().Git({"--git-dir", stack_->git().repo_path("gitops"), "show",
                         "main:elf-automations/manifests/teams/kustomization.yaml"});
  ASSERT_TRUE(kustomization.ok() && kustomization->exit_code == 0);
  EXPECT_THAT(kustomization->output, HasSubstr("solo-team"));
  EXPECT_THAT(kustomization->output, HasSubstr("executive-team"));
  HttpClient http;
  for (const char* name : {"solo-team", "executive-team"}) {
    absl::StatusOr<HttpResponse> pods = http.Get(
        absl::StrCat(stack_->kubesim_url(),
                     "/api/v1/namespaces/elf-automations/pods?labelSelector=app%3D", name));
    ASSERT_TRUE(pods.ok());
    EXPECT_FALSE(json::parse(pods->body)["items"].empty()) << name;
  }
}

TEST_F(DeployE2eTest, ACancelledRolloutStopsAndMakesNoCommit) {
  v1::DeployRequest request =
      ExamplesRequest(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
  request.set_no_cache(true);
  v1::Rollout started = MustDeploy(request);
  ASSERT_TRUE(WaitForEvent(started.id(), [](const v1::WatchRolloutResponse& e) {
    return e.has_app_stage() && e.app_stage().stage() == v1::STAGE_BUILDING;
  }));
  grpc::ClientContext context;
  v1::CancelRolloutRequest cancel;
  cancel.set_id(started.id());
  cancel.set_reason("changed my mind");
  v1::CancelRolloutResponse cancelled;
  grpc::Status status = stack_->stub().CancelRollout(&context, cancel, &cancelled);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(cancelled.rollout().cancel_requested());

  v1::WatchRolloutResponse last = Follow(started.id());
  ASSERT_EQ(last.state().state(), v1::ROLLOUT_STATE_CANCELLED) << last.DebugString();
  EXPECT_THAT(last.state().rollout().message(), HasSubstr("changed my mind"));
  EXPECT_EQ(CommitsOf(last.state().rollout().correlation_id()), 0);
  for (const v1::AppRollout& app : last.state().rollout().apps()) {
    EXPECT_TRUE(app.stage() == v1::STAGE_CANCELLED || app.stage() == v1::STAGE_SUCCEEDED)
        << app.name() << " " << v1::Stage_Name(app.stage());
  }
  // Cancelling a cancelled rollout is a no-op; the rollout stays CANCELLED.
  grpc::ClientContext again;
  ASSERT_TRUE(stack_->stub().CancelRollout(&again, cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.rollout().state(), v1::ROLLOUT_STATE_CANCELLED);
}

}  // namespace
}  // namespace elfdeploy::testing
