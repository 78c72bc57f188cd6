#include "services/orchestrator/rollout_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace elfdeploy::orchestrator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class FakeClock {
 public:
  absl::Time Now() {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
};

v1::AppRollout App(const std::string& name, const std::string& group = "teams") {
  v1::AppRollout app;
  app.set_name(name);
  app.set_group(group);
  app.set_stage(v1::STAGE_PENDING);
  return app;
}

v1::DeployRequest Request(const std::string& request_id = "") {
  v1::DeployRequest request;
  request.set_source_dir("/src");
  request.set_request_id(request_id);
  request.mutable_registry()->set_url("registry.example.com:5000");
  request.mutable_gitops()->set_url("file:///repo.git");
  return request;
}

v1::WatchRolloutResponse StageEvent(const std::string& app, v1::Stage stage) {
  v1::WatchRolloutResponse event;
  event.mutable_app_stage()->set_app(app);
  event.mutable_app_stage()->set_stage(stage);
  return event;
}

v1::WatchRolloutResponse StateEvent(v1::RolloutState state) {
  v1::WatchRolloutResponse event;
  event.mutable_state()->set_state(state);
  return event;
}

std::vector<uint64_t> Sequences(const std::vector<v1::WatchRolloutResponse>& events) {
  std::vector<uint64_t> out;
  for (const auto& e : events) out.push_back(e.sequence());
  return out;
}

std::vector<std::string> Ids(const v1::ListRolloutsResponse& response) {
  std::vector<std::string> out;
  for (const auto& r : response.rollouts()) out.push_back(r.id());
  return out;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class RolloutStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "rollout-store-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    OpenStore();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  RolloutStoreOptions Options() {
    RolloutStoreOptions options;
    options.data_dir = dir_ + "/data";
    options.now = [this] { return clock_.Now(); };
    return options;
  }
  void OpenStore() {
    store_.reset();
    auto store = RolloutStore::Open(Options());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  v1::Rollout MustCreate(const v1::DeployRequest& request, std::vector<v1::AppRollout> apps) {
    auto created = store_->Create(request, std::move(apps));
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? created->first : v1::Rollout();
  }
  // Moves `rollout` to `state` with one state event.
  void MustSetState(v1::Rollout rollout, v1::RolloutState state) {
    rollout.set_state(state);
    auto events = store_->Update(rollout, {StateEvent(state)});
    ASSERT_TRUE(events.ok()) << events.status();
  }

  FakeClock clock_;
  std::string dir_;
  std::unique_ptr<RolloutStore> store_;
};

TEST_F(RolloutStoreTest, CreateAssignsIdAndGetReturnsIt) {
  auto created = store_->Create(Request(), {App("executive-team"), App("web-mcp", "mcps")});
  ASSERT_TRUE(created.ok()) << created.status();
  const v1::Rollout& rollout = created->first;
  EXPECT_TRUE(created->second);
  EXPECT_TRUE(absl::StartsWith(rollout.id(), "r-")) << rollout.id();
  for (char c : rollout.id()) {
    EXPECT_TRUE(absl::ascii_isalnum(c) || c == '-' || c == '_') << rollout.id();
  }
  EXPECT_EQ(rollout.state(), v1::ROLLOUT_STATE_PENDING);
  EXPECT_EQ(rollout.correlation_id(), rollout.id());
  EXPECT_EQ(rollout.create_time().seconds(), 1'800'000'000);
  EXPECT_EQ(rollout.last_sequence(), 0u);
  ASSERT_THAT(rollout.apps(), SizeIs(2));
  EXPECT_EQ(rollout.apps(1).group(), "mcps");
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/data/rollouts.db"));

  auto got = store_->Get(rollout.id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), rollout.SerializeAsString());

  v1::Rollout other = MustCreate(Request(), {App("a")});
  EXPECT_NE(other.id(), rollout.id());

  EXPECT_EQ(store_->Get("r-nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RolloutStoreTest, CorrelationIdComesFromTheRequest) {
  v1::DeployRequest request = Request();
  request.set_correlation_id("corr-1");
  EXPECT_EQ(MustCreate(request, {}).correlation_id(), "corr-1");
}

TEST_F(RolloutStoreTest, RepeatedRequestIdReturnsTheExistingRollout) {
  v1::DeployRequest request = Request("req-1");
  request.mutable_registry()->mutable_credentials()->mutable_basic()->set_password("one");
  v1::Rollout first = MustCreate(request, {App("a")});

  request.mutable_registry()->mutable_credentials()->mutable_basic()->set_password("two");
  auto again = store_->Create(request, {App("a")});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->second);
  EXPECT_EQ(again->first.id(), first.id());

  v1::DeployRequest different = Request("req-1");
  different.set_tag("v2");
  EXPECT_EQ(store_->Create(different, {App("a")}).status().code(),
            absl::StatusCode::kAlreadyExists);

  // Still idempotent once the rollout is finished, and across a reopen.
  MustSetState(first, v1::ROLLOUT_STATE_SUCCEEDED);
  OpenStore();
  again = store_->Create(request, {App("a")});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->second);
  EXPECT_EQ(again->first.state(), v1::ROLLOUT_STATE_SUCCEEDED);

  // Empty request ids never collide.
  EXPECT_NE(MustCreate(Request(), {}).id(), MustCreate(Request(), {}).id());
}

TEST_F(RolloutStoreTest, InlineSecretsAreNeverStored) {
  v1::DeployRequest request = Request();
  auto* push = request.mutable_registry()->mutable_credentials()->mutable_basic();
  push->set_username("pusher");
  push->set_password("SECRET-push-password");
  request.mutable_registry()->mutable_pull_credentials()->set_identity_token(
      "SECRET-identity-token");
  auto* ssh = request.mutable_gitops()->mutable_credentials()->mutable_ssh_key();
  ssh->set_private_key_path("/keys/id");
  ssh->set_passphrase("SECRET-passphrase");

  v1::Rollout rollout = MustCreate(request, {App("a")});
  EXPECT_EQ(rollout.request().registry().credentials().basic().username(), "pusher");
  EXPECT_EQ(rollout.request().registry().credentials().basic().password(), "");
  EXPECT_EQ(rollout.request().registry().pull_credentials().identity_token(), "");
  EXPECT_EQ(rollout.request().gitops().credentials().ssh_key().private_key_path(), "/keys/id");
  EXPECT_EQ(rollout.request().gitops().credentials().ssh_key().passphrase(), "");

  // The caller passes the request back in the rollout and in a state event: neither is stored.
  v1::Rollout next = rollout;
  *next.mutable_request() = request;
  next.set_state(v1::ROLLOUT_STATE_RUNNING);
  v1::WatchRolloutResponse event = StateEvent(v1::ROLLOUT_STATE_RUNNING);
  *event.mutable_state()->mutable_rollout() = next;
  auto stored = store_->Update(next, {event});
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->at(0).state().rollout().request().gitops().credentials().ssh_key().passphrase(),
            "");
  auto got = store_->Get(rollout.id());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->request().registry().credentials().basic().password(), "");

  v1::DeployRequest basic_git = Request();
  basic_git.mutable_gitops()->mutable_credentials()->mutable_basic()->set_password(
      "SECRET-git-token");
  EXPECT_EQ(MustCreate(basic_git, {}).request().gitops().credentials().basic().password(), "");

  std::string bytes;
  for (const char* file : {"/data/rollouts.db", "/data/rollouts.db-wal"}) {
    bytes += Slurp(dir_ + file);
  }
  EXPECT_FALSE(absl::StrContains(bytes, "SECRET-")) << "a secret reached the database";
  EXPECT_TRUE(absl::StrContains(bytes, "pusher"));  // the files searched hold the records
}

TEST_F(RolloutStoreTest, UpdateAppendsEventsWithIncreasingSequences) {
  v1::Rollout rollout = MustCreate(Request(), {App("a"), App("b")});
  clock_.Advance(absl::Seconds(5));

  rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  rollout.mutable_apps(0)->set_stage(v1::STAGE_BUILDING);
  rollout.set_correlation_id("ignored");
  v1::WatchRolloutResponse timed = StageEvent("b", v1::STAGE_BUILDING);
  timed.mutable_event_time()->set_seconds(42);
  timed.set_sequence(99);         // assigned by the store
  timed.set_rollout_id("other");  // likewise
  auto first = store_->Update(
      rollout, {StateEvent(v1::ROLLOUT_STATE_RUNNING), StageEvent("a", v1::STAGE_BUILDING), timed});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(Sequences(*first), ElementsAre(1, 2, 3));
  EXPECT_EQ(first->at(0).rollout_id(), rollout.id());
  EXPECT_EQ(first->at(2).rollout_id(), rollout.id());
  EXPECT_EQ(first->at(0).event_time().seconds(), 1'800'000'005);
  EXPECT_EQ(first->at(2).event_time().seconds(), 42);

  auto got = store_->Get(rollout.id());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->last_sequence(), 3u);
  EXPECT_EQ(got->state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(got->apps(0).stage(), v1::STAGE_BUILDING);
  EXPECT_EQ(got->correlation_id(), rollout.id());
  EXPECT_EQ(got->create_time().seconds(), 1'800'000'000);
  EXPECT_EQ(got->start_time().seconds(), 1'800'000'005);
  EXPECT_EQ(got->update_time().seconds(), 1'800'000'005);
  EXPECT_FALSE(got->has_end_time());

  // A state-only update appends nothing; the next event continues the sequence.
  clock_.Advance(absl::Seconds(1));
  got->set_message("still going");
  auto none = store_->Update(*got, {});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  auto second = store_->Update(*got, {StageEvent("a", v1::STAGE_PUSHING)});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(Sequences(*second), ElementsAre(4));
  got = store_->Get(rollout.id());
  EXPECT_EQ(got->message(), "still going");
  EXPECT_EQ(got->start_time().seconds(), 1'800'000'005);  // kept
  EXPECT_EQ(got->update_time().seconds(), 1'800'000'006);

  auto all = store_->Events(rollout.id(), 0);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Sequences(*all), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(all->at(1).app_stage().app(), "a");
  EXPECT_TRUE(all->at(0).has_state());
  EXPECT_THAT(Sequences(*store_->Events(rollout.id(), 2)), ElementsAre(3, 4));
  EXPECT_THAT(*store_->Events(rollout.id(), 4), SizeIs(0));
  EXPECT_THAT(*store_->Events(rollout.id(), UINT64_MAX), SizeIs(0));
  EXPECT_EQ(store_->Events("r-nope", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Events("", 0).status().code(), absl::StatusCode::kInvalidArgument);

  // Each rollout has its own sequence.
  v1::Rollout other = MustCreate(Request(), {});
  auto other_events = store_->Update(other, {StageEvent("x", v1::STAGE_BUILDING)});
  ASSERT_TRUE(other_events.ok());
  EXPECT_THAT(Sequences(*other_events), ElementsAre(1));
}

TEST_F(RolloutStoreTest, UpdateRejectsBadInput) {
  v1::Rollout rollout = MustCreate(Request(), {});
  v1::Rollout unknown = rollout;
  unknown.set_id("r-unknown");
  EXPECT_EQ(store_->Update(unknown, {}).status().code(), absl::StatusCode::kNotFound);
  v1::Rollout empty = rollout;
  empty.clear_id();
  EXPECT_EQ(store_->Update(empty, {}).status().code(), absl::StatusCode::kInvalidArgument);

  v1::WatchRolloutResponse progress;
  progress.mutable_progress()->set_app("a");
  rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(
      store_->Update(rollout, {StageEvent("a", v1::STAGE_BUILDING), progress}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Update(rollout, {v1::WatchRolloutResponse()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing of a refused update is stored.
  EXPECT_EQ(store_->Get(rollout.id())->state(), v1::ROLLOUT_STATE_PENDING);
  EXPECT_THAT(*store_->Events(rollout.id(), 0), SizeIs(0));
}

TEST_F(RolloutStoreTest, UpdateIsAtomicWhenAnInsertFails) {
  v1::Rollout rollout = MustCreate(Request(), {});
  // Plant an event at sequence 2 behind the store's back: the update's second insert conflicts.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(store_->path().c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(
        sqlite3_prepare_v2(db, "INSERT INTO events (rollout_id, sequence, event) VALUES (?, 2, ?)",
                           -1, &stmt, nullptr),
        SQLITE_OK)
        << sqlite3_errmsg(db);
    std::string planted = StageEvent("planted", v1::STAGE_FAILED).SerializeAsString();
    sqlite3_bind_text(stmt, 1, rollout.id().c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(stmt, 2, planted.data(), static_cast<int>(planted.size()), SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
  }
  v1::Rollout next = rollout;
  next.set_state(v1::ROLLOUT_STATE_RUNNING);
  auto result = store_->Update(
      next, {StageEvent("a", v1::STAGE_BUILDING), StageEvent("a", v1::STAGE_PUSHING)});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInternal) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr(store_->path()));
  EXPECT_THAT(result.status().message(), HasSubstr("UNIQUE"));

  auto got = store_->Get(rollout.id());
  EXPECT_EQ(got->state(), v1::ROLLOUT_STATE_PENDING);
  EXPECT_EQ(got->last_sequence(), 0u);
  auto events = store_->Events(rollout.id(), 0);
  ASSERT_THAT(*events, SizeIs(1));  // only the planted one: event 1 was rolled back
  EXPECT_EQ(events->at(0).app_stage().app(), "planted");
}

TEST_F(RolloutStoreTest, TerminalRolloutsRefuseUpdates) {
  v1::Rollout rollout = MustCreate(Request(), {App("a")});
  rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  ASSERT_TRUE(store_->Update(rollout, {StateEvent(v1::ROLLOUT_STATE_RUNNING)}).ok());
  clock_.Advance(absl::Seconds(3));
  rollout.set_state(v1::ROLLOUT_STATE_FAILED);
  v1::WatchRolloutResponse failed = StateEvent(v1::ROLLOUT_STATE_FAILED);
  *failed.mutable_state()->mutable_rollout() = rollout;
  ASSERT_TRUE(store_->Update(rollout, {failed}).ok());

  auto got = store_->Get(rollout.id());
  EXPECT_EQ(got->state(), v1::ROLLOUT_STATE_FAILED);
  EXPECT_EQ(got->end_time().seconds(), 1'800'000'003);
  // The event's rollout is the stored one: its times and sequence filled in.
  const v1::Rollout& after = store_->Events(rollout.id(), 1)->at(0).state().rollout();
  EXPECT_EQ(after.end_time().seconds(), 1'800'000'003);
  EXPECT_EQ(after.start_time().seconds(), got->start_time().seconds());
  EXPECT_EQ(after.last_sequence(), 2u);

  for (v1::RolloutState state : {v1::ROLLOUT_STATE_RUNNING, v1::ROLLOUT_STATE_SUCCEEDED}) {
    rollout.set_state(state);
    EXPECT_EQ(store_->Update(rollout, {StateEvent(state)}).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(store_->Get(rollout.id())->state(), v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(*store_->Events(rollout.id(), 0), SizeIs(2));
}

TEST_F(RolloutStoreTest, ListFiltersAndPages) {
  // r0 (a, PENDING) r1 (a+b, RUNNING) r2 (b, SUCCEEDED) r3 (a, FAILED) r4 (c, PENDING),
  // one second apart; r5 shares r4's create time.
  std::vector<v1::Rollout> r;
  const std::vector<std::vector<std::string>> apps = {{"a"}, {"a", "b"}, {"b"},
                                                      {"a"}, {"c"},      {"c"}};
  for (size_t i = 0; i < apps.size(); ++i) {
    if (i != 5) clock_.Advance(absl::Seconds(1));
    std::vector<v1::AppRollout> list;
    for (const auto& name : apps[i]) list.push_back(App(name));
    r.push_back(MustCreate(Request(), list));
  }
  MustSetState(r[1], v1::ROLLOUT_STATE_RUNNING);
  MustSetState(r[2], v1::ROLLOUT_STATE_SUCCEEDED);
  MustSetState(r[3], v1::ROLLOUT_STATE_FAILED);

  auto all = store_->List({});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Ids(*all),
              ElementsAre(r[5].id(), r[4].id(), r[3].id(), r[2].id(), r[1].id(), r[0].id()));
  EXPECT_EQ(all->next_page_token(), "");
  EXPECT_EQ(all->rollouts(2).state(), v1::ROLLOUT_STATE_FAILED);  // current records

  v1::ListRolloutsRequest by_state;
  by_state.add_states(v1::ROLLOUT_STATE_PENDING);
  by_state.add_states(v1::ROLLOUT_STATE_FAILED);
  EXPECT_THAT(Ids(*store_->List(by_state)),
              ElementsAre(r[5].id(), r[4].id(), r[3].id(), r[0].id()));
  by_state.add_states(v1::ROLLOUT_STATE_UNSPECIFIED);  // means any
  EXPECT_THAT(Ids(*store_->List(by_state)), SizeIs(6));

  v1::ListRolloutsRequest by_app;
  by_app.set_app("a");
  EXPECT_THAT(Ids(*store_->List(by_app)), ElementsAre(r[3].id(), r[1].id(), r[0].id()));
  by_app.add_states(v1::ROLLOUT_STATE_RUNNING);
  EXPECT_THAT(Ids(*store_->List(by_app)), ElementsAre(r[1].id()));
  by_app.set_app("zzz");
  EXPECT_THAT(Ids(*store_->List(by_app)), SizeIs(0));

  v1::ListRolloutsRequest by_time;
  *by_time.mutable_created_after() = r[3].create_time();  // inclusive
  EXPECT_THAT(Ids(*store_->List(by_time)), ElementsAre(r[5].id(), r[4].id(), r[3].id()));

  // Pages of 2 cover everything once, in order, including the create-time tie.
  v1::ListRolloutsRequest paged;
  paged.set_page_size(2);
  std::vector<std::string> seen;
  std::vector<std::string> tokens;
  for (int page = 0; page < 10; ++page) {
    auto response = store_->List(paged);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_LE(response->rollouts_size(), 2);
    for (const auto& id : Ids(*response)) seen.push_back(id);
    if (response->next_page_token().empty()) break;
    tokens.push_back(response->next_page_token());
    paged.set_page_token(response->next_page_token());
  }
  EXPECT_EQ(seen, Ids(*all));
  ASSERT_THAT(tokens, SizeIs(2));
  for (const auto& token : tokens) {
    for (char c : token) EXPECT_TRUE(absl::ascii_isalnum(c) || c == '-' || c == '_') << token;
  }

  // Paging with a filter; a token of other filters, a garbled token: INVALID_ARGUMENT.
  v1::ListRolloutsRequest filtered;
  filtered.set_app("a");
  filtered.set_page_size(1);
  auto page1 = store_->List(filtered);
  ASSERT_TRUE(page1.ok());
  filtered.set_page_token(page1->next_page_token());
  EXPECT_THAT(Ids(*store_->List(filtered)), ElementsAre(r[1].id()));
  filtered.set_app("b");
  EXPECT_EQ(store_->List(filtered).status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& bad :
       std::vector<std::string>{"garbage!", "bm90IGEgdG9rZW4", tokens[0].substr(1)}) {
    v1::ListRolloutsRequest request;
    request.set_page_token(bad);
    EXPECT_EQ(store_->List(request).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }

  for (int size : {-1, 1001}) {
    v1::ListRolloutsRequest request;
    request.set_page_size(size);
    EXPECT_EQ(store_->List(request).status().code(), absl::StatusCode::kInvalidArgument) << size;
  }
  v1::ListRolloutsRequest max;
  max.set_page_size(1000);
  EXPECT_TRUE(store_->List(max).ok());
  v1::ListRolloutsRequest bad_state;
  bad_state.add_states(static_cast<v1::RolloutState>(99));
  EXPECT_EQ(store_->List(bad_state).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RolloutStoreTest, ListDefaultsToFiftyPerPage) {
  for (int i = 0; i < 51; ++i) MustCreate(Request(), {});
  auto page = store_->List({});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->rollouts_size(), 50);
  EXPECT_NE(page->next_page_token(), "");
  v1::ListRolloutsRequest next;
  next.set_page_token(page->next_page_token());
  EXPECT_EQ(store_->List(next)->rollouts_size(), 1);
}

TEST_F(RolloutStoreTest, WaitForEventsWakesOnUpdateFromAnotherThread) {
  v1::Rollout rollout = MustCreate(Request(), {});
  rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    EXPECT_TRUE(store_->Update(rollout, {StageEvent("a", v1::STAGE_BUILDING)}).ok());
  });
  const absl::Time start = absl::Now();
  EXPECT_TRUE(store_->WaitForEvents(rollout.id(), 0, start + absl::Seconds(30)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  writer.join();
  EXPECT_THAT(*store_->Events(rollout.id(), 0), SizeIs(1));

  // Already there: returns at once.
  EXPECT_TRUE(store_->WaitForEvents(rollout.id(), 0, absl::InfinitePast()));
  // A state-only update does not wake a waiter for a new event.
  std::thread quiet([&] {
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_TRUE(store_->Update(rollout, {}).ok());
  });
  EXPECT_FALSE(store_->WaitForEvents(rollout.id(), 1, absl::Now() + absl::Milliseconds(300)));
  quiet.join();
}

TEST_F(RolloutStoreTest, WaitForEventsTimesOut) {
  v1::Rollout rollout = MustCreate(Request(), {});
  const absl::Time start = absl::Now();
  EXPECT_FALSE(store_->WaitForEvents(rollout.id(), 0, start + absl::Milliseconds(200)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));

  // Unknown rollouts and finished ones with nothing newer return at once.
  EXPECT_FALSE(store_->WaitForEvents("r-nope", 0, absl::Now() + absl::Seconds(30)));
  MustSetState(rollout, v1::ROLLOUT_STATE_CANCELLED);
  const absl::Time again = absl::Now();
  EXPECT_FALSE(store_->WaitForEvents(rollout.id(), 1, again + absl::Seconds(30)));
  EXPECT_TRUE(store_->WaitForEvents(rollout.id(), 0, again + absl::Seconds(30)));
  EXPECT_LT(absl::Now() - again, absl::Seconds(5));
}

TEST_F(RolloutStoreTest, WaitForEventsSeesTheTerminalEventAndWorksAfterReopen) {
  v1::Rollout rollout = MustCreate(Request(), {});
  OpenStore();  // the new object knows nothing about the rollout in memory
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    MustSetState(rollout, v1::ROLLOUT_STATE_SUCCEEDED);
  });
  EXPECT_TRUE(store_->WaitForEvents(rollout.id(), 0, absl::Now() + absl::Seconds(30)));
  writer.join();
}

TEST_F(RolloutStoreTest, UnfinishedListsNonTerminalRolloutsOldestFirst) {
  std::vector<v1::Rollout> r;
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(1));
    r.push_back(MustCreate(Request(), {}));
  }
  MustSetState(r[0], v1::ROLLOUT_STATE_SUCCEEDED);
  MustSetState(r[2], v1::ROLLOUT_STATE_RUNNING);
  MustSetState(r[3], v1::ROLLOUT_STATE_TIMED_OUT);
  auto unfinished = store_->Unfinished();
  ASSERT_TRUE(unfinished.ok()) << unfinished.status();
  ASSERT_THAT(*unfinished, SizeIs(2));
  EXPECT_EQ(unfinished->at(0).id(), r[1].id());
  EXPECT_EQ(unfinished->at(1).id(), r[2].id());
  EXPECT_EQ(unfinished->at(1).state(), v1::ROLLOUT_STATE_RUNNING);
}

// A process that dies with SIGKILL (no destructor, no sqlite3_close, WAL not checkpointed)
// leaves every committed update readable.
TEST_F(RolloutStoreTest, CommittedDataSurvivesKill) {
  store_.reset();
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fds[0]);
    auto store = RolloutStore::Open(Options());
    if (!store.ok()) _exit(2);
    auto created = (*store)->Create(Request("req-kill"), {App("a"), App("b")});
    if (!created.ok()) _exit(3);
    v1::Rollout rollout = created->first;
    rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
    rollout.mutable_apps(0)->set_stage(v1::STAGE_PUSHING);
    rollout.mutable_apps(0)->set_image_digest("sha256:abc");
    if (!(*store)
             ->Update(rollout,
                      {StateEvent(v1::ROLLOUT_STATE_RUNNING), StageEvent("a", v1::STAGE_BUILDING),
                       StageEvent("a", v1::STAGE_PUSHING)})
             .ok()) {
      _exit(4);
    }
    const std::string id = rollout.id() + "\n";
    if (write(pipe_fds[1], id.data(), id.size()) != static_cast<ssize_t>(id.size())) _exit(5);
    raise(SIGKILL);
    _exit(6);
  }
  close(pipe_fds[1]);
  std::string id;
  char c;
  while (read(pipe_fds[0], &c, 1) == 1 && c != '\n') id.push_back(c);
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_EQ(WTERMSIG(status), SIGKILL);
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/data/rollouts.db-wal"));

  OpenStore();
  auto got = store_->Get(id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state(), v1::ROLLOUT_STATE_RUNNING);
  EXPECT_EQ(got->apps(0).stage(), v1::STAGE_PUSHING);
  EXPECT_EQ(got->apps(0).image_digest(), "sha256:abc");
  EXPECT_EQ(got->last_sequence(), 3u);
  EXPECT_THAT(Sequences(*store_->Events(id, 0)), ElementsAre(1, 2, 3));
  auto unfinished = store_->Unfinished();
  ASSERT_THAT(*unfinished, SizeIs(1));
  EXPECT_EQ(unfinished->at(0).id(), id);

  // It resumes: sequences continue, and the request id still maps to it.
  auto more = store_->Update(*got, {StageEvent("a", v1::STAGE_PUBLISHING)});
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_THAT(Sequences(*more), ElementsAre(4));
  auto again = store_->Create(Request("req-kill"), {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->first.id(), id);
}

TEST_F(RolloutStoreTest, ConcurrentUpdatesOfDifferentRollouts) {
  constexpr int kThreads = 6;
  constexpr int kUpdates = 30;
  std::vector<v1::Rollout> rollouts;
  for (int i = 0; i < kThreads; ++i) rollouts.push_back(MustCreate(Request(), {App("a")}));
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      EXPECT_TRUE(store_->List({}).ok());
      EXPECT_TRUE(store_->Unfinished().ok());
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      v1::Rollout rollout = rollouts[t];
      rollout.set_state(v1::ROLLOUT_STATE_RUNNING);
      for (int i = 0; i < kUpdates; ++i) {
        rollout.set_message(absl::StrCat("update ", i));
        auto events = store_->Update(rollout, {StageEvent("a", v1::STAGE_BUILDING)});
        ASSERT_TRUE(events.ok()) << events.status();
        ASSERT_EQ(events->at(0).sequence(), static_cast<uint64_t>(i + 1));
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  for (const auto& rollout : rollouts) {
    auto got = store_->Get(rollout.id());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->last_sequence(), static_cast<uint64_t>(kUpdates));
    EXPECT_EQ(got->message(), absl::StrCat("update ", kUpdates - 1));
    EXPECT_THAT(*store_->Events(rollout.id(), 0), SizeIs(kUpdates));
  }
}

TEST_F(RolloutStoreTest, OpenRejectsBadDataDirAndNewerSchema) {
  RolloutStoreOptions empty;
  EXPECT_EQ(RolloutStore::Open(empty).status().code(), absl::StatusCode::kInvalidArgument);

  RolloutStoreOptions file;
  file.data_dir = dir_ + "/data/rollouts.db";  // a file, not a directory
  EXPECT_FALSE(RolloutStore::Open(file).ok());

  const std::string path = store_->path();
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 2", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = RolloutStore::Open(Options());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
}

}  // namespace
}  // namespace elfdeploy::orchestrator
