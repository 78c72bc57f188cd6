// elfctl_lib: argument parsing (flags anywhere, both value forms, errors naming the culprit, --app
// lists and app folders), and rendering (short enum names, the status table, plain event lines,
// the live frame, JSON that parses back to the same message).
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "services/common/proto_time.h"
#include "services/elfctl/options.h"
#include "services/elfctl/render.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::elfctl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kStart = absl::FromUnixSeconds(1714564800);  // 2024-05-01 12:00:00 UTC

// --- parsing ------------------------------------------------------------------------------------

TEST(ParseArgsTest, FlagsBeforeAndAfterTheCommandInBothForms) {
  absl::StatusOr<Options> options =
      ParseArgs({"--orchestrator", "orch:1", "--output=json", "deploy", "--registry=reg:5000",
                 "apps", "--tag", "v1", "--timeout_rollout", "10m", "--timeout=5s"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->command, Command::kDeploy);
  EXPECT_EQ(options->orchestrator, "orch:1");
  EXPECT_EQ(options->output, OutputFormat::kJson);
  EXPECT_EQ(options->registry, "reg:5000");
  EXPECT_EQ(options->dir, "apps");
  EXPECT_EQ(options->tag, "v1");
  EXPECT_EQ(options->rollout_timeout, absl::Minutes(10));
  EXPECT_EQ(options->timeout, absl::Seconds(5));
  EXPECT_FALSE(options->detach);
}

TEST(ParseArgsTest, DefaultsComeFromTheEnvironmentAndFlagsWin) {
  absl::StatusOr<Options> options = ParseArgs({"status"}, {"env-orch:1", "env-cw:2"});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->orchestrator, "env-orch:1");
  EXPECT_EQ(options->cluster_watcher, "env-cw:2");
  EXPECT_EQ(options->output, OutputFormat::kText);
  EXPECT_EQ(options->timeout, absl::Seconds(30));
  EXPECT_EQ(options->rollout_id, "");

  options = ParseArgs({"status", "r-1", "--orchestrator=flag:3"}, {"env-orch:1", ""});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->orchestrator, "flag:3");
  EXPECT_EQ(options->cluster_watcher, "127.0.0.1:7404");
  EXPECT_EQ(options->rollout_id, "r-1");

  options = ParseArgs({"deploy"});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->orchestrator, "127.0.0.1:7400");
  EXPECT_EQ(options->dir, ".");
}

TEST(ParseArgsTest, AppListsAreRepeatableCommaSeparatedAndDistinct) {
  absl::StatusOr<Options> options =
      ParseArgs({"deploy", "--app", "a,b", "--app=c", "--app", " b , d ", "--detach",
                 "--no_cache=false", "--skip-discovery"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->apps, ElementsAre("a", "b", "c", "d"));
  EXPECT_TRUE(options->detach);
  EXPECT_FALSE(options->no_cache);
  EXPECT_TRUE(options->skip_discovery);
}

TEST(ParseArgsTest, RolloutsFilters) {
  absl::StatusOr<Options> options = ParseArgs(
      {"rollouts", "--state", "succeeded,FAILED", "--state=timed-out", "--app", "x", "--limit=5"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->states, ElementsAre(v1::ROLLOUT_STATE_SUCCEEDED, v1::ROLLOUT_STATE_FAILED,
                                           v1::ROLLOUT_STATE_TIMED_OUT));
  EXPECT_EQ(options->app, "x");
  EXPECT_EQ(options->limit, 5);
}

TEST(ParseArgsTest, DiagnoseAndCancelTakeTheirArguments) {
  absl::StatusOr<Options> options =
      ParseArgs({"--namespace=ns", "diagnose", "exec", "--cluster", "c1"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->command, Command::kDiagnose);
  EXPECT_EQ(options->app, "exec");
  EXPECT_EQ(options->namespace_, "ns");
  EXPECT_EQ(options->cluster, "c1");

  options = ParseArgs({"cancel", "--reason", "oops", "r-9"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->command, Command::kCancel);
  EXPECT_EQ(options->rollout_id, "r-9");
  EXPECT_EQ(options->reason, "oops");

  options = ParseArgs({"deploy", "--", "--weird-dir"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->dir, "--weird-dir");
}

TEST(ParseArgsTest, ErrorsNameTheCulprit) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"deploy", "--bogus"}, "--bogus"},
           {{"--bogus=1", "status"}, "--bogus"},
           {{"-x", "status"}, "-x"},
           {{"frobnicate"}, "frobnicate"},
           {{}, "no command"},
           {{"deploy", "--tag"}, "--tag"},
           {{"status", "--registry", "r"}, "does not apply to command status"},
           {{"diagnose"}, "APP"},
           {{"cancel"}, "ROLLOUT"},
           {{"status", "a", "b"}, "\"b\""},
           {{"rollouts", "extra"}, "\"extra\""},
           {{"deploy", "--timeout=abc"}, "abc"},
           {{"rollouts", "--limit", "0"}, "limit"},
           {{"rollouts", "--state", "done"}, "done"},
           {{"--output", "yaml", "status"}, "yaml"},
           {{"deploy", "--detach=maybe"}, "maybe"},
           {{"help", "nope"}, "nope"},
       }) {
    absl::StatusOr<Options> options = ParseArgs(c.args);
    ASSERT_FALSE(options.ok()) << absl::StrJoin(c.args, " ");
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(options.status().message(), HasSubstr(c.message)) << absl::StrJoin(c.args, " ");
  }
}

TEST(ParseArgsTest, HelpAnywhere) {
  for (const auto& [args, topic] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--help"}, ""},
           {{"help"}, ""},
           {{"-h"}, ""},
           {{"help", "deploy"}, "deploy"},
           {{"deploy", "--help"}, "deploy"},
           {{"--output=json", "--help", "rollouts"}, "rollouts"},
       }) {
    absl::StatusOr<Options> options = ParseArgs(args);
    ASSERT_TRUE(options.ok()) << absl::StrJoin(args, " ") << ": " << options.status();
    EXPECT_EQ(options->command, Command::kHelp);
    EXPECT_EQ(options->help_topic, topic);
  }
  const std::string usage = Usage();
  for (const char* word : {"deploy [DIR]", "status [ROLLOUT]", "diagnose APP", "rollouts",
                           "cancel ROLLOUT", "--orchestrator", "--cluster_watcher", "--output",
                           "--tls_ca_file", "plaintext", "loopback", "--timeout_rollout", "--app",
                           "--skip_discovery", "--detach", "--state", "--limit", "--reason"}) {
    EXPECT_THAT(usage, HasSubstr(word));
  }
  absl::StatusOr<std::string> help = CommandHelp("cancel");
  ASSERT_TRUE(help.ok());
  EXPECT_THAT(*help, HasSubstr("--reason"));
  EXPECT_THAT(*help, Not(HasSubstr("--registry")));
  EXPECT_FALSE(CommandHelp("nope").ok());
}

class DeployRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("elfctl-format-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    for (const char* file :
         {"teams/exec/Dockerfile", "mcps/cal/Dockerfile", "tools/lint/Dockerfile",
          "mcps/exec/Dockerfile", "teams/empty/README"}) {
      ASSERT_TRUE(testing::WriteFile(dir_->Join(file), "FROM scratch\n").ok());
    }
    root_ = std::filesystem::canonical(dir_->path()).string();
  }

  std::optional<testing::TempDir> dir_;
  std::string root_;
};

TEST_F(DeployRequestTest, AppsAreFoundInTeamsMcpsThenAnyGroup) {
  absl::StatusOr<std::vector<v1::AppSource>> apps =
      ResolveApps(root_, {"exec", "cal", "lint", "mcps/exec"});
  ASSERT_TRUE(apps.ok()) << apps.status();
  ASSERT_EQ(apps->size(), 4u);
  EXPECT_EQ((*apps)[0].group(), "teams");
  EXPECT_EQ((*apps)[0].name(), "exec");
  EXPECT_EQ((*apps)[1].group(), "mcps");
  EXPECT_EQ((*apps)[2].group(), "tools");
  EXPECT_EQ((*apps)[2].name(), "lint");
  EXPECT_EQ((*apps)[3].group(), "mcps");
  EXPECT_EQ((*apps)[3].name(), "exec");

  for (const char* missing : {"empty", "ghost", "tools/cal"}) {
    apps = ResolveApps(root_, {missing});
    EXPECT_EQ(apps.status().code(), absl::StatusCode::kNotFound) << missing;
    EXPECT_THAT(apps.status().message(), HasSubstr(missing));
  }
}

TEST_F(DeployRequestTest, SourceDirIsAbsoluteAndFlagsAreCarried) {
  const std::string cwd = std::filesystem::current_path().string();
  ASSERT_EQ(chdir(root_.c_str()), 0);
  absl::StatusOr<Options> options = ParseArgs({"deploy",
                                               "--app",
                                               "exec,lint",
                                               "--namespace",
                                               "ns",
                                               "--gitops_repo",
                                               "git://g",
                                               "--branch",
                                               "b",
                                               "--path_prefix",
                                               "p",
                                               "--timeout_rollout",
                                               "90s",
                                               "--skip_discovery",
                                               "--no_cache",
                                               "--request_id",
                                               "req",
                                               "--message",
                                               "msg",
                                               "--build_arg",
                                               "BASE=reg:5000/base:1",
                                               "--build_arg=EMPTY="});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(ParseArgs({"deploy", "--build_arg", "NOEQUALS"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<v1::DeployRequest> request = BuildDeployRequest(*options);
  options->dir = "teams/..//";
  absl::StatusOr<v1::DeployRequest> dotted = BuildDeployRequest(*options);
  options->dir = "nowhere";
  absl::StatusOr<v1::DeployRequest> missing = BuildDeployRequest(*options);
  ASSERT_EQ(chdir(cwd.c_str()), 0);

  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->source_dir(), root_);
  ASSERT_EQ(request->apps_size(), 2);
  EXPECT_EQ(request->apps(0).name(), "exec");
  EXPECT_EQ(request->apps(0).group(), "teams");
  EXPECT_EQ(request->apps(1).group(), "tools");
  EXPECT_EQ(request->destination().namespace_(), "ns");
  EXPECT_EQ(request->gitops().url(), "git://g");
  EXPECT_EQ(request->gitops().branch(), "b");
  EXPECT_EQ(request->gitops().path_prefix(), "p");
  EXPECT_EQ(request->timeout().seconds(), 90);
  EXPECT_TRUE(request->verify().skip_discovery());
  EXPECT_TRUE(request->no_cache());
  EXPECT_EQ(request->request_id(), "req");
  EXPECT_EQ(request->message(), "msg");
  EXPECT_EQ(request->build_args().at("BASE"), "reg:5000/base:1");
  EXPECT_EQ(request->build_args().at("EMPTY"), "");

  ASSERT_TRUE(dotted.ok()) << dotted.status();
  EXPECT_EQ(dotted->source_dir(), root_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// --- rendering ----------------------------------------------------------------------------------

TEST(RenderTest, ShortEnumNamesComeFromTheDescriptor) {
  EXPECT_EQ(SyncName(v1::SYNC_STATUS_SYNCED), "Synced");
  EXPECT_EQ(SyncName(v1::SYNC_STATUS_OUT_OF_SYNC), "OutOfSync");
  EXPECT_EQ(SyncName(v1::SYNC_STATUS_UNSPECIFIED), "-");
  EXPECT_EQ(HealthName(v1::HEALTH_STATUS_HEALTHY), "Healthy");
  EXPECT_EQ(HealthName(v1::HEALTH_STATUS_PROGRESSING), "Progressing");
  EXPECT_EQ(StageName(v1::STAGE_VERIFYING), "verifying");
  EXPECT_EQ(StageName(v1::STAGE_BUILDING), "building");
  EXPECT_EQ(StateName(v1::ROLLOUT_STATE_TIMED_OUT), "TIMED_OUT");
  EXPECT_EQ(FindingKindName(v1::FINDING_KIND_IMAGE_PULL), "ImagePull");
  EXPECT_EQ(SeverityName(v1::SEVERITY_ERROR), "error");
  EXPECT_EQ(ShortEnumName(*v1::Stage_descriptor(), 99, NameCase::kLower), "99");
}

TEST(RenderTest, HumanUnits) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(999), "999 B");
  EXPECT_EQ(HumanBytes(1500), "1.5 kB");
  EXPECT_EQ(HumanBytes(12'300'000), "12.3 MB");
  EXPECT_EQ(HumanBytes(999'990), "1.0 MB");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(41234)), "41.2s");
  EXPECT_EQ(HumanDuration(absl::Seconds(192)), "3m12s");
  EXPECT_EQ(HumanDuration(absl::Minutes(62)), "1h02m");
  EXPECT_EQ(HumanDuration(absl::Seconds(-3)), "0.0s");
  EXPECT_EQ(ShortDigest("sha256:0123456789abcdef"), "sha256:0123456");
  EXPECT_EQ(ShortDigest("reg/x:t@sha256:0123456789abcdef"), "sha256:0123456");
  EXPECT_EQ(ShortDigest(""), "-");
  EXPECT_EQ(ShortRevision("abcdef0123456789"), "abcdef0");
  EXPECT_EQ(ExitCodeForState(v1::ROLLOUT_STATE_SUCCEEDED), kExitOk);
  EXPECT_EQ(ExitCodeForState(v1::ROLLOUT_STATE_CANCELLED), kExitFailed);
}

v1::Rollout TwoAppRollout() {
  v1::Rollout rollout;
  rollout.set_id("r-42");
  rollout.set_state(v1::ROLLOUT_STATE_FAILED);
  rollout.set_message("calendar-mcp failed: image not found");
  rollout.set_commit("c0ffee0123456789");
  *rollout.mutable_create_time() = ToTimestamp(kStart);
  *rollout.mutable_start_time() = ToTimestamp(kStart + absl::Seconds(1));
  *rollout.mutable_end_time() = ToTimestamp(kStart + absl::Seconds(42.2));
  rollout.mutable_request()->set_source_dir("/src");
  rollout.set_last_sequence(17);

  v1::AppRollout* exec = rollout.add_apps();
  exec->set_name("executive-team");
  exec->set_group("teams");
  exec->set_stage(v1::STAGE_SUCCEEDED);
  exec->set_sync_status(v1::SYNC_STATUS_SYNCED);
  exec->set_health_status(v1::HEALTH_STATUS_HEALTHY);
  exec->set_observed_revision("c0ffee0123456789");
  exec->set_pods_ready(2);
  exec->set_pods_desired(2);
  exec->set_discovered(true);
  exec->set_image_digest("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  exec->set_bytes_pushed(12'300'000);
  v1::StageTiming* timing = exec->add_stage_timings();
  timing->set_stage(v1::STAGE_BUILDING);
  *timing->mutable_start_time() = ToTimestamp(kStart + absl::Seconds(1));

  v1::AppRollout* cal = rollout.add_apps();
  cal->set_name("calendar-mcp");
  cal->set_group("mcps");
  cal->set_stage(v1::STAGE_FAILED);
  cal->set_sync_status(v1::SYNC_STATUS_OUT_OF_SYNC);
  cal->set_health_status(v1::HEALTH_STATUS_DEGRADED);
  cal->set_pods_ready(0);
  cal->set_pods_desired(1);
  v1::Finding* finding = cal->add_findings();
  finding->set_kind(v1::FINDING_KIND_IMAGE_PULL);
  finding->set_reason("ImageNotFound");
  finding->set_severity(v1::SEVERITY_ERROR);
  finding->set_fatal(true);
  finding->set_message("image reg/cal@sha256:1 does not exist");
  finding->add_evidence("Failed to pull image \"reg/cal\": not found");
  finding->add_evidence("Back-off pulling image");
  finding->set_remediation("push the image again");
  return rollout;
}

// The whitespace-separated cells of `line`.
std::vector<std::string> Cells(absl::string_view line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

TEST(RenderTest, StatusTable) {
  const std::string out = RenderRolloutStatus(TwoAppRollout(), kStart, absl::UTCTimeZone());
  std::vector<std::string> lines = absl::StrSplit(out, '\n');
  ASSERT_GE(lines.size(), 14u) << out;
  EXPECT_EQ(lines[0], "Rollout:   r-42");
  EXPECT_EQ(lines[1], "State:     FAILED");
  EXPECT_EQ(lines[2], "Message:   calendar-mcp failed: image not found");
  EXPECT_EQ(lines[3], "Commit:    c0ffee0123456789");
  EXPECT_EQ(lines[4], "Created:   2024-05-01 12:00:00");
  EXPECT_EQ(lines[5], "Duration:  41.2s");
  EXPECT_EQ(lines[6], "");
  EXPECT_THAT(Cells(lines[7]), ElementsAre("APP", "GROUP", "SYNC", "HEALTH", "REVISION", "PODS",
                                           "DISCOVERED", "STAGE", "IMAGE", "DIGEST"));
  EXPECT_THAT(Cells(lines[8]), ElementsAre("executive-team", "teams", "Synced", "Healthy",
                                           "c0ffee0", "2/2", "yes", "succeeded", "sha256:0123456"));
  EXPECT_THAT(Cells(lines[9]), ElementsAre("calendar-mcp", "mcps", "OutOfSync", "Degraded", "-",
                                           "0/1", "no", "failed", "-"));
  // Columns line up.
  EXPECT_EQ(lines[7].find("SYNC"), lines[8].find("Synced"));
  EXPECT_EQ(lines[7].find("STAGE"), lines[9].find("failed"));
  EXPECT_EQ(lines[10], "");
  EXPECT_EQ(lines[11], "FINDINGS:");
  EXPECT_EQ(lines[12],
            "calendar-mcp  ImagePull/ImageNotFound (error, fatal): image reg/cal@sha256:1 does "
            "not exist");
  EXPECT_EQ(lines[13], "    Failed to pull image \"reg/cal\": not found");
  EXPECT_EQ(lines[14], "    Back-off pulling image");
  EXPECT_EQ(lines[15], "    remediation: push the image again");

  v1::Rollout no_op = TwoAppRollout();
  no_op.set_commit_no_op(true);
  no_op.set_state(v1::ROLLOUT_STATE_SUCCEEDED);
  EXPECT_THAT(RenderRolloutStatus(no_op, kStart, absl::UTCTimeZone()),
              HasSubstr("Commit:    c0ffee0123456789 (no change)\n"));
  EXPECT_EQ(RenderSummaryLine(no_op),
            "rollout r-42 SUCCEEDED in 41.2s commit c0ffee0 (no change)\n");
}

TEST(RenderTest, RolloutListAndDiagnosis) {
  v1::Rollout running;
  running.set_id("r-43");
  running.set_state(v1::ROLLOUT_STATE_RUNNING);
  *running.mutable_create_time() = ToTimestamp(kStart + absl::Minutes(5));
  const std::string list =
      RenderRolloutList({running, TwoAppRollout()}, kStart + absl::Minutes(6), absl::UTCTimeZone());
  std::vector<std::string> lines = absl::StrSplit(list, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(Cells(lines[0]), ElementsAre("ID", "STATE", "APPS", "COMMIT", "CREATED", "DURATION"));
  EXPECT_THAT(Cells(lines[1]),
              ElementsAre("r-43", "RUNNING", "0", "-", "2024-05-01", "12:05:00", "1m00s"));
  EXPECT_THAT(Cells(lines[2]),
              ElementsAre("r-42", "FAILED", "2", "c0ffee0", "2024-05-01", "12:00:00", "41.2s"));

  v1::DiagnoseResponse healthy;
  healthy.set_healthy(true);
  EXPECT_EQ(RenderDiagnosis(healthy, "exec"), "no problems found for exec\n");
  v1::DiagnoseResponse sick;
  sick.set_cluster("c1");
  *sick.add_findings() = TwoAppRollout().apps(1).findings(0);
  const std::string text = RenderDiagnosis(sick, "calendar-mcp");
  EXPECT_THAT(text, HasSubstr("Cluster: c1\n"));
  EXPECT_THAT(text, HasSubstr("calendar-mcp  ImagePull/ImageNotFound (error, fatal)"));
  EXPECT_THAT(text, HasSubstr("\n    Back-off pulling image\n"));
}

v1::WatchRolloutResponse StageEvent(uint64_t sequence, absl::Time at, const std::string& app,
                                    v1::Stage stage, const std::string& message) {
  v1::WatchRolloutResponse event;
  event.set_sequence(sequence);
  event.set_rollout_id("r-42");
  *event.mutable_event_time() = ToTimestamp(at);
  event.mutable_app_stage()->set_app(app);
  event.mutable_app_stage()->set_stage(stage);
  event.mutable_app_stage()->set_message(message);
  event.mutable_app_stage()->mutable_status()->set_name(app);
  event.mutable_app_stage()->mutable_status()->set_group("teams");
  return event;
}

v1::WatchRolloutResponse ProgressEvent(const std::string& app, v1::Stage stage,
                                       const std::string& message, int64_t bytes) {
  v1::WatchRolloutResponse event;
  event.mutable_progress()->set_app(app);
  event.mutable_progress()->set_stage(stage);
  event.mutable_progress()->set_message(message);
  event.mutable_progress()->set_bytes_done(bytes);
  return event;
}

TEST(RenderTest, PlainProgressLines) {
  PlainEventPrinter printer(kStart);
  const absl::Time t = kStart + absl::Milliseconds(12300);
  EXPECT_EQ(printer.Line(
                StageEvent(1, t, "executive-team", v1::STAGE_BUILDING, "step 2/5 COPY . /app"), t),
            "12.3s executive-team building: step 2/5 COPY . /app\n");
  // Progress: at most one line per app and stage per second.
  const v1::WatchRolloutResponse progress =
      ProgressEvent("executive-team", v1::STAGE_PUSHING, "layer 1/3", 12'300'000);
  EXPECT_EQ(printer.Line(progress, t), "12.3s executive-team pushing: layer 1/3 (12.3 MB)\n");
  EXPECT_EQ(printer.Line(progress, t + absl::Milliseconds(500)), "");
  EXPECT_EQ(printer.Line(ProgressEvent("other", v1::STAGE_PUSHING, "", 0), t),
            "12.3s other pushing\n");
  EXPECT_EQ(printer.Line(progress, t + absl::Milliseconds(1100)),
            "13.4s executive-team pushing: layer 1/3 (12.3 MB)\n");

  v1::WatchRolloutResponse finding;
  finding.set_sequence(5);
  *finding.mutable_event_time() = ToTimestamp(kStart + absl::Seconds(20));
  finding.mutable_finding()->set_app("calendar-mcp");
  *finding.mutable_finding()->mutable_finding() = TwoAppRollout().apps(1).findings(0);
  EXPECT_EQ(printer.Line(finding, t),
            "20.0s finding: calendar-mcp  ImagePull/ImageNotFound (error, fatal): image "
            "reg/cal@sha256:1 does not exist\n");

  v1::WatchRolloutResponse state;
  state.set_sequence(6);
  *state.mutable_event_time() = ToTimestamp(kStart + absl::Seconds(41.2));
  state.mutable_state()->set_state(v1::ROLLOUT_STATE_SUCCEEDED);
  state.mutable_state()->set_message("all apps verified");
  EXPECT_EQ(printer.Line(state, t), "41.2s rollout SUCCEEDED: all apps verified\n");
}

TEST(RenderTest, LiveFrame) {
  v1::Rollout started;
  started.set_id("r-42");
  started.set_state(v1::ROLLOUT_STATE_PENDING);
  *started.mutable_create_time() = ToTimestamp(kStart);
  LiveView view(started, kStart);
  view.Apply(StageEvent(1, kStart + absl::Seconds(1), "executive-team", v1::STAGE_BUILDING,
                        "step 1/5 FROM python"),
             kStart + absl::Seconds(1));
  view.Apply(
      ProgressEvent("executive-team", v1::STAGE_BUILDING, "step 2/5 COPY . /app", 12'300'000),
      kStart + absl::Seconds(2));
  view.Apply(StageEvent(2, kStart + absl::Seconds(2), "calendar-mcp", v1::STAGE_PUSHING, ""),
             kStart + absl::Seconds(2));
  v1::WatchRolloutResponse finding;
  finding.mutable_finding()->set_app("calendar-mcp");
  *finding.mutable_finding()->mutable_finding() = TwoAppRollout().apps(1).findings(0);
  view.Apply(finding, kStart + absl::Seconds(3));

  const std::string frame = view.Frame(kStart + absl::Seconds(5), 0);
  std::vector<std::string> lines = absl::StrSplit(frame, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 6u) << frame;
  EXPECT_EQ(lines[0], "rollout r-42  PENDING  5.0s");
  EXPECT_THAT(Cells(lines[1]), ElementsAre("APP", "GROUP", "STAGE", "DETAIL", "BYTES", "ELAPSED"));
  EXPECT_THAT(Cells(lines[2]), ElementsAre("executive-team", "teams", "building", "step", "2/5",
                                           "COPY", ".", "/app", "12.3", "MB", "4.0s"));
  EXPECT_THAT(Cells(lines[3]), ElementsAre("calendar-mcp", "teams", "pushing", "-", "3.0s"));
  EXPECT_EQ(lines[4], "FINDINGS:");
  EXPECT_THAT(lines[5], HasSubstr("calendar-mcp  ImagePull/ImageNotFound"));

  for (absl::string_view line :
       absl::StrSplit(view.Frame(kStart + absl::Seconds(5), 20), '\n', absl::SkipEmpty())) {
    EXPECT_LE(line.size(), 20u) << line;
  }
  EXPECT_EQ(RedrawPrefix(0), "");
  EXPECT_EQ(RedrawPrefix(6), "\r\x1b[6A\x1b[J");
}

TEST(RenderTest, JsonParsesBackToTheSameMessage) {
  const v1::Rollout rollout = TwoAppRollout();
  absl::StatusOr<std::string> json = ToJson(rollout);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"createTime\""));
  EXPECT_THAT(*json, HasSubstr("\"ROLLOUT_STATE_FAILED\""));
  v1::Rollout parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &parsed).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, rollout))
      << parsed.DebugString();
}

}  // namespace
}  // namespace elfdeploy::elfctl
