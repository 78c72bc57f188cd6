// OrchestratorService's adapters in process over the Orchestrator and fakes of the services:
// Deploy, WatchRollout from the start and from a sequence (ending after the terminal event),
// GetRollout, ListRollouts, CancelRollout, and the errors of empty requests.
#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/orchestrator/orchestrator_service.h"
#include "tests/harness/temp_dir.h"
#include "tests/orchestrator/fakes.h"

namespace elfdeploy {
namespace {

class OrchestratorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("orchestrator-service-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    absl::StatusOr<std::unique_ptr<orchestrator::RolloutStore>> store =
        orchestrator::RolloutStore::Open({dir_->Join("db")});
    ASSERT_TRUE(store.ok());
    orchestrator::RunnerOptions runner;
    runner.poll_interval = absl::Milliseconds(1);
    runner.settle = absl::ZeroDuration();
    orchestrator_ = std::make_unique<orchestrator::Orchestrator>(
        *std::move(store), fakes_, fakes_, fakes_, fakes_,
        orchestrator::DeployDefaults{"registry.test:5000", "git://gitops.test/g.git", "main",
                                     "elf-automations", "elf-automations"},
        runner);
    service_ = std::make_unique<OrchestratorServiceImpl>(*orchestrator_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = v1::OrchestratorService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    orchestrator_->Stop();
  }

  // Deploys deploy/local/examples; the rollout id, "" on failure.
  std::string DeployExamples() {
    v1::DeployRequest request;
    request.set_source_dir(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
    grpc::ClientContext context;
    v1::DeployResponse deployed;
    grpc::Status status = stub_->Deploy(&context, request, &deployed);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return deployed.rollout().id();
  }

  std::vector<v1::WatchRolloutResponse> Watch(const std::string& id, uint64_t from) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::WatchRolloutRequest request;
    request.set_id(id);
    request.set_from_sequence(from);
    auto reader = stub_->WatchRollout(&context, request);
    std::vector<v1::WatchRolloutResponse> events;
    v1::WatchRolloutResponse event;
    while (reader->Read(&event)) events.push_back(event);
    EXPECT_TRUE(reader->Finish().ok());
    return events;
  }

  std::optional<testing::TempDir> dir_;
  orchestrator::Fakes fakes_;
  std::unique_ptr<orchestrator::Orchestrator> orchestrator_;
  std::unique_ptr<OrchestratorServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::OrchestratorService::Stub> stub_;
};

TEST_F(OrchestratorServiceTest, DeployThenWatchToTheEndAndResumeFromASequence) {
  const std::string id = DeployExamples();
  ASSERT_FALSE(id.empty());
  std::vector<v1::WatchRolloutResponse> events;
  for (v1::WatchRolloutResponse& event : Watch(id, 0)) {
    if (!event.has_progress()) events.push_back(std::move(event));  // live only, sequence 0
  }
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().sequence(), 1u);
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), events[i - 1].sequence() + 1);
  }
  ASSERT_TRUE(events.back().has_state());
  EXPECT_EQ(events.back().state().state(), v1::ROLLOUT_STATE_SUCCEEDED);
  std::vector<v1::WatchRolloutResponse> tail = Watch(id, events[events.size() - 3].sequence());
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_EQ(tail.back().sequence(), events.back().sequence());

  grpc::ClientContext get_context;
  v1::GetRolloutRequest get;
  get.set_id(id);
  v1::GetRolloutResponse got;
  ASSERT_TRUE(stub_->GetRollout(&get_context, get, &got).ok());
  EXPECT_EQ(got.rollout().commit(), "c0ffee");
  grpc::ClientContext list_context;
  v1::ListRolloutsResponse listed;
  ASSERT_TRUE(stub_->ListRollouts(&list_context, {}, &listed).ok());
  EXPECT_EQ(listed.rollouts_size(), 1);
  grpc::ClientContext cancel_context;
  v1::CancelRolloutRequest cancel;
  cancel.set_id(id);
  v1::CancelRolloutResponse cancelled;
  EXPECT_EQ(stub_->CancelRollout(&cancel_context, cancel, &cancelled).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(OrchestratorServiceTest, WatchStreamsBuildProgressLiveButNeverStoresIt) {
  absl::Notification release;
  fakes_.hold_builds = &release;
  const std::string id = DeployExamples();
  ASSERT_FALSE(id.empty());

  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchRolloutRequest watch;
  watch.set_id(id);
  auto reader = stub_->WatchRollout(&watch_context, watch);
  v1::WatchRolloutResponse event;
  std::optional<v1::WatchRolloutResponse> progress;
  v1::WatchRolloutResponse last;
  while (reader->Read(&event)) {
    if (event.has_progress() && !progress.has_value()) {
      progress = event;
      release.Notify();  // the builds were holding until a watcher saw their progress
    }
    last = event;
  }
  if (!release.HasBeenNotified()) release.Notify();  // no build may hold past the test
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(progress.has_value()) << "no progress event while the builds ran";
  EXPECT_EQ(progress->sequence(), 0u);
  EXPECT_EQ(progress->rollout_id(), id);
  EXPECT_EQ(progress->progress().stage(), v1::STAGE_BUILDING);
  EXPECT_EQ(progress->progress().bytes_done(), 42);
  EXPECT_EQ(progress->progress().bytes_total(), 100);
  EXPECT_EQ(progress->progress().message(), "step 1/2");
  EXPECT_EQ(last.state().state(), v1::ROLLOUT_STATE_SUCCEEDED);
  for (const v1::WatchRolloutResponse& stored : Watch(id, 0)) {
    EXPECT_FALSE(stored.has_progress()) << stored.DebugString();
  }
}

TEST_F(OrchestratorServiceTest, EmptyRequestsAreInvalidAndUnknownIdsNotFound) {
  grpc::ClientContext a;
  v1::DeployResponse deployed;
  EXPECT_EQ(stub_->Deploy(&a, {}, &deployed).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext b;
  v1::GetRolloutResponse got;
  EXPECT_EQ(stub_->GetRollout(&b, {}, &got).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext c;
  v1::GetRolloutRequest unknown;
  unknown.set_id("r-nope");
  EXPECT_EQ(stub_->GetRollout(&c, unknown, &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace elfdeploy
