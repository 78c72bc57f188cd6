#include "services/cluster_watcher/diagnose.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/timestamp.pb.h"
#include "gtest/gtest.h"

namespace elfdeploy::watcher {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kNs[] = "elf-automations";
constexpr char kApp[] = "executive-team";
constexpr char kApplication[] = "elf-teams";
constexpr char kRevision[] = "0123456789abcdef0123456789abcdef01234567";
constexpr char kOldRevision[] = "fedcba9876543210fedcba9876543210fedcba98";
constexpr char kHash[] = "7d9f8b6c4";
const std::string kDigest = absl::StrCat("sha256:", std::string(64, 'a'));
const std::string kOtherDigest = absl::StrCat("sha256:", std::string(64, 'b'));
const absl::Time kNow = absl::FromUnixSeconds(1700000000);

google::protobuf::Timestamp At(absl::Time time) {
  google::protobuf::Timestamp out;
  out.set_seconds(absl::ToUnixSeconds(time));
  return out;
}

std::string Image(const std::string& app) {
  return absl::StrCat("registry:5000/elf-automations/", app, "@", kDigest);
}

v1::Condition MakeCondition(const std::string& type, v1::ConditionStatus status,
                            const std::string& reason, const std::string& message = "") {
  v1::Condition condition;
  condition.set_type(type);
  condition.set_status(status);
  condition.set_reason(reason);
  condition.set_message(message);
  condition.mutable_last_transition_time()->CopyFrom(At(kNow - absl::Minutes(5)));
  return condition;
}

// A Deployment whose rollout is complete, with `replicas` replicas of one container "app".
v1::Deployment MakeDeployment(const std::string& name, int replicas = 1,
                              const std::string& ns = kNs) {
  v1::Deployment deployment;
  deployment.mutable_meta()->set_namespace_(ns);
  deployment.mutable_meta()->set_name(name);
  deployment.mutable_meta()->set_generation(2);
  (*deployment.mutable_selector())["app"] = name;
  v1::ContainerSpec* container = deployment.add_containers();
  container->set_name("app");
  container->set_image(Image(name));
  deployment.set_replicas(replicas);
  deployment.set_progress_deadline_seconds(600);
  deployment.set_observed_generation(2);
  deployment.set_status_replicas(replicas);
  deployment.set_updated_replicas(replicas);
  deployment.set_ready_replicas(replicas);
  deployment.set_available_replicas(replicas);
  *deployment.add_conditions() =
      MakeCondition("Available", v1::CONDITION_STATUS_TRUE, "MinimumReplicasAvailable");
  *deployment.add_conditions() =
      MakeCondition("Progressing", v1::CONDITION_STATUS_TRUE, "NewReplicaSetAvailable");
  return deployment;
}

// Marks a Deployment as rolling out with `ready` of its replicas ready.
void NotRolledOut(v1::Deployment* deployment, int ready) {
  deployment->set_ready_replicas(ready);
  deployment->set_available_replicas(ready);
  deployment->set_unavailable_replicas(deployment->replicas() - ready);
  deployment->mutable_conditions(0)->set_status(v1::CONDITION_STATUS_FALSE);
  deployment->mutable_conditions(0)->set_reason("MinimumReplicasUnavailable");
  deployment->mutable_conditions(1)->set_reason("ReplicaSetUpdated");
  deployment->mutable_conditions(1)->set_message(
      absl::StrCat("ReplicaSet \"", deployment->meta().name(), "-", kHash, "\" is progressing."));
}

// A ready pod of `deployment` running kDigest.
v1::Pod MakePod(const v1::Deployment& deployment, const std::string& suffix,
                const std::string& hash = kHash) {
  v1::Pod pod;
  const std::string& name = deployment.meta().name();
  pod.mutable_meta()->set_namespace_(deployment.meta().namespace_());
  pod.mutable_meta()->set_name(absl::StrCat(name, "-", hash, "-", suffix));
  (*pod.mutable_meta()->mutable_labels())["app"] = name;
  (*pod.mutable_meta()->mutable_labels())["pod-template-hash"] = hash;
  v1::ObjectRef* owner = pod.mutable_meta()->add_owner_references();
  owner->set_kind("ReplicaSet");
  owner->set_name(absl::StrCat(name, "-", hash));
  *pod.mutable_meta()->mutable_creation_time() = At(kNow - absl::Minutes(10));
  *pod.mutable_containers() = deployment.containers();
  pod.add_image_pull_secrets("regcred");
  pod.set_node_name("node-1");
  pod.set_phase(v1::POD_PHASE_RUNNING);
  pod.set_ready(true);
  *pod.add_conditions() = MakeCondition("PodScheduled", v1::CONDITION_STATUS_TRUE, "");
  *pod.add_conditions() = MakeCondition("Ready", v1::CONDITION_STATUS_TRUE, "");
  v1::ContainerStatus* status = pod.add_container_statuses();
  status->set_name("app");
  status->set_image(deployment.containers(0).image());
  status->set_image_id(
      absl::StrCat("docker-pullable://registry:5000/elf-automations/", name, "@", kDigest));
  status->set_ready(true);
  status->set_started(true);
  *status->mutable_state()->mutable_running()->mutable_started_time() = At(kNow - absl::Minutes(9));
  return pod;
}

// Makes a pod's only container wait with `reason`.
void Waiting(v1::Pod* pod, const std::string& reason, const std::string& message) {
  pod->set_ready(false);
  v1::ContainerStatus* status = pod->mutable_container_statuses(0);
  status->set_ready(false);
  status->set_started(false);
  if (reason == "ErrImagePull" || reason == "ImagePullBackOff" || reason == "InvalidImageName") {
    status->clear_image_id();
  }
  status->mutable_state()->mutable_waiting()->set_reason(reason);
  status->mutable_state()->mutable_waiting()->set_message(message);
  pod->set_phase(v1::POD_PHASE_PENDING);
}

v1::Application MakeApplication(const std::vector<std::string>& deployments) {
  v1::Application application;
  application.mutable_meta()->set_namespace_("argocd");
  application.mutable_meta()->set_name(kApplication);
  application.mutable_spec()->set_repo_url("ssh://git@git.example.com/gitops.git");
  application.mutable_spec()->set_path("elf-automations/manifests/teams");
  application.mutable_spec()->set_destination_namespace(kNs);
  application.set_sync_status(v1::SYNC_STATUS_SYNCED);
  application.set_sync_revision(kRevision);
  application.set_health_status(v1::HEALTH_STATUS_HEALTHY);
  *application.mutable_reconciled_time() = At(kNow - absl::Seconds(10));
  for (const std::string& name : deployments) {
    v1::ApplicationResource* resource = application.add_resources();
    resource->set_group("apps");
    resource->set_version("v1");
    resource->set_kind("Deployment");
    resource->set_namespace_(kNs);
    resource->set_name(name);
    resource->set_sync_status(v1::SYNC_STATUS_SYNCED);
    resource->set_health_status(v1::HEALTH_STATUS_HEALTHY);
  }
  return application;
}

v1::KubernetesEvent MakeEvent(const v1::Pod& pod, const std::string& reason,
                              const std::string& message, absl::Time first, absl::Time last,
                              v1::KubernetesEventType type = v1::KUBERNETES_EVENT_TYPE_WARNING) {
  v1::KubernetesEvent event;
  event.mutable_meta()->set_namespace_(pod.meta().namespace_());
  event.mutable_meta()->set_name(absl::StrCat(pod.meta().name(), ".", reason));
  event.mutable_involved_object()->set_kind("Pod");
  event.mutable_involved_object()->set_namespace_(pod.meta().namespace_());
  event.mutable_involved_object()->set_name(pod.meta().name());
  event.mutable_involved_object()->set_field_path("spec.containers{app}");
  event.set_reason(reason);
  event.set_message(message);
  event.set_type(type);
  event.set_count(1);
  *event.mutable_first_time() = At(first);
  *event.mutable_last_time() = At(last);
  event.set_source("kubelet");
  return event;
}

const v1::Finding* Find(const v1::DiagnoseResponse& response, v1::FindingKind kind,
                        const std::string& reason = "") {
  for (const v1::Finding& finding : response.findings()) {
    if (finding.kind() == kind && (reason.empty() || finding.reason() == reason)) return &finding;
  }
  return nullptr;
}

std::vector<std::string> Evidence(const v1::Finding& finding) {
  return {finding.evidence().begin(), finding.evidence().end()};
}

struct LogCall {
  std::string ns, pod, container;
  int tail_lines;
  bool previous;
};

class DiagnoseTest : public ::testing::Test {
 protected:
  DiagnoseTest() {
    snapshot_.cluster.set_name("prod");
    snapshot_.cluster.set_state(v1::CONNECTION_STATE_CONNECTED);
    deps_.now = [] { return kNow; };
    deps_.resolve_image = [this](const std::string& image,
                                 const v1::RegistryCredentials* credentials) {
      resolved_.push_back(image);
      credentials_given_.push_back(credentials != nullptr);
      return resolve_result_;
    };
    deps_.read_logs = [this](const std::string& ns, const std::string& pod,
                             const std::string& container, int tail_lines,
                             bool previous) -> absl::StatusOr<std::vector<std::string>> {
      log_calls_.push_back({ns, pod, container, tail_lines, previous});
      auto it = logs_.find(absl::StrCat(pod, previous ? "/previous" : ""));
      if (it == logs_.end()) return absl::NotFoundError("no such log");
      return it->second;
    };
  }

  // One healthy app with two ready pods, managed by kApplication, and the discovery gateway.
  void HealthyCluster() {
    v1::Deployment app = MakeDeployment(kApp, 2);
    snapshot_.deployments.push_back(app);
    snapshot_.pods.push_back(MakePod(app, "aaaaa"));
    snapshot_.pods.push_back(MakePod(app, "bbbbb"));
    v1::Deployment gateway = MakeDeployment("agentgateway");
    snapshot_.deployments.push_back(gateway);
    v1::Pod gateway_pod = MakePod(gateway, "ggggg", "5c6d7e8f9");
    snapshot_.pods.push_back(gateway_pod);
    logs_[gateway_pod.meta().name()] = {
        "starting agentgateway",
        "Discovered executive-team-helper at http://executive-team-helper.elf-automations.svc",
        absl::StrCat("Discovered ", kApp, " at http://", kApp, ".", kNs, ".svc.cluster.local:8080"),
        "serving"};
    snapshot_.applications.push_back(MakeApplication({kApp, "agentgateway"}));
  }

  v1::DiagnoseRequest AppRequest() const {
    v1::DiagnoseRequest request;
    request.set_application(kApplication);
    request.set_app(kApp);
    return request;
  }

  v1::Pod& AppPod(int index = 0) { return snapshot_.pods[static_cast<size_t>(index)]; }
  v1::Deployment& AppDeployment() { return snapshot_.deployments[0]; }
  v1::Application& App() { return snapshot_.applications[0]; }

  v1::DiagnoseResponse Run(const v1::DiagnoseRequest& request) {
    absl::StatusOr<v1::DiagnoseResponse> response = Diagnose(snapshot_, request, deps_);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : v1::DiagnoseResponse();
  }

  ClusterState::Snapshot snapshot_;
  DiagnoseDeps deps_;
  absl::Status resolve_result_ = absl::OkStatus();
  std::vector<std::string> resolved_;
  std::vector<bool> credentials_given_;
  std::map<std::string, std::vector<std::string>> logs_;
  std::vector<LogCall> log_calls_;
};

TEST_F(DiagnoseTest, HealthyAppHasNoFindings) {
  HealthyCluster();
  v1::DiagnoseRequest request = AppRequest();
  request.set_expected_revision(kRevision);
  (*request.mutable_expected_digests())[kApp] = kDigest;
  request.set_check_discovery(true);

  v1::DiagnoseResponse response = Run(request);
  EXPECT_TRUE(response.healthy());
  EXPECT_FALSE(response.fatal());
  EXPECT_THAT(response.findings(), IsEmpty());
  EXPECT_EQ(response.cluster(), "prod");
  EXPECT_EQ(response.application().meta().name(), kApplication);
  EXPECT_EQ(response.evaluated_time().seconds(), absl::ToUnixSeconds(kNow));
  ASSERT_THAT(response.workloads(), SizeIs(1));
  const v1::WorkloadStatus& workload = response.workloads(0);
  EXPECT_EQ(workload.app(), kApp);
  EXPECT_EQ(workload.namespace_(), kNs);
  EXPECT_EQ(workload.application(), kApplication);
  EXPECT_EQ(workload.deployment().meta().name(), kApp);
  EXPECT_EQ(workload.pods_ready(), 2);
  EXPECT_EQ(workload.pods_total(), 2);
  EXPECT_THAT(workload.running_digests(), ElementsAre(kDigest));
  EXPECT_TRUE(workload.ready());
  EXPECT_TRUE(workload.discovered());
  EXPECT_THAT(workload.discovery_line(), HasSubstr("Discovered executive-team at http://"));
  ASSERT_THAT(log_calls_, SizeIs(1));
  EXPECT_EQ(log_calls_[0].pod, "agentgateway-5c6d7e8f9-ggggg");
  EXPECT_FALSE(log_calls_[0].previous);
  EXPECT_EQ(log_calls_[0].tail_lines, 1000);
}

TEST_F(DiagnoseTest, WholeApplicationDiagnosesEveryDeployment) {
  HealthyCluster();
  v1::DiagnoseRequest request;
  request.set_application(kApplication);
  v1::DiagnoseResponse response = Run(request);
  EXPECT_TRUE(response.healthy());
  ASSERT_THAT(response.workloads(), SizeIs(2));
  EXPECT_EQ(response.workloads(0).app(), "agentgateway");
  EXPECT_EQ(response.workloads(1).app(), kApp);
}

TEST_F(DiagnoseTest, NeedsApplicationOrApp) {
  HealthyCluster();
  EXPECT_EQ(Diagnose(snapshot_, v1::DiagnoseRequest(), deps_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DiagnoseTest, NotFoundWhenNeitherApplicationNorDeploymentExists) {
  HealthyCluster();
  v1::DiagnoseRequest request;
  request.set_app("no-such-app");
  EXPECT_EQ(Diagnose(snapshot_, request, deps_).status().code(), absl::StatusCode::kNotFound);
  request.set_application("no-such-application");
  EXPECT_EQ(Diagnose(snapshot_, request, deps_).status().code(), absl::StatusCode::kNotFound);
  request.clear_app();
  EXPECT_EQ(Diagnose(snapshot_, request, deps_).status().code(), absl::StatusCode::kNotFound);
  request.set_application(kApplication);
  request.set_argocd_namespace("other");
  EXPECT_EQ(Diagnose(snapshot_, request, deps_).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DiagnoseTest, MissingApplicationIsAnErrorFindingButNotFatal) {
  HealthyCluster();
  snapshot_.applications.clear();
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_APPLICATION_MISSING);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->severity(), v1::SEVERITY_ERROR);
  EXPECT_FALSE(finding->fatal());
  EXPECT_EQ(finding->object().name(), kApplication);
  EXPECT_EQ(finding->object().namespace_(), "argocd");
  EXPECT_FALSE(response.healthy());
  EXPECT_FALSE(response.has_application());
  ASSERT_THAT(response.workloads(), SizeIs(1));
  EXPECT_TRUE(response.workloads(0).ready());
}

TEST_F(DiagnoseTest, AppAloneIsFoundByNameOrLabelAndOnlyItsPodsCount) {
  HealthyCluster();
  // A Deployment whose name starts with the app's: its pods are not the app's.
  v1::Deployment helper = MakeDeployment("executive-team-helper");
  snapshot_.deployments.push_back(helper);
  v1::Pod helper_pod = MakePod(helper, "hhhhh", "1a2b3c4d5");
  Waiting(&helper_pod, "CrashLoopBackOff", "back-off 5m0s restarting failed container");
  snapshot_.pods.push_back(helper_pod);

  v1::DiagnoseRequest request;
  request.set_app(kApp);
  v1::DiagnoseResponse response = Run(request);
  EXPECT_TRUE(response.healthy());
  EXPECT_FALSE(response.has_application());
  ASSERT_THAT(response.workloads(), SizeIs(1));
  EXPECT_EQ(response.workloads(0).pods_total(), 2);
  EXPECT_EQ(response.workloads(0).application(), kApplication);

  v1::Deployment labelled = MakeDeployment("exec-v2", 1, "other-ns");
  (*labelled.mutable_meta()->mutable_labels())["app.kubernetes.io/name"] = "executive";
  snapshot_.deployments.push_back(labelled);
  request.set_app("executive");
  response = Run(request);
  ASSERT_THAT(response.workloads(), SizeIs(1));
  EXPECT_EQ(response.workloads(0).app(), "exec-v2");
  EXPECT_EQ(response.workloads(0).namespace_(), "other-ns");
  request.set_namespace_(kNs);
  EXPECT_EQ(Diagnose(snapshot_, request, deps_).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DiagnoseTest, ImageMissingIsFatal) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  v1::Pod& pod = AppPod(1);
  std::string kubelet_message = absl::StrCat("failed to pull and unpack image \"", Image(kApp),
                                             "\": ", Image(kApp), ": not found");
  Waiting(&pod, "ImagePullBackOff", absl::StrCat("Back-off pulling image \"", Image(kApp), "\""));
  snapshot_.events.push_back(MakeEvent(
      pod, "Pulling", absl::StrCat("Pulling image \"", Image(kApp), "\""), kNow - absl::Minutes(3),
      kNow - absl::Minutes(1), v1::KUBERNETES_EVENT_TYPE_NORMAL));
  snapshot_.events.push_back(
      MakeEvent(pod, "Failed",
                absl::StrCat("Failed to pull image \"", Image(kApp),
                             "\": rpc error: code = NotFound desc = ", kubelet_message),
                kNow - absl::Minutes(3), kNow - absl::Minutes(1)));
  snapshot_.events.push_back(MakeEvent(pod, "BackOff",
                                       absl::StrCat("Back-off pulling image \"", Image(kApp), "\""),
                                       kNow - absl::Minutes(2), kNow - absl::Seconds(30)));
  resolve_result_ = absl::NotFoundError("manifest unknown");
  v1::DiagnoseRequest request = AppRequest();
  request.mutable_registry_credentials()->set_ref("pull");

  v1::DiagnoseResponse response = Run(request);
  EXPECT_FALSE(response.healthy());
  EXPECT_TRUE(response.fatal());
  ASSERT_FALSE(response.findings().empty());
  const v1::Finding& finding = response.findings(0);
  EXPECT_EQ(finding.kind(), v1::FINDING_KIND_IMAGE_PULL);
  EXPECT_EQ(finding.reason(), "ImageNotFound");
  EXPECT_EQ(finding.severity(), v1::SEVERITY_ERROR);
  EXPECT_TRUE(finding.fatal());
  EXPECT_THAT(finding.message(), HasSubstr(Image(kApp)));
  EXPECT_EQ(finding.cluster(), "prod");
  EXPECT_EQ(finding.app(), kApp);
  EXPECT_EQ(finding.container(), "app");
  EXPECT_EQ(finding.object().kind(), "Pod");
  EXPECT_EQ(finding.object().name(), pod.meta().name());
  EXPECT_THAT(Evidence(finding),
              ElementsAre(HasSubstr("code = NotFound"), HasSubstr("Back-off pulling image")));
  EXPECT_EQ(finding.first_seen_time().seconds(), absl::ToUnixSeconds(kNow - absl::Minutes(3)));
  EXPECT_EQ(finding.last_seen_time().seconds(), absl::ToUnixSeconds(kNow - absl::Seconds(30)));
  EXPECT_THAT(resolved_, ElementsAre(absl::StrCat("docker://", Image(kApp))));
  EXPECT_THAT(credentials_given_, ElementsAre(true));
  // The rollout is reported too, below the fatal finding, naming the pod and why.
  const v1::Finding* rollout = Find(response, v1::FINDING_KIND_ROLLOUT_STUCK, "Progressing");
  ASSERT_NE(rollout, nullptr);
  EXPECT_EQ(rollout->severity(), v1::SEVERITY_WARNING);
  EXPECT_THAT(Evidence(*rollout),
              Contains(AllOf(HasSubstr(pod.meta().name()), HasSubstr("ImagePullBackOff"))));
  EXPECT_EQ(response.workloads(0).pods_ready(), 1);
  EXPECT_FALSE(response.workloads(0).ready());
}

TEST_F(DiagnoseTest, SeveralPodsWithTheSameProblemMakeOneFindingAndOneLookup) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 0);
  Waiting(&AppPod(0), "ErrImagePull", "not found");
  Waiting(&AppPod(1), "ErrImagePull", "not found");
  resolve_result_ = absl::NotFoundError("manifest unknown");
  v1::DiagnoseResponse response = Run(AppRequest());
  int pulls = 0;
  for (const v1::Finding& finding : response.findings()) {
    if (finding.kind() == v1::FINDING_KIND_IMAGE_PULL) ++pulls;
  }
  EXPECT_EQ(pulls, 1);
  EXPECT_THAT(Find(response, v1::FINDING_KIND_IMAGE_PULL)->message(), HasSubstr("2 pods"));
  EXPECT_THAT(resolved_, SizeIs(1));
  EXPECT_THAT(credentials_given_, ElementsAre(false));
}

TEST_F(DiagnoseTest, CredentialsRefusedIsFatalAndNamesThePullSecret) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  Waiting(&AppPod(1), "ErrImagePull", "401 Unauthorized");
  resolve_result_ = absl::UnauthenticatedError("the registry refused the credentials");
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_IMAGE_PULL);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "CredentialsRefused");
  EXPECT_TRUE(finding->fatal());
  EXPECT_THAT(finding->remediation(), HasSubstr("regcred"));
  EXPECT_TRUE(response.fatal());
}

TEST_F(DiagnoseTest, ClusterPullRefusedWhileImageResolvesIsCredentialsRefused) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  v1::Pod& pod = AppPod(1);
  Waiting(&pod, "ErrImagePull", "");
  snapshot_.events.push_back(MakeEvent(
      pod, "Failed",
      "Failed to pull image: rpc error: code = Unknown desc = failed to resolve reference: "
      "pulling from host registry:5000 failed with status code [manifests x]: 401 Unauthorized",
      kNow - absl::Minutes(1), kNow - absl::Minutes(1)));
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_IMAGE_PULL);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "CredentialsRefused");
  EXPECT_TRUE(finding->fatal());
  EXPECT_THAT(finding->message(), HasSubstr("exists"));
  EXPECT_THAT(finding->remediation(), HasSubstr("regcred"));
}

TEST_F(DiagnoseTest, RegistryUnreachableIsNotFatal) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  Waiting(&AppPod(1), "ImagePullBackOff", "dial tcp: connection refused");
  resolve_result_ = absl::UnavailableError("connect to registry:5000: connection refused");
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_IMAGE_PULL);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "RegistryUnreachable");
  EXPECT_EQ(finding->severity(), v1::SEVERITY_WARNING);
  EXPECT_FALSE(finding->fatal());
  EXPECT_FALSE(response.fatal());
  EXPECT_FALSE(response.healthy());
}

TEST_F(DiagnoseTest, InvalidImageNameAndContainerConfigErrorAreFatal) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 0);
  Waiting(&AppPod(0), "InvalidImageName",
          "Failed to apply default image tag \"Bad:Image\": invalid reference format");
  Waiting(&AppPod(1), "CreateContainerConfigError", "configmap \"exec-config\" not found");
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* invalid = Find(response, v1::FINDING_KIND_INVALID_IMAGE);
  ASSERT_NE(invalid, nullptr);
  EXPECT_TRUE(invalid->fatal());
  EXPECT_EQ(invalid->reason(), "InvalidImageName");
  EXPECT_THAT(Evidence(*invalid), ElementsAre(HasSubstr("invalid reference format")));
  const v1::Finding* config = Find(response, v1::FINDING_KIND_CONTAINER_CONFIG);
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->fatal());
  EXPECT_EQ(config->reason(), "CreateContainerConfigError");
  EXPECT_THAT(config->message(), HasSubstr("exec-config"));
  EXPECT_TRUE(response.fatal());
  EXPECT_THAT(resolved_, IsEmpty());
}

// A crash-looping container: reason "Error", exit code 1, the previous instance's log tail.
void CrashLooping(v1::Pod* pod, const std::string& reason, int exit_code, int restarts) {
  Waiting(pod, "CrashLoopBackOff",
          "back-off 40s restarting failed container=app pod=executive-team");
  pod->set_phase(v1::POD_PHASE_RUNNING);
  v1::ContainerStatus* status = pod->mutable_container_statuses(0);
  status->set_restart_count(restarts);
  v1::ContainerStateTerminated* terminated = status->mutable_last_state()->mutable_terminated();
  terminated->set_exit_code(exit_code);
  terminated->set_reason(reason);
  *terminated->mutable_started_time() = At(kNow - absl::Seconds(50));
  *terminated->mutable_finished_time() = At(kNow - absl::Seconds(40));
}

TEST_F(DiagnoseTest, CrashLoopQuotesExitCodeAndLogTail) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  v1::Pod& pod = AppPod(1);
  CrashLooping(&pod, "Error", 1, 5);
  pod.mutable_container_statuses(0)->mutable_last_state()->mutable_terminated()->set_message(
      "panic: OPENAI_API_KEY is not set");
  std::vector<std::string> lines;
  for (int i = 0; i < 30; ++i) lines.push_back(absl::StrCat("log line ", i));
  logs_[absl::StrCat(pod.meta().name(), "/previous")] = lines;
  snapshot_.events.push_back(MakeEvent(pod, "BackOff", "Back-off restarting failed container",
                                       kNow - absl::Minutes(4), kNow - absl::Seconds(20)));

  v1::DiagnoseResponse response = Run(AppRequest());
  EXPECT_FALSE(response.healthy());
  EXPECT_FALSE(response.fatal());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_CRASH_LOOP);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "Error");
  EXPECT_EQ(finding->severity(), v1::SEVERITY_ERROR);
  EXPECT_FALSE(finding->fatal());
  EXPECT_EQ(finding->container(), "app");
  EXPECT_THAT(finding->message(), HasSubstr("exit code 1"));
  std::vector<std::string> evidence = Evidence(*finding);
  ASSERT_THAT(evidence, SizeIs(23));
  EXPECT_EQ(evidence[0], "exit code 1, reason Error");
  EXPECT_EQ(evidence[1], "panic: OPENAI_API_KEY is not set");
  EXPECT_THAT(evidence[2], HasSubstr("back-off 40s"));
  EXPECT_EQ(evidence[3], "log line 10");
  EXPECT_EQ(evidence[22], "log line 29");
  ASSERT_THAT(log_calls_, SizeIs(1));
  EXPECT_EQ(log_calls_[0].ns, kNs);
  EXPECT_EQ(log_calls_[0].pod, pod.meta().name());
  EXPECT_EQ(log_calls_[0].container, "app");
  EXPECT_EQ(log_calls_[0].tail_lines, 20);
  EXPECT_TRUE(log_calls_[0].previous);
  EXPECT_EQ(finding->first_seen_time().seconds(), absl::ToUnixSeconds(kNow - absl::Minutes(4)));
  EXPECT_EQ(finding->last_seen_time().seconds(), absl::ToUnixSeconds(kNow - absl::Seconds(20)));
}

TEST_F(DiagnoseTest, OomKilledNamesTheMemoryLimit) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  v1::Pod& pod = AppPod(1);
  (*pod.mutable_containers(0)->mutable_limits())["memory"] = "256Mi";
  CrashLooping(&pod, "OOMKilled", 137, 3);
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_CRASH_LOOP);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "OOMKilled");
  EXPECT_THAT(finding->message(), HasSubstr("memory limit 256Mi"));
  EXPECT_THAT(finding->remediation(), HasSubstr("256Mi"));
  EXPECT_THAT(Evidence(*finding), Contains("exit code 137, reason OOMKilled"));
}

TEST_F(DiagnoseTest, CrashThenQuickRecoveryIsTolerated) {
  HealthyCluster();
  v1::ContainerStatus* status = AppPod(0).mutable_container_statuses(0);
  status->set_restart_count(1);
  v1::ContainerStateTerminated* terminated = status->mutable_last_state()->mutable_terminated();
  terminated->set_exit_code(1);
  terminated->set_reason("Error");
  *terminated->mutable_finished_time() = At(kNow - absl::Seconds(60));
  *status->mutable_state()->mutable_running()->mutable_started_time() =
      At(kNow - absl::Seconds(50));

  v1::DiagnoseResponse response = Run(AppRequest());
  EXPECT_TRUE(response.healthy());
  ASSERT_THAT(response.findings(), SizeIs(1));
  EXPECT_EQ(response.findings(0).kind(), v1::FINDING_KIND_CRASH_LOOP);
  EXPECT_EQ(response.findings(0).severity(), v1::SEVERITY_INFO);
  EXPECT_THAT(response.findings(0).message(), HasSubstr("recovered"));
  EXPECT_THAT(Evidence(response.findings(0)), ElementsAre("exit code 1, reason Error"));
  // Its log is evidence too (a rollout that times out on a flapping container reports it); the
  // log could not be read here, so the exit code stays alone.
  EXPECT_THAT(log_calls_, SizeIs(1));

  // Recovery slower than the window: a warning, still healthy.
  *status->mutable_state()->mutable_running()->mutable_started_time() = At(kNow - absl::Seconds(1));
  *terminated->mutable_finished_time() = At(kNow - absl::Minutes(5));
  response = Run(AppRequest());
  EXPECT_TRUE(response.healthy());
  EXPECT_EQ(response.findings(0).severity(), v1::SEVERITY_WARNING);
  // The log could not be read: tolerated, the exit code stays.
  EXPECT_THAT(log_calls_, SizeIs(2));
  EXPECT_THAT(Evidence(response.findings(0)), ElementsAre("exit code 1, reason Error"));

  // A crash before since_time is history, not a finding.
  v1::DiagnoseRequest request = AppRequest();
  *request.mutable_since_time() = At(kNow - absl::Minutes(1));
  response = Run(request);
  EXPECT_THAT(response.findings(), IsEmpty());
}

TEST_F(DiagnoseTest, FirstRecentCrashOfANotReadyContainerIsAWarning) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  CrashLooping(&AppPod(1), "Error", 2, 1);
  v1::DiagnoseResponse response = Run(AppRequest());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_CRASH_LOOP);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->severity(), v1::SEVERITY_WARNING);
  EXPECT_FALSE(response.healthy());
}

TEST_F(DiagnoseTest, ComparisonErrorIsFatalOnlyForTheExpectedRevision) {
  HealthyCluster();
  App().set_sync_status(v1::SYNC_STATUS_UNKNOWN);
  App().set_sync_revision("");
  *App().add_conditions() = MakeCondition(
      "ComparisonError", v1::CONDITION_STATUS_UNSPECIFIED, "",
      "Failed to load target state: failed to generate manifest for source 1 of 1: rpc error: "
      "code = Unknown desc = error converting YAML to JSON: yaml: line 7: did not find expected "
      "key");
  v1::DiagnoseRequest request = AppRequest();
  v1::DiagnoseResponse response = Run(request);
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_SYNC_ERROR);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "ComparisonError");
  EXPECT_EQ(finding->severity(), v1::SEVERITY_ERROR);
  EXPECT_TRUE(finding->fatal());
  EXPECT_EQ(finding->object().kind(), "Application");
  EXPECT_THAT(Evidence(*finding), ElementsAre(HasSubstr("did not find expected key")));
  EXPECT_FALSE(response.healthy());

  // With an expected revision Argo CD has not compared yet, the error may be the old commit's.
  request.set_expected_revision(kRevision);
  response = Run(request);
  finding = Find(response, v1::FINDING_KIND_SYNC_ERROR);
  ASSERT_NE(finding, nullptr);
  EXPECT_FALSE(finding->fatal());
  EXPECT_NE(Find(response, v1::FINDING_KIND_REVISION_NOT_SYNCED), nullptr);

  // Once the error is about the expected revision, it is.
  App().set_sync_revision(kRevision);
  response = Run(request);
  EXPECT_TRUE(Find(response, v1::FINDING_KIND_SYNC_ERROR)->fatal());
}

TEST_F(DiagnoseTest, RepoAccessIsFatalWhenPermanent) {
  HealthyCluster();
  App().set_sync_status(v1::SYNC_STATUS_UNKNOWN);
  App().set_sync_revision(kOldRevision);
  *App().add_conditions() = MakeCondition(
      "ComparisonError", v1::CONDITION_STATUS_UNSPECIFIED, "",
      "Failed to load target state: failed to generate manifest for source 1 of 1: rpc error: "
      "code = Unknown desc = failed to list refs: authentication required "
      "(ssh://git@git.example.com/gitops.git)");
  v1::DiagnoseRequest request = AppRequest();
  request.set_expected_revision(kRevision);
  v1::DiagnoseResponse response = Run(request);
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_SYNC_ERROR);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "RepoAccess");
  EXPECT_TRUE(finding->fatal());
  EXPECT_THAT(finding->remediation(), HasSubstr("repository"));
  EXPECT_TRUE(response.fatal());

  // A password in a quoted URL is not returned.
  App().mutable_spec()->set_repo_url("https://bot:s3cret@git.example.com/gitops.git");
  App().mutable_conditions(0)->set_message(
      "Failed to load target state: failed to list refs: repository not found: "
      "https://bot:s3cret@git.example.com/gitops.git (404)");
  response = Run(request);
  finding = Find(response, v1::FINDING_KIND_SYNC_ERROR);
  ASSERT_NE(finding, nullptr);
  EXPECT_TRUE(finding->fatal());
  EXPECT_THAT(finding->DebugString(), Not(HasSubstr("s3cret")));
  EXPECT_THAT(Evidence(*finding), ElementsAre(HasSubstr("https://bot:redacted@git.example.com")));

  App().mutable_conditions(0)->set_message(
      "Failed to load target state: rpc error: code = Unknown desc = failed to list refs: "
      "dial tcp 10.0.0.5:22: connect: connection refused");
  response = Run(request);
  finding = Find(response, v1::FINDING_KIND_SYNC_ERROR);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "RepoAccess");
  EXPECT_FALSE(finding->fatal());
  EXPECT_FALSE(response.fatal());
}

TEST_F(DiagnoseTest, MissingNamespaceSyncErrorOnTheExpectedRevision) {
  HealthyCluster();
  App().set_sync_status(v1::SYNC_STATUS_OUT_OF_SYNC);
  App().set_health_status(v1::HEALTH_STATUS_MISSING);
  std::string reason =
      "one or more objects failed to apply, reason: namespaces \"elf-automations\" "
      "not found";
  *App().add_conditions() =
      MakeCondition("SyncError", v1::CONDITION_STATUS_UNSPECIFIED, "",
                    absl::StrCat("Failed sync attempt to ", kRevision, ": ", reason));
  v1::OperationState* operation = App().mutable_operation_state();
  operation->set_phase(v1::OPERATION_PHASE_FAILED);
  operation->set_message(reason);
  operation->set_sync_revision(kRevision);
  *operation->mutable_finished_time() = At(kNow - absl::Seconds(30));
  v1::DiagnoseRequest request;
  request.set_application(kApplication);
  request.set_expected_revision(std::string(kRevision).substr(0, 7));

  v1::DiagnoseResponse response = Run(request);
  int sync_errors = 0;
  for (const v1::Finding& finding : response.findings()) {
    if (finding.kind() == v1::FINDING_KIND_SYNC_ERROR) ++sync_errors;
  }
  EXPECT_EQ(sync_errors, 1);
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_SYNC_ERROR);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "NamespaceMissing");
  EXPECT_TRUE(finding->fatal());
  EXPECT_THAT(finding->message(), HasSubstr("elf-automations"));
  EXPECT_THAT(finding->remediation(), HasSubstr("CreateNamespace=true"));
  EXPECT_THAT(Evidence(*finding), ElementsAre(HasSubstr("Failed sync attempt"), reason));
  EXPECT_EQ(response.findings(0).kind(), v1::FINDING_KIND_SYNC_ERROR);
  EXPECT_TRUE(response.fatal());
  EXPECT_FALSE(response.healthy());
  // Synced to the revision it compared, but OutOfSync.
  const v1::Finding* not_synced = Find(response, v1::FINDING_KIND_REVISION_NOT_SYNCED);
  ASSERT_NE(not_synced, nullptr);
  EXPECT_EQ(not_synced->reason(), "OutOfSync");
}

TEST_F(DiagnoseTest, SyncErrorOfAnOldRevisionIsNotFatal) {
  HealthyCluster();
  App().set_sync_revision(kOldRevision);
  v1::OperationState* operation = App().mutable_operation_state();
  operation->set_phase(v1::OPERATION_PHASE_FAILED);
  operation->set_message("one or more objects failed to apply, reason: admission webhook denied");
  operation->set_sync_revision(kOldRevision);
  v1::DiagnoseRequest request = AppRequest();
  request.set_expected_revision(kRevision);
  v1::DiagnoseResponse response = Run(request);
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_SYNC_ERROR, "SyncFailed");
  ASSERT_NE(finding, nullptr);
  EXPECT_FALSE(finding->fatal());

  // A SyncError naming the old attempt is not fatal even once the new revision is compared.
  const v1::OperationState saved = *operation;
  App().set_sync_revision(kRevision);
  App().clear_operation_state();
  *App().add_conditions() = MakeCondition(
      "SyncError", v1::CONDITION_STATUS_UNSPECIFIED, "",
      absl::StrCat("Failed sync attempt to ", kOldRevision, ": admission webhook denied"));
  response = Run(request);
  finding = Find(response, v1::FINDING_KIND_SYNC_ERROR, "SyncFailed");
  ASSERT_NE(finding, nullptr);
  EXPECT_FALSE(finding->fatal());
  App().clear_conditions();
  App().set_sync_revision(kOldRevision);
  operation = App().mutable_operation_state();
  *operation = saved;

  // Older than since_time: history.
  *operation->mutable_finished_time() = At(kNow - absl::Hours(1));
  *request.mutable_since_time() = At(kNow - absl::Minutes(10));
  response = Run(request);
  EXPECT_EQ(Find(response, v1::FINDING_KIND_SYNC_ERROR), nullptr);
}

TEST_F(DiagnoseTest, RevisionNotSyncedIsAWarning) {
  HealthyCluster();
  App().set_sync_revision(kOldRevision);
  v1::DiagnoseRequest request = AppRequest();
  request.set_expected_revision(kRevision);
  v1::DiagnoseResponse response = Run(request);
  ASSERT_THAT(response.findings(), SizeIs(1));
  const v1::Finding& finding = response.findings(0);
  EXPECT_EQ(finding.kind(), v1::FINDING_KIND_REVISION_NOT_SYNCED);
  EXPECT_EQ(finding.reason(), "RevisionMismatch");
  EXPECT_EQ(finding.severity(), v1::SEVERITY_WARNING);
  EXPECT_FALSE(finding.fatal());
  EXPECT_THAT(finding.message(), AllOf(HasSubstr(kOldRevision), HasSubstr(kRevision)));
  EXPECT_FALSE(response.healthy());
  EXPECT_FALSE(response.fatal());
}

TEST_F(DiagnoseTest, ProgressDeadlineExceededNamesEachPodAndWhy) {
  HealthyCluster();
  v1::Deployment& deployment = AppDeployment();
  deployment.set_replicas(3);
  deployment.set_status_replicas(3);
  deployment.set_updated_replicas(3);
  NotRolledOut(&deployment, 1);
  v1::Condition* progressing = deployment.mutable_conditions(1);
  progressing->set_status(v1::CONDITION_STATUS_FALSE);
  progressing->set_reason("ProgressDeadlineExceeded");
  progressing->set_message("ReplicaSet \"executive-team-7d9f8b6c4\" has timed out progressing.");
  // Pod 1: never scheduled. Pod 2: running, readiness failing.
  v1::Pod& unscheduled = AppPod(1);
  unscheduled.set_ready(false);
  unscheduled.set_phase(v1::POD_PHASE_PENDING);
  unscheduled.clear_container_statuses();
  unscheduled.clear_node_name();
  *unscheduled.mutable_conditions(0) =
      MakeCondition("PodScheduled", v1::CONDITION_STATUS_FALSE, "Unschedulable",
                    "0/1 nodes are available: 1 Insufficient memory.");
  v1::Pod unready = MakePod(deployment, "ccccc");
  unready.set_ready(false);
  unready.mutable_container_statuses(0)->set_ready(false);
  const std::string unscheduled_name = unscheduled.meta().name();
  snapshot_.pods.push_back(unready);  // invalidates `unscheduled`

  v1::DiagnoseResponse response = Run(AppRequest());
  EXPECT_FALSE(response.healthy());
  const v1::Finding* finding =
      Find(response, v1::FINDING_KIND_ROLLOUT_STUCK, "ProgressDeadlineExceeded");
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->severity(), v1::SEVERITY_ERROR);
  EXPECT_FALSE(finding->fatal());
  EXPECT_EQ(finding->object().kind(), "Deployment");
  EXPECT_THAT(finding->message(), HasSubstr("1/3 ready"));
  EXPECT_THAT(Evidence(*finding),
              ElementsAre(HasSubstr("has timed out progressing"),
                          AllOf(HasSubstr(unscheduled_name), HasSubstr("Insufficient memory")),
                          AllOf(HasSubstr(unready.meta().name()), HasSubstr("not ready"))));
  EXPECT_EQ(Find(response, v1::FINDING_KIND_ROLLOUT_STUCK, "Progressing"), nullptr);
  const v1::Finding* unschedulable = Find(response, v1::FINDING_KIND_UNSCHEDULABLE);
  ASSERT_NE(unschedulable, nullptr);
  EXPECT_EQ(unschedulable->reason(), "Unschedulable");
  EXPECT_EQ(unschedulable->object().name(), unscheduled_name);
  EXPECT_EQ(response.workloads(0).pods_total(), 3);
  EXPECT_EQ(response.workloads(0).pods_ready(), 1);
}

TEST_F(DiagnoseTest, DiscoveryMissingIsAnErrorOnceReady) {
  HealthyCluster();
  logs_["agentgateway-5c6d7e8f9-ggggg"] = {
      "starting agentgateway",
      "Discovered executive-team-helper at http://executive-team-helper.elf-automations.svc"};
  v1::DiagnoseRequest request = AppRequest();
  request.set_check_discovery(true);
  v1::DiagnoseResponse response = Run(request);
  EXPECT_FALSE(response.healthy());
  EXPECT_FALSE(response.fatal());
  EXPECT_FALSE(response.workloads(0).discovered());
  EXPECT_TRUE(response.workloads(0).ready());
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_DISCOVERY_MISSING);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "NotDiscovered");
  EXPECT_EQ(finding->severity(), v1::SEVERITY_ERROR);
  EXPECT_FALSE(finding->fatal());
  EXPECT_THAT(finding->message(), HasSubstr("Discovered executive-team"));
  EXPECT_THAT(Evidence(*finding), Contains(HasSubstr("executive-team-helper")));

  // While the app is not ready yet, a warning.
  NotRolledOut(&AppDeployment(), 1);
  response = Run(request);
  EXPECT_EQ(Find(response, v1::FINDING_KIND_DISCOVERY_MISSING)->severity(), v1::SEVERITY_WARNING);
}

TEST_F(DiagnoseTest, DiscoveryGatewayMissing) {
  HealthyCluster();
  v1::DiagnoseRequest request = AppRequest();
  request.set_check_discovery(true);
  request.set_discovery_deployment("gateway-ns/agentgateway");
  v1::DiagnoseResponse response = Run(request);
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_DISCOVERY_MISSING);
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->reason(), "GatewayMissing");
  EXPECT_EQ(finding->object().namespace_(), "gateway-ns");
  EXPECT_FALSE(response.healthy());
  EXPECT_THAT(log_calls_, IsEmpty());
}

TEST_F(DiagnoseTest, AgentDisconnectedIsAWarning) {
  HealthyCluster();
  snapshot_.cluster.set_state(v1::CONNECTION_STATE_DISCONNECTED);
  snapshot_.cluster.set_disconnect_reason("heartbeat timeout");
  v1::DiagnoseResponse response = Run(AppRequest());
  ASSERT_THAT(response.findings(), SizeIs(1));
  EXPECT_EQ(response.findings(0).kind(), v1::FINDING_KIND_AGENT_DISCONNECTED);
  EXPECT_EQ(response.findings(0).severity(), v1::SEVERITY_WARNING);
  EXPECT_THAT(Evidence(response.findings(0)), ElementsAre(HasSubstr("heartbeat timeout")));
  EXPECT_FALSE(response.fatal());
}

TEST_F(DiagnoseTest, ExpectedDigestMismatch) {
  HealthyCluster();
  v1::DiagnoseRequest request = AppRequest();
  (*request.mutable_expected_digests())[kApp] =
      absl::StrCat("registry:5000/elf-automations/executive-team@", kOtherDigest);
  v1::DiagnoseResponse response = Run(request);
  EXPECT_FALSE(response.healthy());
  EXPECT_FALSE(response.workloads(0).ready());
  EXPECT_THAT(response.workloads(0).running_digests(), ElementsAre(kDigest));
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_OTHER, "DigestMismatch");
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->severity(), v1::SEVERITY_ERROR);
  EXPECT_THAT(finding->message(), HasSubstr(kOtherDigest));
  EXPECT_THAT(Evidence(*finding), ElementsAre(HasSubstr("-aaaaa runs sha256:aaaa"),
                                              HasSubstr("-bbbbb runs sha256:aaaa")));
}

TEST_F(DiagnoseTest, OldEventsAreIgnoredAndEvidenceIsBounded) {
  HealthyCluster();
  NotRolledOut(&AppDeployment(), 1);
  v1::Pod& pod = AppPod(1);
  Waiting(&pod, "ImagePullBackOff", "Back-off pulling image");
  snapshot_.events.push_back(
      MakeEvent(pod, "Failed", "an old failure", kNow - absl::Hours(2), kNow - absl::Hours(2)));
  for (int i = 0; i < 80; ++i) {
    snapshot_.events.push_back(MakeEvent(pod, "Failed", absl::StrCat("failure ", i),
                                         kNow - absl::Seconds(100 - i),
                                         kNow - absl::Seconds(100 - i)));
  }
  v1::DiagnoseRequest request = AppRequest();
  *request.mutable_since_time() = At(kNow - absl::Hours(1));
  v1::DiagnoseResponse response = Run(request);
  const v1::Finding* finding = Find(response, v1::FINDING_KIND_IMAGE_PULL);
  ASSERT_NE(finding, nullptr);
  std::vector<std::string> evidence = Evidence(*finding);
  EXPECT_THAT(evidence, SizeIs(50));
  EXPECT_THAT(evidence, Not(Contains("an old failure")));
  EXPECT_EQ(evidence.back(), "failure 79");
  EXPECT_FALSE(finding->fatal());  // Resolve says the image exists: the kubelet's reason stays
  EXPECT_EQ(finding->reason(), "ImagePullBackOff");
}

}  // namespace
}  // namespace elfdeploy::watcher
