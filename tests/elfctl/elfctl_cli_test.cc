// The real elfctl binary against in-process fakes of OrchestratorService and
// ClusterWatcherService on 127.0.0.1 port 0: deploy (plain lines, JSON, failure with a finding, a
// stream broken once and watched again from the last sequence, --detach), status, rollouts,
// diagnose, cancel, the exit codes of usage and RPC errors, and the live table on a terminal.
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/harness/net.h"
#include "tests/harness/pki.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(t));
  return ts;
}

v1::Finding ImageNotFound() {
  v1::Finding finding;
  finding.set_kind(v1::FINDING_KIND_IMAGE_PULL);
  finding.set_reason("ImageNotFound");
  finding.set_severity(v1::SEVERITY_ERROR);
  finding.set_fatal(true);
  finding.set_message("image reg/cal@sha256:1 does not exist");
  finding.add_evidence("Failed to pull image \"reg/cal\": not found");
  return finding;
}

class FakeOrchestrator final : public v1::OrchestratorService::Service {
 public:
  // The stored events WatchRollout replays, and the rollout they end with.
  void Script(bool fail) {
    absl::MutexLock lock(&mu_);
    const absl::Time start = absl::Now();
    rollout_.set_id("r-1");
    rollout_.set_state(v1::ROLLOUT_STATE_PENDING);
    *rollout_.mutable_create_time() = Ts(start);
    events_.clear();
    uint64_t sequence = 0;
    auto add = [&](v1::WatchRolloutResponse event, bool stored = true) {
      if (stored) event.set_sequence(++sequence);
      event.set_rollout_id("r-1");
      *event.mutable_event_time() = Ts(start);
      events_.push_back(std::move(event));
    };
    auto stage = [&](const std::string& app, v1::Stage stage, const std::string& message) {
      v1::WatchRolloutResponse event;
      event.mutable_app_stage()->set_app(app);
      event.mutable_app_stage()->set_stage(stage);
      event.mutable_app_stage()->set_message(message);
      event.mutable_app_stage()->mutable_status()->set_group("teams");
      add(std::move(event));
    };
    v1::WatchRolloutResponse running;
    running.mutable_state()->set_state(v1::ROLLOUT_STATE_RUNNING);
    add(running);
    stage("executive-team", v1::STAGE_BUILDING, "step 1/2 FROM python");
    v1::WatchRolloutResponse progress;
    progress.mutable_progress()->set_app("executive-team");
    progress.mutable_progress()->set_stage(v1::STAGE_BUILDING);
    progress.mutable_progress()->set_message("step 2/2 COPY . /app");
    progress.mutable_progress()->set_bytes_done(12'300'000);
    add(progress, false);
    stage("executive-team", v1::STAGE_PUSHING, "");
    stage("executive-team", v1::STAGE_VERIFYING, "");

    v1::Rollout final_rollout = rollout_;
    v1::AppRollout* app = final_rollout.add_apps();
    app->set_name("executive-team");
    app->set_group("teams");
    app->set_sync_status(v1::SYNC_STATUS_SYNCED);
    app->set_health_status(v1::HEALTH_STATUS_HEALTHY);
    app->set_pods_ready(1);
    app->set_pods_desired(1);
    final_rollout.set_commit("c0ffee0123456789");
    *final_rollout.mutable_end_time() = Ts(start + absl::Seconds(41));
    if (fail) {
      stage("executive-team", v1::STAGE_FAILED, "image not found");
      v1::WatchRolloutResponse finding;
      finding.mutable_finding()->set_app("executive-team");
      *finding.mutable_finding()->mutable_finding() = ImageNotFound();
      add(finding);
      app->set_stage(v1::STAGE_FAILED);
      *app->add_findings() = ImageNotFound();
      final_rollout.set_state(v1::ROLLOUT_STATE_FAILED);
      final_rollout.set_message("executive-team: image not found");
    } else {
      stage("executive-team", v1::STAGE_SUCCEEDED, "verified");
      app->set_stage(v1::STAGE_SUCCEEDED);
      app->set_discovered(true);
      final_rollout.set_state(v1::ROLLOUT_STATE_SUCCEEDED);
    }
    v1::WatchRolloutResponse done;
    done.mutable_state()->set_state(final_rollout.state());
    done.mutable_state()->set_message(final_rollout.message());
    final_rollout.set_last_sequence(sequence + 1);
    *done.mutable_state()->mutable_rollout() = final_rollout;
    add(done);
    final_ = final_rollout;
  }

  // The first WatchRollout fails with UNAVAILABLE after `events` events.
  void BreakFirstWatchAfter(int events) {
    absl::MutexLock lock(&mu_);
    break_after_ = events;
  }

  void SetListed(std::vector<v1::Rollout> rollouts) {
    absl::MutexLock lock(&mu_);
    listed_ = std::move(rollouts);
  }

  std::vector<v1::DeployRequest> deploys() {
    absl::MutexLock lock(&mu_);
    return deploys_;
  }
  std::vector<uint64_t> watched_from() {
    absl::MutexLock lock(&mu_);
    return watched_from_;
  }
  std::vector<v1::ListRolloutsRequest> lists() {
    absl::MutexLock lock(&mu_);
    return lists_;
  }
  std::vector<v1::CancelRolloutRequest> cancels() {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  v1::Rollout final_rollout() {
    absl::MutexLock lock(&mu_);
    return final_;
  }

  grpc::Status Deploy(grpc::ServerContext*, const v1::DeployRequest* request,
                      v1::DeployResponse* response) override {
    absl::MutexLock lock(&mu_);
    deploys_.push_back(*request);
    *response->mutable_rollout() = rollout_;
    return grpc::Status::OK;
  }

  grpc::Status WatchRollout(grpc::ServerContext*, const v1::WatchRolloutRequest* request,
                            grpc::ServerWriter<v1::WatchRolloutResponse>* writer) override {
    std::vector<v1::WatchRolloutResponse> events;
    int break_after = -1;
    {
      absl::MutexLock lock(&mu_);
      if (request->id() != rollout_.id()) return grpc::Status(grpc::NOT_FOUND, "no such rollout");
      watched_from_.push_back(request->from_sequence());
      events = events_;
      if (watched_from_.size() == 1) break_after = break_after_;
    }
    int sent = 0;
    for (const v1::WatchRolloutResponse& event : events) {
      if (event.sequence() == 0 ? request->from_sequence() > 0
                                : event.sequence() <= request->from_sequence()) {
        continue;
      }
      if (sent == break_after) return grpc::Status(grpc::UNAVAILABLE, "orchestrator restarting");
      if (sent > 0) absl::SleepFor(pace());
      writer->Write(event);
      ++sent;
    }
    return grpc::Status::OK;
  }

  // Time between streamed events (zero: all at once).
  void set_pace(absl::Duration pace) {
    absl::MutexLock lock(&mu_);
    pace_ = pace;
  }
  absl::Duration pace() {
    absl::MutexLock lock(&mu_);
    return pace_;
  }

  grpc::Status GetRollout(grpc::ServerContext*, const v1::GetRolloutRequest* request,
                          v1::GetRolloutResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (request->id() != final_.id()) return grpc::Status(grpc::NOT_FOUND, "no such rollout");
    *response->mutable_rollout() = final_;
    return grpc::Status::OK;
  }

  // Pages of at most 2, whatever page_size asks for more.
  grpc::Status ListRollouts(grpc::ServerContext*, const v1::ListRolloutsRequest* request,
                            v1::ListRolloutsResponse* response) override {
    absl::MutexLock lock(&mu_);
    lists_.push_back(*request);
    size_t begin = request->page_token().empty() ? 0 : std::stoul(request->page_token());
    const size_t size = std::min<size_t>(request->page_size() == 0 ? 50 : request->page_size(), 2);
    size_t end = std::min(listed_.size(), begin + size);
    for (size_t i = begin; i < end; ++i) *response->add_rollouts() = listed_[i];
    if (end < listed_.size()) response->set_next_page_token(absl::StrCat(end));
    return grpc::Status::OK;
  }

  grpc::Status CancelRollout(grpc::ServerContext*, const v1::CancelRolloutRequest* request,
                             v1::CancelRolloutResponse* response) override {
    absl::MutexLock lock(&mu_);
    cancels_.push_back(*request);
    *response->mutable_rollout() = rollout_;
    response->mutable_rollout()->set_state(v1::ROLLOUT_STATE_CANCELLED);
    response->mutable_rollout()->set_message(absl::StrCat("cancelled: ", request->reason()));
    return grpc::Status::OK;
  }

 private:
  absl::Mutex mu_;
  v1::Rollout rollout_ ABSL_GUARDED_BY(mu_);
  v1::Rollout final_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::WatchRolloutResponse> events_ ABSL_GUARDED_BY(mu_);
  int break_after_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Duration pace_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::vector<v1::Rollout> listed_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::DeployRequest> deploys_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> watched_from_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ListRolloutsRequest> lists_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CancelRolloutRequest> cancels_ ABSL_GUARDED_BY(mu_);
};

// Diagnose finds an image pull problem for app "sick" and nothing for any other.
class FakeClusterWatcher final : public v1::ClusterWatcherService::Service {
 public:
  grpc::Status Diagnose(grpc::ServerContext*, const v1::DiagnoseRequest* request,
                        v1::DiagnoseResponse* response) override {
    absl::MutexLock lock(&mu_);
    requests_.push_back(*request);
    response->set_cluster("kind");
    if (request->app() == "sick") {
      *response->add_findings() = ImageNotFound();
      response->set_fatal(true);
    } else {
      response->set_healthy(true);
    }
    return grpc::Status::OK;
  }

  std::vector<v1::DiagnoseRequest> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::DiagnoseRequest> requests_ ABSL_GUARDED_BY(mu_);
};

struct Result {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

class ElfctlCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("elfctl-cli-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    for (const char* file :
         {"apps/teams/executive-team/Dockerfile", "apps/mcps/calendar-mcp/Dockerfile"}) {
      ASSERT_TRUE(testing::WriteFile(dir_->Join(file), "FROM scratch\n").ok());
    }
    apps_dir_ = std::filesystem::canonical(dir_->Join("apps")).string();

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&orchestrator_);
    builder.RegisterService(&cluster_watcher_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    addr_ = absl::StrCat("127.0.0.1:", port);
  }

  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  // Runs elfctl in `cwd` (default: the apps folder) with stdout and stderr kept apart.
  Result Elfctl(std::vector<std::string> args,
                std::vector<std::pair<std::string, std::string>> env = {}, std::string cwd = "") {
    const std::string out_path = dir_->Join(absl::StrCat("stdout-", ++runs_));
    testing::ProcessOptions options;
    options.argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" >\"$ELFCTL_TEST_STDOUT\"",
                    testing::BinaryPath("elfctl")};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.env = {{"ELFDEPLOY_ORCHESTRATOR", ""}, {"ELFDEPLOY_CLUSTER_WATCHER", ""}};
    options.env.insert(options.env.end(), env.begin(), env.end());
    options.env.emplace_back("ELFCTL_TEST_STDOUT", out_path);
    options.cwd = cwd.empty() ? apps_dir_ : cwd;
    Result result;
    absl::StatusOr<testing::CommandResult> run =
        testing::RunCommand(std::move(options), absl::Seconds(60));
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return result;
    result.exit_code = run->exit_code;
    result.err = run->output;
    absl::StatusOr<std::string> out = testing::ReadFile(out_path);
    if (out.ok()) result.out = *out;
    return result;
  }

  std::optional<testing::TempDir> dir_;
  std::string apps_dir_;
  int runs_ = 0;
  FakeOrchestrator orchestrator_;
  FakeClusterWatcher cluster_watcher_;
  std::unique_ptr<grpc::Server> server_;
  std::string addr_;
};

TEST_F(ElfctlCliTest, DeployFollowsTheRolloutWithPlainLinesAndSucceeds) {
  orchestrator_.Script(/*fail=*/false);
  Result r = Elfctl({"deploy", "--orchestrator", addr_, "--app=executive-team", "--skip_discovery",
                     "--timeout_rollout=10m"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  std::vector<v1::DeployRequest> deploys = orchestrator_.deploys();
  ASSERT_EQ(deploys.size(), 1u);
  EXPECT_EQ(deploys[0].source_dir(), apps_dir_);
  EXPECT_TRUE(std::filesystem::path(deploys[0].source_dir()).is_absolute());
  ASSERT_EQ(deploys[0].apps_size(), 1);
  EXPECT_EQ(deploys[0].apps(0).name(), "executive-team");
  EXPECT_EQ(deploys[0].apps(0).group(), "teams");
  EXPECT_TRUE(deploys[0].verify().skip_discovery());
  EXPECT_EQ(deploys[0].timeout().seconds(), 600);
  EXPECT_THAT(orchestrator_.watched_from(), ElementsAre(0));

  EXPECT_THAT(r.out, HasSubstr("rollout r-1 started\n"));
  EXPECT_THAT(r.out, HasSubstr("executive-team building: step 1/2 FROM python\n"));
  EXPECT_THAT(r.out, HasSubstr("executive-team building: step 2/2 COPY . /app (12.3 MB)\n"));
  EXPECT_THAT(r.out, HasSubstr("executive-team pushing\n"));
  EXPECT_THAT(r.out, HasSubstr("executive-team succeeded: verified\n"));
  EXPECT_THAT(r.out, HasSubstr("rollout SUCCEEDED\n"));
  EXPECT_THAT(r.out, HasSubstr("State:     SUCCEEDED\n"));
  EXPECT_THAT(r.out, HasSubstr("APP             GROUP  SYNC    HEALTH"));
  EXPECT_THAT(r.out, HasSubstr("rollout r-1 SUCCEEDED in 41.0s commit c0ffee0\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b[")));
  EXPECT_EQ(r.err, "");
}

TEST_F(ElfctlCliTest, DeployOnATerminalRedrawsALiveTable) {
  orchestrator_.Script(/*fail=*/false);
  orchestrator_.set_pace(absl::Milliseconds(150));  // slower than a redraw (100 ms)
  const std::string binary = testing::BinaryPath("elfctl");
  int terminal = -1;
  pid_t pid = forkpty(&terminal, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (chdir(apps_dir_.c_str()) != 0) _exit(126);
    unsetenv("ELFDEPLOY_ORCHESTRATOR");
    execl(binary.c_str(), binary.c_str(), "deploy", "--orchestrator", addr_.c_str(),
          "--app=executive-team", nullptr);
    _exit(127);
  }
  std::string out;
  for (absl::Time end = absl::Now() + absl::Seconds(60); absl::Now() < end;) {
    pollfd p{terminal, POLLIN, 0};
    if (poll(&p, 1, 500) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(terminal, buffer, sizeof(buffer));
    if (n <= 0) break;  // EIO once elfctl exits
    out.append(buffer, static_cast<size_t>(n));
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(terminal);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  // The table, redrawn in place (cursor up, clear to the end), then the final status.
  EXPECT_THAT(out, HasSubstr("APP"));
  EXPECT_THAT(out, HasSubstr("DETAIL"));
  EXPECT_THAT(out, HasSubstr("BYTES"));
  EXPECT_THAT(out, HasSubstr("ELAPSED"));
  EXPECT_THAT(out, HasSubstr("A\x1b[J"));
  EXPECT_THAT(out, HasSubstr("executive-team"));
  EXPECT_THAT(out, HasSubstr("rollout r-1 SUCCEEDED"));
  // No plain event lines on a terminal.
  EXPECT_THAT(out, Not(HasSubstr("executive-team pushing\r\n")));
}

TEST_F(ElfctlCliTest, DeployFailsWithItsFinding) {
  orchestrator_.Script(/*fail=*/true);
  Result r = Elfctl({"--orchestrator=" + addr_, "deploy", "."});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  ASSERT_EQ(orchestrator_.deploys().size(), 1u);
  EXPECT_EQ(orchestrator_.deploys()[0].apps_size(), 0);
  EXPECT_THAT(r.out, HasSubstr("executive-team failed: image not found\n"));
  EXPECT_THAT(r.out, HasSubstr("finding: executive-team  ImagePull/ImageNotFound (error, fatal): "
                               "image reg/cal@sha256:1 does not exist\n"));
  EXPECT_THAT(r.out, HasSubstr("FINDINGS:\nexecutive-team  ImagePull/ImageNotFound"));
  EXPECT_THAT(r.out, HasSubstr("\n    Failed to pull image \"reg/cal\": not found\n"));
  EXPECT_THAT(r.out, HasSubstr("rollout r-1 FAILED in 41.0s"));
}

TEST_F(ElfctlCliTest, DeployJsonPrintsTheFinalRollout) {
  orchestrator_.Script(/*fail=*/false);
  Result r = Elfctl({"deploy", "--output", "json", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  v1::Rollout rollout;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &rollout).ok()) << r.out;
  EXPECT_EQ(rollout.id(), "r-1");
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_SUCCEEDED);
  EXPECT_EQ(rollout.apps_size(), 1);

  orchestrator_.Script(/*fail=*/true);
  r = Elfctl({"deploy", "--output=json", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &rollout).ok()) << r.out;
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_FAILED);
}

TEST_F(ElfctlCliTest, ABrokenStreamIsWatchedAgainFromTheLastSequence) {
  orchestrator_.Script(/*fail=*/false);
  orchestrator_.BreakFirstWatchAfter(2);
  Result r = Elfctl({"deploy", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(orchestrator_.watched_from(), ElementsAre(0, 2));
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE: orchestrator restarting"));
  EXPECT_THAT(r.err, HasSubstr("from sequence 2"));
  // Every stored event printed once.
  EXPECT_THAT(r.out, HasSubstr("executive-team building: step 1/2 FROM python\n"));
  EXPECT_EQ(r.out.find("step 1/2"), r.out.rfind("step 1/2"));
  EXPECT_THAT(r.out, HasSubstr("executive-team succeeded: verified\n"));
  EXPECT_THAT(r.out, HasSubstr("rollout r-1 SUCCEEDED"));
}

TEST_F(ElfctlCliTest, DetachPrintsTheIdWithoutWatching) {
  orchestrator_.Script(/*fail=*/false);
  Result r = Elfctl({"deploy", "--detach", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "r-1\n");
  EXPECT_TRUE(orchestrator_.watched_from().empty());
}

TEST_F(ElfctlCliTest, UnreachableOrchestratorIsAnRpcError) {
  absl::StatusOr<int> port = testing::PickFreePort();
  ASSERT_TRUE(port.ok());
  Result r =
      Elfctl({"deploy", "--timeout=5s", "--orchestrator", absl::StrCat("127.0.0.1:", *port)});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("elfctl: Deploy: UNAVAILABLE: "));
}

TEST_F(ElfctlCliTest, UsageErrors) {
  Result r = Elfctl({"deploy", "--bogus", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown flag \"--bogus\""));
  r = Elfctl({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command \"frobnicate\""));
  r = Elfctl({"deploy", "--app", "ghost", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("ghost"));
  EXPECT_TRUE(orchestrator_.deploys().empty());
  r = Elfctl({"help", "rollouts"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--limit"));
}

TEST_F(ElfctlCliTest, StatusShowsTheNewestRollout) {
  orchestrator_.Script(/*fail=*/true);
  orchestrator_.SetListed({orchestrator_.final_rollout()});
  Result r = Elfctl({"status"}, {{"ELFDEPLOY_ORCHESTRATOR", addr_}});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_EQ(orchestrator_.lists().size(), 1u);
  EXPECT_EQ(orchestrator_.lists()[0].page_size(), 1);
  EXPECT_THAT(r.out, HasSubstr("Rollout:   r-1\nState:     FAILED\n"));
  EXPECT_THAT(r.out, HasSubstr("Commit:    c0ffee0123456789\n"));
  EXPECT_THAT(r.out, HasSubstr("executive-team  teams  Synced  Healthy"));
  EXPECT_THAT(r.out, HasSubstr("FINDINGS:\n"));

  r = Elfctl({"status", "r-2", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("elfctl: GetRollout: NOT_FOUND: no such rollout"));

  orchestrator_.SetListed({});
  r = Elfctl({"status", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no rollouts"));
}

// An orchestrator that requires client certificates (server.tls_client_ca_file) is reached with
// --tls_cert_file and --tls_key_file, and refuses elfctl without them.
TEST_F(ElfctlCliTest, MutualTlsUsesTheClientCertificate) {
  ASSERT_TRUE(testing::WriteTestPki(dir_->path(), {"server", "client"}).ok());
  auto read = [&](const char* name) { return testing::ReadFile(dir_->Join(name)).value_or(""); };
  FakeOrchestrator orchestrator;
  orchestrator.Script(/*fail=*/false);
  orchestrator.SetListed({orchestrator.final_rollout()});
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = read("ca.pem");
  ssl.pem_key_cert_pairs.push_back({read("server.key"), read("server.pem")});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(&orchestrator);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string addr = absl::StrCat("localhost:", port);
  const std::string ca = dir_->Join("ca.pem");

  Result with = Elfctl({"status", "--orchestrator", addr, "--tls_ca_file", ca, "--tls_cert_file",
                        dir_->Join("client.pem"), "--tls_key_file", dir_->Join("client.key")});
  EXPECT_EQ(with.exit_code, 0) << with.out << with.err;
  EXPECT_THAT(with.out, HasSubstr("Rollout:   r-1\n"));

  Result without =
      Elfctl({"status", "--orchestrator", addr, "--tls_ca_file", ca, "--timeout", "5s"});
  EXPECT_EQ(without.exit_code, 3) << without.out << without.err;

  Result half = Elfctl({"status", "--orchestrator", addr, "--tls_ca_file", ca, "--tls_cert_file",
                        dir_->Join("client.pem")});
  EXPECT_EQ(half.exit_code, 2) << half.out << half.err;
  EXPECT_THAT(half.err, HasSubstr("needs both its certificate file and its key file"));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

TEST_F(ElfctlCliTest, RolloutsFollowsPagesUpToTheLimit) {
  std::vector<v1::Rollout> listed;
  for (int i = 5; i >= 1; --i) {
    v1::Rollout rollout;
    rollout.set_id(absl::StrCat("r-", i));
    rollout.set_state(v1::ROLLOUT_STATE_FAILED);
    rollout.add_apps()->set_name("a");
    listed.push_back(rollout);
  }
  orchestrator_.SetListed(listed);
  Result r =
      Elfctl({"rollouts", "--state", "failed", "--app", "a", "--limit=3", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<v1::ListRolloutsRequest> lists = orchestrator_.lists();
  ASSERT_EQ(lists.size(), 2u);
  EXPECT_THAT(lists[0].states(), ElementsAre(v1::ROLLOUT_STATE_FAILED));
  EXPECT_EQ(lists[0].app(), "a");
  EXPECT_EQ(lists[0].page_size(), 3);
  EXPECT_EQ(lists[1].page_token(), "2");
  EXPECT_EQ(lists[1].page_size(), 1);
  EXPECT_THAT(r.out, HasSubstr("ID   STATE   APPS  COMMIT  CREATED  DURATION\n"));
  EXPECT_THAT(r.out, HasSubstr("r-5  FAILED  1"));
  EXPECT_THAT(r.out, HasSubstr("r-3  FAILED  1"));
  EXPECT_THAT(r.out, Not(HasSubstr("r-2")));

  r = Elfctl({"rollouts", "--output", "json", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  v1::ListRolloutsResponse response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &response).ok()) << r.out;
  EXPECT_EQ(response.rollouts_size(), 5);
}

TEST_F(ElfctlCliTest, DiagnoseExitsOneWithFindings) {
  Result r = Elfctl({"diagnose", "sick", "--namespace", "ns", "--cluster_watcher", addr_});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("sick  ImagePull/ImageNotFound (error, fatal): image"));
  EXPECT_THAT(r.out, HasSubstr("    Failed to pull image"));
  r = Elfctl({"diagnose", "fine", "--cluster_watcher=" + addr_});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("no problems found for fine\n"));
  std::vector<v1::DiagnoseRequest> requests = cluster_watcher_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].app(), "sick");
  EXPECT_EQ(requests[0].namespace_(), "ns");
}

TEST_F(ElfctlCliTest, CancelPrintsTheRolloutState) {
  orchestrator_.Script(/*fail=*/false);
  Result r = Elfctl({"cancel", "r-1", "--reason", "wrong branch", "--orchestrator", addr_});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "rollout r-1 CANCELLED: cancelled: wrong branch\n");
  ASSERT_EQ(orchestrator_.cancels().size(), 1u);
  EXPECT_EQ(orchestrator_.cancels()[0].reason(), "wrong branch");
}

}  // namespace
}  // namespace elfdeploy
