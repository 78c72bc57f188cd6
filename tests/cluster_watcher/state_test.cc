#include "services/cluster_watcher/state.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster_watcher/test_objects.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::watcher {
namespace {

using ::elfdeploy::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using namespace ::elfdeploy::watcher::testing;  // NOLINT: test object builders

constexpr v1::ChangeType kAdded = v1::CHANGE_TYPE_ADDED;
constexpr v1::ChangeType kModified = v1::CHANGE_TYPE_MODIFIED;
constexpr v1::ChangeType kDeleted = v1::CHANGE_TYPE_DELETED;

std::string NameOf(const v1::ClusterObject& object) {
  switch (object.object_case()) {
    case v1::ClusterObject::kApplication:
      return "Application/" + object.application().meta().name();
    case v1::ClusterObject::kDeployment:
      return "Deployment/" + object.deployment().meta().name();
    case v1::ClusterObject::kPod:
      return "Pod/" + object.pod().meta().name();
    case v1::ClusterObject::kEvent:
      return "Event/" + object.event().meta().name();
    default:
      return "?";
  }
}

// WatchFilter builder (designated initializers would need every field).
struct F {
  WatchFilter filter;
  F& Cluster(std::string v) {
    filter.cluster = std::move(v);
    return *this;
  }
  F& Namespace(std::string v) {
    filter.namespace_ = std::move(v);
    return *this;
  }
  F& Application(std::string v) {
    filter.application = std::move(v);
    return *this;
  }
  F& App(std::string v) {
    filter.app = std::move(v);
    return *this;
  }
  F& Kinds(std::vector<v1::ObjectKind> v) {
    filter.kinds = std::move(v);
    return *this;
  }
  operator WatchFilter() const { return filter; }  // NOLINT: implicit by design
};

class StateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("cluster-watcher-state-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    options_.data_dir = dir_->Join("data");
    options_.fsync = false;
    Open();
  }

  void Open() {
    state_.reset();
    absl::StatusOr<std::unique_ptr<ClusterState>> state = ClusterState::Open(options_);
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = *std::move(state);
  }

  std::string LogPath() const { return options_.data_dir + "/changes.log"; }
  uint64_t LogSize() const { return std::filesystem::file_size(LogPath()); }

  uint64_t Connect(const std::string& cluster, uint64_t epoch) {
    absl::StatusOr<uint64_t> acked = state_->Connected(Hello(cluster, epoch), "10.0.0.1:5555");
    EXPECT_TRUE(acked.ok()) << acked.status();
    return acked.value_or(0);
  }

  uint64_t Apply(const std::string& cluster, uint64_t epoch, std::vector<v1::AgentEvent> events) {
    absl::StatusOr<uint64_t> acked = state_->Apply(cluster, epoch, events);
    EXPECT_TRUE(acked.ok()) << acked.status();
    return acked.value_or(0);
  }

  std::vector<std::string> PodNames(const std::string& cluster = "") {
    absl::StatusOr<ClusterState::Snapshot> snapshot = state_->GetSnapshot(cluster);
    EXPECT_TRUE(snapshot.ok()) << snapshot.status();
    std::vector<std::string> out;
    if (snapshot.ok()) {
      for (const v1::Pod& pod : snapshot->pods) {
        out.push_back(pod.meta().namespace_() + "/" + pod.meta().name());
      }
    }
    return out;
  }

  std::unique_ptr<Subscription> Subscribe(const WatchFilter& filter, uint64_t from = 0,
                                          bool snapshot = false) {
    absl::StatusOr<std::unique_ptr<Subscription>> sub = state_->Subscribe(filter, from, snapshot);
    EXPECT_TRUE(sub.ok()) << sub.status();
    return sub.ok() ? *std::move(sub) : nullptr;
  }

  // Everything the subscription has now (waits a little for more).
  static std::vector<v1::WatchResponse> Drain(Subscription& sub) {
    std::vector<v1::WatchResponse> all;
    while (true) {
      std::vector<v1::WatchResponse> batch;
      absl::Status status = sub.Next(absl::Now() + absl::Milliseconds(50), &batch);
      EXPECT_TRUE(status.ok()) << status;
      if (!status.ok() || batch.empty()) return all;
      all.insert(all.end(), batch.begin(), batch.end());
    }
  }

  // "<type> <kind>/<name>" of each change; "complete" for snapshot_complete.
  static std::vector<std::string> Describe(const std::vector<v1::WatchResponse>& items) {
    std::vector<std::string> out;
    for (const v1::WatchResponse& item : items) {
      if (item.has_snapshot_complete()) {
        out.push_back("complete");
      } else if (item.has_change()) {
        const char* type = item.change().change().type() == kAdded      ? "ADDED"
                           : item.change().change().type() == kModified ? "MODIFIED"
                                                                        : "DELETED";
        out.push_back(std::string(type) + " " + NameOf(item.change().change().object()));
      } else if (item.has_cluster_state()) {
        out.push_back("cluster " + item.cluster_state().cluster().name());
      }
    }
    return out;
  }

  std::optional<TempDir> dir_;
  ClusterState::Options options_;
  std::unique_ptr<ClusterState> state_;
};

TEST_F(StateTest, ApplyStoresEventsAndDropsDuplicates) {
  EXPECT_EQ(Connect("prod", 7), 0u);
  EXPECT_EQ(
      Apply("prod", 7,
            {Change(1, kAdded, PodObject("shop", "a")), Change(2, kAdded, PodObject("shop", "b")),
             Change(3, kModified, PodObject("shop", "a"))}),
      3u);
  EXPECT_EQ(state_->latest_sequence(), 3u);
  // A replay after a reconnect overlaps what is stored.
  EXPECT_EQ(Apply("prod", 7,
                  {Change(2, kAdded, PodObject("shop", "b")),
                   Change(3, kModified, PodObject("shop", "a")),
                   Change(5, kDeleted, PodObject("shop", "b"))}),
            5u);
  EXPECT_EQ(state_->duplicates_dropped(), 2u);
  EXPECT_EQ(state_->latest_sequence(), 4u);
  EXPECT_THAT(PodNames(), ElementsAre("shop/a"));
  // Only duplicates: nothing stored, the ack stays.
  EXPECT_EQ(Apply("prod", 7, {Change(4, kAdded, PodObject("shop", "x"))}), 5u);
  EXPECT_EQ(state_->duplicates_dropped(), 3u);
  EXPECT_THAT(PodNames(), ElementsAre("shop/a"));

  absl::StatusOr<v1::Cluster> cluster = state_->GetCluster("prod");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->state(), v1::CONNECTION_STATE_CONNECTED);
  EXPECT_EQ(cluster->agent_epoch(), 7u);
  EXPECT_EQ(cluster->acked_sequence(), 5u);
  EXPECT_EQ(cluster->pod_count(), 1);
  EXPECT_EQ(cluster->peer(), "10.0.0.1:5555");
  EXPECT_EQ(cluster->kubernetes_version(), "v1.29.2");

  // Same epoch again: the agent resumes after the ack.
  EXPECT_EQ(Connect("prod", 7), 5u);
  // Errors: backwards within a batch, a stale epoch, an unknown cluster, an older agent process.
  EXPECT_EQ(state_
                ->Apply("prod", 7,
                        {Change(9, kAdded, PodObject("shop", "c")),
                         Change(8, kAdded, PodObject("shop", "d"))})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_->Apply("prod", 6, {Change(9, kAdded, PodObject("shop", "c"))}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_->Apply("nope", 7, {Change(9, kAdded, PodObject("shop", "c"))}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_->Connected(Hello("prod", 6), "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(state_->Connected(Hello("", 6), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_->Connected(Hello("prod", 0), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(PodNames(), ElementsAre("shop/a"));
  // A new epoch starts over at 0.
  EXPECT_EQ(Connect("prod", 8), 0u);
}

TEST_F(StateTest, SnapshotCompleteDeletesOnlyUnannouncedObjectsOfItsScope) {
  Connect("prod", 1);
  Apply("prod", 1,
        {Change(1, kAdded, PodObject("a", "p1")), Change(2, kAdded, PodObject("a", "p2")),
         Change(3, kAdded, PodObject("b", "p3")), Change(4, kAdded, DeploymentObject("a", "d1"))});
  EXPECT_FALSE(state_->GetCluster("prod")->synced());
  Connect("prod", 2);
  std::unique_ptr<Subscription> sub = Subscribe({}, state_->latest_sequence());
  // p1 is announced in the same batch as the end of the list of namespace a.
  EXPECT_EQ(Apply("prod", 2,
                  {Change(1, kAdded, PodObject("a", "p1")),
                   SnapshotComplete(2, v1::OBJECT_KIND_POD, "a")}),
            2u);
  EXPECT_THAT(PodNames(), ElementsAre("a/p1", "b/p3"));
  EXPECT_TRUE(state_->GetCluster("prod")->synced());  // every kind changed is complete
  EXPECT_EQ(state_->GetSnapshot("prod")->deployments.size(), 1u);
  // All namespaces: p3 was not announced.
  Apply("prod", 2, {SnapshotComplete(3, v1::OBJECT_KIND_POD)});
  EXPECT_THAT(PodNames(), ElementsAre("a/p1"));
  std::vector<v1::WatchResponse> items = Drain(*sub);
  EXPECT_THAT(Describe(items), ElementsAre("ADDED Pod/p1", "DELETED Pod/p2", "DELETED Pod/p3"));
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[1].change().agent_sequence(), 2u);
  EXPECT_EQ(items[1].change().agent_epoch(), 2u);
  EXPECT_EQ(items[2].change().agent_sequence(), 3u);
  EXPECT_EQ(state_->GetCluster("prod")->acked_sequence(), 3u);
  // Another kind changes: not synced until its list completes.
  Apply("prod", 2, {Change(4, kModified, DeploymentObject("a", "d1"))});
  EXPECT_FALSE(state_->GetCluster("prod")->synced());
  Apply("prod", 2, {SnapshotComplete(5, v1::OBJECT_KIND_DEPLOYMENT)});
  EXPECT_TRUE(state_->GetCluster("prod")->synced());
  EXPECT_EQ(state_->GetSnapshot("prod")->deployments.size(), 1u);
}

TEST_F(StateTest, StateAndSequencesSurviveACrash) {
  Connect("prod", 1);
  Apply("prod", 1,
        {Change(1, kAdded, PodObject("a", "p1")), Change(2, kAdded, PodObject("a", "p2"))});
  Connect("prod", 2);
  Apply("prod", 2, {Change(1, kModified, PodObject("a", "p1"))});
  // A list end that deletes nothing still moves the ack.
  Apply("prod", 2,
        {Change(2, kAdded, PodObject("a", "p9")), SnapshotComplete(3, v1::OBJECT_KIND_DEPLOYMENT)});
  const uint64_t latest = state_->latest_sequence();
  EXPECT_EQ(latest, 4u);

  Open();  // no Shutdown: as after kill -9 (every Apply was written before it returned)
  absl::StatusOr<v1::Cluster> cluster = state_->GetCluster("prod");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->state(), v1::CONNECTION_STATE_DISCONNECTED);
  EXPECT_EQ(cluster->agent_epoch(), 2u);
  EXPECT_EQ(cluster->acked_sequence(), 3u);
  EXPECT_EQ(cluster->agent_version(), "test-agent 1.0");
  EXPECT_THAT(PodNames(), ElementsAre("a/p1", "a/p2", "a/p9"));
  EXPECT_EQ(state_->latest_sequence(), latest);
  EXPECT_EQ(Connect("prod", 2), 3u);
  // Duplicates after the restart are still dropped; new changes continue the sequence.
  EXPECT_EQ(Apply("prod", 2,
                  {Change(3, kAdded, PodObject("a", "zz")),
                   SnapshotComplete(4, v1::OBJECT_KIND_POD, "a")}),
            4u);
  EXPECT_EQ(state_->duplicates_dropped(), 1u);
  // "Announced in epoch 2" survived: p2 (epoch 1) goes, p1 and p9 stay.
  EXPECT_THAT(PodNames(), ElementsAre("a/p1", "a/p9"));
  EXPECT_EQ(state_->latest_sequence(), latest + 1);
  EXPECT_TRUE(state_->GetCluster("prod")->synced());

  // A resume point from before the crash replays exactly what followed it.
  std::unique_ptr<Subscription> sub = Subscribe({}, 2);
  std::vector<v1::WatchResponse> items = Drain(*sub);
  EXPECT_THAT(Describe(items), ElementsAre("MODIFIED Pod/p1", "ADDED Pod/p9", "DELETED Pod/p2"));
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].change().sequence(), 3u);
  EXPECT_EQ(items[2].change().sequence(), 5u);
}

TEST_F(StateTest, TornTailIsDropped) {
  Connect("prod", 1);
  Apply("prod", 1, {Change(1, kAdded, PodObject("a", "p1"))});
  Apply("prod", 1, {Change(2, kAdded, PodObject("a", "p2"))});
  const uint64_t two_batches = LogSize();
  Apply("prod", 1, {Change(3, kAdded, PodObject("a", "p3"))});
  state_.reset();
  // Crash in the middle of writing the third batch.
  ASSERT_EQ(::truncate(LogPath().c_str(), static_cast<off_t>(LogSize() - 5)), 0);
  Open();
  EXPECT_THAT(PodNames(), ElementsAre("a/p1", "a/p2"));
  EXPECT_EQ(LogSize(), two_batches);
  EXPECT_EQ(Connect("prod", 1), 2u);
  EXPECT_EQ(Apply("prod", 1, {Change(3, kAdded, PodObject("a", "p3"))}), 3u);
  EXPECT_EQ(state_->latest_sequence(), 3u);

  // Garbage after the last record (a bad checksum) is dropped as well.
  state_.reset();
  const uint64_t good = LogSize();
  {
    std::string log = *::elfdeploy::testing::ReadFile(LogPath());
    log += std::string("\x10\x00\x00\x00\xde\xad\xbe\xef", 8) + std::string(16, 'x');
    ASSERT_TRUE(::elfdeploy::testing::WriteFile(LogPath(), log).ok());
  }
  Open();
  EXPECT_EQ(LogSize(), good);
  EXPECT_THAT(PodNames(), ElementsAre("a/p1", "a/p2", "a/p3"));
  EXPECT_EQ(state_->GetCluster("prod")->acked_sequence(), 3u);
}

TEST_F(StateTest, OpenRejectsAForeignFile) {
  state_.reset();
  ASSERT_TRUE(::elfdeploy::testing::WriteFile(LogPath(), "this is not a change log").ok());
  absl::StatusOr<std::unique_ptr<ClusterState>> state = ClusterState::Open(options_);
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(state.status().message(), HasSubstr("changes.log"));
}

TEST_F(StateTest, CompactionKeepsStateAndTheResumeWindow) {
  options_.retention = 10;
  Open();
  Connect("prod", 1);
  uint64_t sequence = 0;
  // Five pods changing over and over, plus one that is deleted early.
  Apply("prod", 1, {Change(++sequence, kAdded, PodObject("a", "gone"))});
  Apply("prod", 1, {Change(++sequence, kDeleted, PodObject("a", "gone"))});
  Apply("prod", 1, {Change(++sequence, kAdded, PodObject("a", "stable", {{"v", "first"}}))});
  uint64_t size_after_100 = 0;
  for (int batch = 0; batch < 60; ++batch) {
    std::vector<v1::AgentEvent> events;
    for (int i = 0; i < 20; ++i) {
      ++sequence;
      events.push_back(
          Change(sequence, kModified,
                 PodObject("a", "p" + std::to_string(i % 5), {{"v", std::to_string(sequence)}})));
    }
    Apply("prod", 1, events);
    if (batch == 4) size_after_100 = LogSize();
  }
  Apply("prod", 1, {SnapshotComplete(++sequence, v1::OBJECT_KIND_POD)});
  const uint64_t latest = state_->latest_sequence();
  EXPECT_EQ(latest, sequence - 1);
  // 1,200 changes were written; the log holds far fewer records now.
  EXPECT_LT(LogSize(), size_after_100 * 8);

  Open();
  EXPECT_EQ(state_->latest_sequence(), latest);
  EXPECT_THAT(PodNames(), ElementsAre("a/p0", "a/p1", "a/p2", "a/p3", "a/p4", "a/stable"));
  absl::StatusOr<v1::Cluster> cluster = state_->GetCluster("prod");
  EXPECT_EQ(cluster->acked_sequence(), sequence);
  EXPECT_TRUE(cluster->synced());
  EXPECT_EQ(state_->GetSnapshot("prod")->pods.back().meta().labels().at("v"), "first");
  // The window: the last 10 changes.
  std::unique_ptr<Subscription> sub = Subscribe({}, latest - 10);
  EXPECT_EQ(sub->oldest_sequence(), latest - 9);
  EXPECT_EQ(Drain(*sub).size(), 10u);
  sub = Subscribe({}, latest - 3);
  std::vector<v1::WatchResponse> items = Drain(*sub);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].change().sequence(), latest - 2);
  EXPECT_EQ(state_->Subscribe({}, latest - 11, false).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(state_->Subscribe({}, latest + 1, false).status().code(),
            absl::StatusCode::kOutOfRange);
  // And it continues.
  EXPECT_EQ(Connect("prod", 1), sequence);
  Apply("prod", 1, {Change(sequence + 1, kModified, PodObject("a", "p0"))});
  EXPECT_EQ(state_->latest_sequence(), latest + 1);
}

// Cluster "prod": Application shop (argocd) managing Deployment web in namespace shop; Deployment
// db in shop is not managed; pods and events of both. Cluster "dev": one pod in namespace shop.
class FilterTest : public StateTest {
 protected:
  void SetUp() override {
    StateTest::SetUp();
    Connect("prod", 1);
    Apply("prod", 1,
          {Change(1, kAdded, ApplicationObject("shop", "shop", {"web"})),
           Change(2, kAdded, DeploymentObject("shop", "web", {{"app", "web"}})),
           Change(3, kAdded, DeploymentObject("shop", "db", {{"app", "db"}})),
           Change(4, kAdded, PodObject("shop", "web-5d9c7-abcde", {{"app", "web"}}, "web-5d9c7")),
           Change(5, kAdded, PodObject("shop", "db-77f8b-qwert", {{"app", "db"}}, "db-77f8b")),
           Change(6, kAdded, EventObject("shop", "e-pod-web", "Pod", "web-5d9c7-abcde", "Pulled")),
           Change(7, kAdded, EventObject("shop", "e-rs-web", "ReplicaSet", "web-5d9c7")),
           Change(8, kAdded, EventObject("shop", "e-db", "Deployment", "db")),
           Change(9, kAdded, EventObject("argocd", "e-app", "Application", "shop")),
           Change(10, kAdded, PodObject("other", "web-5d9c7-zzzzz", {{"app", "web"}}))});
    Connect("dev", 1);
    Apply("dev", 1, {Change(1, kAdded, PodObject("shop", "web-1234-aaaaa", {}, "web-1234"))});
  }

  std::vector<std::string> SnapshotOf(const WatchFilter& filter) {
    std::unique_ptr<Subscription> sub = Subscribe(filter, 0, true);
    if (sub == nullptr) return {};
    return Describe(Drain(*sub));
  }
};

TEST_F(FilterTest, ApplicationMatchesWhatItManages) {
  EXPECT_THAT(SnapshotOf(F().Cluster("prod").Application("shop")),
              ElementsAre("ADDED Application/shop", "ADDED Deployment/web",
                          "ADDED Pod/web-5d9c7-abcde", "ADDED Event/e-app", "ADDED Event/e-pod-web",
                          "ADDED Event/e-rs-web", "complete"));
}

TEST_F(FilterTest, AppMatchesItsDeploymentPodsAndEvents) {
  EXPECT_THAT(SnapshotOf(F().Cluster("prod").App("web")),
              ElementsAre("ADDED Deployment/web", "ADDED Pod/web-5d9c7-abcde",
                          "ADDED Event/e-pod-web", "ADDED Event/e-rs-web", "complete"));
  EXPECT_THAT(SnapshotOf(F().App("db").Kinds({v1::OBJECT_KIND_EVENT})),
              ElementsAre("ADDED Event/e-db", "complete"));
}

TEST_F(FilterTest, NamespaceKindsAndCluster) {
  EXPECT_THAT(SnapshotOf(F().Cluster("prod").Namespace("other")),
              ElementsAre("ADDED Pod/web-5d9c7-zzzzz", "complete"));
  // Applications match on their destination namespace too.
  EXPECT_THAT(SnapshotOf(F().Cluster("prod").Namespace("shop").Kinds(
                  {v1::OBJECT_KIND_APPLICATION, v1::OBJECT_KIND_DEPLOYMENT})),
              ElementsAre("ADDED Application/shop", "ADDED Deployment/db", "ADDED Deployment/web",
                          "complete"));
  EXPECT_THAT(SnapshotOf(F().Kinds({v1::OBJECT_KIND_POD})),
              ElementsAre("ADDED Pod/web-1234-aaaaa", "ADDED Pod/web-5d9c7-zzzzz",
                          "ADDED Pod/db-77f8b-qwert", "ADDED Pod/web-5d9c7-abcde", "complete"));
  EXPECT_THAT(SnapshotOf(F().Cluster("dev")), ElementsAre("ADDED Pod/web-1234-aaaaa", "complete"));
  EXPECT_EQ(
      state_->Subscribe(F().Kinds({static_cast<v1::ObjectKind>(42)}), 0, false).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(FilterTest, LiveChangesAreFilteredToo) {
  std::unique_ptr<Subscription> shop = Subscribe(F().Application("shop"));
  std::unique_ptr<Subscription> web = Subscribe(F().App("web"));
  std::unique_ptr<Subscription> dev = Subscribe(F().Cluster("dev"));
  Apply(
      "prod", 1,
      {Change(11, kModified, PodObject("shop", "web-5d9c7-abcde", {{"app", "web"}}, "web-5d9c7")),
       Change(12, kModified, DeploymentObject("shop", "db", {{"app", "db"}})),
       Change(13, kModified,
              ApplicationObject("shop", "shop", {"web"}, v1::HEALTH_STATUS_DEGRADED)),
       Change(14, kDeleted, PodObject("shop", "web-5d9c7-abcde", {{"app", "web"}}, "web-5d9c7"))});
  Apply("dev", 1, {Change(2, kDeleted, PodObject("shop", "web-1234-aaaaa", {}, "web-1234"))});
  EXPECT_THAT(Describe(Drain(*shop)),
              ElementsAre("MODIFIED Pod/web-5d9c7-abcde", "MODIFIED Application/shop",
                          "DELETED Pod/web-5d9c7-abcde"));
  EXPECT_THAT(Describe(Drain(*web)),
              ElementsAre("MODIFIED Pod/web-5d9c7-abcde", "DELETED Pod/web-5d9c7-abcde",
                          "DELETED Pod/web-1234-aaaaa"));
  EXPECT_THAT(Describe(Drain(*dev)), ElementsAre("DELETED Pod/web-1234-aaaaa"));
}

TEST_F(FilterTest, ReplayFromASequenceThenLive) {
  std::unique_ptr<Subscription> sub = Subscribe(F().Cluster("prod"), 8);
  EXPECT_EQ(sub->oldest_sequence(), 1u);
  EXPECT_EQ(sub->latest_sequence(), 11u);
  std::vector<v1::WatchResponse> items = Drain(*sub);
  EXPECT_THAT(Describe(items), ElementsAre("ADDED Event/e-app", "ADDED Pod/web-5d9c7-zzzzz"));
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].change().sequence(), 9u);
  EXPECT_EQ(items[0].change().cluster(), "prod");
  EXPECT_EQ(items[0].change().agent_sequence(), 9u);
  EXPECT_FALSE(items[0].change().snapshot());
  // A blocked Next wakes up for a live change.
  std::vector<v1::WatchResponse> live;
  std::thread reader([&] { EXPECT_TRUE(sub->Next(absl::Now() + absl::Seconds(10), &live).ok()); });
  absl::SleepFor(absl::Milliseconds(50));
  Apply("prod", 1, {Change(11, kModified, DeploymentObject("shop", "db"))});
  reader.join();
  EXPECT_THAT(Describe(live), ElementsAre("MODIFIED Deployment/db"));
  EXPECT_EQ(live[0].change().sequence(), 12u);
  // from_sequence 0 without a snapshot: only what comes next.
  std::unique_ptr<Subscription> now = Subscribe({});
  EXPECT_THAT(Drain(*now), IsEmpty());
}

TEST_F(FilterTest, InitialSnapshotCarriesLastSequencesThenCompletes) {
  std::unique_ptr<Subscription> sub =
      Subscribe(F().Cluster("prod").Kinds({v1::OBJECT_KIND_DEPLOYMENT}), 0, true);
  Apply("prod", 1, {Change(11, kModified, DeploymentObject("shop", "web"))});
  std::vector<v1::WatchResponse> items = Drain(*sub);
  EXPECT_THAT(Describe(items), ElementsAre("ADDED Deployment/db", "ADDED Deployment/web",
                                           "complete", "MODIFIED Deployment/web"));
  ASSERT_EQ(items.size(), 4u);
  EXPECT_TRUE(items[0].change().snapshot());
  EXPECT_EQ(items[0].change().sequence(), 3u);
  EXPECT_EQ(items[1].change().sequence(), 2u);
  EXPECT_EQ(items[2].snapshot_complete().sequence(), 11u);
  EXPECT_EQ(items[3].change().sequence(), 12u);
  EXPECT_FALSE(items[3].change().snapshot());
}

TEST_F(FilterTest, ClusterStateChangesReachLiveSubscribers) {
  std::unique_ptr<Subscription> sub = Subscribe(F().Cluster("dev"));
  state_->Disconnected("dev", 1, "stream reset");
  state_->Disconnected("prod", 1, "stream reset");
  std::vector<v1::WatchResponse> items = Drain(*sub);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].cluster_state().cluster().name(), "dev");
  EXPECT_EQ(items[0].cluster_state().cluster().state(), v1::CONNECTION_STATE_DISCONNECTED);
  EXPECT_EQ(items[0].cluster_state().cluster().disconnect_reason(), "stream reset");
  EXPECT_EQ(items[0].cluster_state().cluster().pod_count(), 1);
  Connect("dev", 1);
  items = Drain(*sub);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].cluster_state().cluster().state(), v1::CONNECTION_STATE_CONNECTED);
  EXPECT_EQ(state_->GetCluster("dev")->disconnect_reason(), "");
}

TEST_F(StateTest, SlowSubscriberFallsOutOfTheWindow) {
  options_.retention = 5;
  Open();
  Connect("prod", 1);
  Apply("prod", 1, {Change(1, kAdded, PodObject("a", "p"))});
  std::unique_ptr<Subscription> fast = Subscribe({});
  std::unique_ptr<Subscription> slow = Subscribe({});
  for (uint64_t i = 2; i <= 5; ++i) Apply("prod", 1, {Change(i, kModified, PodObject("a", "p"))});
  EXPECT_EQ(Drain(*fast).size(), 4u);
  for (uint64_t i = 6; i <= 7; ++i) Apply("prod", 1, {Change(i, kModified, PodObject("a", "p"))});
  EXPECT_EQ(Drain(*fast).size(), 2u);
  std::vector<v1::WatchResponse> items;
  absl::Status status = slow->Next(absl::Now(), &items);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_THAT(status.message(), HasSubstr("resubscribe"));
}

TEST_F(StateTest, ShutdownWakesSubscribersAndRefusesWrites) {
  Connect("prod", 1);
  std::unique_ptr<Subscription> sub = Subscribe({});
  absl::Status status;
  std::thread reader([&] {
    std::vector<v1::WatchResponse> items;
    status = sub->Next(absl::Now() + absl::Seconds(10), &items);
  });
  absl::SleepFor(absl::Milliseconds(50));
  state_->Shutdown();
  reader.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(state_->Apply("prod", 1, {Change(1, kAdded, PodObject("a", "p"))}).status().code(),
            absl::StatusCode::kUnavailable);
  // The subscription may outlive the state.
  state_.reset();
  std::vector<v1::WatchResponse> items;
  EXPECT_EQ(sub->Next(absl::Now(), &items).code(), absl::StatusCode::kCancelled);
}

TEST_F(StateTest, RecentEventsAreBounded) {
  options_.max_events_per_cluster = 3;
  Open();
  Connect("prod", 1);
  std::vector<v1::AgentEvent> events;
  for (uint64_t i = 1; i <= 5; ++i) {
    events.push_back(Change(i, kAdded, EventObject("a", "e" + std::to_string(i), "Pod", "p")));
  }
  events.push_back(Change(6, kModified, EventObject("a", "e3", "Pod", "p", "BackOff")));
  Apply("prod", 1, events);
  auto names = [&] {
    std::vector<std::string> out;
    absl::StatusOr<ClusterState::Snapshot> snapshot = state_->GetSnapshot("prod");
    EXPECT_TRUE(snapshot.ok()) << snapshot.status();
    if (snapshot.ok()) {
      for (const v1::KubernetesEvent& event : snapshot->events) out.push_back(event.meta().name());
    }
    return out;
  };
  EXPECT_THAT(names(), ElementsAre("e4", "e5", "e3"));  // oldest first
  Open();
  EXPECT_THAT(names(), ElementsAre("e4", "e5", "e3"));
}

TEST_F(FilterTest, ResolveCluster) {
  EXPECT_EQ(state_->ResolveCluster("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_->ResolveCluster("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(state_->ResolveCluster("dev").value_or(""), "dev");
  EXPECT_EQ(state_->ListPods({}).status().code(), absl::StatusCode::kInvalidArgument);
  v1::GetApplicationRequest request;
  request.set_name("shop");
  EXPECT_EQ(state_->GetApplication(request).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(StateTest, NoClusterIsNotFound) {
  EXPECT_EQ(state_->ResolveCluster("").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(state_->GetSnapshot("").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(state_->ListClusters({}).ok());
}

TEST_F(FilterTest, ListPodsSelectorsAndPages) {
  auto names = [&](v1::ListPodsRequest request) {
    request.set_cluster("prod");
    absl::StatusOr<v1::ListPodsResponse> response = state_->ListPods(request);
    EXPECT_TRUE(response.ok()) << response.status();
    std::vector<std::string> out;
    if (response.ok()) {
      for (const v1::Pod& pod : response->pods()) out.push_back(pod.meta().name());
    }
    return out;
  };
  v1::ListPodsRequest request;
  EXPECT_THAT(names(request), ElementsAre("web-5d9c7-zzzzz", "db-77f8b-qwert", "web-5d9c7-abcde"));
  request.set_label_selector("app=web");
  EXPECT_THAT(names(request), ElementsAre("web-5d9c7-zzzzz", "web-5d9c7-abcde"));
  request.set_label_selector("app==web");
  EXPECT_THAT(names(request), ElementsAre("web-5d9c7-zzzzz", "web-5d9c7-abcde"));
  request.set_label_selector("app!=web");
  EXPECT_THAT(names(request), ElementsAre("db-77f8b-qwert"));
  request.set_label_selector(" app in (db, cache) ");
  EXPECT_THAT(names(request), ElementsAre("db-77f8b-qwert"));
  request.set_label_selector("app notin (db),app");
  EXPECT_THAT(names(request), ElementsAre("web-5d9c7-zzzzz", "web-5d9c7-abcde"));
  request.set_label_selector("!app");
  EXPECT_THAT(names(request), IsEmpty());
  request.set_label_selector("app=web");
  request.set_namespace_("shop");
  EXPECT_THAT(names(request), ElementsAre("web-5d9c7-abcde"));
  request.Clear();
  request.set_deployment("db");
  EXPECT_THAT(names(request), ElementsAre("db-77f8b-qwert"));
  request.Clear();
  request.set_application("shop");
  EXPECT_THAT(names(request), ElementsAre("web-5d9c7-abcde"));
  request.set_application("nope");
  EXPECT_THAT(names(request), IsEmpty());

  for (const char* bad : {"app=", "=web", "app in db", "app in (db", "a b", "app=we b", "app>1"}) {
    request.Clear();
    request.set_cluster("prod");
    request.set_label_selector(bad);
    if (std::string(bad) == "app=") continue;  // an empty value is valid in Kubernetes
    EXPECT_EQ(state_->ListPods(request).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }

  // Pages of one.
  request.Clear();
  request.set_cluster("prod");
  request.set_page_size(1);
  std::vector<std::string> seen;
  for (int page = 0; page < 5; ++page) {
    absl::StatusOr<v1::ListPodsResponse> response = state_->ListPods(request);
    ASSERT_TRUE(response.ok()) << response.status();
    for (const v1::Pod& pod : response->pods()) seen.push_back(pod.meta().name());
    EXPECT_EQ(response->cluster_state(), v1::CONNECTION_STATE_CONNECTED);
    if (response->next_page_token().empty()) break;
    request.set_page_token(response->next_page_token());
  }
  EXPECT_THAT(seen, ElementsAre("web-5d9c7-zzzzz", "db-77f8b-qwert", "web-5d9c7-abcde"));
  request.set_page_token("!!not base64!!");
  EXPECT_EQ(state_->ListPods(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_page_token("");
  request.set_page_size(-1);
  EXPECT_EQ(state_->ListPods(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_cluster("nope");
  request.set_page_size(0);
  EXPECT_EQ(state_->ListPods(request).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FilterTest, ListClustersPages) {
  v1::ListClustersRequest request;
  absl::StatusOr<v1::ListClustersResponse> all = state_->ListClusters(request);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->clusters_size(), 2);
  EXPECT_EQ(all->clusters(0).name(), "dev");
  EXPECT_EQ(all->clusters(1).name(), "prod");
  EXPECT_EQ(all->clusters(1).application_count(), 1);
  EXPECT_EQ(all->clusters(1).deployment_count(), 2);
  EXPECT_EQ(all->clusters(1).pod_count(), 3);
  EXPECT_TRUE(all->next_page_token().empty());
  request.set_page_size(1);
  absl::StatusOr<v1::ListClustersResponse> first = state_->ListClusters(request);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->clusters_size(), 1);
  EXPECT_EQ(first->clusters(0).name(), "dev");
  ASSERT_FALSE(first->next_page_token().empty());
  request.set_page_token(first->next_page_token());
  absl::StatusOr<v1::ListClustersResponse> second = state_->ListClusters(request);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->clusters_size(), 1);
  EXPECT_EQ(second->clusters(0).name(), "prod");
  EXPECT_TRUE(second->next_page_token().empty());
  request.set_page_size(-5);
  EXPECT_EQ(state_->ListClusters(request).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FilterTest, GetApplicationGathersWhatItManages) {
  v1::GetApplicationRequest request;
  request.set_cluster("prod");
  request.set_name("shop");
  absl::StatusOr<v1::GetApplicationResponse> response = state_->GetApplication(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->cluster(), "prod");
  EXPECT_EQ(response->application().meta().name(), "shop");
  ASSERT_EQ(response->deployments_size(), 1);
  EXPECT_EQ(response->deployments(0).meta().name(), "web");
  ASSERT_EQ(response->pods_size(), 1);
  EXPECT_EQ(response->pods(0).meta().name(), "web-5d9c7-abcde");
  std::vector<std::string> events;
  for (const v1::KubernetesEvent& event : response->events()) events.push_back(event.meta().name());
  EXPECT_THAT(events, ElementsAre("e-app", "e-rs-web", "e-pod-web"));  // newest first
  EXPECT_EQ(response->cluster_state(), v1::CONNECTION_STATE_CONNECTED);
  request.set_max_events(1);
  EXPECT_EQ(state_->GetApplication(request)->events_size(), 1);

  request.set_name("");
  EXPECT_EQ(state_->GetApplication(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_name("nope");
  EXPECT_EQ(state_->GetApplication(request).status().code(), absl::StatusCode::kNotFound);
  request.set_name("shop");
  request.set_namespace_("elsewhere");
  EXPECT_EQ(state_->GetApplication(request).status().code(), absl::StatusCode::kNotFound);
  request.set_namespace_("");
  request.set_cluster("nope");
  EXPECT_EQ(state_->GetApplication(request).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StateTest, FsyncedWritesAndManyBatches) {
  options_.fsync = true;
  Open();
  Connect("prod", 1);
  std::unique_ptr<Subscription> sub = Subscribe({});
  std::vector<v1::WatchResponse> received;
  std::thread reader([&] {
    while (received.size() < 2000) {
      std::vector<v1::WatchResponse> batch;
      if (!sub->Next(absl::Now() + absl::Seconds(5), &batch).ok() || batch.empty()) return;
      received.insert(received.end(), batch.begin(), batch.end());
    }
  });
  uint64_t sequence = 0;
  for (int batch = 0; batch < 20; ++batch) {
    std::vector<v1::AgentEvent> events;
    for (int i = 0; i < 100; ++i) {
      events.push_back(Change(++sequence, kModified, PodObject("a", "p" + std::to_string(i % 7))));
    }
    EXPECT_EQ(Apply("prod", 1, events), sequence);
  }
  reader.join();
  ASSERT_EQ(received.size(), 2000u);
  for (size_t i = 0; i < received.size(); ++i) {
    ASSERT_EQ(received[i].change().sequence(), i + 1);
  }
  Open();
  EXPECT_EQ(state_->latest_sequence(), 2000u);
}

}  // namespace
}  // namespace elfdeploy::watcher

namespace elfdeploy::watcher {
namespace {

// A crash may cut the log at any byte: reopening keeps exactly the batches written before it.
TEST_F(StateTest, EveryCutOfTheLogReopensToABatchBoundary) {
  Connect("prod", 1);
  std::vector<uint64_t> ends = {LogSize()};  // log size after each batch
  uint64_t sequence = 0;
  for (int batch = 0; batch < 6; ++batch) {
    std::vector<v1::AgentEvent> events;
    for (int i = 0; i < 3; ++i) {
      ++sequence;
      events.push_back(Change(sequence, kAdded, PodObject("a", "p" + std::to_string(sequence))));
    }
    Apply("prod", 1, events);
    ends.push_back(LogSize());
  }
  state_.reset();
  const std::string full = *::elfdeploy::testing::ReadFile(LogPath());
  auto near_end = [&](uint64_t cut) {
    for (uint64_t end : ends) {
      if (cut + 12 >= end && cut <= end + 12) return true;
    }
    return false;
  };
  for (uint64_t cut = ends.front(); cut <= full.size(); ++cut) {
    if (!near_end(cut) && cut % 5 != 0) continue;  // every byte near frame ends, a sample elsewhere
    ASSERT_TRUE(::elfdeploy::testing::WriteFile(LogPath(), full.substr(0, cut)).ok());
    Open();
    size_t complete = 0;
    while (complete + 1 < ends.size() && ends[complete + 1] <= cut) ++complete;
    ASSERT_EQ(state_->latest_sequence(), 3 * complete) << "cut at " << cut;
    ASSERT_EQ(state_->GetCluster("prod")->acked_sequence(), 3 * complete) << "cut at " << cut;
    ASSERT_EQ(LogSize(), ends[complete]) << "cut at " << cut;
    state_.reset();
  }
}

// Two agents write while three subscribers read: each subscriber sees every matching change
// once, in sequence order.
TEST_F(StateTest, ConcurrentWritersAndSubscribers) {
  Connect("a", 1);
  Connect("b", 1);
  std::unique_ptr<Subscription> all = Subscribe({});
  std::unique_ptr<Subscription> only_a = Subscribe(F().Cluster("a"));
  std::unique_ptr<Subscription> deployments = Subscribe(F().Kinds({v1::OBJECT_KIND_DEPLOYMENT}));
  constexpr int kBatches = 50;
  constexpr int kPerBatch = 20;
  auto write = [&](const std::string& cluster) {
    uint64_t sequence = 0;
    for (int batch = 0; batch < kBatches; ++batch) {
      std::vector<v1::AgentEvent> events;
      for (int i = 0; i < kPerBatch; ++i) {
        ++sequence;
        events.push_back(Change(sequence, kModified,
                                sequence % 2 == 0
                                    ? PodObject("ns", "p" + std::to_string(sequence % 11))
                                    : DeploymentObject("ns", "d" + std::to_string(sequence % 5))));
      }
      ASSERT_TRUE(state_->Apply(cluster, 1, events).ok());
    }
  };
  auto read = [](Subscription* sub, size_t want, std::vector<v1::WatchResponse>* out) {
    while (out->size() < want) {
      std::vector<v1::WatchResponse> batch;
      absl::Status status = sub->Next(absl::Now() + absl::Seconds(10), &batch);
      if (!status.ok() || batch.empty()) return;
      out->insert(out->end(), batch.begin(), batch.end());
    }
  };
  constexpr size_t kTotal = 2 * kBatches * kPerBatch;
  std::vector<v1::WatchResponse> got_all, got_a, got_deployments;
  std::thread r1(read, all.get(), kTotal, &got_all);
  std::thread r2(read, only_a.get(), kTotal / 2, &got_a);
  std::thread r3(read, deployments.get(), kTotal / 2, &got_deployments);
  std::thread w1(write, "a");
  std::thread w2(write, "b");
  for (std::thread* t : {&w1, &w2, &r1, &r2, &r3}) t->join();
  auto check = [](const std::vector<v1::WatchResponse>& items, size_t want) {
    ASSERT_EQ(items.size(), want);
    for (size_t i = 1; i < items.size(); ++i) {
      ASSERT_LT(items[i - 1].change().sequence(), items[i].change().sequence());
    }
  };
  check(got_all, kTotal);
  check(got_a, kTotal / 2);
  check(got_deployments, kTotal / 2);
  for (size_t i = 0; i < got_all.size(); ++i) ASSERT_EQ(got_all[i].change().sequence(), i + 1);
  for (const v1::WatchResponse& item : got_a) ASSERT_EQ(item.change().cluster(), "a");
  for (const v1::WatchResponse& item : got_deployments) {
    ASSERT_TRUE(item.change().change().object().has_deployment());
  }
}

TEST_F(StateTest, FsyncedThroughputSmoke) {
  options_.fsync = true;
  Open();
  Connect("prod", 1);
  constexpr int kEvents = 20000;
  constexpr int kBatch = 200;
  const absl::Time start = absl::Now();
  uint64_t sequence = 0;
  for (int batch = 0; batch < kEvents / kBatch; ++batch) {
    std::vector<v1::AgentEvent> events;
    for (int i = 0; i < kBatch; ++i) {
      ++sequence;
      events.push_back(Change(sequence, kModified,
                              PodObject("ns", "pod-" + std::to_string(sequence % 5000),
                                        {{"app", "web"}}, "web-abc12")));
    }
    ASSERT_EQ(Apply("prod", 1, events), sequence);
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("applied %d events in batches of %d with fsync: %.0f events/s\n", kEvents, kBatch,
              kEvents / seconds);
  EXPECT_EQ(state_->latest_sequence(), static_cast<uint64_t>(kEvents));
}

TEST(NotReadyTest, ReasonsAsKubectlShowsThem) {
  auto pod = [](const std::string& ns, const std::string& name) {
    v1::Pod p;
    p.mutable_meta()->set_namespace_(ns);
    p.mutable_meta()->set_name(name);
    p.set_phase(v1::POD_PHASE_RUNNING);
    return p;
  };
  v1::Pod ready = pod("a", "ready");
  ready.set_ready(true);
  v1::Pod crashing = pod("a", "crashing");
  crashing.add_container_statuses()->mutable_state()->mutable_waiting()->set_reason(
      "CrashLoopBackOff");
  v1::Pod pulling = pod("a", "pulling");
  pulling.set_phase(v1::POD_PHASE_PENDING);
  pulling.add_container_statuses()->mutable_state()->mutable_waiting()->set_reason(
      "ImagePullBackOff");
  v1::Pod pending = pod("b", "pending");
  pending.set_phase(v1::POD_PHASE_PENDING);
  v1::Pod oom = pod("b", "oom");
  oom.add_container_statuses()->mutable_state()->mutable_terminated()->set_reason("OOMKilled");
  v1::Pod starting = pod("b", "starting");
  v1::Pod done = pod("b", "done");
  done.set_phase(v1::POD_PHASE_SUCCEEDED);
  v1::Pod crashing2 = pod("a", "crashing2");
  *crashing2.mutable_container_statuses() = crashing.container_statuses();

  EXPECT_EQ(NotReadyReason(ready), "");
  EXPECT_EQ(NotReadyReason(done), "");
  EXPECT_EQ(NotReadyReason(crashing), "CrashLoopBackOff");
  EXPECT_EQ(NotReadyReason(pulling), "ImagePullBackOff");
  EXPECT_EQ(NotReadyReason(pending), "Pending");
  EXPECT_EQ(NotReadyReason(oom), "OOMKilled");
  EXPECT_EQ(NotReadyReason(starting), "NotReady");
  std::map<std::pair<std::string, std::string>, int> counts =
      CountNotReady({ready, crashing, pulling, pending, oom, starting, done, crashing2});
  EXPECT_EQ(counts,
            (std::map<std::pair<std::string, std::string>, int>{{{"a", "CrashLoopBackOff"}, 2},
                                                                {{"a", "ImagePullBackOff"}, 1},
                                                                {{"b", "NotReady"}, 1},
                                                                {{"b", "OOMKilled"}, 1},
                                                                {{"b", "Pending"}, 1}}));
}

}  // namespace
}  // namespace elfdeploy::watcher
