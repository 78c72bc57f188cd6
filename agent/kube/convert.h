#pragma once

// Conversion of Kubernetes and Argo CD API objects (JSON as the API server returns them) into the
// trimmed elfdeploy.v1 messages the agent streams, and of an ApplicationDefinition into the
// Application manifest the agent applies. gRPC-free and exception-free: missing or wrongly typed
// fields are treated as absent.

#include <string_view>

#include "absl/status/statusor.h"
#include "elfdeploy/v1/common.pb.h"
#include "nlohmann/json.hpp"
#include "simdjson.h"

namespace elfdeploy::kube {

// True for the annotations the watcher uses and the agent therefore keeps:
// argocd.argoproj.io/refresh, deployment.kubernetes.io/revision, kubectl.kubernetes.io/restartedAt
// and every app.kubernetes.io/* key. All others (notably the large
// kubectl.kubernetes.io/last-applied-configuration) are dropped.
bool IsKeptAnnotation(std::string_view key);

// Parses an RFC 3339 timestamp ("2024-01-02T03:04:05Z", fractional seconds and numeric offsets
// allowed). Returns false and leaves `out` untouched when `text` is not one or is outside the
// range of google.protobuf.Timestamp.
bool ParseRfc3339(std::string_view text, google::protobuf::Timestamp* out);

// The object's identity as compact JSON text: apiVersion, kind and metadata's name, namespace,
// uid and resourceVersion, those that are strings. What the agent's informers keep of each object
// to report a deletion found by a relist; runs for every event.
std::string IdentityJson(simdjson::dom::element object);

// Converts `object.metadata`: name, namespace, uid, resourceVersion, generation, all labels, the
// kept annotations (IsKeptAnnotation), ownerReferences (kind, apiVersion, name, uid; namespace left
// empty) and creation/deletion timestamps. INVALID_ARGUMENT when `object` is not a JSON object or
// has no string metadata.name.
absl::StatusOr<v1::ObjectMeta> ToObjectMeta(simdjson::dom::element object);

// Converts an argoproj.io/v1alpha1 Application: spec (source, or the first of spec.sources),
// status.sync, status.health, status.operationState, status.conditions (status unspecified),
// status.resources and status.reconciledAt. Errors as ToObjectMeta.
absl::StatusOr<v1::Application> ToApplication(simdjson::dom::element object);
// The same for an Application held as nlohmann::json (the answers of the agent's requests).
absl::StatusOr<v1::Application> ToApplication(const nlohmann::json& object);

// Converts an apps/v1 Deployment. spec.replicas defaults to 1 and
// spec.progressDeadlineSeconds to 600 when absent. Errors as ToObjectMeta.
absl::StatusOr<v1::Deployment> ToDeployment(simdjson::dom::element object);

// Converts a v1 Pod: spec (nodeName, containers, imagePullSecrets) and status (phase, Ready
// condition, reason, message, podIP, startTime, conditions, init and app container statuses with
// their current and last states). Errors as ToObjectMeta.
absl::StatusOr<v1::Pod> ToPod(simdjson::dom::element object);

// Converts a v1 Event (also accepts the events.k8s.io/v1 field names). count falls back to
// series.count, then 1; first_time to eventTime; last_time to series.lastObservedTime, then
// eventTime; source to reportingComponent / reportingController. Errors as ToObjectMeta.
absl::StatusOr<v1::KubernetesEvent> ToEvent(simdjson::dom::element object);

// Dispatches on `kind` to the converters above. INVALID_ARGUMENT for OBJECT_KIND_UNSPECIFIED or an
// unknown kind, and for the converters' errors.
absl::StatusOr<v1::ClusterObject> ToClusterObject(v1::ObjectKind kind,
                                                  simdjson::dom::element object);

// The argoproj.io/v1alpha1 Application manifest for `definition`, for create or update.
// Defaults: metadata.namespace "argocd", spec.project "default", spec.destination.server
// "https://kubernetes.default.svc". Empty labels, targetRevision and path are omitted;
// spec.syncPolicy holds `automated` {prune, selfHeal} only when automated, and syncOptions only
// when there are any, and is omitted when both are absent.
nlohmann::json ToApplicationJson(const v1::ApplicationDefinition& definition);

}  // namespace elfdeploy::kube
