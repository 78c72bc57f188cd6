#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster_watcher/cluster_watcher_service.h"
#include "services/common/server.h"
#include "tests/cluster_watcher/test_objects.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy {
namespace {

using ::elfdeploy::testing::TempDir;
using namespace ::elfdeploy::watcher::testing;  // NOLINT: test object builders

// ClusterWatcherService in process on port 0 over a real ClusterState.
class ClusterWatcherServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("cluster-watcher-service-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    ClusterWatcherOptions options;
    options.data_dir = dir_->Join("data");
    options.retention = 5;
    options.watch_heartbeat = absl::Milliseconds(200);
    absl::StatusOr<std::unique_ptr<ClusterWatcherComponent>> component =
        MakeClusterWatcherServices(options);
    ASSERT_TRUE(component.ok()) << component.status();
    component_ = *std::move(component);
    ServerOptions server_options;
    server_options.services = component_->Services();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(std::move(server_options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::ClusterWatcherService::NewStub(
        grpc::CreateChannel(server_->grpc_addr(), grpc::InsecureChannelCredentials()));
    state().Connected(Hello("prod", 1), "10.1.1.1:1234").IgnoreError();
  }

  void TearDown() override {
    if (component_ != nullptr) component_->Stop();
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration(), absl::Seconds(5));
  }

  watcher::ClusterState& state() { return *component_->state(); }

  static void SetDeadline(grpc::ClientContext* context, int seconds = 10) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<ClusterWatcherComponent> component_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::ClusterWatcherService::Stub> stub_;
};

TEST_F(ClusterWatcherServiceTest, ReadRpcs) {
  ASSERT_TRUE(
      state()
          .Apply("prod", 1,
                 {Change(1, v1::CHANGE_TYPE_ADDED, ApplicationObject("shop", "shop", {"web"})),
                  Change(2, v1::CHANGE_TYPE_ADDED, DeploymentObject("shop", "web")),
                  Change(3, v1::CHANGE_TYPE_ADDED,
                         PodObject("shop", "web-1-a", {{"app", "web"}}, "web-1"))})
          .ok());
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ListClustersResponse response;
    ASSERT_TRUE(stub_->ListClusters(&context, {}, &response).ok());
    ASSERT_EQ(response.clusters_size(), 1);
    EXPECT_EQ(response.clusters(0).name(), "prod");
    EXPECT_EQ(response.clusters(0).state(), v1::CONNECTION_STATE_CONNECTED);
    EXPECT_EQ(response.clusters(0).peer(), "10.1.1.1:1234");
    EXPECT_EQ(response.clusters(0).pod_count(), 1);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetApplicationRequest request;
    request.set_name("shop");
    v1::GetApplicationResponse response;
    ASSERT_TRUE(stub_->GetApplication(&context, request, &response).ok());
    EXPECT_EQ(response.cluster(), "prod");
    EXPECT_EQ(response.deployments_size(), 1);
    EXPECT_EQ(response.pods_size(), 1);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ListPodsRequest request;
    request.set_label_selector("app=web");
    v1::ListPodsResponse response;
    ASSERT_TRUE(stub_->ListPods(&context, request, &response).ok());
    ASSERT_EQ(response.pods_size(), 1);
    EXPECT_EQ(response.pods(0).meta().name(), "web-1-a");
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ListPodsRequest request;
    request.set_cluster("nope");
    v1::ListPodsResponse response;
    EXPECT_EQ(stub_->ListPods(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ListPodsRequest request;
    request.set_label_selector("app in (");
    v1::ListPodsResponse response;
    EXPECT_EQ(stub_->ListPods(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::DiagnoseResponse response;
    EXPECT_EQ(stub_->Diagnose(&context, {}, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(ClusterWatcherServiceTest, WatchStartsSnapshotsStreamsAndHeartbeats) {
  ASSERT_TRUE(
      state()
          .Apply("prod", 1, {Change(1, v1::CHANGE_TYPE_ADDED, PodObject("shop", "web-1-a"))})
          .ok());
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::WatchRequest request;
  request.set_initial_snapshot(true);
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader = stub_->Watch(&context, request);
  v1::WatchResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_started()) << response.DebugString();
  EXPECT_EQ(response.started().oldest_sequence(), 1u);
  EXPECT_EQ(response.started().latest_sequence(), 1u);
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_change()) << response.DebugString();
  EXPECT_TRUE(response.change().snapshot());
  EXPECT_EQ(response.change().sequence(), 1u);
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_snapshot_complete()) << response.DebugString();
  EXPECT_EQ(response.snapshot_complete().sequence(), 1u);

  ASSERT_TRUE(
      state()
          .Apply("prod", 1, {Change(2, v1::CHANGE_TYPE_DELETED, PodObject("shop", "web-1-a"))})
          .ok());
  do {
    ASSERT_TRUE(reader->Read(&response));
  } while (response.has_heartbeat());
  ASSERT_TRUE(response.has_change()) << response.DebugString();
  EXPECT_EQ(response.change().change().type(), v1::CHANGE_TYPE_DELETED);
  EXPECT_EQ(response.change().sequence(), 2u);
  // Idle: a heartbeat with the latest sequence.
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_heartbeat()) << response.DebugString();
  EXPECT_EQ(response.heartbeat().latest_sequence(), 2u);
  EXPECT_GT(response.heartbeat().sent_time().seconds(), 0);
  // The agent disconnects: live subscribers hear it.
  state().Disconnected("prod", 1, "gone");
  do {
    ASSERT_TRUE(reader->Read(&response));
  } while (response.has_heartbeat());
  ASSERT_TRUE(response.has_cluster_state()) << response.DebugString();
  EXPECT_EQ(response.cluster_state().cluster().state(), v1::CONNECTION_STATE_DISCONNECTED);

  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ClusterWatcherServiceTest, WatchOutsideTheWindowIsOutOfRange) {
  std::vector<v1::AgentEvent> events;
  for (uint64_t i = 1; i <= 8; ++i) {
    events.push_back(Change(i, v1::CHANGE_TYPE_MODIFIED, PodObject("shop", "p")));
  }
  ASSERT_TRUE(state().Apply("prod", 1, events).ok());
  for (uint64_t from : {1u, 9u}) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::WatchRequest request;
    request.set_from_sequence(from);
    std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader = stub_->Watch(&context, request);
    v1::WatchResponse response;
    EXPECT_FALSE(reader->Read(&response));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::OUT_OF_RANGE) << from;
  }
  // Inside the window: replay of 4..8.
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::WatchRequest request;
  request.set_from_sequence(3);
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader = stub_->Watch(&context, request);
  v1::WatchResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.started().oldest_sequence(), 4u);
  for (uint64_t sequence = 4; sequence <= 8; ++sequence) {
    ASSERT_TRUE(reader->Read(&response));
    EXPECT_EQ(response.change().sequence(), sequence);
  }
  // The watcher stops: the stream ends with UNAVAILABLE (resumable elsewhere).
  component_->Stop();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(ClusterWatcherOptionsTest, BadOptionsAreRejected) {
  absl::StatusOr<TempDir> dir = TempDir::Create("cluster-watcher-options-");
  ASSERT_TRUE(dir.ok());
  ClusterWatcherOptions options;
  options.data_dir = dir->Join("data");
  options.retention = 0;
  EXPECT_EQ(MakeClusterWatcherServices(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.retention = 10;
  options.watch_heartbeat = absl::ZeroDuration();
  EXPECT_EQ(MakeClusterWatcherServices(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.watch_heartbeat = absl::Seconds(1);
  EXPECT_TRUE(MakeClusterWatcherServices(options).ok());
}

TEST(ClusterWatcherOptionsTest, ConfigKeys) {
  ClusterWatcherOptions options;
  ConfigBinder binder;
  BindClusterWatcherConfig(binder, &options);
  ASSERT_TRUE(
      binder
          .LoadYaml("watcher:\n  data_dir: /tmp/x\n  retention: 42\n  watch_heartbeat: 2s\n",
                    "test.yaml")
          .ok());
  EXPECT_EQ(options.data_dir, "/tmp/x");
  EXPECT_EQ(options.retention, 42);
  EXPECT_EQ(options.watch_heartbeat, absl::Seconds(2));
}

}  // namespace
}  // namespace elfdeploy
