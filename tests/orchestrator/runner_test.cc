// The rollout runner over fakes of the four services and a real RolloutStore: the stage order
// and the events it stores, images pinned by digest, one publish, Applications applied, fatal
// findings failing at once, build failures, timeouts, cancel, and resuming after a restart without
// building or publishing again.
#include "services/orchestrator/runner.h"

#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "tests/harness/temp_dir.h"
#include "tests/orchestrator/fakes.h"

namespace elfdeploy::orchestrator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("runner-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    absl::StatusOr<std::unique_ptr<RolloutStore>> store = RolloutStore::Open({dir_->Join("db")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    options_.poll_interval = absl::Milliseconds(1);
    options_.settle = absl::ZeroDuration();
  }

  v1::DeployRequest Request() {
    v1::DeployRequest request;
    request.set_source_dir(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
    request.mutable_registry()->set_url("registry.test:5000");
    request.mutable_gitops()->set_url("git://gitops.test/gitops.git");
    request.mutable_gitops()->set_path_prefix("elf-automations");
    request.mutable_destination()->set_namespace_("elf-automations");
    request.set_tag("v7");
    return request;
  }

  std::string Create(const v1::DeployRequest& request) {
    absl::StatusOr<std::vector<DiscoveredApp>> apps = DiscoverApps(request);
    EXPECT_TRUE(apps.ok()) << apps.status();
    std::vector<v1::AppRollout> records;
    for (const DiscoveredApp& app : *apps) {
      v1::AppRollout record;
      record.set_name(app.name);
      record.set_group(app.group);
      record.set_source_dir(app.dir);
      record.set_stage(v1::STAGE_PENDING);
      records.push_back(record);
    }
    absl::StatusOr<std::pair<v1::Rollout, bool>> created = store_->Create(request, records);
    EXPECT_TRUE(created.ok()) << created.status();
    return created->first.id();
  }

  v1::Rollout Run(const std::string& id, const CancelledFn& cancelled = nullptr) {
    Runner runner(*store_, fakes_, fakes_, fakes_, fakes_, options_);
    EXPECT_TRUE(runner.Run(id, cancelled).ok());
    absl::StatusOr<v1::Rollout> rollout = store_->Get(id);
    EXPECT_TRUE(rollout.ok());
    return *rollout;
  }

  // The stages one app went through, from the stored events.
  std::vector<v1::Stage> StagesOf(const std::string& id, const std::string& app) {
    std::vector<v1::Stage> stages;
    absl::StatusOr<std::vector<v1::WatchRolloutResponse>> events = store_->Events(id, 0);
    EXPECT_TRUE(events.ok());
    for (const v1::WatchRolloutResponse& event : *events) {
      if (event.has_app_stage() && event.app_stage().app() == app) {
        stages.push_back(event.app_stage().stage());
      }
    }
    return stages;
  }

  std::optional<testing::TempDir> dir_;
  std::unique_ptr<RolloutStore> store_;
  RunnerOptions options_;
  Fakes fakes_;
};

TEST_F(RunnerTest, HappyPathPinsDigestsPublishesOnceAndVerifies) {
  std::string id = Create(Request());
  v1::Rollout rollout = Run(id);
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_SUCCEEDED) << rollout.message();
  EXPECT_EQ(rollout.commit(), "c0ffee");
  absl::MutexLock lock(&fakes_.mu);
  EXPECT_EQ(fakes_.built.size(), 4u);
  ASSERT_EQ(fakes_.published.size(), 1u);
  for (const PublishApp& app : fakes_.published[0]) {
    EXPECT_THAT(app.image, HasSubstr(absl::StrCat("registry.test:5000/elf-automations/", app.name,
                                                  ":v7@sha256:")));
    EXPECT_THAT(app.deployment_yaml, HasSubstr("kind: Deployment"));
  }
  EXPECT_THAT(fakes_.applied,
              ElementsAre("elf-mcps elf-automations/manifests/mcps elf-automations",
                          "elf-teams elf-automations/manifests/teams elf-automations"));
  EXPECT_THAT(StagesOf(id, "executive-team"),
              ElementsAre(v1::STAGE_BUILDING, v1::STAGE_PUSHING, v1::STAGE_PUBLISHING,
                          v1::STAGE_SYNCING, v1::STAGE_VERIFYING));
  for (const v1::AppRollout& app : rollout.apps()) {
    EXPECT_EQ(app.stage(), v1::STAGE_SUCCEEDED) << app.name();
    EXPECT_EQ(app.observed_revision(), "c0ffee");
    EXPECT_EQ(app.pods_ready(), 1);
    EXPECT_FALSE(app.image_digest().empty());
  }
  absl::StatusOr<std::vector<v1::WatchRolloutResponse>> events = store_->Events(id, 0);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->back().state().state(), v1::ROLLOUT_STATE_SUCCEEDED);
}

TEST_F(RunnerTest, BuildAndPushProgressReachesTheBoard) {
  ProgressBoard board;
  options_.progress = &board;
  std::string id = Create(Request());
  EXPECT_EQ(Run(id).state(), v1::ROLLOUT_STATE_SUCCEEDED);
  uint64_t version = 0;
  std::vector<v1::AppProgress> posted = board.Since(id, &version);
  ASSERT_EQ(posted.size(), 4u) << "the latest of each app";
  for (const v1::AppProgress& progress : posted) {
    EXPECT_EQ(progress.stage(), v1::STAGE_PUSHING) << progress.app();
    EXPECT_EQ(progress.bytes_done(), 1000) << progress.app();
  }
  EXPECT_TRUE(board.Since(id, &version).empty()) << "nothing new";
  EXPECT_TRUE(board.Since("r-other", &version).empty());
  board.Forget(id);
  version = 0;
  EXPECT_TRUE(board.Since(id, &version).empty());
}

TEST_F(RunnerTest, PollsThatChangeNothingDoNotRewriteTheRecord) {
  std::string id = Create(Request());
  fakes_.diagnoses_until_healthy = 8;      // Diagnose answers the same from its 3rd to 8th call
  std::map<int, std::string> update_time;  // the stored record's, as each call starts
  fakes_.on_diagnose = [&](int n) {
    absl::StatusOr<v1::Rollout> stored = store_->Get(id);
    ASSERT_TRUE(stored.ok()) << stored.status();
    update_time[n] = google::protobuf::util::TimeUtil::ToString(stored->update_time());
  };
  v1::Rollout rollout = Run(id);
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_SUCCEEDED) << rollout.message();
  EXPECT_NE(update_time[2], update_time[3]) << "the 2nd answer synced the commit: VERIFYING";
  EXPECT_EQ(update_time[3], update_time[9]) << "the 3rd to 8th answers changed nothing";
  EXPECT_NE(update_time[9], update_time[10]) << "the 9th answer found the pods ready";
}

TEST_F(RunnerTest, AFatalFindingFailsAtOnceWithTheFinding) {
  fakes_.diagnoses_until_healthy = 1000;
  v1::Finding finding;
  finding.set_kind(v1::FINDING_KIND_IMAGE_PULL);
  finding.set_reason("ImageNotFound");
  finding.set_fatal(true);
  finding.set_app("executive-team");
  finding.set_message("image registry.test:5000/elf-automations/executive-team:v7 does not exist");
  fakes_.fatal_finding = finding;
  v1::Rollout rollout = Run(Create(Request()));
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(rollout.message(), HasSubstr("does not exist"));
  EXPECT_LE(fakes_.diagnoses.load(), 2);
  bool recorded = false;
  for (const v1::AppRollout& app : rollout.apps()) {
    for (const v1::Finding& f : app.findings()) recorded |= f.reason() == "ImageNotFound";
  }
  EXPECT_TRUE(recorded);
}

TEST_F(RunnerTest, ABuildFailureFailsBeforeAnythingIsPublished) {
  fakes_.fail_build = "marketing-team";
  v1::Rollout rollout = Run(Create(Request()));
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(rollout.message(), HasSubstr("Dockerfile:3"));
  absl::MutexLock lock(&fakes_.mu);
  EXPECT_TRUE(fakes_.published.empty());
}

// A build that never ends (a hung builder) is cancelled when the rollout's deadline passes, and
// the rollout ends TIMED_OUT instead of waiting forever.
TEST_F(RunnerTest, TheDeadlineCancelsABuildInFlight) {
  fakes_.hang_builds = true;
  v1::DeployRequest request = Request();
  request.mutable_timeout()->set_nanos(300000000);  // 300 ms
  v1::Rollout rollout = Run(Create(request));
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_TIMED_OUT);
  EXPECT_THAT(rollout.message(), HasSubstr("deadline"));
  absl::MutexLock lock(&fakes_.mu);
  EXPECT_GE(fakes_.cancelled_builds, 1);
  EXPECT_TRUE(fakes_.published.empty());
}

TEST_F(RunnerTest, TimeoutAndCancel) {
  fakes_.diagnoses_until_healthy = 1000000;
  v1::DeployRequest request = Request();
  request.mutable_timeout()->set_nanos(300000000);  // 300 ms
  v1::Rollout timed_out = Run(Create(request));
  EXPECT_EQ(timed_out.state(), v1::ROLLOUT_STATE_TIMED_OUT);

  std::atomic<bool> cancel{false};
  v1::DeployRequest longer = Request();
  longer.set_tag("v8");
  std::string id = Create(longer);
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(100));
    cancel = true;
  });
  v1::Rollout cancelled = Run(id, [&] { return cancel.load(); });
  canceller.join();
  EXPECT_EQ(cancelled.state(), v1::ROLLOUT_STATE_CANCELLED);
}

TEST_F(RunnerTest, ResumesAfterARestartWithoutBuildingOrPublishingAgain) {
  std::string id = Create(Request());
  // As a killed orchestrator left it: images pushed and the commit published.
  absl::StatusOr<v1::Rollout> rollout = store_->Get(id);
  ASSERT_TRUE(rollout.ok());
  rollout->set_state(v1::ROLLOUT_STATE_RUNNING);
  rollout->set_commit("c0ffee");
  *rollout->mutable_deadline() = google::protobuf::util::TimeUtil::GetCurrentTime();
  rollout->mutable_deadline()->set_seconds(rollout->deadline().seconds() + 600);
  for (v1::AppRollout& app : *rollout->mutable_apps()) {
    app.set_stage(v1::STAGE_PUBLISHING);
    app.set_image_digest(Digest(app.name()));
    app.set_image(absl::StrCat("registry.test:5000/elf-automations/", app.name(), ":v7@",
                               Digest(app.name())));
  }
  ASSERT_TRUE(store_->Update(*rollout, {}).ok());
  v1::Rollout resumed = Run(id);
  EXPECT_EQ(resumed.state(), v1::ROLLOUT_STATE_SUCCEEDED) << resumed.message();
  EXPECT_EQ(fakes_.applications_asked, 1) << "the publisher's Applications, rendered again";
  absl::MutexLock lock(&fakes_.mu);
  EXPECT_TRUE(fakes_.built.empty());
  EXPECT_TRUE(fakes_.published.empty());
  // The Applications are ensured again (idempotent), as the publisher renders them.
  EXPECT_THAT(fakes_.applied,
              ElementsAre("elf-mcps elf-automations/manifests/mcps elf-automations",
                          "elf-teams elf-automations/manifests/teams elf-automations"));
}

TEST(ImageRepositoryTest, TakesTheContainerImageNamedAfterTheApp) {
  EXPECT_EQ(
      ImageRepository("spec:\n  template:\n    spec:\n      containers:\n"
                      "        - {name: side, image: busybox:1}\n"
                      "        - {name: a, image: \"reg.io:5000/elf-automations/a:latest\"}\n",
                      "a"),
      "elf-automations/a");
  EXPECT_EQ(ImageRepository("spec: {template: {spec: {containers: [{image: b@sha256:00}]}}}", "b"),
            "b");
  EXPECT_EQ(ImageRepository("not: [yaml", "c"), "c");
}

TEST(CommitLineageTest, ALaterCommitOnTheBranchIncludesAnEarlierOne) {
  CommitLineage lineage;
  lineage.Record("c2", "c1");
  lineage.Record("c3", "c2");
  lineage.Record("x2", "x1");
  EXPECT_TRUE(lineage.Descends("c1", "c1"));
  EXPECT_TRUE(lineage.Descends("c3", "c1"));
  EXPECT_FALSE(lineage.Descends("c1", "c3"));  // an older commit does not include a newer one
  EXPECT_FALSE(lineage.Descends("x2", "c1"));
  EXPECT_FALSE(lineage.Descends("unknown", "c1"));
  lineage.Record("loop", "loop");  // a bad link ends the walk
  EXPECT_FALSE(lineage.Descends("loop", "c1"));
}

}  // namespace
}  // namespace elfdeploy::orchestrator
