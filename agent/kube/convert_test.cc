#include "agent/kube/convert.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace elfdeploy::kube {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;
using Json = nlohmann::json;

Json Parse(const char* text) { return Json::parse(text); }

// The converters read simdjson elements; these tests build and mutate nlohmann::json, and hand it
// over through its text (a parser that lives for the call).
template <typename Convert>
auto Via(const Json& json, Convert convert) {
  simdjson::dom::parser parser;
  return convert(parser.parse(json.dump()).value());
}
absl::StatusOr<v1::ObjectMeta> ToObjectMeta(const Json& json) {
  return Via(json, [](simdjson::dom::element e) { return kube::ToObjectMeta(e); });
}
absl::StatusOr<v1::Pod> ToPod(const Json& json) {
  return Via(json, [](simdjson::dom::element e) { return kube::ToPod(e); });
}
absl::StatusOr<v1::Deployment> ToDeployment(const Json& json) {
  return Via(json, [](simdjson::dom::element e) { return kube::ToDeployment(e); });
}
absl::StatusOr<v1::KubernetesEvent> ToEvent(const Json& json) {
  return Via(json, [](simdjson::dom::element e) { return kube::ToEvent(e); });
}
absl::StatusOr<v1::ClusterObject> ToClusterObject(v1::ObjectKind kind, const Json& json) {
  return Via(json, [kind](simdjson::dom::element e) { return kube::ToClusterObject(kind, e); });
}

int64_t Seconds(const char* rfc3339) {
  google::protobuf::Timestamp time;
  EXPECT_TRUE(ParseRfc3339(rfc3339, &time)) << rfc3339;
  return time.seconds();
}

TEST(IdentityJsonTest, KeepsTheIdentityOnlyAndEscapesIt) {
  auto identity = [](const Json& json) {
    return Via(json, [](simdjson::dom::element e) { return IdentityJson(e); });
  };
  Json pod = Parse(R"({"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "web-1", "namespace": "elf", "uid": "u-1",
                   "resourceVersion": "7\"\\x", "labels": {"app": "web"}},
      "spec": {"containers": []}})");
  std::string text = identity(pod);
  EXPECT_EQ(Json::parse(text), Parse(R"({"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "web-1", "namespace": "elf", "uid": "u-1",
                   "resourceVersion": "7\"\\x"}})"));
  EXPECT_EQ(text.find(' '), std::string::npos) << text;
  // Missing or non-string fields are left out; no metadata, no "metadata".
  EXPECT_EQ(Json::parse(identity(Parse(R"({"kind": 3, "metadata": {"name": "a", "uid": 5}})"))),
            Parse(R"({"metadata": {"name": "a"}})"));
  EXPECT_EQ(identity(Parse(R"({"kind": "Pod"})")), R"({"kind":"Pod"})");
}

TEST(ParseRfc3339Test, AcceptsZuluFractionsAndOffsets) {
  google::protobuf::Timestamp time;
  ASSERT_TRUE(ParseRfc3339("2024-01-02T03:04:05Z", &time));
  EXPECT_EQ(time.seconds(), 1704164645);
  EXPECT_EQ(time.nanos(), 0);

  ASSERT_TRUE(ParseRfc3339("2024-01-02T03:04:05.123456Z", &time));
  EXPECT_EQ(time.seconds(), 1704164645);
  EXPECT_EQ(time.nanos(), 123456000);

  ASSERT_TRUE(ParseRfc3339("2024-01-02T05:04:05.5+02:00", &time));
  EXPECT_EQ(time.seconds(), 1704164645);
  EXPECT_EQ(time.nanos(), 500000000);

  ASSERT_TRUE(ParseRfc3339("1969-12-31T23:59:59.25Z", &time));
  EXPECT_EQ(time.seconds(), -1);
  EXPECT_EQ(time.nanos(), 250000000);
}

TEST(ParseRfc3339Test, RejectsGarbageAndLeavesOutputAlone) {
  google::protobuf::Timestamp time;
  time.set_seconds(42);
  EXPECT_FALSE(ParseRfc3339("", &time));
  EXPECT_FALSE(ParseRfc3339("yesterday", &time));
  EXPECT_FALSE(ParseRfc3339("2024-01-02 03:04:05", &time));
  EXPECT_FALSE(ParseRfc3339("2024-01-02T03:04:05", &time));  // No offset.
  EXPECT_FALSE(ParseRfc3339("10000-01-01T00:00:00Z", &time));
  EXPECT_EQ(time.seconds(), 42);
}

TEST(IsKeptAnnotationTest, KeepsOnlyWatchedKeys) {
  EXPECT_TRUE(IsKeptAnnotation("argocd.argoproj.io/refresh"));
  EXPECT_TRUE(IsKeptAnnotation("deployment.kubernetes.io/revision"));
  EXPECT_TRUE(IsKeptAnnotation("kubectl.kubernetes.io/restartedAt"));
  EXPECT_TRUE(IsKeptAnnotation("app.kubernetes.io/version"));
  EXPECT_FALSE(IsKeptAnnotation("kubectl.kubernetes.io/last-applied-configuration"));
  EXPECT_FALSE(IsKeptAnnotation("argocd.argoproj.io/tracking-id"));
  EXPECT_FALSE(IsKeptAnnotation("app.kubernetes.io"));
}

TEST(ToObjectMetaTest, KeepsIdentityLabelsOwnersAndWatchedAnnotations) {
  Json pod = Parse(R"({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {
      "name": "executive-team-7d9f8b6c4-x2x7q",
      "generateName": "executive-team-7d9f8b6c4-",
      "namespace": "elf-automations",
      "uid": "1f0c2f1e-2b7a-4b4e-9a51-3c3f4d9a0b11",
      "resourceVersion": "123456",
      "generation": 3,
      "creationTimestamp": "2024-01-02T03:04:05Z",
      "deletionTimestamp": "2024-01-02T03:14:05Z",
      "labels": {"app": "executive-team", "pod-template-hash": "7d9f8b6c4"},
      "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
        "kubectl.kubernetes.io/restartedAt": "2024-01-02T03:00:00Z",
        "app.kubernetes.io/managed-by": "elfdeploy",
        "prometheus.io/scrape": "true"
      },
      "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "executive-team-7d9f8b6c4",
        "uid": "9a9a9a9a-0000-1111-2222-333344445555", "controller": true,
        "blockOwnerDeletion": true
      }],
      "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
    }
  })");
  absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(pod);
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->name(), "executive-team-7d9f8b6c4-x2x7q");
  EXPECT_EQ(meta->namespace_(), "elf-automations");
  EXPECT_EQ(meta->uid(), "1f0c2f1e-2b7a-4b4e-9a51-3c3f4d9a0b11");
  EXPECT_EQ(meta->resource_version(), "123456");
  EXPECT_EQ(meta->generation(), 3);
  EXPECT_THAT(meta->labels(), UnorderedElementsAre(Pair("app", "executive-team"),
                                                   Pair("pod-template-hash", "7d9f8b6c4")));
  EXPECT_THAT(
      meta->annotations(),
      UnorderedElementsAre(Pair("kubectl.kubernetes.io/restartedAt", "2024-01-02T03:00:00Z"),
                           Pair("app.kubernetes.io/managed-by", "elfdeploy")));
  EXPECT_FALSE(meta->annotations().contains("kubectl.kubernetes.io/last-applied-configuration"));
  ASSERT_EQ(meta->owner_references_size(), 1);
  const v1::ObjectRef& owner = meta->owner_references(0);
  EXPECT_EQ(owner.kind(), "ReplicaSet");
  EXPECT_EQ(owner.api_version(), "apps/v1");
  EXPECT_EQ(owner.name(), "executive-team-7d9f8b6c4");
  EXPECT_EQ(owner.uid(), "9a9a9a9a-0000-1111-2222-333344445555");
  EXPECT_EQ(meta->creation_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(meta->deletion_time().seconds(), Seconds("2024-01-02T03:14:05Z"));
}

TEST(ToObjectMetaTest, RejectsNonObjectsAndMissingNames) {
  for (const char* text : {R"([])", R"("pod")", R"(null)", R"(17)", R"({})", R"({"metadata": []})",
                           R"({"metadata": {"name": 7}})", R"({"metadata": {"name": ""}})",
                           R"({"metadata": {"name": null}})"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(Parse(text));
    EXPECT_EQ(meta.status().code(), absl::StatusCode::kInvalidArgument);
    for (v1::ObjectKind kind : {v1::OBJECT_KIND_APPLICATION, v1::OBJECT_KIND_DEPLOYMENT,
                                v1::OBJECT_KIND_POD, v1::OBJECT_KIND_EVENT}) {
      EXPECT_EQ(ToClusterObject(kind, Parse(text)).status().code(),
                absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(ToObjectMetaTest, OddlyTypedFieldsAreIgnored) {
  Json object = Parse(R"({
    "metadata": {
      "name": "odd", "namespace": 5, "uid": ["x"], "resourceVersion": {"a": 1},
      "generation": "7", "creationTimestamp": 1704164645, "deletionTimestamp": "not a time",
      "labels": {"ok": "yes", "num": 1, "nul": null, "obj": {}},
      "annotations": ["argocd.argoproj.io/refresh"],
      "ownerReferences": {"kind": "ReplicaSet"}
    }
  })");
  absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(object);
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->name(), "odd");
  EXPECT_EQ(meta->namespace_(), "");
  EXPECT_EQ(meta->uid(), "");
  EXPECT_EQ(meta->resource_version(), "");
  EXPECT_EQ(meta->generation(), 0);
  EXPECT_FALSE(meta->has_creation_time());
  EXPECT_FALSE(meta->has_deletion_time());
  EXPECT_THAT(meta->labels(), UnorderedElementsAre(Pair("ok", "yes")));
  EXPECT_TRUE(meta->annotations().empty());
  EXPECT_TRUE(meta->owner_references().empty());
}

constexpr const char* kCrashLoopPod = R"json({
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {
    "name": "executive-team-5c8d7f9b8-abcde", "namespace": "elf-automations",
    "uid": "u-crash", "resourceVersion": "2001",
    "labels": {"app": "executive-team"},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "name": "executive-team-5c8d7f9b8", "uid": "rs-uid", "controller": true}]
  },
  "spec": {
    "nodeName": "node-1",
    "imagePullSecrets": [{"name": "regcred"}],
    "containers": [{
      "name": "executive-team",
      "image": "registry.internal:5000/elf-automations/executive-team@sha256:aaaa",
      "ports": [{"containerPort": 8090, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}],
      "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "128Mi", "cpu": 1}}
    }]
  },
  "status": {
    "phase": "Running",
    "podIP": "10.244.0.17",
    "startTime": "2024-01-02T03:04:05Z",
    "conditions": [
      {"type": "Initialized", "status": "True", "lastTransitionTime": "2024-01-02T03:04:05Z"},
      {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
       "message": "containers with unready status: [executive-team]",
       "lastTransitionTime": "2024-01-02T03:04:06Z"},
      {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
       "lastTransitionTime": "2024-01-02T03:04:06Z"},
      {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-01-02T03:04:05Z"}
    ],
    "containerStatuses": [{
      "name": "executive-team",
      "image": "registry.internal:5000/elf-automations/executive-team@sha256:aaaa",
      "imageID": "docker-pullable://registry.internal:5000/elf-automations/executive-team@sha256:aaaa",
      "containerID": "containerd://abc",
      "ready": false, "started": false, "restartCount": 5,
      "state": {"waiting": {"reason": "CrashLoopBackOff",
                            "message": "back-off 2m40s restarting failed container=executive-team pod=executive-team-5c8d7f9b8-abcde_elf-automations(u-crash)"}},
      "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                   "startedAt": "2024-01-02T03:10:00Z",
                                   "finishedAt": "2024-01-02T03:10:42Z",
                                   "containerID": "containerd://abc"}}
    }]
  }
})json";

TEST(ToPodTest, CrashLoopingPod) {
  absl::StatusOr<v1::Pod> pod = ToPod(Parse(kCrashLoopPod));
  ASSERT_TRUE(pod.ok()) << pod.status();
  EXPECT_EQ(pod->meta().name(), "executive-team-5c8d7f9b8-abcde");
  EXPECT_EQ(pod->meta().owner_references(0).name(), "executive-team-5c8d7f9b8");
  EXPECT_EQ(pod->node_name(), "node-1");
  EXPECT_THAT(pod->image_pull_secrets(), ElementsAre("regcred"));
  EXPECT_EQ(pod->phase(), v1::POD_PHASE_RUNNING);
  EXPECT_FALSE(pod->ready());
  EXPECT_EQ(pod->pod_ip(), "10.244.0.17");
  EXPECT_EQ(pod->start_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  ASSERT_EQ(pod->conditions_size(), 4);
  EXPECT_EQ(pod->conditions(1).type(), "Ready");
  EXPECT_EQ(pod->conditions(1).status(), v1::CONDITION_STATUS_FALSE);
  EXPECT_EQ(pod->conditions(1).reason(), "ContainersNotReady");
  EXPECT_FALSE(pod->conditions(1).has_last_update_time());

  ASSERT_EQ(pod->containers_size(), 1);
  const v1::ContainerSpec& spec = pod->containers(0);
  EXPECT_EQ(spec.name(), "executive-team");
  EXPECT_THAT(spec.ports(), ElementsAre(8090, 9090));
  EXPECT_THAT(spec.limits(), UnorderedElementsAre(Pair("memory", "256Mi"), Pair("cpu", "500m")));
  EXPECT_THAT(spec.requests(), UnorderedElementsAre(Pair("memory", "128Mi"), Pair("cpu", "1")));

  ASSERT_EQ(pod->container_statuses_size(), 1);
  EXPECT_TRUE(pod->init_container_statuses().empty());
  const v1::ContainerStatus& status = pod->container_statuses(0);
  EXPECT_EQ(status.restart_count(), 5);
  EXPECT_FALSE(status.ready());
  ASSERT_TRUE(status.state().has_waiting());
  EXPECT_EQ(status.state().waiting().reason(), "CrashLoopBackOff");
  EXPECT_THAT(status.state().waiting().message(), ::testing::HasSubstr("back-off 2m40s"));
  ASSERT_TRUE(status.last_state().has_terminated());
  const v1::ContainerStateTerminated& last = status.last_state().terminated();
  EXPECT_EQ(last.exit_code(), 137);
  EXPECT_EQ(last.reason(), "OOMKilled");
  EXPECT_EQ(last.signal(), 0);
  EXPECT_EQ(last.started_time().seconds(), Seconds("2024-01-02T03:10:00Z"));
  EXPECT_EQ(last.finished_time().seconds(), Seconds("2024-01-02T03:10:42Z"));
}

TEST(ToPodTest, ImagePullBackOffPodWithInitContainer) {
  absl::StatusOr<v1::Pod> pod = ToPod(Parse(R"({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "mcp-search-6b5d4c3a2-zzzzz", "namespace": "elf-automations"},
    "spec": {"containers": [{"name": "mcp-search", "image": "registry.internal:5000/elf/mcp-search:v1"}],
             "initContainers": [{"name": "wait", "image": "busybox"}]},
    "status": {
      "phase": "Pending",
      "conditions": [{"type": "Ready", "status": "False"}],
      "initContainerStatuses": [{
        "name": "wait", "image": "busybox:latest",
        "imageID": "docker.io/library/busybox@sha256:bbbb",
        "ready": true, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                 "startedAt": "2024-01-02T03:04:06Z",
                                 "finishedAt": "2024-01-02T03:04:07Z"}},
        "lastState": {}
      }],
      "containerStatuses": [{
        "name": "mcp-search", "image": "registry.internal:5000/elf/mcp-search:v1",
        "imageID": "", "ready": false, "started": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff",
                              "message": "Back-off pulling image \"registry.internal:5000/elf/mcp-search:v1\""}},
        "lastState": {}
      }]
    }
  })"));
  ASSERT_TRUE(pod.ok()) << pod.status();
  EXPECT_EQ(pod->phase(), v1::POD_PHASE_PENDING);
  EXPECT_FALSE(pod->ready());
  EXPECT_FALSE(pod->has_start_time());
  ASSERT_EQ(pod->init_container_statuses_size(), 1);
  const v1::ContainerStatus& init = pod->init_container_statuses(0);
  EXPECT_TRUE(init.ready());
  ASSERT_TRUE(init.state().has_terminated());
  EXPECT_EQ(init.state().terminated().reason(), "Completed");
  EXPECT_EQ(init.last_state().state_case(), v1::ContainerState::STATE_NOT_SET);

  ASSERT_EQ(pod->container_statuses_size(), 1);
  const v1::ContainerStatus& status = pod->container_statuses(0);
  EXPECT_EQ(status.image(), "registry.internal:5000/elf/mcp-search:v1");
  EXPECT_EQ(status.image_id(), "");
  ASSERT_TRUE(status.state().has_waiting());
  EXPECT_EQ(status.state().waiting().reason(), "ImagePullBackOff");
  EXPECT_THAT(status.state().waiting().message(), ::testing::HasSubstr("Back-off pulling image"));
  EXPECT_EQ(status.last_state().state_case(), v1::ContainerState::STATE_NOT_SET);
}

TEST(ToPodTest, RunningReadyPod) {
  absl::StatusOr<v1::ClusterObject> object = ToClusterObject(v1::OBJECT_KIND_POD, Parse(R"({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "agentgateway-0", "namespace": "elf-automations"},
    "spec": {"containers": [{"name": "gw", "image": "reg/repo:1.0"}]},
    "status": {
      "phase": "Running", "podIP": "10.244.0.9", "startTime": "2024-01-02T03:04:05Z",
      "conditions": [{"type": "Ready", "status": "True",
                      "lastTransitionTime": "2024-01-02T03:04:15Z"}],
      "containerStatuses": [{
        "name": "gw", "image": "reg/repo:1.0",
        "imageID": "docker-pullable://reg/repo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "ready": true, "started": true, "restartCount": 1,
        "state": {"running": {"startedAt": "2024-01-02T03:04:10.250Z"}},
        "lastState": {"terminated": {"exitCode": 1, "signal": 0, "reason": "Error",
                                     "message": "connection refused"}}
      }]
    }
  })"));
  ASSERT_TRUE(object.ok()) << object.status();
  ASSERT_TRUE(object->has_pod());
  const v1::Pod& pod = object->pod();
  EXPECT_EQ(pod.phase(), v1::POD_PHASE_RUNNING);
  EXPECT_TRUE(pod.ready());
  ASSERT_EQ(pod.container_statuses_size(), 1);
  const v1::ContainerStatus& status = pod.container_statuses(0);
  EXPECT_EQ(status.image_id(),
            "docker-pullable://reg/repo@sha256:"
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_TRUE(status.ready());
  EXPECT_TRUE(status.started());
  EXPECT_EQ(status.restart_count(), 1);
  ASSERT_TRUE(status.state().has_running());
  EXPECT_EQ(status.state().running().started_time().seconds(), Seconds("2024-01-02T03:04:10Z"));
  EXPECT_EQ(status.state().running().started_time().nanos(), 250000000);
  EXPECT_EQ(status.last_state().terminated().exit_code(), 1);
  EXPECT_EQ(status.last_state().terminated().message(), "connection refused");
}

TEST(ToPodTest, OddlyTypedFieldsAreIgnored) {
  absl::StatusOr<v1::Pod> pod = ToPod(Parse(R"({
    "metadata": {"name": "odd"},
    "spec": {"nodeName": 3, "imagePullSecrets": ["regcred", {"name": 1}, {"name": "ok"}],
             "containers": [17, {"name": "c", "ports": [{"containerPort": "80"}, 443, {"containerPort": 8080.0}],
                                 "resources": {"limits": [], "requests": {"cpu": null}}}]},
    "status": {"phase": "Exploded", "conditions": {"type": "Ready"},
               "containerStatuses": [null, {"name": "c", "restartCount": "many", "ready": "yes",
                                            "state": {"waiting": "CrashLoopBackOff"},
                                            "lastState": {"terminated": {"exitCode": 1e40}}}],
               "initContainerStatuses": "none"}
  })"));
  ASSERT_TRUE(pod.ok()) << pod.status();
  EXPECT_EQ(pod->node_name(), "");
  EXPECT_THAT(pod->image_pull_secrets(), ElementsAre("ok"));
  ASSERT_EQ(pod->containers_size(), 1);
  EXPECT_THAT(pod->containers(0).ports(), ElementsAre(8080));
  EXPECT_TRUE(pod->containers(0).limits().empty());
  EXPECT_TRUE(pod->containers(0).requests().empty());
  EXPECT_EQ(pod->phase(), v1::POD_PHASE_UNSPECIFIED);
  EXPECT_TRUE(pod->conditions().empty());
  EXPECT_FALSE(pod->ready());
  EXPECT_TRUE(pod->init_container_statuses().empty());
  ASSERT_EQ(pod->container_statuses_size(), 1);
  const v1::ContainerStatus& status = pod->container_statuses(0);
  EXPECT_EQ(status.restart_count(), 0);
  EXPECT_FALSE(status.ready());
  EXPECT_EQ(status.state().state_case(), v1::ContainerState::STATE_NOT_SET);
  EXPECT_EQ(status.last_state().terminated().exit_code(), 2147483647);
}

TEST(ToPodTest, PhaseUnknownMapsToUnknown) {
  absl::StatusOr<v1::Pod> pod =
      ToPod(Parse(R"({"metadata": {"name": "p"}, "status": {"phase": "Unknown"}})"));
  ASSERT_TRUE(pod.ok());
  EXPECT_EQ(pod->phase(), v1::POD_PHASE_UNKNOWN);
}

TEST(ToDeploymentTest, ProgressDeadlineExceeded) {
  absl::StatusOr<v1::Deployment> deployment = ToDeployment(Parse(R"({
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {
      "name": "executive-team", "namespace": "elf-automations", "generation": 4,
      "annotations": {"deployment.kubernetes.io/revision": "3",
                      "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    },
    "spec": {
      "replicas": 2, "progressDeadlineSeconds": 120,
      "selector": {"matchLabels": {"app": "executive-team"}},
      "template": {
        "metadata": {"labels": {"app": "executive-team"}},
        "spec": {"containers": [{"name": "executive-team", "image": "reg/elf/exec@sha256:aaaa",
                                 "ports": [{"containerPort": 8090}],
                                 "resources": {"limits": {"memory": "256Mi"}}}]}
      }
    },
    "status": {
      "observedGeneration": 4, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2,
      "availableReplicas": 2, "unavailableReplicas": 1,
      "conditions": [
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
         "message": "Deployment has minimum availability.",
         "lastUpdateTime": "2024-01-02T03:00:00Z", "lastTransitionTime": "2024-01-02T03:00:00Z"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": "ReplicaSet \"executive-team-5c8d7f9b8\" has timed out progressing.",
         "lastUpdateTime": "2024-01-02T03:12:00Z", "lastTransitionTime": "2024-01-02T03:12:00Z"}
      ]
    }
  })"));
  ASSERT_TRUE(deployment.ok()) << deployment.status();
  EXPECT_THAT(deployment->meta().annotations(),
              UnorderedElementsAre(Pair("deployment.kubernetes.io/revision", "3")));
  EXPECT_EQ(deployment->meta().generation(), 4);
  EXPECT_EQ(deployment->replicas(), 2);
  EXPECT_EQ(deployment->progress_deadline_seconds(), 120);
  EXPECT_THAT(deployment->selector(), UnorderedElementsAre(Pair("app", "executive-team")));
  ASSERT_EQ(deployment->containers_size(), 1);
  EXPECT_EQ(deployment->containers(0).image(), "reg/elf/exec@sha256:aaaa");
  EXPECT_THAT(deployment->containers(0).ports(), ElementsAre(8090));
  EXPECT_THAT(deployment->containers(0).limits(), UnorderedElementsAre(Pair("memory", "256Mi")));
  EXPECT_EQ(deployment->observed_generation(), 4);
  EXPECT_EQ(deployment->status_replicas(), 3);
  EXPECT_EQ(deployment->updated_replicas(), 1);
  EXPECT_EQ(deployment->ready_replicas(), 2);
  EXPECT_EQ(deployment->available_replicas(), 2);
  EXPECT_EQ(deployment->unavailable_replicas(), 1);
  ASSERT_EQ(deployment->conditions_size(), 2);
  const v1::Condition& progressing = deployment->conditions(1);
  EXPECT_EQ(progressing.type(), "Progressing");
  EXPECT_EQ(progressing.status(), v1::CONDITION_STATUS_FALSE);
  EXPECT_EQ(progressing.reason(), "ProgressDeadlineExceeded");
  EXPECT_THAT(progressing.message(), ::testing::HasSubstr("has timed out progressing"));
  EXPECT_EQ(progressing.last_update_time().seconds(), Seconds("2024-01-02T03:12:00Z"));
  EXPECT_EQ(progressing.last_transition_time().seconds(), Seconds("2024-01-02T03:12:00Z"));
}

TEST(ToDeploymentTest, DefaultsWhenSpecFieldsAreMissing) {
  for (const char* text :
       {R"({"metadata": {"name": "d"}})", R"({"metadata": {"name": "d"}, "spec": {}})",
        R"({"metadata": {"name": "d"},
                               "spec": {"replicas": null, "progressDeadlineSeconds": "10m"}})"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<v1::Deployment> deployment = ToDeployment(Parse(text));
    ASSERT_TRUE(deployment.ok()) << deployment.status();
    EXPECT_EQ(deployment->replicas(), 1);
    EXPECT_EQ(deployment->progress_deadline_seconds(), 600);
    EXPECT_EQ(deployment->ready_replicas(), 0);
    EXPECT_TRUE(deployment->conditions().empty());
  }
  absl::StatusOr<v1::Deployment> scaled_down =
      ToDeployment(Parse(R"({"metadata": {"name": "d"}, "spec": {"replicas": 0}})"));
  ASSERT_TRUE(scaled_down.ok());
  EXPECT_EQ(scaled_down->replicas(), 0);
}

constexpr const char* kHealthyApplication = R"json({
  "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
  "metadata": {
    "name": "elf-teams", "namespace": "argocd", "resourceVersion": "777", "generation": 12,
    "labels": {"app.kubernetes.io/part-of": "elfdeploy"},
    "annotations": {"argocd.argoproj.io/refresh": "normal",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\":true}",
                    "notified.notifications.argoproj.io": "{}"},
    "finalizers": ["resources-finalizer.argocd.argoproj.io"]
  },
  "spec": {
    "project": "default",
    "source": {"repoURL": "http://git.internal/gitops.git", "targetRevision": "main",
               "path": "elf-automations/manifests/teams"},
    "destination": {"server": "https://kubernetes.default.svc", "namespace": "elf-automations"},
    "syncPolicy": {"automated": {"prune": true, "selfHeal": true},
                   "syncOptions": ["CreateNamespace=true", "ApplyOutOfSyncOnly=true"]}
  },
  "status": {
    "sync": {"status": "Synced", "revision": "4f2c9e1d0b8a7c6e5f4d3c2b1a0f9e8d7c6b5a49",
             "comparedTo": {"source": {"repoURL": "http://git.internal/gitops.git"}}},
    "health": {"status": "Healthy"},
    "operationState": {
      "operation": {"sync": {"revision": "4f2c9e1d0b8a7c6e5f4d3c2b1a0f9e8d7c6b5a49"}},
      "phase": "Succeeded", "message": "successfully synced (all tasks run)",
      "syncResult": {"revision": "4f2c9e1d0b8a7c6e5f4d3c2b1a0f9e8d7c6b5a49",
                     "resources": [{"kind": "Deployment", "name": "executive-team"}]},
      "startedAt": "2024-01-02T03:04:05Z", "finishedAt": "2024-01-02T03:04:09Z"
    },
    "resources": [
      {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "elf-automations",
       "name": "executive-team", "status": "Synced", "health": {"status": "Healthy"}},
      {"version": "v1", "kind": "ConfigMap", "namespace": "elf-automations",
       "name": "executive-team-config", "status": "Synced"},
      {"version": "v1", "kind": "Service", "namespace": "elf-automations",
       "name": "executive-team", "status": "OutOfSync",
       "health": {"status": "Progressing", "message": "Waiting for endpoints"}}
    ],
    "reconciledAt": "2024-01-02T03:05:00Z",
    "history": [{"id": 1, "revision": "4f2c9e1d0b8a7c6e5f4d3c2b1a0f9e8d7c6b5a49"}],
    "summary": {"images": ["reg/elf/exec@sha256:aaaa"]}
  }
})json";

TEST(ToApplicationTest, SyncedHealthyApplication) {
  absl::StatusOr<v1::ClusterObject> object =
      ToClusterObject(v1::OBJECT_KIND_APPLICATION, Parse(kHealthyApplication));
  ASSERT_TRUE(object.ok()) << object.status();
  ASSERT_TRUE(object->has_application());
  const v1::Application& app = object->application();
  EXPECT_EQ(app.meta().name(), "elf-teams");
  EXPECT_EQ(app.meta().namespace_(), "argocd");
  EXPECT_THAT(app.meta().annotations(),
              UnorderedElementsAre(Pair("argocd.argoproj.io/refresh", "normal")));

  const v1::ApplicationSpec& spec = app.spec();
  EXPECT_EQ(spec.project(), "default");
  EXPECT_EQ(spec.repo_url(), "http://git.internal/gitops.git");
  EXPECT_EQ(spec.target_revision(), "main");
  EXPECT_EQ(spec.path(), "elf-automations/manifests/teams");
  EXPECT_EQ(spec.destination_server(), "https://kubernetes.default.svc");
  EXPECT_EQ(spec.destination_namespace(), "elf-automations");
  EXPECT_TRUE(spec.automated());
  EXPECT_TRUE(spec.prune());
  EXPECT_TRUE(spec.self_heal());
  EXPECT_THAT(spec.sync_options(), ElementsAre("CreateNamespace=true", "ApplyOutOfSyncOnly=true"));

  EXPECT_EQ(app.sync_status(), v1::SYNC_STATUS_SYNCED);
  EXPECT_EQ(app.sync_revision(), "4f2c9e1d0b8a7c6e5f4d3c2b1a0f9e8d7c6b5a49");
  EXPECT_EQ(app.health_status(), v1::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(app.health_message(), "");
  ASSERT_TRUE(app.has_operation_state());
  EXPECT_EQ(app.operation_state().phase(), v1::OPERATION_PHASE_SUCCEEDED);
  EXPECT_EQ(app.operation_state().message(), "successfully synced (all tasks run)");
  EXPECT_EQ(app.operation_state().sync_revision(), "4f2c9e1d0b8a7c6e5f4d3c2b1a0f9e8d7c6b5a49");
  EXPECT_EQ(app.operation_state().started_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(app.operation_state().finished_time().seconds(), Seconds("2024-01-02T03:04:09Z"));
  EXPECT_TRUE(app.conditions().empty());
  ASSERT_EQ(app.resources_size(), 3);
  EXPECT_EQ(app.resources(0).group(), "apps");
  EXPECT_EQ(app.resources(0).kind(), "Deployment");
  EXPECT_EQ(app.resources(0).sync_status(), v1::SYNC_STATUS_SYNCED);
  EXPECT_EQ(app.resources(0).health_status(), v1::HEALTH_STATUS_HEALTHY);
  EXPECT_EQ(app.resources(1).group(), "");
  EXPECT_EQ(app.resources(1).version(), "v1");
  EXPECT_EQ(app.resources(1).health_status(), v1::HEALTH_STATUS_UNSPECIFIED);
  EXPECT_EQ(app.resources(2).sync_status(), v1::SYNC_STATUS_OUT_OF_SYNC);
  EXPECT_EQ(app.resources(2).health_status(), v1::HEALTH_STATUS_PROGRESSING);
  EXPECT_EQ(app.resources(2).health_message(), "Waiting for endpoints");
  EXPECT_EQ(app.reconciled_time().seconds(), Seconds("2024-01-02T03:05:00Z"));
}

TEST(ToApplicationTest, ComparisonErrorCondition) {
  absl::StatusOr<v1::Application> app = ToApplication(Parse(R"({
    "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
    "metadata": {"name": "elf-mcps", "namespace": "argocd"},
    "spec": {"source": {"repoURL": "http://git.internal/gitops.git", "path": "manifests/mcps"},
             "destination": {"server": "https://kubernetes.default.svc", "namespace": "elf"},
             "syncPolicy": {"syncOptions": ["CreateNamespace=true"]}},
    "status": {
      "sync": {"status": "Unknown", "comparedTo": {"source": {}}},
      "health": {"status": "Unknown", "message": "unable to compare"},
      "conditions": [{
        "type": "ComparisonError",
        "message": "Failed to load target state: failed to generate manifest for source 1 of 1: rpc error: code = Unknown desc = manifests/mcps/deployment.yaml: error converting YAML to JSON",
        "lastTransitionTime": "2024-01-02T03:04:05Z"
      }],
      "operationState": {"phase": "Error", "message": "ComparisonError: boom",
                         "startedAt": "2024-01-02T03:04:00Z"},
      "reconciledAt": "2024-01-02T03:04:05Z"
    }
  })"));
  ASSERT_TRUE(app.ok()) << app.status();
  EXPECT_FALSE(app->spec().automated());
  EXPECT_FALSE(app->spec().prune());
  EXPECT_EQ(app->spec().project(), "");
  EXPECT_EQ(app->spec().target_revision(), "");
  EXPECT_THAT(app->spec().sync_options(), ElementsAre("CreateNamespace=true"));
  EXPECT_EQ(app->sync_status(), v1::SYNC_STATUS_UNKNOWN);
  EXPECT_EQ(app->sync_revision(), "");
  EXPECT_EQ(app->health_status(), v1::HEALTH_STATUS_UNKNOWN);
  EXPECT_EQ(app->health_message(), "unable to compare");
  ASSERT_EQ(app->conditions_size(), 1);
  EXPECT_EQ(app->conditions(0).type(), "ComparisonError");
  EXPECT_EQ(app->conditions(0).status(), v1::CONDITION_STATUS_UNSPECIFIED);
  EXPECT_THAT(app->conditions(0).message(), ::testing::HasSubstr("error converting YAML to JSON"));
  EXPECT_EQ(app->conditions(0).last_transition_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(app->operation_state().phase(), v1::OPERATION_PHASE_ERROR);
  EXPECT_EQ(app->operation_state().sync_revision(), "");
  EXPECT_TRUE(app->operation_state().has_started_time());
  EXPECT_FALSE(app->operation_state().has_finished_time());
}

TEST(ToApplicationTest, FreshApplicationWithoutStatus) {
  absl::StatusOr<v1::Application> app = ToApplication(Parse(R"({
    "metadata": {"name": "new"},
    "spec": {"sources": [{"repoURL": "http://git/a.git", "targetRevision": "HEAD", "path": "x"}],
             "syncPolicy": {"automated": {}}},
    "status": {"sync": {"status": "Bogus", "revisions": ["abc123"]}, "health": "Healthy",
               "operationState": null, "resources": "none", "conditions": [1, "x"]}
  })"));
  ASSERT_TRUE(app.ok()) << app.status();
  EXPECT_EQ(app->spec().repo_url(), "http://git/a.git");
  EXPECT_EQ(app->spec().target_revision(), "HEAD");
  EXPECT_TRUE(app->spec().automated());
  EXPECT_FALSE(app->spec().prune());
  EXPECT_FALSE(app->spec().self_heal());
  EXPECT_EQ(app->sync_status(), v1::SYNC_STATUS_UNSPECIFIED);
  EXPECT_EQ(app->sync_revision(), "abc123");
  EXPECT_EQ(app->health_status(), v1::HEALTH_STATUS_UNSPECIFIED);
  EXPECT_FALSE(app->has_operation_state());
  EXPECT_TRUE(app->resources().empty());
  EXPECT_TRUE(app->conditions().empty());
  EXPECT_FALSE(app->has_reconciled_time());
}

TEST(ToApplicationTest, NullAutomatedIsNotAutomated) {
  absl::StatusOr<v1::Application> app = ToApplication(
      Parse(R"({"metadata": {"name": "a"}, "spec": {"syncPolicy": {"automated": null}}})"));
  ASSERT_TRUE(app.ok());
  EXPECT_FALSE(app->spec().automated());
}

TEST(ToEventTest, CoreEventWithCountAndSeries) {
  absl::StatusOr<v1::ClusterObject> object = ToClusterObject(v1::OBJECT_KIND_EVENT, Parse(R"({
    "apiVersion": "v1", "kind": "Event",
    "metadata": {"name": "mcp-search-6b5d4c3a2-zzzzz.17a8b9c0d1e2f3a4",
                 "namespace": "elf-automations", "resourceVersion": "5005",
                 "creationTimestamp": "2024-01-02T03:04:05Z"},
    "involvedObject": {"kind": "Pod", "namespace": "elf-automations",
                       "name": "mcp-search-6b5d4c3a2-zzzzz", "uid": "pod-uid",
                       "apiVersion": "v1", "resourceVersion": "4000",
                       "fieldPath": "spec.containers{mcp-search}"},
    "reason": "Failed",
    "message": "Failed to pull image \"registry.internal:5000/elf/mcp-search:v1\": manifest unknown",
    "source": {"component": "kubelet", "host": "node-1"},
    "firstTimestamp": "2024-01-02T03:04:05Z",
    "lastTimestamp": "2024-01-02T03:09:05Z",
    "count": 7,
    "type": "Warning",
    "series": {"count": 9, "lastObservedTime": "2024-01-02T03:10:05.000000Z"},
    "eventTime": null,
    "reportingComponent": "",
    "reportingInstance": ""
  })"));
  ASSERT_TRUE(object.ok()) << object.status();
  ASSERT_TRUE(object->has_event());
  const v1::KubernetesEvent& event = object->event();
  EXPECT_EQ(event.meta().name(), "mcp-search-6b5d4c3a2-zzzzz.17a8b9c0d1e2f3a4");
  EXPECT_EQ(event.involved_object().kind(), "Pod");
  EXPECT_EQ(event.involved_object().api_version(), "v1");
  EXPECT_EQ(event.involved_object().namespace_(), "elf-automations");
  EXPECT_EQ(event.involved_object().name(), "mcp-search-6b5d4c3a2-zzzzz");
  EXPECT_EQ(event.involved_object().uid(), "pod-uid");
  EXPECT_EQ(event.involved_object().field_path(), "spec.containers{mcp-search}");
  EXPECT_EQ(event.reason(), "Failed");
  EXPECT_THAT(event.message(), ::testing::HasSubstr("manifest unknown"));
  EXPECT_EQ(event.type(), v1::KUBERNETES_EVENT_TYPE_WARNING);
  EXPECT_EQ(event.count(), 7);
  EXPECT_EQ(event.first_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(event.last_time().seconds(), Seconds("2024-01-02T03:09:05Z"));
  EXPECT_EQ(event.source(), "kubelet");
}

TEST(ToEventTest, NewStyleEventUsesEventTimeSeriesAndReportingComponent) {
  absl::StatusOr<v1::KubernetesEvent> event = ToEvent(Parse(R"({
    "apiVersion": "v1", "kind": "Event",
    "metadata": {"name": "executive-team.17a8", "namespace": "elf-automations"},
    "involvedObject": {"kind": "Deployment", "name": "executive-team", "apiVersion": "apps/v1"},
    "reason": "ScalingReplicaSet", "message": "Scaled up replica set executive-team-5c8d7f9b8 to 1",
    "type": "Normal",
    "eventTime": "2024-01-02T03:04:05.123456Z",
    "firstTimestamp": null, "lastTimestamp": null,
    "series": {"count": 4, "lastObservedTime": "2024-01-02T03:06:05.500000Z"},
    "reportingComponent": "deployment-controller", "reportingInstance": "cm-1",
    "source": {}
  })"));
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->type(), v1::KUBERNETES_EVENT_TYPE_NORMAL);
  EXPECT_EQ(event->count(), 4);
  EXPECT_EQ(event->first_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(event->first_time().nanos(), 123456000);
  EXPECT_EQ(event->last_time().seconds(), Seconds("2024-01-02T03:06:05Z"));
  EXPECT_EQ(event->last_time().nanos(), 500000000);
  EXPECT_EQ(event->source(), "deployment-controller");
}

TEST(ToEventTest, DefaultsAndOddTypes) {
  absl::StatusOr<v1::KubernetesEvent> event = ToEvent(Parse(R"({
    "metadata": {"name": "e"}, "involvedObject": "Pod/x", "count": "3", "type": "Fatal",
    "eventTime": "2024-01-02T03:04:05Z", "series": [], "source": "kubelet"
  })"));
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_FALSE(event->has_involved_object());
  EXPECT_EQ(event->count(), 1);
  EXPECT_EQ(event->type(), v1::KUBERNETES_EVENT_TYPE_UNSPECIFIED);
  EXPECT_EQ(event->first_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(event->last_time().seconds(), Seconds("2024-01-02T03:04:05Z"));
  EXPECT_EQ(event->source(), "");

  absl::StatusOr<v1::KubernetesEvent> bare = ToEvent(Parse(R"({"metadata": {"name": "e"}})"));
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->count(), 1);
  EXPECT_FALSE(bare->has_first_time());
  EXPECT_FALSE(bare->has_last_time());
}

TEST(ToClusterObjectTest, RejectsUnspecifiedKind) {
  Json pod = Parse(kCrashLoopPod);
  EXPECT_EQ(ToClusterObject(v1::OBJECT_KIND_UNSPECIFIED, pod).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ToClusterObject(static_cast<v1::ObjectKind>(99), pod).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ToClusterObjectTest, EveryKindAcceptsTheOthersShapesWithoutThrowing) {
  for (const char* text : {kCrashLoopPod, kHealthyApplication}) {
    Json object = Parse(text);
    for (v1::ObjectKind kind : {v1::OBJECT_KIND_APPLICATION, v1::OBJECT_KIND_DEPLOYMENT,
                                v1::OBJECT_KIND_POD, v1::OBJECT_KIND_EVENT}) {
      EXPECT_TRUE(ToClusterObject(kind, object).ok());
    }
  }
}

// Every JSON pointer of `json`, the root included.
void CollectPointers(const Json& json, const Json::json_pointer& at,
                     std::vector<Json::json_pointer>* out) {
  out->push_back(at);
  if (json.is_object()) {
    for (const auto& [key, value] : json.items()) CollectPointers(value, at / key, out);
  } else if (json.is_array()) {
    for (size_t i = 0; i < json.size(); ++i) CollectPointers(json[i], at / i, out);
  }
}

TEST(ToClusterObjectTest, NoFieldOfAnyTypeMakesItThrow) {
  const Json replacements[] = {
      nullptr, 7, -1.5, 1e300, "x", Json::array(), Json::object(), true, Json::array({1, "y"})};
  for (const char* text : {kCrashLoopPod, kHealthyApplication}) {
    const Json sample = Parse(text);
    std::vector<Json::json_pointer> pointers;
    CollectPointers(sample, Json::json_pointer(), &pointers);
    for (const Json::json_pointer& pointer : pointers) {
      for (const Json& replacement : replacements) {
        Json mutated = sample;
        mutated[pointer] = replacement;
        for (v1::ObjectKind kind : {v1::OBJECT_KIND_APPLICATION, v1::OBJECT_KIND_DEPLOYMENT,
                                    v1::OBJECT_KIND_POD, v1::OBJECT_KIND_EVENT}) {
          EXPECT_NO_THROW(ToClusterObject(kind, mutated).IgnoreError())
              << pointer.to_string() << " = " << replacement.dump();
        }
      }
    }
  }
}

TEST(ToApplicationJsonTest, WritesManifestWithDefaults) {
  v1::ApplicationDefinition definition;
  definition.set_name("elf-teams");
  definition.mutable_spec()->set_repo_url("http://git.internal/gitops.git");
  definition.mutable_spec()->set_destination_namespace("elf-automations");
  Json json = ToApplicationJson(definition);
  EXPECT_EQ(json, Parse(R"({
    "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
    "metadata": {"name": "elf-teams", "namespace": "argocd"},
    "spec": {"project": "default",
             "source": {"repoURL": "http://git.internal/gitops.git"},
             "destination": {"server": "https://kubernetes.default.svc",
                             "namespace": "elf-automations"}}
  })"))
      << json.dump(2);
}

TEST(ToApplicationJsonTest, WritesSyncPolicy) {
  v1::ApplicationDefinition definition;
  definition.set_name("elf-teams");
  definition.set_namespace_("gitops");
  (*definition.mutable_labels())["app.kubernetes.io/managed-by"] = "elfdeploy";
  v1::ApplicationSpec* spec = definition.mutable_spec();
  spec->set_project("elf");
  spec->set_repo_url("http://git.internal/gitops.git");
  spec->set_target_revision("main");
  spec->set_path("elf-automations/manifests/teams");
  spec->set_destination_server("https://10.0.0.1:6443");
  spec->set_destination_namespace("elf-automations");
  spec->set_automated(true);
  spec->set_prune(true);
  spec->add_sync_options("CreateNamespace=true");
  Json json = ToApplicationJson(definition);
  EXPECT_EQ(json, Parse(R"({
    "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
    "metadata": {"name": "elf-teams", "namespace": "gitops",
                 "labels": {"app.kubernetes.io/managed-by": "elfdeploy"}},
    "spec": {"project": "elf",
             "source": {"repoURL": "http://git.internal/gitops.git", "targetRevision": "main",
                        "path": "elf-automations/manifests/teams"},
             "destination": {"server": "https://10.0.0.1:6443", "namespace": "elf-automations"},
             "syncPolicy": {"automated": {"prune": true, "selfHeal": false},
                            "syncOptions": ["CreateNamespace=true"]}}
  })"))
      << json.dump(2);
}

TEST(ToApplicationJsonTest, RoundTripsThroughToApplication) {
  v1::ApplicationDefinition definition;
  definition.set_name("elf-mcps");
  definition.set_namespace_("argocd");
  (*definition.mutable_labels())["team"] = "platform";
  (*definition.mutable_labels())["app.kubernetes.io/part-of"] = "elfdeploy";
  v1::ApplicationSpec* spec = definition.mutable_spec();
  spec->set_project("default");
  spec->set_repo_url("ssh://git@git.internal/gitops.git");
  spec->set_target_revision("HEAD");
  spec->set_path("gitops/manifests/mcps");
  spec->set_destination_server("https://kubernetes.default.svc");
  spec->set_destination_namespace("elf-automations");
  spec->set_automated(true);
  spec->set_prune(true);
  spec->set_self_heal(true);
  spec->add_sync_options("CreateNamespace=true");
  spec->add_sync_options("PruneLast=true");

  // Through text, as it travels to the API server.
  absl::StatusOr<v1::Application> app =
      ToApplication(Json::parse(ToApplicationJson(definition).dump()));
  ASSERT_TRUE(app.ok()) << app.status();
  EXPECT_EQ(app->meta().name(), definition.name());
  EXPECT_EQ(app->meta().namespace_(), definition.namespace_());
  EXPECT_THAT(app->meta().labels(),
              UnorderedElementsAre(Pair("team", "platform"),
                                   Pair("app.kubernetes.io/part-of", "elfdeploy")));
  EXPECT_EQ(app->spec().SerializeAsString(), spec->SerializeAsString())
      << app->spec().DebugString();
  EXPECT_EQ(app->sync_status(), v1::SYNC_STATUS_UNSPECIFIED);
  EXPECT_FALSE(app->has_operation_state());
}

}  // namespace
}  // namespace elfdeploy::kube
