// The agent's event buffer and the AgentLinkService stream in process: hello/welcome, batches and
// cumulative acks, replay after a reconnect, duplicates, a wrong token, and requests answered on
// the same stream. The watcher's state is a fake here; tests/cluster_watcher covers the real one.
#include "agent/link.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/event_buffer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster_watcher/agent_link_service.h"

namespace elfdeploy {
namespace {

using ::testing::HasSubstr;

v1::AgentEvent PodEvent(const std::string& name, int generation) {
  v1::AgentEvent event;
  v1::ObjectChange* change = event.mutable_change();
  change->set_type(v1::CHANGE_TYPE_MODIFIED);
  v1::Pod* pod = change->mutable_object()->mutable_pod();
  pod->mutable_meta()->set_name(name);
  pod->mutable_meta()->set_namespace_("apps");
  pod->mutable_meta()->set_generation(generation);
  return event;
}

TEST(EventBufferTest, AcksAreCumulativeAndNextResumesAfterACursor) {
  agent::EventBuffer buffer(100);
  for (int i = 0; i < 10; ++i) buffer.Push(absl::StrCat("pods/apps/p", i), PodEvent("p", i));
  EXPECT_EQ(buffer.last_sequence(), 10u);
  agent::EncodedEvents encoded = buffer.Next(0, 4, absl::Now());
  EXPECT_EQ(encoded.count, 4u);
  EXPECT_EQ(encoded.last_sequence, 4u);
  std::vector<v1::AgentEvent> first = encoded.Decode();
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(first[0].sequence(), 1u);
  EXPECT_EQ(first[3].sequence(), 4u);
  EXPECT_EQ(first[2].change().object().pod().meta().name(), "p");
  EXPECT_EQ(first[2].change().object().pod().meta().generation(), 2);
  EXPECT_EQ(buffer.Next(4, 100, absl::Now()).Decode().size(), 6u);
  buffer.Ack(7);
  EXPECT_EQ(buffer.first_unacked(), 8u);
  EXPECT_EQ(buffer.size(), 3u);
  EXPECT_TRUE(buffer.Next(10, 100, absl::Now() + absl::Milliseconds(20)).empty());
}

TEST(EventBufferTest, ALingeringNextWaitsForAFullBatchOrAWake) {
  agent::EventBuffer buffer(100);
  buffer.Push("pods/apps/p0", PodEvent("p0", 0));
  agent::EncodedEvents full;
  std::thread next(
      [&] { full = buffer.Next(0, 10, absl::InfiniteFuture(), absl::InfiniteDuration()); });
  for (int i = 1; i < 10; ++i) buffer.Push(absl::StrCat("pods/apps/p", i), PodEvent("p", i));
  next.join();
  EXPECT_EQ(full.count, 10u);
  EXPECT_EQ(full.last_sequence, 10u);

  buffer.Push("pods/apps/p10", PodEvent("p10", 0));
  agent::EncodedEvents woken;
  std::atomic<bool> returned{false};
  std::thread waiting([&] {
    woken = buffer.Next(10, 10, absl::InfiniteFuture(), absl::InfiniteDuration());
    returned = true;
  });
  while (!returned) {  // a wake before Next starts waiting is not seen by it
    buffer.Wake();
    absl::SleepFor(absl::Milliseconds(1));
  }
  waiting.join();
  EXPECT_EQ(woken.count, 1u);
}

TEST(EventBufferTest, OverTheBoundOnlyOlderStatesOfTheSameObjectGo) {
  agent::EventBuffer buffer(5);
  for (int i = 0; i < 5; ++i) buffer.Push(absl::StrCat("pods/apps/p", i), PodEvent("p", i));
  // Over the bound: p0's newer state replaces its older one; new objects are always kept.
  buffer.Push("pods/apps/p0", PodEvent("p0", 100));
  buffer.Push("pods/apps/new", PodEvent("new", 1));
  v1::AgentEvent done;
  done.mutable_snapshot_complete()->set_kind(v1::OBJECT_KIND_POD);
  buffer.Push("", done);
  std::vector<v1::AgentEvent> events = buffer.Next(0, 100, absl::Now()).Decode();
  std::vector<uint64_t> sequences;
  for (const v1::AgentEvent& e : events) sequences.push_back(e.sequence());
  EXPECT_THAT(sequences, ::testing::ElementsAre(2, 3, 4, 5, 6, 7, 8));
  EXPECT_EQ(events[4].change().object().pod().meta().generation(), 100);
  EXPECT_EQ(buffer.coalesced(), 1u);
}

// A ClusterState that records what it is given.
class FakeState final : public watcher::ClusterState {
 public:
  absl::StatusOr<uint64_t> Connected(const v1::AgentHello& hello, const std::string&) override {
    absl::MutexLock lock(&mu_);
    ++connections_;
    if (hello.agent_epoch() != epoch_) {
      epoch_ = hello.agent_epoch();
      stored_ = 0;
    }
    return stored_;
  }
  void Disconnected(const std::string&, uint64_t, const std::string&) override {}
  void Seen(const std::string&) override {}
  absl::StatusOr<uint64_t> Apply(const std::string&, uint64_t epoch,
                                 std::vector<v1::AgentEvent> events) override {
    absl::MutexLock lock(&mu_);
    if (epoch != epoch_) return absl::InvalidArgumentError("not the current epoch");
    for (const v1::AgentEvent& event : events) {
      if (event.sequence() <= stored_) {
        ++duplicates_;
        continue;
      }
      stored_ = event.sequence();
      received_.push_back(event.sequence());
    }
    return stored_;
  }
  uint64_t duplicates_dropped() const override {
    absl::MutexLock lock(&mu_);
    return duplicates_;
  }
  uint64_t latest_sequence() const override { return 0; }
  absl::StatusOr<std::string> ResolveCluster(const std::string& c) const override { return c; }
  absl::StatusOr<v1::ListClustersResponse> ListClusters(
      const v1::ListClustersRequest&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::Cluster> GetCluster(const std::string&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::GetApplicationResponse> GetApplication(
      const v1::GetApplicationRequest&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<Snapshot> GetSnapshot(const std::string&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::unique_ptr<watcher::Subscription>> Subscribe(const watcher::WatchFilter&,
                                                                   uint64_t, bool) override {
    return absl::UnimplementedError("fake");
  }
  void Shutdown() override {}

  std::vector<uint64_t> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  int connections() {
    absl::MutexLock lock(&mu_);
    return connections_;
  }

 private:
  mutable absl::Mutex mu_;
  uint64_t epoch_ = 0;
  uint64_t stored_ = 0;
  uint64_t duplicates_ = 0;
  int connections_ = 0;
  std::vector<uint64_t> received_;
};

// A watcher's AgentLinkService on 127.0.0.1, plain text.
struct Watcher {
  explicit Watcher(watcher::ClusterState& state, int port = 0) {
    watcher::AgentLinkOptions options;
    options.tokens = {Secret("agent-token")};
    options.heartbeat_interval = absl::Milliseconds(200);
    options.watcher_id = "test";
    service = std::make_unique<watcher::AgentLinkService>(state, options);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &this->port);
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
  }
  ~Watcher() { Stop(); }
  void Stop() {
    if (server == nullptr) return;
    service->Shutdown();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server.reset();
  }

  int port = 0;
  std::unique_ptr<watcher::AgentLinkService> service;
  std::unique_ptr<grpc::Server> server;
};

agent::LinkOptions Options(int port, const std::string& token = "agent-token") {
  agent::LinkOptions options;
  options.watcher_addr = absl::StrCat("127.0.0.1:", port);
  options.cluster = "test";
  options.insecure = true;
  options.token = Secret(token);
  options.heartbeat_interval = absl::Milliseconds(200);
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  options.batch_size = 64;
  return options;
}

bool WaitFor(const std::function<bool()>& done) {
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

TEST(AgentLinkTest, EveryEventArrivesOnceAcrossAWatcherRestart) {
  FakeState state;
  auto server = std::make_unique<Watcher>(state);
  int port = server->port;
  agent::EventBuffer buffer(1 << 20);
  agent::AgentLink link(Options(port), 42, buffer, nullptr, nullptr);
  std::atomic<bool> stop{false};
  std::thread runner([&] { link.Run([&] { return stop.load(); }); });
  for (int i = 0; i < 2000; ++i) buffer.Push(absl::StrCat("pods/apps/p", i), PodEvent("p", i));
  ASSERT_TRUE(WaitFor([&] { return state.received().size() == 2000 && buffer.size() == 0; }))
      << state.received().size() << " received, " << buffer.size() << " unacked";

  // The watcher goes away; events keep coming; a new watcher on the same port (same state, as
  // after a restart from its log) gets exactly the ones it does not have.
  server->Stop();
  for (int i = 2000; i < 3000; ++i) buffer.Push(absl::StrCat("pods/apps/p", i), PodEvent("p", i));
  server = std::make_unique<Watcher>(state, port);
  ASSERT_TRUE(WaitFor([&] { return state.received().size() == 3000 && buffer.size() == 0; }))
      << state.received().size();
  stop = true;
  runner.join();
  std::vector<uint64_t> received = state.received();
  for (size_t i = 0; i < received.size(); ++i) ASSERT_EQ(received[i], i + 1);
  EXPECT_GE(state.connections(), 2);
}

TEST(AgentLinkTest, WrongTokenIsRefusedBeforeAnythingIsRead) {
  FakeState state;
  Watcher server(state);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.port),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::AgentLinkService::NewStub(channel);
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer wrong");
  auto stream = stub->Connect(&context);
  v1::ConnectRequest hello;
  hello.mutable_hello()->set_cluster("test");
  hello.mutable_hello()->set_agent_epoch(1);
  stream->Write(hello);
  v1::ConnectResponse response;
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(state.connections(), 0);
}

TEST(AgentLinkTest, RequestsAreAnsweredOnTheStreamBesideEvents) {
  FakeState state;
  Watcher server(state);
  agent::EventBuffer buffer(1000);
  agent::AgentLink link(
      Options(server.port), 7, buffer,
      [](const v1::AgentRequest& request) {
        v1::AgentReply reply;
        reply.mutable_pod_logs()->add_lines(absl::StrCat("log of ", request.pod_logs().pod()));
        return reply;
      },
      nullptr);
  std::atomic<bool> stop{false};
  std::thread runner([&] { link.Run([&] { return stop.load(); }); });
  ASSERT_TRUE(WaitFor([&] { return link.connected(); }));
  v1::AgentRequest request;
  request.mutable_pod_logs()->set_pod("web-1");
  absl::StatusOr<v1::AgentReply> reply = server.service->Call("test", request, absl::Seconds(10));
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->pod_logs().lines_size(), 1);
  EXPECT_EQ(reply->pod_logs().lines(0), "log of web-1");
  EXPECT_EQ(server.service->Call("other", request, absl::Seconds(1)).status().code(),
            absl::StatusCode::kUnavailable);
  stop = true;
  runner.join();
}

}  // namespace
}  // namespace elfdeploy
