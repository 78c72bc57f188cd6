// kubesim's deployment controller, kubelet and churn mode against the real docker-registry.
#include "tests/kubesim/kubelet.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/common/oci/copy.h"
#include "services/common/oci/reference.h"
#include "services/common/oci/registry_client.h"
#include "tests/harness/peers.h"
#include "tests/harness/temp_dir.h"
#include "tests/kubesim/churn.h"
#include "tests/kubesim/store.h"
#include "tests/support/oci_image.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;
using ::elfdeploy::testing::RegistryFixture;
using ::elfdeploy::testing::TempDir;
using ::testing::HasSubstr;

constexpr absl::Duration kDeadline = absl::Seconds(30);

// Polls `done` until it is true or `timeout` passes; true when it became true.
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout = kDeadline) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

std::string Str(const json& object, const char* pointer) {
  json::json_pointer p(pointer);
  return object.contains(p) && object[p].is_string() ? object[p].get<std::string>() : "";
}

int64_t Int(const json& object, const char* pointer, int64_t fallback = 0) {
  json::json_pointer p(pointer);
  return object.contains(p) && object[p].is_number_integer() ? object[p].get<int64_t>() : fallback;
}

const json* FindCondition(const json& object, const std::string& type) {
  json::json_pointer p("/status/conditions");
  if (!object.contains(p) || !object[p].is_array()) return nullptr;
  for (const json& c : object[p]) {
    if (c.value("type", "") == type) return &c;
  }
  return nullptr;
}

bool PodReady(const json& pod) {
  const json* ready = FindCondition(pod, "Ready");
  return Str(pod, "/status/phase") == "Running" && ready != nullptr &&
         ready->value("status", "") == "True";
}

json Deployment(const std::string& ns, const std::string& name, const std::string& image,
                int64_t replicas, json env = json::array(), int port = 8080) {
  json container = {{"name", "app"}, {"image", image}, {"ports", {{{"containerPort", port}}}}};
  if (!env.empty()) container["env"] = std::move(env);
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", {{"app", name}}}}},
          {"spec",
           {{"replicas", replicas},
            {"selector", {{"matchLabels", {{"app", name}}}}},
            {"template",
             {{"metadata", {{"labels", {{"app", name}}}}},
              {"spec", {{"containers", json::array({container})}}}}}}}};
}

json ServiceFor(const std::string& ns, const std::string& name, int port) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"selector", {{"app", name}}},
            {"ports", {{{"port", port}, {"targetPort", port}, {"protocol", "TCP"}}}}}}};
}

// A watch on the pods of a namespace from the beginning: sees every status the kubelet wrote,
// however briefly it lasted.
class PodWatch {
 public:
  PodWatch(ObjectStore& store, const std::string& ns) {
    WatchOptions options;
    options.namespace_name = ns;
    absl::StatusOr<std::unique_ptr<Watcher>> watcher = store.Watch("pods", options);
    EXPECT_TRUE(watcher.ok()) << watcher.status();
    if (watcher.ok()) watcher_ = *std::move(watcher);
  }

  // Reads changes until one satisfies `match`; that pod, or nullopt after the deadline.
  std::optional<json> WaitFor(const std::function<bool(const json&)>& match) {
    absl::Time deadline = absl::Now() + kDeadline;
    std::vector<WatchEvent> events;
    while (watcher_ != nullptr && absl::Now() < deadline) {
      absl::Status status = watcher_->Next(deadline, &events);
      if (!status.ok()) {
        ADD_FAILURE() << status;
        return std::nullopt;
      }
      for (const WatchEvent& event : events) {
        if (event.type != EventType::kDeleted && match(*event.object)) return *event.object;
      }
    }
    return std::nullopt;
  }

 private:
  std::unique_ptr<Watcher> watcher_;
};

bool Waiting(const json& pod, const std::string& reason) {
  json::json_pointer p("/status/containerStatuses");
  if (!pod.contains(p) || !pod[p].is_array()) return false;
  for (const json& c : pod[p]) {
    if (c.contains("state") && c["state"].contains("waiting") &&
        c["state"]["waiting"].value("reason", "") == reason) {
      return true;
    }
  }
  return false;
}

class KubeletTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("kubesim-kubelet-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    absl::StatusOr<testing::TestImage> v1 =
        testing::WriteTestImage(dir_->Join("layout"), "v1", {4096}, 1);
    ASSERT_TRUE(v1.ok()) << v1.status();
    absl::StatusOr<testing::TestImage> v2 =
        testing::WriteTestImage(dir_->Join("layout"), "v2", {4096}, 2);
    ASSERT_TRUE(v2.ok()) << v2.status();
    store_ = std::make_unique<ObjectStore>();
    options_.container_start_delay = absl::Milliseconds(50);
    options_.crash_after = absl::Milliseconds(150);
    options_.image_pull_backoff = absl::Milliseconds(200);
    options_.image_pull_backoff_max = absl::Milliseconds(800);
    options_.err_image_pull_hold = absl::Milliseconds(50);
    options_.crash_backoff = absl::Milliseconds(200);
    options_.crash_backoff_max = absl::Milliseconds(800);
    options_.progress_deadline_unit = absl::Milliseconds(100);
    options_.resolve_cache_ttl = absl::Milliseconds(50);
    options_.max_timer_wait = absl::Milliseconds(50);
  }

  void TearDown() override {
    if (kubelet_ != nullptr) kubelet_->Stop();
  }

  void StartRegistry(bool htpasswd = false) {
    RegistryFixture::Options options;
    options.htpasswd = htpasswd;
    absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
  }

  void StartKubelet() {
    kubelet_ = std::make_unique<KubeletSim>(*store_, options_);
    ASSERT_TRUE(kubelet_->Start().ok());
  }

  // Pushes the layout's `tag` to `repository` ("team/app:v1") of the registry; its digest.
  std::string Push(const std::string& tag, const std::string& repository) {
    oci::RegistryClientOptions options;
    if (!registry_->ca_file().empty()) options.ca_file = registry_->ca_file();
    options.credentials.Set(registry_->host(),
                            {registry_->username(), Secret(registry_->password()), Secret()});
    std::unique_ptr<oci::Registry> client = oci::NewRegistryClient(options);
    absl::StatusOr<oci::TransportReference> from =
        oci::ParseTransportReference(absl::StrCat("oci:", dir_->Join("layout"), ":", tag));
    absl::StatusOr<oci::TransportReference> to =
        oci::ParseTransportReference(absl::StrCat("docker://", Image(repository)));
    EXPECT_TRUE(from.ok() && to.ok());
    if (!from.ok() || !to.ok()) return "";
    absl::StatusOr<oci::CopyResult> copied = oci::CopyImage(*client, *from, *to, {});
    EXPECT_TRUE(copied.ok()) << copied.status();
    return copied.ok() ? copied->manifest_digest.ToString() : "";
  }

  std::string Image(const std::string& repository) const {
    return absl::StrCat(registry_->host(), "/", repository);
  }

  void CreateNamespace(const std::string& name) {
    ASSERT_TRUE(
        store_
            ->Create("namespaces",
                     {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}})
            .ok());
  }

  void Create(const std::string& resource, const json& object) {
    absl::StatusOr<ObjectPtr> created = store_->Create(resource, object);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  std::vector<json> List(const std::string& resource, const std::string& ns,
                         const std::string& selector = "") {
    ListOptions options;
    options.namespace_name = ns;
    options.label_selector = selector;
    absl::StatusOr<ListResult> list = store_->List(resource, options);
    std::vector<json> items;
    if (!list.ok()) return items;
    for (const ObjectPtr& item : list->items) items.push_back(*item);
    return items;
  }

  json Get(const std::string& resource, const std::string& ns, const std::string& name) {
    absl::StatusOr<ObjectPtr> object = store_->Get(resource, ns, name);
    return object.ok() ? **object : json();
  }

  // "reason: message" of the events about `pod`.
  std::vector<std::string> EventsOf(const std::string& ns, const std::string& name) {
    std::vector<std::string> out;
    for (const json& e : List("events", ns)) {
      if (Str(e, "/involvedObject/name") == name) {
        out.push_back(absl::StrCat(e.value("reason", ""), ": ", e.value("message", "")));
      }
    }
    return out;
  }

  const json* FindEvent(const std::vector<json>& events, const std::string& pod,
                        const std::string& reason, const std::string& message_part) {
    for (const json& e : events) {
      if (Str(e, "/involvedObject/name") == pod && e.value("reason", "") == reason &&
          absl::StrContains(e.value("message", ""), message_part)) {
        return &e;
      }
    }
    return nullptr;
  }

  std::vector<std::string> Logs(const std::string& ns, const std::string& pod) {
    absl::StatusOr<LogChunk> chunk = store_->ReadLog(ns, pod, {});
    return chunk.ok() ? chunk->lines : std::vector<std::string>{};
  }

  bool DeploymentAvailable(const std::string& ns, const std::string& name, int64_t replicas) {
    json d = Get("deployments", ns, name);
    const json* progressing = FindCondition(d, "Progressing");
    const json* available = FindCondition(d, "Available");
    return !d.is_null() && Int(d, "/status/observedGeneration") == Int(d, "/metadata/generation") &&
           Int(d, "/status/availableReplicas") == replicas &&
           Int(d, "/status/updatedReplicas") == replicas &&
           Int(d, "/status/replicas") == replicas && available != nullptr &&
           available->value("status", "") == "True" && progressing != nullptr &&
           progressing->value("reason", "") == "NewReplicaSetAvailable";
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<RegistryFixture> registry_;
  std::unique_ptr<ObjectStore> store_;
  KubeletOptions options_;
  std::unique_ptr<KubeletSim> kubelet_;
};

TEST_F(KubeletTest, DeploymentRunsReadyPodsWithTheRegistryDigest) {
  StartRegistry();
  std::string digest = Push("v1", "team/web:v1");
  StartKubelet();
  CreateNamespace("apps");
  Create("deployments", Deployment("apps", "web", Image("team/web:v1"), 2));
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "web", 2); }))
      << Get("deployments", "apps", "web").dump(2);

  json d = Get("deployments", "apps", "web");
  EXPECT_EQ(Str(d, "/metadata/annotations/deployment.kubernetes.io~1revision"), "1");
  EXPECT_EQ(Int(d, "/status/unavailableReplicas", -1), -1);  // zero is omitted
  std::vector<json> sets = List("replicasets", "apps");
  ASSERT_EQ(sets.size(), 1u);
  const json& rs = sets[0];
  std::string hash = Str(rs, "/metadata/labels/pod-template-hash");
  ASSERT_FALSE(hash.empty());
  EXPECT_EQ(hash.find_first_not_of("bcdfghjklmnpqrstvwxz2456789"), std::string::npos) << hash;
  EXPECT_EQ(Str(rs, "/metadata/name"), "web-" + hash);
  EXPECT_EQ(Str(rs, "/metadata/ownerReferences/0/kind"), "Deployment");
  EXPECT_EQ(Str(rs, "/metadata/ownerReferences/0/uid"), Str(d, "/metadata/uid"));
  EXPECT_EQ(Int(rs, "/spec/replicas"), 2);
  EXPECT_TRUE(WaitUntil([&] {
    return Int(Get("replicasets", "apps", "web-" + hash), "/status/readyReplicas") == 2;
  }));

  std::vector<json> pods = List("pods", "apps", "app=web");
  ASSERT_EQ(pods.size(), 2u);
  std::vector<json> events = List("events", "apps");
  for (const json& pod : pods) {
    std::string name = Str(pod, "/metadata/name");
    EXPECT_TRUE(absl::StartsWith(name, "web-" + hash + "-")) << name;
    EXPECT_EQ(name.size(), ("web-" + hash + "-").size() + 5) << name;
    EXPECT_EQ(Str(pod, "/metadata/labels/pod-template-hash"), hash);
    EXPECT_EQ(Str(pod, "/metadata/ownerReferences/0/kind"), "ReplicaSet");
    EXPECT_EQ(Str(pod, "/metadata/ownerReferences/0/uid"), Str(rs, "/metadata/uid"));
    EXPECT_EQ(Str(pod, "/spec/nodeName"), "kubesim-node");
    EXPECT_TRUE(PodReady(pod)) << pod.dump(2);
    EXPECT_FALSE(Str(pod, "/status/podIP").empty());
    EXPECT_EQ(Str(pod, "/status/hostIP"), "10.0.0.10");
    for (const char* type : {"PodScheduled", "Initialized", "ContainersReady", "Ready"}) {
      const json* c = FindCondition(pod, type);
      ASSERT_NE(c, nullptr) << type;
      EXPECT_EQ(c->value("status", ""), "True") << type;
    }
    const json& status = pod["status"]["containerStatuses"][0];
    EXPECT_EQ(status["imageID"], absl::StrCat(registry_->host(), "/team/web@", digest));
    EXPECT_EQ(status["image"], Image("team/web:v1"));
    EXPECT_EQ(status["ready"], true);
    EXPECT_EQ(status["started"], true);
    EXPECT_EQ(status["restartCount"], 0);
    EXPECT_TRUE(status["state"].contains("running"));

    EXPECT_NE(FindEvent(events, name, "Scheduled", "Successfully assigned apps/" + name), nullptr);
    const json* pulling =
        FindEvent(events, name, "Pulling", "Pulling image \"" + Image("team/web:v1"));
    ASSERT_NE(pulling, nullptr);
    EXPECT_EQ(Str(*pulling, "/involvedObject/fieldPath"), "spec.containers{app}");
    EXPECT_EQ(Str(*pulling, "/involvedObject/uid"), Str(pod, "/metadata/uid"));
    EXPECT_EQ(Str(*pulling, "/source/component"), "kubelet");
    EXPECT_EQ(Str(*pulling, "/type"), "Normal");
    EXPECT_EQ(Int(*pulling, "/count"), 1);
    EXPECT_TRUE(absl::StartsWith(Str(*pulling, "/metadata/name"), name + "."));
    EXPECT_EQ(Str(*pulling, "/metadata/name").size(), name.size() + 17);
    // The second pod shares the first one's lookup, so it may not have pulled itself.
    EXPECT_TRUE(FindEvent(events, name, "Pulled", "Successfully pulled image") != nullptr);
    EXPECT_NE(FindEvent(events, name, "Created", "Created container app"), nullptr);
    EXPECT_NE(FindEvent(events, name, "Started", "Started container app"), nullptr);
    EXPECT_THAT(Logs("apps", name),
                ::testing::ElementsAre("starting app (image " + Image("team/web:v1") + ")",
                                       "listening on :8080"));
  }
  EXPECT_NE(FindEvent(events, "web", "ScalingReplicaSet", "Scaled up replica set web-" + hash),
            nullptr);
  // Two pods of one image: one HEAD.
  EXPECT_EQ(kubelet_->stats().registry_requests, 1);
  EXPECT_EQ(kubelet_->stats().pods, 2);
}

TEST_F(KubeletTest, MissingImageBacksOffUntilItIsPushed) {
  StartRegistry();
  StartKubelet();
  CreateNamespace("apps");
  PodWatch watch(*store_, "apps");
  std::string image = Image("team/late:v1");
  Create("deployments", Deployment("apps", "late", image, 1));

  std::optional<json> failed =
      watch.WaitFor([](const json& p) { return Waiting(p, "ErrImagePull"); });
  ASSERT_TRUE(failed.has_value());
  const json& waiting = (*failed)["status"]["containerStatuses"][0]["state"]["waiting"];
  std::string full = image;
  EXPECT_EQ(
      waiting.value("message", ""),
      absl::StrCat("rpc error: code = NotFound desc = failed to pull and unpack image \"", full,
                   "\": failed to resolve reference \"", full, "\": ", full, ": not found"));
  EXPECT_EQ(Str(*failed, "/status/phase"), "Pending");
  std::optional<json> backoff =
      watch.WaitFor([](const json& p) { return Waiting(p, "ImagePullBackOff"); });
  ASSERT_TRUE(backoff.has_value());
  EXPECT_EQ((*backoff)["status"]["containerStatuses"][0]["state"]["waiting"].value("message", ""),
            "Back-off pulling image \"" + image + "\"");
  std::string pod = Str(*backoff, "/metadata/name");
  // Retried: a second ErrImagePull after the back-off, and the events counted.
  ASSERT_TRUE(WaitUntil([&] {
    std::vector<json> events = List("events", "apps");
    const json* pulling = FindEvent(events, pod, "Pulling", "Pulling image");
    return pulling != nullptr && Int(*pulling, "/count") >= 2;
  }));
  std::vector<json> events = List("events", "apps");
  const json* pull_failed = FindEvent(events, pod, "Failed", "Failed to pull image \"" + image);
  ASSERT_NE(pull_failed, nullptr);
  EXPECT_EQ(Str(*pull_failed, "/type"), "Warning");
  EXPECT_THAT(pull_failed->value("message", ""), HasSubstr("code = NotFound"));
  EXPECT_NE(FindEvent(events, pod, "Failed", "Error: ErrImagePull"), nullptr);
  EXPECT_NE(FindEvent(events, pod, "BackOff", "Back-off pulling image \"" + image + "\""), nullptr);
  EXPECT_NE(FindEvent(events, pod, "Failed", "Error: ImagePullBackOff"), nullptr);
  EXPECT_FALSE(DeploymentAvailable("apps", "late", 1));

  std::string digest = Push("v1", "team/late:v1");
  std::optional<json> running = watch.WaitFor(PodReady);
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(Str(*running, "/metadata/name"), pod);
  EXPECT_EQ((*running)["status"]["containerStatuses"][0]["imageID"],
            absl::StrCat(registry_->host(), "/team/late@", digest));
  EXPECT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "late", 1); }));
}

TEST_F(KubeletTest, PrivateRegistryNeedsThePullSecret) {
  StartRegistry(/*htpasswd=*/true);
  std::string digest = Push("v1", "team/private:v1");
  StartKubelet();
  CreateNamespace("apps");
  PodWatch watch(*store_, "apps");
  std::string image = Image("team/private:v1");
  Create("deployments", Deployment("apps", "anonymous", image, 1));
  std::optional<json> refused =
      watch.WaitFor([](const json& p) { return Waiting(p, "ErrImagePull"); });
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT((*refused)["status"]["containerStatuses"][0]["state"]["waiting"].value("message", ""),
              HasSubstr("401 Unauthorized"));

  std::string auth = absl::Base64Escape(registry_->username() + ":" + registry_->password());
  json config = {{"auths", {{registry_->host(), {{"auth", auth}}}}}};
  Create("secrets", {{"apiVersion", "v1"},
                     {"kind", "Secret"},
                     {"metadata", {{"name", "regcred"}, {"namespace", "apps"}}},
                     {"type", "kubernetes.io/dockerconfigjson"},
                     {"data", {{".dockerconfigjson", absl::Base64Escape(config.dump())}}}});
  json with_secret = Deployment("apps", "authorized", image, 1);
  with_secret["spec"]["template"]["spec"]["imagePullSecrets"] = {{{"name", "regcred"}}};
  Create("deployments", with_secret);
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "authorized", 1); }));
  std::vector<json> pods = List("pods", "apps", "app=authorized");
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0]["status"]["containerStatuses"][0]["imageID"],
            absl::StrCat(registry_->host(), "/team/private@", digest));
  // Still refused without it.
  EXPECT_FALSE(DeploymentAvailable("apps", "anonymous", 1));
  for (const json& pod : List("pods", "apps", "app=anonymous")) EXPECT_FALSE(PodReady(pod));

  // A secret that does not exist is reported, and the pull goes on without it.
  json missing = Deployment("apps", "missing-secret", image, 1);
  missing["spec"]["template"]["spec"]["imagePullSecrets"] = {{{"name", "nope"}}};
  Create("deployments", missing);
  ASSERT_TRUE(WaitUntil([&] {
    for (const json& e : List("events", "apps")) {
      if (e.value("reason", "") == "FailedToRetrieveImagePullSecret" &&
          absl::StrContains(e.value("message", ""), "(nope)")) {
        return true;
      }
    }
    return false;
  }));
}

TEST_F(KubeletTest, CrashingContainerLoopsWithGrowingBackOff) {
  StartRegistry();
  Push("v1", "team/crash:v1");
  StartKubelet();
  CreateNamespace("apps");
  PodWatch watch(*store_, "apps");
  Create("deployments", Deployment("apps", "crash", Image("team/crash:v1"), 1,
                                   {{{"name", "ELFDEPLOY_SIM_EXIT_CODE"}, {"value", "3"}}}));
  std::optional<json> looping =
      watch.WaitFor([](const json& p) { return Waiting(p, "CrashLoopBackOff"); });
  ASSERT_TRUE(looping.has_value());
  std::string pod = Str(*looping, "/metadata/name");
  std::string uid = Str(*looping, "/metadata/uid");
  const json& status = (*looping)["status"]["containerStatuses"][0];
  EXPECT_EQ(
      status["state"]["waiting"].value("message", ""),
      absl::StrCat("back-off 200ms restarting failed container=app pod=", pod, "_apps(", uid, ")"));
  EXPECT_EQ(status["lastState"]["terminated"]["exitCode"], 3);
  EXPECT_EQ(status["lastState"]["terminated"]["reason"], "Error");
  EXPECT_TRUE(status["lastState"]["terminated"].contains("finishedAt"));
  EXPECT_EQ(status["ready"], false);
  EXPECT_EQ(Str(*looping, "/status/phase"), "Running");
  std::optional<json> longer = watch.WaitFor([](const json& p) {
    if (!Waiting(p, "CrashLoopBackOff")) return false;
    return absl::StartsWith(
        p["status"]["containerStatuses"][0]["state"]["waiting"].value("message", ""),
        "back-off 400ms");
  });
  ASSERT_TRUE(longer.has_value());
  std::optional<json> restarted = watch.WaitFor(
      [](const json& p) { return Int(p, "/status/containerStatuses/0/restartCount") >= 3; });
  ASSERT_TRUE(restarted.has_value());

  ASSERT_TRUE(WaitUntil([&] {
    std::vector<json> events = List("events", "apps");
    const json* backoff = FindEvent(
        events, pod, "BackOff",
        absl::StrCat("Back-off restarting failed container app in pod ", pod, "_apps(", uid, ")"));
    return backoff != nullptr && Int(*backoff, "/count") >= 2 &&
           Str(*backoff, "/type") == "Warning";
  }));
  std::vector<std::string> logs = Logs("apps", pod);
  EXPECT_THAT(logs, ::testing::Contains("exiting with code 3"));
  EXPECT_THAT(logs, ::testing::Contains("starting app (image " + Image("team/crash:v1") + ")"));
}

TEST_F(KubeletTest, TemplateChangeRollsOutANewReplicaSet) {
  StartRegistry();
  Push("v1", "team/roll:v1");
  std::string v2 = Push("v2", "team/roll:v2");
  StartKubelet();
  CreateNamespace("apps");
  Create("deployments", Deployment("apps", "roll", Image("team/roll:v1"), 2));
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "roll", 2); }));
  std::vector<json> first_pods = List("pods", "apps", "app=roll");
  ASSERT_EQ(first_pods.size(), 2u);
  std::string old_hash = Str(first_pods[0], "/metadata/labels/pod-template-hash");

  auto set_image = [&](const std::string& image) {
    absl::StatusOr<ObjectPtr> updated = store_->Mutate("deployments", "apps", "roll", [&](json& d) {
      d["spec"]["template"]["spec"]["containers"][0]["image"] = image;
      return absl::OkStatus();
    });
    ASSERT_TRUE(updated.ok()) << updated.status();
  };
  set_image(Image("team/roll:v2"));
  ASSERT_TRUE(WaitUntil([&] {
    if (!DeploymentAvailable("apps", "roll", 2)) return false;
    std::vector<json> pods = List("pods", "apps", "app=roll");
    if (pods.size() != 2) return false;
    for (const json& pod : pods) {
      if (Str(pod, "/metadata/labels/pod-template-hash") == old_hash || !PodReady(pod)) {
        return false;
      }
    }
    return true;
  })) << Get("deployments", "apps", "roll").dump(2);
  std::vector<json> pods = List("pods", "apps", "app=roll");
  for (const json& pod : pods) {
    EXPECT_EQ(pod["status"]["containerStatuses"][0]["imageID"],
              absl::StrCat(registry_->host(), "/team/roll@", v2));
  }
  std::string new_hash = Str(pods[0], "/metadata/labels/pod-template-hash");
  EXPECT_NE(new_hash, old_hash);
  EXPECT_EQ(Int(Get("replicasets", "apps", "roll-" + old_hash), "/spec/replicas", -1), 0);
  json d = Get("deployments", "apps", "roll");
  EXPECT_EQ(Str(d, "/metadata/annotations/deployment.kubernetes.io~1revision"), "2");
  EXPECT_EQ(FindCondition(d, "Progressing")->value("message", ""),
            "ReplicaSet \"roll-" + new_hash + "\" has successfully progressed.");

  // A template whose image is missing: the new pods back off and the old ones keep running.
  PodWatch watch(*store_, "apps");
  set_image(Image("team/roll:missing"));
  std::optional<json> stuck =
      watch.WaitFor([](const json& p) { return Waiting(p, "ImagePullBackOff"); });
  ASSERT_TRUE(stuck.has_value());
  int ready_old = 0;
  for (const json& pod : List("pods", "apps", "app=roll")) {
    if (Str(pod, "/metadata/labels/pod-template-hash") == new_hash && PodReady(pod)) ++ready_old;
  }
  EXPECT_EQ(ready_old, 2);
  EXPECT_EQ(List("replicasets", "apps").size(), 3u);
  json rolling = Get("deployments", "apps", "roll");
  EXPECT_EQ(Int(rolling, "/status/replicas"), 4);
  EXPECT_EQ(Int(rolling, "/status/updatedReplicas"), 2);
  EXPECT_EQ(Int(rolling, "/status/availableReplicas"), 2);
}

TEST_F(KubeletTest, ScalesUpDownToZeroAndDeletesInCascade) {
  StartRegistry();
  Push("v1", "team/scale:v1");
  StartKubelet();
  CreateNamespace("apps");
  Create("deployments", Deployment("apps", "scale", Image("team/scale:v1"), 3));
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "scale", 3); }));
  auto scale = [&](int64_t replicas) {
    ASSERT_TRUE(
        store_->MergePatch("deployments", "apps", "scale", json{{"spec", {{"replicas", replicas}}}})
            .ok());
  };
  scale(5);
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "scale", 5); }));
  EXPECT_EQ(List("pods", "apps", "app=scale").size(), 5u);
  scale(1);
  ASSERT_TRUE(WaitUntil([&] {
    return DeploymentAvailable("apps", "scale", 1) && List("pods", "apps", "app=scale").size() == 1;
  }));
  scale(0);
  ASSERT_TRUE(WaitUntil([&] {
    json d = Get("deployments", "apps", "scale");
    return List("pods", "apps").empty() &&
           Int(d, "/status/observedGeneration") == Int(d, "/metadata/generation") &&
           !d["status"].contains("replicas") && FindCondition(d, "Available") != nullptr &&
           FindCondition(d, "Available")->value("status", "") == "True";
  })) << Get("deployments", "apps", "scale").dump(2);
  EXPECT_EQ(List("replicasets", "apps").size(), 1u);

  // A pod deleted by hand is replaced.
  scale(1);
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "scale", 1); }));
  std::string first = Str(List("pods", "apps")[0], "/metadata/name");
  ASSERT_TRUE(store_->Delete("pods", "apps", first).ok());
  ASSERT_TRUE(WaitUntil([&] {
    std::vector<json> pods = List("pods", "apps");
    return pods.size() == 1 && Str(pods[0], "/metadata/name") != first && PodReady(pods[0]);
  }));

  ASSERT_TRUE(store_->Delete("deployments", "apps", "scale").ok());
  ASSERT_TRUE(WaitUntil(
      [&] { return List("pods", "apps").empty() && List("replicasets", "apps").empty(); }));
  EXPECT_TRUE(WaitUntil([&] { return kubelet_->stats().deployments == 0; }));
}

TEST_F(KubeletTest, ProgressDeadlineExceededThenRecovers) {
  StartRegistry();
  StartKubelet();
  CreateNamespace("apps");
  json deployment = Deployment("apps", "slow", Image("team/slow:v1"), 1);
  deployment["spec"]["progressDeadlineSeconds"] = 5;  // 500ms with the test's unit
  Create("deployments", deployment);
  ASSERT_TRUE(WaitUntil([&] {
    json d = Get("deployments", "apps", "slow");
    const json* c = FindCondition(d, "Progressing");
    return c != nullptr && c->value("reason", "") == "ProgressDeadlineExceeded";
  })) << Get("deployments", "apps", "slow").dump(2);
  json d = Get("deployments", "apps", "slow");
  const json* progressing = FindCondition(d, "Progressing");
  EXPECT_EQ(progressing->value("status", ""), "False");
  std::string rs = Str(List("replicasets", "apps")[0], "/metadata/name");
  EXPECT_EQ(progressing->value("message", ""),
            "ReplicaSet \"" + rs + "\" has timed out progressing.");
  EXPECT_EQ(FindCondition(d, "Available")->value("status", ""), "False");

  Push("v1", "team/slow:v1");
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("apps", "slow", 1); }));
}

TEST_F(KubeletTest, AgentgatewayLogsDiscoveredApps) {
  StartRegistry();
  Push("v1", "team/app:v1");
  StartKubelet();
  CreateNamespace("gateway");
  CreateNamespace("teams");
  std::string image = Image("team/app:v1");
  Create("services", ServiceFor("gateway", "agentgateway", 8080));
  Create("deployments", Deployment("gateway", "agentgateway", image, 1));
  Create("services", ServiceFor("teams", "research-team", 8090));
  Create("deployments", Deployment("teams", "research-team", image, 1, json::array(), 8090));
  // Never ready: never discovered.
  Create("services", ServiceFor("teams", "broken", 8091));
  Create("deployments", Deployment("teams", "broken", Image("team/nope:v1"), 1));

  std::string gateway;
  ASSERT_TRUE(WaitUntil([&] {
    std::vector<json> pods = List("pods", "gateway", "app=agentgateway");
    if (pods.size() != 1 || !PodReady(pods[0])) return false;
    gateway = Str(pods[0], "/metadata/name");
    return true;
  }));
  auto discovered = [&](const std::string& line) {
    std::vector<std::string> logs = Logs("gateway", gateway);
    return std::count(logs.begin(), logs.end(), line);
  };
  std::string research =
      "Discovered research-team at http://research-team.teams.svc.cluster.local:8090";
  ASSERT_TRUE(WaitUntil([&] { return discovered(research) == 1; }));

  // An app that becomes ready after the gateway started.
  Create("deployments", Deployment("teams", "late-team", image, 1, json::array(), 9000));
  Create("services", ServiceFor("teams", "late-team", 9000));
  std::string late = "Discovered late-team at http://late-team.teams.svc.cluster.local:9000";
  ASSERT_TRUE(WaitUntil([&] { return discovered(late) == 1; }));
  // More ready pods of a discovered app do not repeat the line.
  ASSERT_TRUE(
      store_->MergePatch("deployments", "teams", "research-team", json{{"spec", {{"replicas", 2}}}})
          .ok());
  ASSERT_TRUE(WaitUntil([&] { return DeploymentAvailable("teams", "research-team", 2); }));
  std::vector<std::string> logs = Logs("gateway", gateway);
  EXPECT_EQ(discovered(research), 1);
  for (const std::string& line : logs) {
    EXPECT_THAT(line, ::testing::Not(HasSubstr("Discovered agentgateway")));
    EXPECT_THAT(line, ::testing::Not(HasSubstr("Discovered broken")));
  }
}

TEST_F(KubeletTest, SameSeedSameNames) {
  // No registry: names do not depend on pulls.
  options_.registry_max_attempts = 1;
  auto names = [&](ObjectStore& store) {
    KubeletSim kubelet(store, options_);
    EXPECT_TRUE(kubelet.Start().ok());
    EXPECT_TRUE(
        store
            .Create("namespaces",
                    {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "apps"}}}})
            .ok());
    EXPECT_TRUE(store.Create("deployments", Deployment("apps", "a", "127.0.0.1:1/x:v1", 3)).ok());
    std::set<std::string> out;
    EXPECT_TRUE(WaitUntil([&] {
      absl::StatusOr<ListResult> pods = store.List("pods", {});
      if (!pods.ok() || pods->items.size() != 3) return false;
      out.clear();
      for (const ObjectPtr& pod : pods->items) out.insert(Str(*pod, "/metadata/name"));
      return true;
    }));
    kubelet.Stop();
    return out;
  };
  ObjectStore one;
  ObjectStore two;
  std::set<std::string> first = names(one);
  EXPECT_EQ(first.size(), 3u);
  EXPECT_EQ(first, names(two));
}

TEST_F(KubeletTest, ManyPodsOfOneImageCostOneLookup) {
  int deployments = 100;
  int replicas = 10;
  if (const char* env = std::getenv("KUBESIM_SCALE_DEPLOYMENTS")) deployments = std::atoi(env);
  StartRegistry();
  Push("v1", "team/many:v1");
  options_.resolve_cache_ttl = absl::Minutes(1);
  ObjectStore::Options store_options;
  store_options.history_window = 200000;
  store_ = std::make_unique<ObjectStore>(store_options);
  StartKubelet();
  CreateNamespace("many");
  for (int i = 0; i < deployments; ++i) {
    Create("deployments",
           Deployment("many", absl::StrCat("app-", i), Image("team/many:v1"), replicas));
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (int i = 0; i < deployments; ++i) {
          json d = Get("deployments", "many", absl::StrCat("app-", i));
          if (Int(d, "/status/availableReplicas") != replicas) return false;
        }
        return true;
      },
      absl::Seconds(150)));
  EXPECT_EQ(kubelet_->stats().pods, deployments * replicas);
  EXPECT_EQ(kubelet_->stats().registry_requests, 1);
}

TEST_F(KubeletTest, ConvergesWhenItsWatchesFallBehindTheHistoryWindow) {
  StartRegistry();
  Push("v1", "team/window:v1");
  ObjectStore::Options store_options;
  store_options.history_window = 20;  // every watch of the kubelet gets 410 and relists
  store_ = std::make_unique<ObjectStore>(store_options);
  StartKubelet();
  CreateNamespace("apps");
  for (int i = 0; i < 10; ++i) {
    Create("deployments", Deployment("apps", absl::StrCat("w-", i), Image("team/window:v1"), 3));
  }
  ASSERT_TRUE(WaitUntil([&] {
    for (int i = 0; i < 10; ++i) {
      if (!DeploymentAvailable("apps", absl::StrCat("w-", i), 3)) return false;
    }
    return true;
  }));
  EXPECT_EQ(List("pods", "apps").size(), 30u);
  ASSERT_TRUE(store_->Delete("deployments", "apps", "w-0").ok());
  ASSERT_TRUE(WaitUntil([&] { return List("pods", "apps").size() == 27; }));
}

TEST_F(KubeletTest, InjectedClockDrivesTheProgressDeadline) {
  std::atomic<int64_t> seconds{1700000000};
  options_.now = [&seconds] { return absl::FromUnixSeconds(seconds.load()); };
  options_.progress_deadline_unit = absl::Seconds(1);
  options_.registry_max_attempts = 1;
  StartKubelet();
  CreateNamespace("apps");
  Create("deployments", Deployment("apps", "clock", "127.0.0.1:1/team/clock:v1", 1));
  ASSERT_TRUE(WaitUntil([&] {
    json d = Get("deployments", "apps", "clock");
    const json* c = FindCondition(d, "Progressing");
    return c != nullptr && c->value("reason", "") == "NewReplicaSetCreated";
  }));
  json d = Get("deployments", "apps", "clock");
  EXPECT_EQ(FindCondition(d, "Progressing")->value("lastUpdateTime", ""), "2023-11-14T22:13:20Z");
  seconds += 601;  // past the default progressDeadlineSeconds (600)
  kubelet_->Wake();
  ASSERT_TRUE(WaitUntil([&] {
    json now = Get("deployments", "apps", "clock");
    const json* c = FindCondition(now, "Progressing");
    return c != nullptr && c->value("reason", "") == "ProgressDeadlineExceeded";
  }));
}

TEST_F(KubeletTest, InvalidImageNameIsReported) {
  StartKubelet();
  CreateNamespace("apps");
  PodWatch watch(*store_, "apps");
  Create("deployments", Deployment("apps", "bad", "Team/Bad:v1", 1));
  std::optional<json> bad =
      watch.WaitFor([](const json& p) { return Waiting(p, "InvalidImageName"); });
  ASSERT_TRUE(bad.has_value());
  std::string pod = Str(*bad, "/metadata/name");
  ASSERT_TRUE(WaitUntil([&] {
    std::vector<json> events = List("events", "apps");
    return FindEvent(events, pod, "InspectFailed",
                     "couldn't parse image reference \"Team/Bad:v1\": invalid reference format") !=
               nullptr &&
           FindEvent(events, pod, "Failed", "Error: InvalidImageName") != nullptr;
  }));
}

TEST(ChurnTest, ChangesPodsAtTheAskedRate) {
  ObjectStore store;
  ChurnOptions options;
  options.pods = 20;
  options.rate = 200;
  options.namespace_ = "churn";
  options.seed = 7;
  // The kubelet leaves pods of another node alone.
  KubeletSim kubelet(store, {});
  ASSERT_TRUE(kubelet.Start().ok());
  ChurnSim churn(store, options);
  ASSERT_TRUE(churn.Start().ok());
  ListOptions list_options;
  list_options.namespace_name = "churn";
  absl::StatusOr<ListResult> pods = store.List("pods", list_options);
  ASSERT_TRUE(pods.ok());
  EXPECT_EQ(pods->items.size(), 20u);
  WatchOptions watch_options;
  watch_options.namespace_name = "churn";
  watch_options.resource_version = std::to_string(pods->resource_version);
  absl::StatusOr<std::unique_ptr<Watcher>> watcher = store.Watch("pods", watch_options);
  ASSERT_TRUE(watcher.ok());
  int modified = 0;
  int flips = 0;
  absl::Time deadline = absl::Now() + kDeadline;
  std::vector<WatchEvent> events;
  while (modified < 200 && absl::Now() < deadline) {
    ASSERT_TRUE((*watcher)->Next(deadline, &events).ok());
    for (const WatchEvent& event : events) {
      if (event.type != EventType::kModified) continue;
      ++modified;
      const json* ready = FindCondition(*event.object, "Ready");
      if (ready != nullptr && ready->value("status", "") == "False") ++flips;
    }
  }
  churn.Stop();
  kubelet.Stop();
  EXPECT_EQ(kubelet.stats().pods, 0);
  EXPECT_GE(modified, 200);
  EXPECT_GE(churn.changes(), 200);
  EXPECT_GT(flips, 0);

  // Same seed, same pods.
  ObjectStore other;
  options.rate = 0;
  ChurnSim again(other, options);
  ASSERT_TRUE(again.Start().ok());
  EXPECT_EQ(again.pod_names(), churn.pod_names());
}

}  // namespace
}  // namespace elfdeploy::kubesim
