#include "agent/kube/convert.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"

namespace elfdeploy::kube {
namespace {

using Json = simdjson::dom::element;

constexpr std::string_view kApplicationApiVersion = "argoproj.io/v1alpha1";
constexpr std::string_view kDefaultArgoNamespace = "argocd";
constexpr std::string_view kDefaultProject = "default";
constexpr std::string_view kDefaultDestinationServer = "https://kubernetes.default.svc";
constexpr int32_t kDefaultReplicas = 1;
constexpr int32_t kDefaultProgressDeadlineSeconds = 600;

// The member `key` of `json`, or nullopt when `json` is not an object, lacks it, or it is null.
std::optional<Json> Find(Json json, std::string_view key) {
  simdjson::dom::object object;
  if (json.get(object) != simdjson::SUCCESS) return std::nullopt;
  Json child;
  if (object.at_key(key).get(child) != simdjson::SUCCESS || child.is_null()) return std::nullopt;
  return child;
}

// Find() restricted to objects.
std::optional<Json> FindObject(Json json, std::string_view key) {
  std::optional<Json> child = Find(json, key);
  return child.has_value() && child->is_object() ? child : std::nullopt;
}

// Find() restricted to arrays.
std::optional<Json> FindArray(Json json, std::string_view key) {
  std::optional<Json> child = Find(json, key);
  return child.has_value() && child->is_array() ? child : std::nullopt;
}

// The elements of an array and the members of an object (callers have checked the type).
simdjson::dom::array Items(Json array) { return array.get_array().value_unsafe(); }
simdjson::dom::object Members(Json object) { return object.get_object().value_unsafe(); }

// The string value of `json`, or "" when it is not a string.
std::string_view StringOf(Json json) {
  std::string_view text;
  return json.get(text) == simdjson::SUCCESS ? text : std::string_view();
}

// The string member `key`, or "" when absent or not a string.
std::string GetString(Json json, std::string_view key) {
  std::optional<Json> child = Find(json, key);
  return child.has_value() ? std::string(StringOf(*child)) : std::string();
}

// An integral JSON number (integers, and floats with no fraction) clamped to int64; nullopt
// otherwise.
std::optional<int64_t> AsInt64(Json json) {
  switch (json.type()) {
    case simdjson::dom::element_type::UINT64: {
      uint64_t value = json.get_uint64().value_unsafe();
      return value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                 ? std::numeric_limits<int64_t>::max()
                 : static_cast<int64_t>(value);
    }
    case simdjson::dom::element_type::INT64:
      return json.get_int64().value_unsafe();
    case simdjson::dom::element_type::DOUBLE: {
      double value = json.get_double().value_unsafe();
      if (!std::isfinite(value) || value != std::trunc(value)) return std::nullopt;
      if (value >= 9.2e18) return std::numeric_limits<int64_t>::max();
      if (value <= -9.2e18) return std::numeric_limits<int64_t>::min();
      return static_cast<int64_t>(value);
    }
    default:
      return std::nullopt;
  }
}

std::optional<int64_t> GetInt64(Json json, std::string_view key) {
  std::optional<Json> child = Find(json, key);
  if (!child.has_value()) return std::nullopt;
  return AsInt64(*child);
}

int32_t ClampInt32(int64_t value) {
  if (value > std::numeric_limits<int32_t>::max()) return std::numeric_limits<int32_t>::max();
  if (value < std::numeric_limits<int32_t>::min()) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(value);
}

std::optional<int32_t> GetInt32(Json json, std::string_view key) {
  std::optional<int64_t> value = GetInt64(json, key);
  if (!value.has_value()) return std::nullopt;
  return ClampInt32(*value);
}

// The bool member `key`, or false when absent or not a bool.
bool GetBool(Json json, std::string_view key) {
  std::optional<Json> child = Find(json, key);
  bool value = false;
  return child.has_value() && child->get(value) == simdjson::SUCCESS && value;
}

// Sets `*out` from the RFC 3339 string member `key`; returns whether it did.
bool GetTime(Json json, std::string_view key, google::protobuf::Timestamp* out) {
  std::optional<Json> child = Find(json, key);
  if (!child.has_value() || !child->is_string()) return false;
  return ParseRfc3339(StringOf(*child), out);
}

// Sets the `mutable_field()` Timestamp only when `key` holds a valid time, so that absent times
// stay unset.
template <typename Mutable>
void SetTime(Json json, std::string_view key, Mutable mutable_field) {
  google::protobuf::Timestamp time;
  if (GetTime(json, key, &time)) *mutable_field() = time;
}

// Copies the string values of the object member `key` into `map`; non-string values are skipped,
// numbers (quantities written unquoted) are kept in their JSON spelling.
void CopyStringMap(Json json, std::string_view key,
                   google::protobuf::Map<std::string, std::string>* map, bool numbers_too) {
  std::optional<Json> object = FindObject(json, key);
  if (!object.has_value()) return;
  for (simdjson::dom::key_value_pair field : Members(*object)) {
    if (field.value.is_string()) {
      (*map)[std::string(field.key)] = std::string(StringOf(field.value));
    } else if (numbers_too && field.value.is_number()) {
      (*map)[std::string(field.key)] = simdjson::minify(field.value);
    }
  }
}

// The JSON type of `json`, for messages.
std::string_view TypeName(Json json) {
  switch (json.type()) {
    case simdjson::dom::element_type::ARRAY:
      return "array";
    case simdjson::dom::element_type::OBJECT:
      return "object";
    case simdjson::dom::element_type::STRING:
      return "string";
    case simdjson::dom::element_type::BOOL:
      return "boolean";
    case simdjson::dom::element_type::NULL_VALUE:
      return "null";
    default:
      return "number";
  }
}

template <typename Enum, size_t N>
Enum LookUp(const std::array<std::pair<std::string_view, Enum>, N>& table, const std::string& text,
            Enum fallback) {
  for (const auto& [name, value] : table) {
    if (name == text) return value;
  }
  return fallback;
}

v1::ConditionStatus ToConditionStatus(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, v1::ConditionStatus>, 3> kTable{{
      {"True", v1::CONDITION_STATUS_TRUE},
      {"False", v1::CONDITION_STATUS_FALSE},
      {"Unknown", v1::CONDITION_STATUS_UNKNOWN},
  }};
  return LookUp(kTable, text, v1::CONDITION_STATUS_UNSPECIFIED);
}

v1::SyncStatus ToSyncStatus(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, v1::SyncStatus>, 3> kTable{{
      {"Synced", v1::SYNC_STATUS_SYNCED},
      {"OutOfSync", v1::SYNC_STATUS_OUT_OF_SYNC},
      {"Unknown", v1::SYNC_STATUS_UNKNOWN},
  }};
  return LookUp(kTable, text, v1::SYNC_STATUS_UNSPECIFIED);
}

v1::HealthStatus ToHealthStatus(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, v1::HealthStatus>, 6> kTable{{
      {"Healthy", v1::HEALTH_STATUS_HEALTHY},
      {"Progressing", v1::HEALTH_STATUS_PROGRESSING},
      {"Degraded", v1::HEALTH_STATUS_DEGRADED},
      {"Suspended", v1::HEALTH_STATUS_SUSPENDED},
      {"Missing", v1::HEALTH_STATUS_MISSING},
      {"Unknown", v1::HEALTH_STATUS_UNKNOWN},
  }};
  return LookUp(kTable, text, v1::HEALTH_STATUS_UNSPECIFIED);
}

v1::OperationPhase ToOperationPhase(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, v1::OperationPhase>, 5> kTable{{
      {"Running", v1::OPERATION_PHASE_RUNNING},
      {"Terminating", v1::OPERATION_PHASE_TERMINATING},
      {"Failed", v1::OPERATION_PHASE_FAILED},
      {"Error", v1::OPERATION_PHASE_ERROR},
      {"Succeeded", v1::OPERATION_PHASE_SUCCEEDED},
  }};
  return LookUp(kTable, text, v1::OPERATION_PHASE_UNSPECIFIED);
}

v1::PodPhase ToPodPhase(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, v1::PodPhase>, 5> kTable{{
      {"Pending", v1::POD_PHASE_PENDING},
      {"Running", v1::POD_PHASE_RUNNING},
      {"Succeeded", v1::POD_PHASE_SUCCEEDED},
      {"Failed", v1::POD_PHASE_FAILED},
      {"Unknown", v1::POD_PHASE_UNKNOWN},
  }};
  return LookUp(kTable, text, v1::POD_PHASE_UNSPECIFIED);
}

v1::KubernetesEventType ToEventType(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, v1::KubernetesEventType>, 2> kTable{{
      {"Normal", v1::KUBERNETES_EVENT_TYPE_NORMAL},
      {"Warning", v1::KUBERNETES_EVENT_TYPE_WARNING},
  }};
  return LookUp(kTable, text, v1::KUBERNETES_EVENT_TYPE_UNSPECIFIED);
}

// status.conditions[] of any kind; non-object entries are skipped.
void ConvertConditions(Json status, google::protobuf::RepeatedPtrField<v1::Condition>* conditions) {
  std::optional<Json> items = FindArray(status, "conditions");
  if (!items.has_value()) return;
  for (Json item : Items(*items)) {
    if (!item.is_object()) continue;
    v1::Condition* condition = conditions->Add();
    condition->set_type(GetString(item, "type"));
    condition->set_status(ToConditionStatus(GetString(item, "status")));
    condition->set_reason(GetString(item, "reason"));
    condition->set_message(GetString(item, "message"));
    SetTime(item, "lastTransitionTime", [&] { return condition->mutable_last_transition_time(); });
    SetTime(item, "lastUpdateTime", [&] { return condition->mutable_last_update_time(); });
  }
}

// A container of a pod spec or pod template spec.
void ConvertContainers(Json pod_spec,
                       google::protobuf::RepeatedPtrField<v1::ContainerSpec>* containers) {
  std::optional<Json> items = FindArray(pod_spec, "containers");
  if (!items.has_value()) return;
  for (Json item : Items(*items)) {
    if (!item.is_object()) continue;
    v1::ContainerSpec* container = containers->Add();
    container->set_name(GetString(item, "name"));
    container->set_image(GetString(item, "image"));
    if (std::optional<Json> resources = FindObject(item, "resources")) {
      CopyStringMap(*resources, "limits", container->mutable_limits(), /*numbers_too=*/true);
      CopyStringMap(*resources, "requests", container->mutable_requests(), /*numbers_too=*/true);
    }
    if (std::optional<Json> ports = FindArray(item, "ports")) {
      for (Json port : Items(*ports)) {
        std::optional<int32_t> number = GetInt32(port, "containerPort");
        if (number.has_value()) container->add_ports(*number);
      }
    }
  }
}

void ConvertContainerState(Json json, v1::ContainerState* state) {
  if (std::optional<Json> waiting = FindObject(json, "waiting")) {
    v1::ContainerStateWaiting* out = state->mutable_waiting();
    out->set_reason(GetString(*waiting, "reason"));
    out->set_message(GetString(*waiting, "message"));
  } else if (std::optional<Json> running = FindObject(json, "running")) {
    v1::ContainerStateRunning* out = state->mutable_running();
    SetTime(*running, "startedAt", [&] { return out->mutable_started_time(); });
  } else if (std::optional<Json> terminated = FindObject(json, "terminated")) {
    v1::ContainerStateTerminated* out = state->mutable_terminated();
    out->set_exit_code(GetInt32(*terminated, "exitCode").value_or(0));
    out->set_signal(GetInt32(*terminated, "signal").value_or(0));
    out->set_reason(GetString(*terminated, "reason"));
    out->set_message(GetString(*terminated, "message"));
    SetTime(*terminated, "startedAt", [&] { return out->mutable_started_time(); });
    SetTime(*terminated, "finishedAt", [&] { return out->mutable_finished_time(); });
  }
}

void ConvertContainerStatuses(Json status, std::string_view key,
                              google::protobuf::RepeatedPtrField<v1::ContainerStatus>* statuses) {
  std::optional<Json> items = FindArray(status, key);
  if (!items.has_value()) return;
  for (Json item : Items(*items)) {
    if (!item.is_object()) continue;
    v1::ContainerStatus* out = statuses->Add();
    out->set_name(GetString(item, "name"));
    out->set_image(GetString(item, "image"));
    out->set_image_id(GetString(item, "imageID"));
    out->set_ready(GetBool(item, "ready"));
    out->set_started(GetBool(item, "started"));
    out->set_restart_count(GetInt32(item, "restartCount").value_or(0));
    if (std::optional<Json> state = FindObject(item, "state")) {
      ConvertContainerState(*state, out->mutable_state());
    }
    if (std::optional<Json> last_state = FindObject(item, "lastState")) {
      ConvertContainerState(*last_state, out->mutable_last_state());
    }
  }
}

// ObjectRef from an involvedObject / regarding reference.
void ConvertObjectRef(Json json, v1::ObjectRef* ref) {
  ref->set_kind(GetString(json, "kind"));
  ref->set_api_version(GetString(json, "apiVersion"));
  ref->set_namespace_(GetString(json, "namespace"));
  ref->set_name(GetString(json, "name"));
  ref->set_uid(GetString(json, "uid"));
  ref->set_field_path(GetString(json, "fieldPath"));
}

void ConvertApplicationSpec(Json spec, v1::ApplicationSpec* out) {
  out->set_project(GetString(spec, "project"));
  std::optional<Json> source = FindObject(spec, "source");
  if (!source.has_value()) {
    if (std::optional<Json> sources = FindArray(spec, "sources");
        sources.has_value() && Items(*sources).size() > 0 &&
        Items(*sources).at(0).value_unsafe().is_object()) {
      source = Items(*sources).at(0).value_unsafe();
    }
  }
  if (source.has_value()) {
    out->set_repo_url(GetString(*source, "repoURL"));
    out->set_target_revision(GetString(*source, "targetRevision"));
    out->set_path(GetString(*source, "path"));
  }
  if (std::optional<Json> destination = FindObject(spec, "destination")) {
    out->set_destination_server(GetString(*destination, "server"));
    out->set_destination_namespace(GetString(*destination, "namespace"));
  }
  if (std::optional<Json> policy = FindObject(spec, "syncPolicy")) {
    if (std::optional<Json> automated = FindObject(*policy, "automated")) {
      out->set_automated(true);
      out->set_prune(GetBool(*automated, "prune"));
      out->set_self_heal(GetBool(*automated, "selfHeal"));
    }
    if (std::optional<Json> options = FindArray(*policy, "syncOptions")) {
      for (Json option : Items(*options)) {
        if (option.is_string()) out->add_sync_options(std::string(StringOf(option)));
      }
    }
  }
}

void ConvertApplicationStatus(Json status, v1::Application* app) {
  if (std::optional<Json> sync = FindObject(status, "sync")) {
    app->set_sync_status(ToSyncStatus(GetString(*sync, "status")));
    std::string revision = GetString(*sync, "revision");
    if (revision.empty()) {
      if (std::optional<Json> revisions = FindArray(*sync, "revisions");
          revisions.has_value() && Items(*revisions).size() > 0 &&
          Items(*revisions).at(0).value_unsafe().is_string()) {
        revision = std::string(StringOf(Items(*revisions).at(0).value_unsafe()));
      }
    }
    app->set_sync_revision(std::move(revision));
  }
  if (std::optional<Json> health = FindObject(status, "health")) {
    app->set_health_status(ToHealthStatus(GetString(*health, "status")));
    app->set_health_message(GetString(*health, "message"));
  }
  if (std::optional<Json> operation = FindObject(status, "operationState")) {
    v1::OperationState* out = app->mutable_operation_state();
    out->set_phase(ToOperationPhase(GetString(*operation, "phase")));
    out->set_message(GetString(*operation, "message"));
    if (std::optional<Json> result = FindObject(*operation, "syncResult")) {
      out->set_sync_revision(GetString(*result, "revision"));
    }
    SetTime(*operation, "startedAt", [&] { return out->mutable_started_time(); });
    SetTime(*operation, "finishedAt", [&] { return out->mutable_finished_time(); });
  }
  ConvertConditions(status, app->mutable_conditions());
  if (std::optional<Json> resources = FindArray(status, "resources")) {
    for (Json item : Items(*resources)) {
      if (!item.is_object()) continue;
      v1::ApplicationResource* out = app->add_resources();
      out->set_group(GetString(item, "group"));
      out->set_version(GetString(item, "version"));
      out->set_kind(GetString(item, "kind"));
      out->set_namespace_(GetString(item, "namespace"));
      out->set_name(GetString(item, "name"));
      out->set_sync_status(ToSyncStatus(GetString(item, "status")));
      if (std::optional<Json> health = FindObject(item, "health")) {
        out->set_health_status(ToHealthStatus(GetString(*health, "status")));
        out->set_health_message(GetString(*health, "message"));
      }
    }
  }
  SetTime(status, "reconciledAt", [&] { return app->mutable_reconciled_time(); });
}

}  // namespace

bool IsKeptAnnotation(std::string_view key) {
  return key == "argocd.argoproj.io/refresh" || key == "deployment.kubernetes.io/revision" ||
         key == "kubectl.kubernetes.io/restartedAt" || key.starts_with("app.kubernetes.io/");
}

bool ParseRfc3339(std::string_view text, google::protobuf::Timestamp* out) {
  // protobuf's parser is the RFC 3339 subset Kubernetes writes (offset required), without
  // absl::ParseTime's time-zone machinery: it runs for every time of every watched object.
  google::protobuf::Timestamp parsed;
  if (text.empty() || !google::protobuf::util::TimeUtil::FromString(std::string(text), &parsed)) {
    return false;
  }
  *out = parsed;
  return true;
}

std::string IdentityJson(Json object) {
  std::string out = "{";
  bool first = true;
  // Each string as simdjson writes it, escaped.
  auto add = [&out, &first](const char* key, Json value) {
    if (!value.is_string()) return;
    absl::StrAppend(&out, first ? "" : ",", "\"", key, "\":", simdjson::minify(value));
    first = false;
  };
  Json value;
  for (const char* key : {"apiVersion", "kind"}) {
    if (object[key].get(value) == simdjson::SUCCESS) add(key, value);
  }
  simdjson::dom::object metadata;
  if (object["metadata"].get(metadata) == simdjson::SUCCESS) {
    absl::StrAppend(&out, first ? "" : ",", "\"metadata\":{");
    first = true;
    for (const char* key : {"name", "namespace", "uid", "resourceVersion"}) {
      if (metadata[key].get(value) == simdjson::SUCCESS) add(key, value);
    }
    out += '}';
  }
  out += '}';
  return out;
}

absl::StatusOr<v1::ObjectMeta> ToObjectMeta(Json object) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Kubernetes object is not a JSON object but ", std::string(TypeName(object))));
  }
  std::optional<Json> metadata = FindObject(object, "metadata");
  std::optional<Json> name = metadata.has_value() ? Find(*metadata, "name") : std::optional<Json>();
  if (!name.has_value() || StringOf(*name).empty()) {
    std::string kind = GetString(object, "kind");
    return absl::InvalidArgumentError(
        absl::StrCat("Kubernetes object ", kind.empty() ? "" : kind + " ", "has no metadata.name"));
  }
  v1::ObjectMeta meta;
  meta.set_name(std::string(StringOf(*name)));
  meta.set_namespace_(GetString(*metadata, "namespace"));
  meta.set_uid(GetString(*metadata, "uid"));
  meta.set_resource_version(GetString(*metadata, "resourceVersion"));
  meta.set_generation(GetInt64(*metadata, "generation").value_or(0));
  CopyStringMap(*metadata, "labels", meta.mutable_labels(), /*numbers_too=*/false);
  if (std::optional<Json> annotations = FindObject(*metadata, "annotations")) {
    for (simdjson::dom::key_value_pair field : Members(*annotations)) {
      if (field.value.is_string() && IsKeptAnnotation(field.key)) {
        (*meta.mutable_annotations())[std::string(field.key)] = std::string(StringOf(field.value));
      }
    }
  }
  if (std::optional<Json> owners = FindArray(*metadata, "ownerReferences")) {
    for (Json owner : Items(*owners)) {
      if (!owner.is_object()) continue;
      v1::ObjectRef* ref = meta.add_owner_references();
      ref->set_kind(GetString(owner, "kind"));
      ref->set_api_version(GetString(owner, "apiVersion"));
      ref->set_name(GetString(owner, "name"));
      ref->set_uid(GetString(owner, "uid"));
    }
  }
  SetTime(*metadata, "creationTimestamp", [&] { return meta.mutable_creation_time(); });
  SetTime(*metadata, "deletionTimestamp", [&] { return meta.mutable_deletion_time(); });
  return meta;
}

absl::StatusOr<v1::Application> ToApplication(Json object) {
  absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(object);
  if (!meta.ok()) return meta.status();
  v1::Application app;
  *app.mutable_meta() = *std::move(meta);
  if (std::optional<Json> spec = FindObject(object, "spec")) {
    ConvertApplicationSpec(*spec, app.mutable_spec());
  }
  if (std::optional<Json> status = FindObject(object, "status"))
    ConvertApplicationStatus(*status, &app);
  return app;
}

absl::StatusOr<v1::Application> ToApplication(const nlohmann::json& object) {
  simdjson::dom::parser parser;
  Json parsed;
  if (parser.parse(object.dump()).get(parsed) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("Application is not valid JSON");
  }
  return ToApplication(parsed);
}

absl::StatusOr<v1::Deployment> ToDeployment(Json object) {
  absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(object);
  if (!meta.ok()) return meta.status();
  v1::Deployment deployment;
  *deployment.mutable_meta() = *std::move(meta);
  deployment.set_replicas(kDefaultReplicas);
  deployment.set_progress_deadline_seconds(kDefaultProgressDeadlineSeconds);
  if (std::optional<Json> spec = FindObject(object, "spec")) {
    deployment.set_replicas(GetInt32(*spec, "replicas").value_or(kDefaultReplicas));
    deployment.set_progress_deadline_seconds(
        GetInt32(*spec, "progressDeadlineSeconds").value_or(kDefaultProgressDeadlineSeconds));
    if (std::optional<Json> selector = FindObject(*spec, "selector")) {
      CopyStringMap(*selector, "matchLabels", deployment.mutable_selector(),
                    /*numbers_too=*/false);
    }
    if (std::optional<Json> tmpl = FindObject(*spec, "template")) {
      if (std::optional<Json> pod_spec = FindObject(*tmpl, "spec")) {
        ConvertContainers(*pod_spec, deployment.mutable_containers());
      }
    }
  }
  if (std::optional<Json> status = FindObject(object, "status")) {
    deployment.set_observed_generation(GetInt64(*status, "observedGeneration").value_or(0));
    deployment.set_status_replicas(GetInt32(*status, "replicas").value_or(0));
    deployment.set_updated_replicas(GetInt32(*status, "updatedReplicas").value_or(0));
    deployment.set_ready_replicas(GetInt32(*status, "readyReplicas").value_or(0));
    deployment.set_available_replicas(GetInt32(*status, "availableReplicas").value_or(0));
    deployment.set_unavailable_replicas(GetInt32(*status, "unavailableReplicas").value_or(0));
    ConvertConditions(*status, deployment.mutable_conditions());
  }
  return deployment;
}

absl::StatusOr<v1::Pod> ToPod(Json object) {
  absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(object);
  if (!meta.ok()) return meta.status();
  v1::Pod pod;
  *pod.mutable_meta() = *std::move(meta);
  if (std::optional<Json> spec = FindObject(object, "spec")) {
    pod.set_node_name(GetString(*spec, "nodeName"));
    ConvertContainers(*spec, pod.mutable_containers());
    if (std::optional<Json> secrets = FindArray(*spec, "imagePullSecrets")) {
      for (Json secret : Items(*secrets)) {
        std::string name = GetString(secret, "name");
        if (!name.empty()) pod.add_image_pull_secrets(std::move(name));
      }
    }
  }
  if (std::optional<Json> status = FindObject(object, "status")) {
    pod.set_phase(ToPodPhase(GetString(*status, "phase")));
    pod.set_reason(GetString(*status, "reason"));
    pod.set_message(GetString(*status, "message"));
    pod.set_pod_ip(GetString(*status, "podIP"));
    SetTime(*status, "startTime", [&] { return pod.mutable_start_time(); });
    ConvertConditions(*status, pod.mutable_conditions());
    for (const v1::Condition& condition : pod.conditions()) {
      if (condition.type() == "Ready") {
        pod.set_ready(condition.status() == v1::CONDITION_STATUS_TRUE);
      }
    }
    ConvertContainerStatuses(*status, "initContainerStatuses",
                             pod.mutable_init_container_statuses());
    ConvertContainerStatuses(*status, "containerStatuses", pod.mutable_container_statuses());
  }
  return pod;
}

absl::StatusOr<v1::KubernetesEvent> ToEvent(Json object) {
  absl::StatusOr<v1::ObjectMeta> meta = ToObjectMeta(object);
  if (!meta.ok()) return meta.status();
  v1::KubernetesEvent event;
  *event.mutable_meta() = *std::move(meta);
  std::optional<Json> involved = FindObject(object, "involvedObject");
  if (!involved.has_value()) involved = FindObject(object, "regarding");
  if (involved.has_value()) ConvertObjectRef(*involved, event.mutable_involved_object());
  event.set_reason(GetString(object, "reason"));
  std::string message = GetString(object, "message");
  event.set_message(message.empty() ? GetString(object, "note") : std::move(message));
  event.set_type(ToEventType(GetString(object, "type")));

  std::optional<Json> series = FindObject(object, "series");
  int64_t count = GetInt64(object, "count").value_or(0);
  if (count <= 0 && series.has_value()) count = GetInt64(*series, "count").value_or(0);
  if (count <= 0) count = GetInt64(object, "deprecatedCount").value_or(0);
  event.set_count(count > 0 ? ClampInt32(count) : 1);

  google::protobuf::Timestamp event_time;
  bool has_event_time = GetTime(object, "eventTime", &event_time);
  google::protobuf::Timestamp time;
  if (GetTime(object, "firstTimestamp", &time) ||
      GetTime(object, "deprecatedFirstTimestamp", &time)) {
    *event.mutable_first_time() = time;
  } else if (has_event_time) {
    *event.mutable_first_time() = event_time;
  }
  if (GetTime(object, "lastTimestamp", &time) ||
      GetTime(object, "deprecatedLastTimestamp", &time) ||
      (series.has_value() && GetTime(*series, "lastObservedTime", &time))) {
    *event.mutable_last_time() = time;
  } else if (has_event_time) {
    *event.mutable_last_time() = event_time;
  }

  std::string source;
  if (std::optional<Json> source_object = FindObject(object, "source")) {
    source = GetString(*source_object, "component");
  }
  if (source.empty()) {
    if (std::optional<Json> source_object = FindObject(object, "deprecatedSource")) {
      source = GetString(*source_object, "component");
    }
  }
  if (source.empty()) source = GetString(object, "reportingComponent");
  if (source.empty()) source = GetString(object, "reportingController");
  event.set_source(std::move(source));
  return event;
}

absl::StatusOr<v1::ClusterObject> ToClusterObject(v1::ObjectKind kind, Json object) {
  v1::ClusterObject out;
  switch (kind) {
    case v1::OBJECT_KIND_APPLICATION: {
      absl::StatusOr<v1::Application> app = ToApplication(object);
      if (!app.ok()) return app.status();
      *out.mutable_application() = *std::move(app);
      return out;
    }
    case v1::OBJECT_KIND_DEPLOYMENT: {
      absl::StatusOr<v1::Deployment> deployment = ToDeployment(object);
      if (!deployment.ok()) return deployment.status();
      *out.mutable_deployment() = *std::move(deployment);
      return out;
    }
    case v1::OBJECT_KIND_POD: {
      absl::StatusOr<v1::Pod> pod = ToPod(object);
      if (!pod.ok()) return pod.status();
      *out.mutable_pod() = *std::move(pod);
      return out;
    }
    case v1::OBJECT_KIND_EVENT: {
      absl::StatusOr<v1::KubernetesEvent> event = ToEvent(object);
      if (!event.ok()) return event.status();
      *out.mutable_event() = *std::move(event);
      return out;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("no conversion for object kind ", static_cast<int>(kind)));
  }
}

nlohmann::json ToApplicationJson(const v1::ApplicationDefinition& definition) {
  const v1::ApplicationSpec& spec = definition.spec();
  nlohmann::json metadata = nlohmann::json::object();
  metadata["name"] = definition.name();
  metadata["namespace"] = definition.namespace_().empty() ? std::string(kDefaultArgoNamespace)
                                                          : definition.namespace_();
  if (!definition.labels().empty()) {
    nlohmann::json labels = nlohmann::json::object();
    for (const auto& [key, value] : definition.labels()) labels[key] = value;
    metadata["labels"] = std::move(labels);
  }

  nlohmann::json source = nlohmann::json::object();
  source["repoURL"] = spec.repo_url();
  if (!spec.target_revision().empty()) source["targetRevision"] = spec.target_revision();
  if (!spec.path().empty()) source["path"] = spec.path();

  nlohmann::json destination = nlohmann::json::object();
  destination["server"] = spec.destination_server().empty() ? std::string(kDefaultDestinationServer)
                                                            : spec.destination_server();
  if (!spec.destination_namespace().empty()) {
    destination["namespace"] = spec.destination_namespace();
  }

  nlohmann::json out_spec = nlohmann::json::object();
  out_spec["project"] = spec.project().empty() ? std::string(kDefaultProject) : spec.project();
  out_spec["source"] = std::move(source);
  out_spec["destination"] = std::move(destination);
  nlohmann::json sync_policy = nlohmann::json::object();
  if (spec.automated()) {
    sync_policy["automated"] = {{"prune", spec.prune()}, {"selfHeal", spec.self_heal()}};
  }
  if (!spec.sync_options().empty()) {
    nlohmann::json options = nlohmann::json::array();
    for (const std::string& option : spec.sync_options()) options.push_back(option);
    sync_policy["syncOptions"] = std::move(options);
  }
  if (!sync_policy.empty()) out_spec["syncPolicy"] = std::move(sync_policy);

  nlohmann::json application = nlohmann::json::object();
  application["apiVersion"] = std::string(kApplicationApiVersion);
  application["kind"] = "Application";
  application["metadata"] = std::move(metadata);
  application["spec"] = std::move(out_spec);
  return application;
}

}  // namespace elfdeploy::kube
