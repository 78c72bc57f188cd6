#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/common/oci/registry_client.h"
#include "tests/kubesim/store.h"

// kubesim's workload controllers and node: the deployment controller, the replicaset controller,
// the scheduler (one node) and the kubelet with its container runtime, for the objects of an
// ObjectStore. Images are resolved against the real registry (HEAD of the manifest) with the
// credentials of the pods' imagePullSecrets; nothing is pulled or run.
//
// What it does as Kubernetes does:
//   - Deployment -> ReplicaSet "<deployment>-<pod-template-hash>" (hash: fnv32a, rendered with the
//     SafeEncodeString alphabet, as ComputeHash does) -> pods "<replicaset>-<5 random chars>",
//     with ownerReferences, the pod-template-hash label, the deployment.kubernetes.io/revision
//     annotation, scale up and down, cascading deletion (background propagation).
//   - Deployment status: observedGeneration, replicas, updatedReplicas, readyReplicas,
//     availableReplicas, unavailableReplicas (zero values omitted), conditions Available
//     (MinimumReplicasAvailable/Unavailable, maxUnavailable from the strategy, default 25%) and
//     Progressing (NewReplicaSetCreated, ReplicaSetUpdated, NewReplicaSetAvailable, and False
//     ProgressDeadlineExceeded once spec.progressDeadlineSeconds pass without progress).
//   - Pods: Scheduled event, status (phase, conditions Initialized/Ready/ContainersReady/
//     PodScheduled, hostIP, podIP, startTime, qosClass, containerStatuses), Events from the
//     kubelet with the messages kubelet and containerd write (Pulling, Pulled, Failed with
//     ErrImagePull/ImagePullBackOff/InvalidImageName, BackOff, Created, Started), repeated
//     events counted as the event recorder does, image pull and crash-loop back-off doubling
//     from a base up to a cap; imagePullPolicy (IfNotPresent uses an image already "on the
//     node"; Always and :latest ask the registry again); missing pull secrets reported
//     (FailedToRetrieveImagePullSecret). An image counts as present only for pods with the same
//     registry credentials (as with the KubeletEnsureSecretPulledImages feature), so a pod
//     without the pull secret keeps failing next to one that has it.
//
// Simplifications (differences from a real cluster):
//   - One node; pods with an empty spec.nodeName are bound to it, pods bound to another node are
//     ignored (churn pods use that). No resources, affinity, taints, volumes, probes (Ready
//     follows running after ready_delay), init containers, ephemeral containers, graceful
//     termination (deletion is immediate) or restart of the simulator mid-run (pods found at
//     Start are started again).
//   - Rolling update with maxSurge 100%: all pods of the new ReplicaSet are created at once and
//     the old ReplicaSets are scaled to 0 once every new pod is ready; if they never get ready the
//     old pods keep running. Recreate deletes the old pods first. minReadySeconds, paused and
//     collisionCount are ignored; at most revisionHistoryLimit (default 10) old ReplicaSets are
//     kept.
//   - A container "runs" for as long as nothing happens to it; with env ELFDEPLOY_SIM_EXIT_CODE=n
//     it exits with code n after crash_after. The first exit restarts at once, later ones wait in
//     CrashLoopBackOff (crash_backoff doubling up to crash_backoff_max); the back-off is never
//     reset.
//   - The pod-template-hash is computed over the template's JSON, not over Go's dump of the
//     struct: same scheme and alphabet, different values than a real cluster for one template.
//   - imageID is "<registry>/<repository>@<digest the registry answered the HEAD with>" (the
//     index digest for a multi-platform image, as containerd reports it); layers are not checked.
//   - Controllers also emit their own events (ScalingReplicaSet, SuccessfulCreate,
//     SuccessfulDelete, Scheduled). Event names are "<object>.<16 hex>" from the seed, not from
//     the time; events never expire and are never aggregated beyond the count.
//   - Logs: "starting <c> (image X)", "listening on :<port>" per start, "exiting with code n"
//     before each simulated exit; logs of earlier instances are kept in one stream.
//   - agentgateway: pods of a Deployment named "agentgateway" log "Discovered <svc> at
//     http://<svc>.<ns>.svc.cluster.local:<port>" (port: the Service's first port) once per
//     (service, port) for every Service with a selector (other than its own) that selects at
//     least one Ready pod.
namespace elfdeploy::kubesim {

struct KubeletOptions {
  std::string node_name = "kubesim-node";
  // status.hostIP; pods get 10.244.x.y in admission order.
  std::string host_ip = "10.0.0.10";
  // Seeds pod name suffixes, container ids and event names: same seed, same calls, same names.
  uint64_t seed = 1;

  // Image resolved -> running (Created, Started).
  absl::Duration container_start_delay = absl::Seconds(1);
  // Running -> ready (as if a readiness probe passed).
  absl::Duration ready_delay = absl::ZeroDuration();
  // How long a container with ELFDEPLOY_SIM_EXIT_CODE runs before it exits.
  absl::Duration crash_after = absl::Seconds(2);
  // Image pull back-off (kubelet: 10s doubling up to 5m) and how long ErrImagePull shows before
  // ImagePullBackOff.
  absl::Duration image_pull_backoff = absl::Seconds(10);
  absl::Duration image_pull_backoff_max = absl::Minutes(5);
  absl::Duration err_image_pull_hold = absl::Seconds(1);
  // Crash-loop back-off (kubelet: 10s doubling up to 5m).
  absl::Duration crash_backoff = absl::Seconds(10);
  absl::Duration crash_backoff_max = absl::Minutes(5);
  // How long one second of spec.progressDeadlineSeconds lasts (tests: milliseconds).
  absl::Duration progress_deadline_unit = absl::Seconds(1);

  // Registry lookups are cached per (image, credentials) this long, found or not.
  absl::Duration resolve_cache_ttl = absl::Seconds(5);
  // Lookups in flight at once.
  int resolver_threads = 4;
  // Passed to the registry client.
  std::vector<std::string> insecure_registries = {};
  std::string ca_file = {};
  int registry_max_attempts = 2;
  // Makes the registry client for one set of credentials; NewRegistryClient when empty.
  std::function<std::unique_ptr<oci::Registry>(oci::RegistryClientOptions)> registry_factory = {};

  // Timestamps and timers; called from several threads. With an injected clock, call
  // KubeletSim::Wake after moving it; timers are checked at least every max_timer_wait anyway.
  std::function<absl::Time()> now = absl::Now;
  absl::Duration max_timer_wait = absl::Milliseconds(250);
};

// Runs the controllers and the kubelet in its own threads between Start and Stop: one worker
// that owns all state and writes to the store (only on transitions), one watch thread per
// resource (deployments, replicasets, pods, services) and resolver threads for registry lookups.
class KubeletSim {
 public:
  using Options = KubeletOptions;

  struct Stats {
    int64_t pods = 0;               // pods run by this node now
    int64_t deployments = 0;        // Deployments known now
    int64_t registry_requests = 0;  // manifest HEADs sent (cache misses)
    int64_t store_writes = 0;       // creates, updates and deletes done
  };

  // `store` must outlive this object.
  KubeletSim(ObjectStore& store, Options options);
  // Stops.
  ~KubeletSim();
  KubeletSim(const KubeletSim&) = delete;
  KubeletSim& operator=(const KubeletSim&) = delete;

  // Lists what exists (pods on this node are started again, ReplicaSets adopted by their
  // Deployments) and starts the threads. FAILED_PRECONDITION when already started; the store's
  // error when a list fails.
  absl::Status Start();
  // Stops and joins the threads; objects stay as they are. Idempotent.
  void Stop();
  // Makes the worker check its timers now (after moving an injected clock).
  void Wake();

  Stats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace elfdeploy::kubesim
