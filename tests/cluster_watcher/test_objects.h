#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "elfdeploy/v1/agent_link.pb.h"
#include "elfdeploy/v1/common.pb.h"

// Agent events and hellos for cluster-watcher tests.
namespace elfdeploy::watcher::testing {

inline v1::AgentHello Hello(const std::string& cluster, uint64_t epoch) {
  v1::AgentHello hello;
  hello.set_cluster(cluster);
  hello.set_agent_epoch(epoch);
  hello.set_agent_version("test-agent 1.0");
  hello.set_kubernetes_version("v1.29.2");
  hello.set_argocd_namespace("argocd");
  return hello;
}

inline v1::AgentEvent Change(uint64_t sequence, v1::ChangeType type, v1::ClusterObject object) {
  v1::AgentEvent event;
  event.set_sequence(sequence);
  event.mutable_observed_time()->set_seconds(1700000000 + static_cast<int64_t>(sequence));
  event.mutable_change()->set_type(type);
  *event.mutable_change()->mutable_object() = std::move(object);
  return event;
}

inline v1::ClusterObject PodObject(const std::string& ns, const std::string& name,
                                   const std::map<std::string, std::string>& labels = {},
                                   const std::string& replica_set = "",
                                   const std::string& image = "img:1") {
  v1::ClusterObject object;
  v1::Pod* pod = object.mutable_pod();
  pod->mutable_meta()->set_namespace_(ns);
  pod->mutable_meta()->set_name(name);
  for (const auto& [key, value] : labels) (*pod->mutable_meta()->mutable_labels())[key] = value;
  if (!replica_set.empty()) {
    v1::ObjectRef* owner = pod->mutable_meta()->add_owner_references();
    owner->set_kind("ReplicaSet");
    owner->set_name(replica_set);
  }
  pod->add_containers()->set_image(image);
  pod->set_phase(v1::POD_PHASE_RUNNING);
  return object;
}

inline v1::ClusterObject DeploymentObject(const std::string& ns, const std::string& name,
                                          const std::map<std::string, std::string>& selector = {},
                                          int32_t ready = 1) {
  v1::ClusterObject object;
  v1::Deployment* deployment = object.mutable_deployment();
  deployment->mutable_meta()->set_namespace_(ns);
  deployment->mutable_meta()->set_name(name);
  for (const auto& [key, value] : selector) (*deployment->mutable_selector())[key] = value;
  deployment->set_replicas(1);
  deployment->set_ready_replicas(ready);
  return object;
}

// An Application in "argocd" deploying to `destination` and managing `deployments` there.
inline v1::ClusterObject ApplicationObject(const std::string& name, const std::string& destination,
                                           const std::vector<std::string>& deployments,
                                           v1::HealthStatus health = v1::HEALTH_STATUS_HEALTHY) {
  v1::ClusterObject object;
  v1::Application* app = object.mutable_application();
  app->mutable_meta()->set_namespace_("argocd");
  app->mutable_meta()->set_name(name);
  app->mutable_spec()->set_destination_namespace(destination);
  app->set_health_status(health);
  for (const std::string& deployment : deployments) {
    v1::ApplicationResource* resource = app->add_resources();
    resource->set_group("apps");
    resource->set_kind("Deployment");
    resource->set_namespace_(destination);
    resource->set_name(deployment);
  }
  return object;
}

inline v1::ClusterObject EventObject(const std::string& ns, const std::string& name,
                                     const std::string& involved_kind,
                                     const std::string& involved_name,
                                     const std::string& reason = "Started") {
  v1::ClusterObject object;
  v1::KubernetesEvent* event = object.mutable_event();
  event->mutable_meta()->set_namespace_(ns);
  event->mutable_meta()->set_name(name);
  event->mutable_involved_object()->set_kind(involved_kind);
  event->mutable_involved_object()->set_namespace_(ns);
  event->mutable_involved_object()->set_name(involved_name);
  event->set_reason(reason);
  event->set_count(1);
  return object;
}

inline v1::AgentEvent SnapshotComplete(uint64_t sequence, v1::ObjectKind kind,
                                       const std::string& ns = "") {
  v1::AgentEvent event;
  event.set_sequence(sequence);
  event.mutable_snapshot_complete()->set_kind(kind);
  event.mutable_snapshot_complete()->set_namespace_(ns);
  return event;
}

}  // namespace elfdeploy::watcher::testing
