#include "tests/kubesim/store.h"

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kubesim/manifests.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Generous bound for blocking calls that are expected to return at once.
absl::Time Soon() { return absl::Now() + absl::Seconds(30); }

json Pod(const std::string& name, json labels = json::object(), const std::string& ns = "default") {
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
          {"spec", {{"containers", {{{"name", "app"}, {"image", "busybox"}}}}}}};
}

std::string Name(const ObjectPtr& object) { return (*object)["metadata"]["name"]; }
std::string Rv(const ObjectPtr& object) { return (*object)["metadata"]["resourceVersion"]; }

std::vector<std::string> Names(const ListResult& list) {
  std::vector<std::string> names;
  for (const ObjectPtr& item : list.items) names.push_back(Name(item));
  return names;
}

TEST(StoreTest, CreateSetsServerFieldsAndRejectsDuplicates) {
  ObjectStore store;
  uint64_t before = store.resource_version();
  absl::StatusOr<ObjectPtr> pod = store.Create("pods", Pod("web"));
  ASSERT_TRUE(pod.ok()) << pod.status();
  const json& meta = (**pod)["metadata"];
  EXPECT_EQ(meta["resourceVersion"], absl::StrCat(before + 1));
  EXPECT_EQ(meta["uid"].get<std::string>().size(), 36u);
  EXPECT_TRUE(meta.contains("creationTimestamp"));
  EXPECT_EQ((**pod)["kind"], "Pod");
  EXPECT_EQ((**pod)["apiVersion"], "v1");

  absl::StatusOr<ObjectPtr> again = store.Create("pods", Pod("web"));
  EXPECT_TRUE(absl::IsAlreadyExists(again.status()));
  EXPECT_EQ(again.status().message(), "pods \"web\" already exists");
  EXPECT_EQ(HttpCodeFor(again.status()), 409);
  EXPECT_EQ(StatusFor(again.status())["reason"], "AlreadyExists");

  EXPECT_TRUE(absl::IsNotFound(store.Create("pods", Pod("x", {}, "nowhere")).status()));
  json generated = {{"metadata", {{"generateName", "web-"}, {"namespace", "default"}}}};
  absl::StatusOr<ObjectPtr> named = store.Create("pods", generated);
  ASSERT_TRUE(named.ok());
  EXPECT_THAT(Name(*named), HasSubstr("web-"));
  EXPECT_EQ(Name(*named).size(), 9u);
}

TEST(StoreTest, SameSeedSameUids) {
  ObjectStore a({.seed = 7});
  ObjectStore b({.seed = 7});
  EXPECT_EQ((**a.Create("pods", Pod("p")))["metadata"]["uid"],
            (**b.Create("pods", Pod("p")))["metadata"]["uid"]);
}

TEST(StoreTest, UpdateChecksResourceVersionAndBumpsGenerationOnSpecOnly) {
  ObjectStore store;
  json app = {{"metadata", {{"name", "a"}, {"namespace", "default"}}},
              {"spec", {{"project", "default"}}}};
  ObjectPtr created = *store.Create("applications", app);
  EXPECT_EQ((*created)["metadata"]["generation"], 1);

  json stale = *created;
  stale["metadata"]["resourceVersion"] = "1";
  absl::StatusOr<ObjectPtr> conflict = store.Update("applications", stale);
  EXPECT_TRUE(absl::IsAborted(conflict.status()));
  EXPECT_THAT(conflict.status().message(), HasSubstr("the object has been modified"));

  json status_only = *created;
  status_only["status"] = {{"sync", {{"status", "Synced"}}}};
  ObjectPtr with_status = *store.Update("applications", status_only);
  EXPECT_EQ((*with_status)["metadata"]["generation"], 1);
  EXPECT_NE(Rv(with_status), Rv(created));

  json spec = *with_status;
  spec["spec"]["project"] = "other";
  ObjectPtr with_spec = *store.Update("applications", spec);
  EXPECT_EQ((*with_spec)["metadata"]["generation"], 2);
  EXPECT_EQ((*with_spec)["metadata"]["uid"], (*created)["metadata"]["uid"]);

  // A no-op update changes nothing, not even the resourceVersion.
  uint64_t rv = store.resource_version();
  ObjectPtr same = *store.Update("applications", *with_spec);
  EXPECT_EQ(Rv(same), Rv(with_spec));
  EXPECT_EQ(store.resource_version(), rv);
}

TEST(StoreTest, PatchesAndMutate) {
  ObjectStore store;
  json secret = {{"metadata", {{"name", "pull"}, {"namespace", "default"}}},
                 {"type", "kubernetes.io/dockerconfigjson"},
                 {"data", {{".dockerconfigjson", "e30="}, {"old", "eA=="}}}};
  ASSERT_TRUE(store.Create("secrets", secret).ok());
  ObjectPtr patched = *store.MergePatch("secrets", "default", "pull",
                                        {{"data", {{"old", nullptr}, {"new", "eQ=="}}}});
  EXPECT_FALSE((*patched)["data"].contains("old"));
  EXPECT_EQ((*patched)["data"]["new"], "eQ==");
  EXPECT_TRUE(absl::IsAborted(
      store.MergePatch("secrets", "default", "pull", {{"metadata", {{"resourceVersion", "2"}}}})
          .status()));
  EXPECT_TRUE(
      absl::IsNotFound(store.MergePatch("secrets", "default", "nope", json::object()).status()));

  json ops = json::array({{{"op", "add"}, {"path", "/metadata/labels"}, {"value", {{"a", "b"}}}}});
  ObjectPtr json_patched = *store.JsonPatch("secrets", "default", "pull", ops);
  EXPECT_EQ((*json_patched)["metadata"]["labels"]["a"], "b");
  json bad = json::array({{{"op", "remove"}, {"path", "/nope"}}});
  EXPECT_TRUE(absl::IsInvalidArgument(store.JsonPatch("secrets", "default", "pull", bad).status()));

  ObjectPtr mutated = *store.Mutate("secrets", "default", "pull", [](json& object) {
    object["metadata"]["annotations"]["touched"] = "yes";
    return absl::OkStatus();
  });
  EXPECT_EQ((*mutated)["metadata"]["annotations"]["touched"], "yes");
}

TEST(StoreTest, UpdateStatusKeepsTheRest) {
  ObjectStore store;
  json deployment = {{"metadata", {{"name", "d"}, {"namespace", "default"}}},
                     {"spec", {{"replicas", 2}}}};
  ObjectPtr created = *store.Create("deployments", deployment);
  json status = {{"metadata", {{"name", "d"}, {"namespace", "default"}}},
                 {"spec", {{"replicas", 9}}},
                 {"status", {{"readyReplicas", 2}}}};
  ObjectPtr updated = *store.UpdateStatus("deployments", status);
  EXPECT_EQ((*updated)["spec"]["replicas"], 2);
  EXPECT_EQ((*updated)["status"]["readyReplicas"], 2);
  // PUT of the main resource keeps status on types with a status subresource.
  json replaced = *updated;
  replaced.erase("status");
  replaced["spec"]["replicas"] = 3;
  ObjectPtr kept = *store.Update("deployments", replaced, /*keep_status=*/true);
  EXPECT_EQ((*kept)["status"]["readyReplicas"], 2);
  EXPECT_EQ((*kept)["metadata"]["generation"], 2);
}

TEST(StoreTest, LabelSelectors) {
  json labels = {{"app", "web"}, {"tier", "front"}};
  auto matches = [&](const std::string& text) {
    absl::StatusOr<LabelSelector> selector = LabelSelector::Parse(text);
    EXPECT_TRUE(selector.ok()) << text << ": " << selector.status();
    return selector.ok() && selector->Matches(labels);
  };
  EXPECT_TRUE(matches(""));
  EXPECT_TRUE(matches("app=web"));
  EXPECT_TRUE(matches("app==web,tier=front"));
  EXPECT_FALSE(matches("app=db"));
  EXPECT_TRUE(matches("app!=db"));
  EXPECT_TRUE(matches("missing!=x"));
  EXPECT_TRUE(matches("app in (db, web)"));
  EXPECT_FALSE(matches("app notin (db,web)"));
  EXPECT_TRUE(matches("tier"));
  EXPECT_FALSE(matches("!tier"));
  EXPECT_TRUE(matches("!missing, app in (web)"));
  EXPECT_FALSE(LabelSelector::Parse("app in db").ok());
  EXPECT_FALSE(LabelSelector::Parse("app=web,").ok());
}

TEST(StoreTest, FieldSelectors) {
  const ResourceType& pods = *FindResource("pods");
  absl::StatusOr<FieldSelector> selector =
      FieldSelector::Parse("metadata.name=web,status.phase!=Failed", pods);
  ASSERT_TRUE(selector.ok());
  EXPECT_TRUE(
      selector->Matches({{"metadata", {{"name", "web"}}}, {"status", {{"phase", "Running"}}}}));
  EXPECT_FALSE(selector->Matches({{"metadata", {{"name", "db"}}}}));
  absl::StatusOr<FieldSelector> unsupported = FieldSelector::Parse("spec.image=x", pods);
  EXPECT_TRUE(absl::IsInvalidArgument(unsupported.status()));
  EXPECT_EQ(unsupported.status().message(), "field label not supported: spec.image");
}

TEST(StoreTest, ListPagesComeFromOneSnapshot) {
  ObjectStore store;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store.Create("pods", Pod(absl::StrCat("p", i))).ok());
  absl::StatusOr<ListResult> first = store.List("pods", {.namespace_name = "default", .limit = 2});
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(Names(*first), ElementsAre("p0", "p1"));
  EXPECT_EQ(first->remaining_item_count, 3);
  // Changes after the first page do not show in the next ones.
  ASSERT_TRUE(store.Delete("pods", "default", "p3").ok());
  ASSERT_TRUE(store.Create("pods", Pod("p21")).ok());
  ASSERT_TRUE(
      store.MergePatch("pods", "default", "p4", {{"metadata", {{"labels", {{"x", "y"}}}}}}).ok());
  absl::StatusOr<ListResult> second = store.List(
      "pods", {.namespace_name = "default", .limit = 2, .continue_token = first->continue_token});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(Names(*second), ElementsAre("p2", "p3"));
  EXPECT_EQ(second->resource_version, first->resource_version);
  absl::StatusOr<ListResult> third = store.List(
      "pods", {.namespace_name = "default", .limit = 2, .continue_token = second->continue_token});
  ASSERT_TRUE(third.ok());
  EXPECT_THAT(Names(*third), ElementsAre("p4"));
  EXPECT_FALSE((*third->items[0])["metadata"].contains("labels") &&
               (*third->items[0])["metadata"]["labels"].contains("x"));
  EXPECT_TRUE(third->continue_token.empty());

  absl::StatusOr<ListResult> now = store.List("pods", {.namespace_name = "default"});
  EXPECT_THAT(Names(*now), ElementsAre("p0", "p1", "p2", "p21", "p4"));
  EXPECT_EQ(now->resource_version, store.resource_version());
}

TEST(StoreTest, ExpiredContinueTokenAndExactVersions) {
  ObjectStore store({.history_window = 3});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(store.Create("pods", Pod(absl::StrCat("p", i))).ok());
  ListResult first = *store.List("pods", {.limit = 1});
  uint64_t at = first.resource_version;
  EXPECT_THAT(Names(*store.List("pods", {.resource_version = absl::StrCat(at - 1),
                                         .resource_version_match = "Exact"})),
              ElementsAre("p0", "p1"));
  // One change more than the window: the token's version is compacted.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store.Create("pods", Pod(absl::StrCat("q", i))).ok());
  absl::StatusOr<ListResult> expired = store.List("pods", {.continue_token = first.continue_token});
  EXPECT_TRUE(absl::IsOutOfRange(expired.status()));
  EXPECT_THAT(expired.status().message(), HasSubstr("continue parameter is too old"));
  EXPECT_EQ(StatusFor(expired.status())["code"], 410);
  EXPECT_EQ(StatusFor(expired.status())["reason"], "Expired");
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      store.List("pods", {.resource_version = absl::StrCat(store.resource_version() + 5)})
          .status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store.List("pods", {.continue_token = "garbage!"}).status()));
}

TEST(StoreTest, WatchDeliversEveryChangeInOrder) {
  ObjectStore store;
  uint64_t start = store.resource_version();
  ASSERT_TRUE(store.Create("pods", Pod("a")).ok());
  absl::StatusOr<std::unique_ptr<Watcher>> watcher =
      store.Watch("pods", {.resource_version = absl::StrCat(start)});
  ASSERT_TRUE(watcher.ok());
  ASSERT_TRUE(store.MergePatch("pods", "default", "a", {{"status", {{"phase", "Running"}}}}).ok());
  ObjectPtr deleted = *store.Delete("pods", "default", "a");
  EXPECT_EQ(std::stoull(Rv(deleted)), store.resource_version());

  std::vector<std::string> seen;
  uint64_t last = start;
  while (seen.size() < 3) {
    std::vector<WatchEvent> events;
    ASSERT_TRUE((*watcher)->Next(Soon(), &events).ok());
    for (const WatchEvent& event : events) {
      EXPECT_GT(event.resource_version, last);
      last = event.resource_version;
      seen.push_back(std::string(EventTypeName(event.type)));
      EXPECT_EQ(*event.text, event.object->dump());
    }
  }
  EXPECT_THAT(seen, ElementsAre("ADDED", "MODIFIED", "DELETED"));
  EXPECT_EQ((*watcher)->resource_version(), store.resource_version());
  // Nothing more: Next returns at its deadline with no events.
  std::vector<WatchEvent> none;
  EXPECT_TRUE((*watcher)->Next(absl::Now(), &none).ok());
  EXPECT_TRUE(none.empty());
}

TEST(StoreTest, WatchSelectorTransitionsAreAddedAndDeleted) {
  ObjectStore store;
  ASSERT_TRUE(store.Create("pods", Pod("a", {{"app", "web"}})).ok());
  absl::StatusOr<std::unique_ptr<Watcher>> watcher =
      store.Watch("pods", {.label_selector = "app=web"});
  ASSERT_TRUE(watcher.ok());
  std::vector<WatchEvent> events;
  ASSERT_TRUE((*watcher)->Next(Soon(), &events).ok());  // the synthetic ADDED of "a"
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, EventType::kAdded);
  ASSERT_TRUE(
      store.MergePatch("pods", "default", "a", {{"metadata", {{"labels", {{"app", "db"}}}}}}).ok());
  ASSERT_TRUE(store.Create("pods", Pod("other", {{"app", "db"}})).ok());
  ASSERT_TRUE(
      store.MergePatch("pods", "default", "a", {{"metadata", {{"labels", {{"app", "web"}}}}}})
          .ok());
  std::vector<std::string> seen;
  while (seen.size() < 2) {
    ASSERT_TRUE((*watcher)->Next(Soon(), &events).ok());
    for (const WatchEvent& event : events) {
      seen.push_back(absl::StrCat(EventTypeName(event.type), " ", Name(event.object)));
    }
  }
  EXPECT_THAT(seen, ElementsAre("DELETED a", "ADDED a"));
}

TEST(StoreTest, CompactedWatchesAreExpired) {
  ObjectStore store({.history_window = 4});
  uint64_t start = store.resource_version();
  absl::StatusOr<std::unique_ptr<Watcher>> behind =
      store.Watch("pods", {.resource_version = absl::StrCat(start)});
  ASSERT_TRUE(behind.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store.Create("pods", Pod(absl::StrCat("p", i))).ok());
  EXPECT_EQ(store.compacted_resource_version(), start + 1);
  absl::StatusOr<std::unique_ptr<Watcher>> too_old =
      store.Watch("pods", {.resource_version = absl::StrCat(start)});
  EXPECT_TRUE(absl::IsOutOfRange(too_old.status()));
  EXPECT_THAT(too_old.status().message(), HasSubstr("too old resource version"));
  std::vector<WatchEvent> events;
  absl::Status status = (*behind)->Next(Soon(), &events);
  EXPECT_TRUE(absl::IsOutOfRange(status)) << status;
  EXPECT_TRUE(store.Watch("pods", {.resource_version = absl::StrCat(start + 1)}).ok());
}

TEST(StoreTest, ShutdownWakesWatchers) {
  ObjectStore store;
  std::unique_ptr<Watcher> watcher = *store.Watch("pods", {.resource_version = "1"});
  std::thread stopper([&] { store.Shutdown(); });
  std::vector<WatchEvent> events;
  absl::Status status = watcher->Next(absl::InfiniteFuture(), &events);
  stopper.join();
  EXPECT_TRUE(absl::IsCancelled(status));
}

TEST(StoreTest, NamespaceDeletionTakesItsObjects) {
  ObjectStore store;
  ASSERT_TRUE(store.Create("namespaces", {{"metadata", {{"name", "team"}}}}).ok());
  ASSERT_TRUE(store.Create("pods", Pod("a", {}, "team")).ok());
  ASSERT_TRUE(
      store.Create("configmaps", {{"metadata", {{"name", "c"}, {"namespace", "team"}}}}).ok());
  ASSERT_TRUE(store.Delete("namespaces", "", "team").ok());
  EXPECT_TRUE(absl::IsNotFound(store.Get("pods", "team", "a").status()));
  EXPECT_TRUE(absl::IsNotFound(store.Get("configmaps", "team", "c").status()));
}

TEST(StoreTest, Logs) {
  ObjectStore store;
  json pod = Pod("p");
  pod["spec"]["containers"].push_back({{"name", "sidecar"}});
  ASSERT_TRUE(store.Create("pods", pod).ok());
  ASSERT_TRUE(store.AppendLog("default", "p", "app", {"one", "two", "three"}).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(store.AppendLog("default", "p", "nope", {"x"})));
  EXPECT_TRUE(absl::IsNotFound(store.AppendLog("default", "q", "app", {"x"})));
  absl::StatusOr<LogChunk> all = store.ReadLog("default", "p", {.container = "app"});
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(all->lines, ElementsAre("one", "two", "three"));
  absl::StatusOr<LogChunk> tail =
      store.ReadLog("default", "p", {.container = "app", .tail_lines = 1});
  EXPECT_THAT(tail->lines, ElementsAre("three"));
  absl::StatusOr<LogChunk> unnamed = store.ReadLog("default", "p", {});
  EXPECT_TRUE(absl::IsInvalidArgument(unnamed.status()));
  EXPECT_THAT(unnamed.status().message(), HasSubstr("choose one of: [app sidecar]"));

  ASSERT_TRUE(store.AppendLog("default", "p", "app", {"four"}).ok());
  absl::StatusOr<LogChunk> more =
      store.WaitLog("default", "p", "app", all->pod_uid, all->next_offset, Soon());
  EXPECT_THAT(more->lines, ElementsAre("four"));
  ASSERT_TRUE(store.Delete("pods", "default", "p").ok());
  absl::StatusOr<LogChunk> ended =
      store.WaitLog("default", "p", "app", all->pod_uid, more->next_offset, Soon());
  EXPECT_TRUE(ended->ended);
}

// 5,000 pods and 500 applications written by 8 threads while 50 watchers follow: every watcher
// sees every change once, in resourceVersion order.
TEST(StoreTest, ScaleManyWritersAndWatchers) {
  ObjectStore store({.history_window = 100000});
  uint64_t start = store.resource_version();
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < 50; ++i) {
    watchers.push_back(*store.Watch(i % 10 == 0 ? "applications" : "pods",
                                    {.resource_version = absl::StrCat(start)}));
  }
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&store, t] {
      for (int i = t; i < 5000; i += 8) {
        ASSERT_TRUE(store.Create("pods", Pod(absl::StrCat("pod-", i))).ok());
        if (i % 10 == 0) {
          json app = {
              {"metadata", {{"name", absl::StrCat("app-", i / 10)}, {"namespace", "default"}}}};
          ASSERT_TRUE(store.Create("applications", app).ok());
        }
      }
    });
  }
  std::vector<std::thread> readers;
  std::vector<int> counts(watchers.size());
  for (size_t w = 0; w < watchers.size(); ++w) {
    readers.emplace_back([&, w] {
      size_t want = w % 10 == 0 ? 500 : 5000;
      uint64_t last = 0;
      std::set<std::string> names;
      while (names.size() < want) {
        std::vector<WatchEvent> events;
        absl::Status status = watchers[w]->Next(Soon(), &events);
        ASSERT_TRUE(status.ok()) << status;
        ASSERT_FALSE(events.empty());
        for (const WatchEvent& event : events) {
          ASSERT_GT(event.resource_version, last);
          last = event.resource_version;
          ASSERT_TRUE(names.insert(Name(event.object)).second);
        }
      }
      counts[w] = static_cast<int>(names.size());
    });
  }
  for (std::thread& thread : writers) thread.join();
  for (std::thread& thread : readers) thread.join();
  for (size_t w = 0; w < counts.size(); ++w) EXPECT_EQ(counts[w], w % 10 == 0 ? 500 : 5000);
  EXPECT_EQ(store.List("pods", {}).value().items.size(), 5000u);
  EXPECT_EQ(store.watcher_count(), 50);
}

TEST(ManifestsTest, YamlScalarsFollowTheCoreSchema) {
  absl::StatusOr<std::vector<json>> docs = ParseManifests(R"(---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: default}
data:
  quoted: "8080"
  plain: hello
---
# empty document
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: team}}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d, namespace: team}
  spec: {replicas: 2, paused: false, ratio: 0.5, none: null, tag: !!str 123}
)",
                                                          "seed.yaml");
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 3u);
  EXPECT_EQ((*docs)[0]["data"]["quoted"], "8080");
  const json& spec = (*docs)[2]["spec"];
  EXPECT_EQ(spec["replicas"], 2);
  EXPECT_EQ(spec["paused"], false);
  EXPECT_EQ(spec["ratio"], 0.5);
  EXPECT_TRUE(spec["none"].is_null());
  EXPECT_EQ(spec["tag"], "123");

  ObjectStore store;
  ASSERT_TRUE(ApplyManifests(store, *docs).ok());  // the Namespace goes first
  EXPECT_TRUE(store.Get("deployments", "team", "d").ok());
  ASSERT_TRUE(ApplyManifests(store, *docs).ok());  // again: replaced, not duplicated

  absl::StatusOr<std::vector<json>> bad = ParseManifests("a: [1, 2\nb: c\n", "bad.yaml");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_THAT(bad.status().message(), HasSubstr("bad.yaml:"));
  EXPECT_FALSE(ApplyManifests(store, {{{"apiVersion", "v9"}, {"kind", "Nope"}}}).ok());
}

}  // namespace
}  // namespace elfdeploy::kubesim
