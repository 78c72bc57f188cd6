// Deploy, Get, List, Cancel and resume of the gRPC-free Orchestrator over fakes of the services.
#include "services/orchestrator/orchestrator.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/temp_dir.h"
#include "tests/orchestrator/fakes.h"

namespace elfdeploy::orchestrator {
namespace {

using ::testing::HasSubstr;

class OrchestratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("orchestrator-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    defaults_.registry = "registry.test:5000";
    defaults_.gitops_repo = "git://gitops.test/gitops.git";
    runner_.poll_interval = absl::Milliseconds(1);
    runner_.settle = absl::ZeroDuration();
  }

  std::unique_ptr<Orchestrator> Make() {
    absl::StatusOr<std::unique_ptr<RolloutStore>> store = RolloutStore::Open({dir_->Join("db")});
    EXPECT_TRUE(store.ok());
    return std::make_unique<Orchestrator>(*std::move(store), fakes_, fakes_, fakes_, fakes_,
                                          defaults_, runner_);
  }

  v1::DeployRequest Request() {
    v1::DeployRequest request;
    request.set_source_dir(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
    return request;
  }

  v1::Rollout WaitTerminal(Orchestrator& orchestrator, const std::string& id) {
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    absl::StatusOr<v1::Rollout> rollout;
    while (absl::Now() < deadline) {
      rollout = orchestrator.Get(id);
      if (rollout.ok() && IsTerminal(rollout->state())) return *rollout;
      absl::SleepFor(absl::Milliseconds(5));
    }
    ADD_FAILURE() << "not terminal: " << (rollout.ok() ? rollout->DebugString() : "");
    return rollout.value_or(v1::Rollout());
  }

  std::optional<testing::TempDir> dir_;
  DeployDefaults defaults_;
  RunnerOptions runner_;
  Fakes fakes_;
};

TEST_F(OrchestratorTest, DeployFillsDefaultsRunsAndIsIdempotentByRequestId) {
  auto orchestrator = Make();
  v1::DeployRequest request = Request();
  request.set_request_id("ci-build-42");
  request.mutable_registry()->mutable_credentials()->mutable_basic()->set_username("u");
  request.mutable_registry()->mutable_credentials()->mutable_basic()->set_password("s3cret");
  absl::StatusOr<v1::Rollout> rollout = orchestrator->Deploy(request);
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->request().registry().url(), "registry.test:5000");
  EXPECT_EQ(rollout->request().gitops().path_prefix(), "elf-automations");
  EXPECT_EQ(rollout->request().destination().namespace_(), "elf-automations");
  EXPECT_EQ(rollout->request().registry().credentials().basic().password(), "");
  EXPECT_EQ(rollout->apps_size(), 4);
  v1::Rollout done = WaitTerminal(*orchestrator, rollout->id());
  EXPECT_EQ(done.state(), v1::ROLLOUT_STATE_SUCCEEDED) << done.message();
  absl::StatusOr<v1::Rollout> again = orchestrator->Deploy(request);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id(), rollout->id());
  v1::ListRolloutsRequest list;
  absl::StatusOr<v1::ListRolloutsResponse> listed = orchestrator->List(list);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->rollouts_size(), 1);
  absl::MutexLock lock(&fakes_.mu);
  EXPECT_EQ(fakes_.published.size(), 1u);
}

TEST_F(OrchestratorTest, BadRequestsAreRefusedWithTheReason) {
  auto orchestrator = Make();
  v1::DeployRequest none;
  EXPECT_EQ(orchestrator->Deploy(none).status().code(), absl::StatusCode::kInvalidArgument);
  v1::DeployRequest bad_namespace = Request();
  bad_namespace.mutable_destination()->set_namespace_("Elf_Automations");
  EXPECT_THAT(orchestrator->Deploy(bad_namespace).status().message(), HasSubstr("DNS-1123"));
  v1::DeployRequest bad_tag = Request();
  bad_tag.set_tag("-x");
  EXPECT_EQ(orchestrator->Deploy(bad_tag).status().code(), absl::StatusCode::kInvalidArgument);
  v1::DeployRequest missing = Request();
  missing.set_source_dir(dir_->Join("nowhere"));
  EXPECT_EQ(orchestrator->Deploy(missing).status().code(), absl::StatusCode::kNotFound);
  defaults_.registry.clear();
  auto no_registry = Make();
  EXPECT_THAT(no_registry->Deploy(Request()).status().message(), HasSubstr("registry.url"));
}

TEST_F(OrchestratorTest, CancelStopsARunningRolloutAndTerminalOnesRefuse) {
  fakes_.diagnoses_until_healthy = 1000000;
  auto orchestrator = Make();
  absl::StatusOr<v1::Rollout> rollout = orchestrator->Deploy(Request());
  ASSERT_TRUE(rollout.ok());
  absl::StatusOr<v1::Rollout> cancelling = orchestrator->Cancel(rollout->id(), "wrong branch");
  ASSERT_TRUE(cancelling.ok()) << cancelling.status();
  EXPECT_TRUE(cancelling->cancel_requested());
  EXPECT_EQ(WaitTerminal(*orchestrator, rollout->id()).state(), v1::ROLLOUT_STATE_CANCELLED);
  EXPECT_TRUE(orchestrator->Cancel(rollout->id(), "").ok());  // idempotent
  fakes_.diagnoses_until_healthy = 2;
  absl::StatusOr<v1::Rollout> other = orchestrator->Deploy(Request());
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(WaitTerminal(*orchestrator, other->id()).state(), v1::ROLLOUT_STATE_SUCCEEDED);
  EXPECT_EQ(orchestrator->Cancel(other->id(), "").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(OrchestratorTest, AStoppedOrchestratorsRolloutResumesInTheNextOne) {
  fakes_.diagnoses_until_healthy = 1000000;
  std::string id;
  {
    auto first = Make();
    absl::StatusOr<v1::Rollout> rollout = first->Deploy(Request());
    ASSERT_TRUE(rollout.ok());
    id = rollout->id();
    // Let it get past publishing, then stop the process's orchestrator.
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline && first->Get(id)->commit().empty()) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    first->Stop();
    EXPECT_FALSE(IsTerminal(first->Get(id)->state()));
  }
  fakes_.diagnoses_until_healthy = 0;
  auto second = Make();
  second->Start();
  EXPECT_EQ(WaitTerminal(*second, id).state(), v1::ROLLOUT_STATE_SUCCEEDED);
  absl::MutexLock lock(&fakes_.mu);
  EXPECT_EQ(fakes_.published.size(), 1u);  // exactly one GitOps commit
}

}  // namespace
}  // namespace elfdeploy::orchestrator
