#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/agent_link.pb.h"
#include "elfdeploy/v1/cluster_watcher.pb.h"
#include "elfdeploy/v1/common.pb.h"

// cluster-watcher's state, free of gRPC: what every cluster's agent reported, kept durably in a
// change log so that acknowledged events and Watch resume points survive a watcher restart
// (kill -9 included).
namespace elfdeploy::watcher {

struct ClusterStateOptions {
  // The change log lives here ("changes.log" and its compaction temp files).
  std::string data_dir;
  // Watch resume window: changes kept for replay. Older resume points are OUT_OF_RANGE.
  uint64_t retention = 200000;
  // Recent Events kept per cluster (oldest dropped first).
  size_t max_events_per_cluster = 5000;
  // fsync the log before Apply returns (what makes an ack a promise). Tests may turn it off.
  bool fsync = true;
  std::function<absl::Time()> now = absl::Now;
};

// A Watch subscriber's filter (WatchRequest's fields).
struct WatchFilter {
  std::string cluster;
  std::string namespace_;
  std::string application;
  std::string app;
  std::vector<v1::ObjectKind> kinds;
};

// One Watch subscription: its changes in sequence order. Not thread-safe (one reader).
class Subscription {
 public:
  virtual ~Subscription() = default;
  // The next responses (changes, snapshot items, snapshot_complete, cluster_state), blocking until
  // there is one or `deadline` passes (OK with none). OUT_OF_RANGE when the subscriber fell out of
  // the retention window; CANCELLED after ClusterState::Shutdown.
  virtual absl::Status Next(absl::Time deadline, std::vector<v1::WatchResponse>* out) = 0;
  // The WatchStarted values.
  virtual uint64_t oldest_sequence() const = 0;
  virtual uint64_t latest_sequence() const = 0;
};

// Thread-safe.
class ClusterState {
 public:
  using Options = ClusterStateOptions;

  // Opens (or creates) the log in options.data_dir and rebuilds the state from it. A torn last
  // record (crash mid-write) is dropped. INTERNAL naming the file when it cannot be read.
  static absl::StatusOr<std::unique_ptr<ClusterState>> Open(Options options);
  virtual ~ClusterState() = default;

  // --- The agent link -------------------------------------------------------------------------

  // An agent connected: records the hello (versions, namespaces, peer), marks the cluster
  // connected and returns the last agent sequence stored for (cluster, hello.agent_epoch): 0 for a
  // new epoch. A new epoch starts a new "announced" round: objects not re-announced before the
  // corresponding snapshot_complete are deleted then. INVALID_ARGUMENT for an empty cluster or
  // epoch 0; FAILED_PRECONDITION for an epoch older than the cluster's current one; UNAVAILABLE
  // after Shutdown.
  virtual absl::StatusOr<uint64_t> Connected(const v1::AgentHello& hello,
                                             const std::string& peer) = 0;
  // The connection of (cluster, epoch) ended; `reason` shows in ListClusters.
  virtual void Disconnected(const std::string& cluster, uint64_t epoch,
                            const std::string& reason) = 0;
  // A message (heartbeat included) arrived: updates last_seen_time.
  virtual void Seen(const std::string& cluster) = 0;

  // Stores a batch of events of (cluster, epoch) durably, in order, and applies them to the state:
  // events with a sequence not greater than the last stored one are duplicates (dropped and
  // counted); a snapshot_complete deletes the objects of its kind and namespace that were not
  // announced in this epoch. Returns the highest agent sequence stored: the value to ack.
  // INVALID_ARGUMENT when `epoch` is not the cluster's current epoch (a replaced connection) or
  // sequences go backwards within the batch; UNAVAILABLE after Shutdown.
  // Takes the events: their objects move into the state.
  virtual absl::StatusOr<uint64_t> Apply(const std::string& cluster, uint64_t epoch,
                                         std::vector<v1::AgentEvent> events) = 0;

  // Duplicates dropped since start (metric).
  virtual uint64_t duplicates_dropped() const = 0;
  // The latest watcher sequence assigned (Watch heartbeats); 0 before the first change.
  virtual uint64_t latest_sequence() const = 0;

  // --- Reads ----------------------------------------------------------------------------------

  // Resolves a request's cluster name: "" means the only known cluster (INVALID_ARGUMENT when
  // several, NOT_FOUND when none); an unknown name is NOT_FOUND.
  virtual absl::StatusOr<std::string> ResolveCluster(const std::string& cluster) const = 0;
  virtual absl::StatusOr<v1::ListClustersResponse> ListClusters(
      const v1::ListClustersRequest& request) const = 0;
  virtual absl::StatusOr<v1::Cluster> GetCluster(const std::string& cluster) const = 0;
  virtual absl::StatusOr<v1::GetApplicationResponse> GetApplication(
      const v1::GetApplicationRequest& request) const = 0;
  virtual absl::StatusOr<v1::ListPodsResponse> ListPods(
      const v1::ListPodsRequest& request) const = 0;
  // Every object of the cluster (diagnosis works on a consistent copy).
  struct Snapshot {
    std::vector<v1::Application> applications;
    std::vector<v1::Deployment> deployments;
    std::vector<v1::Pod> pods;
    std::vector<v1::KubernetesEvent> events;  // oldest first
    v1::Cluster cluster;
  };
  virtual absl::StatusOr<Snapshot> GetSnapshot(const std::string& cluster) const = 0;

  // A Watch: from_sequence 0 starts now (with initial_snapshot: the matching objects first, then
  // snapshot_complete); otherwise every matching change after from_sequence is replayed, then
  // live ones. OUT_OF_RANGE when from_sequence is older than the retention window or newer than
  // the latest sequence; INVALID_ARGUMENT for a bad filter.
  virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(const WatchFilter& filter,
                                                                  uint64_t from_sequence,
                                                                  bool initial_snapshot) = 0;

  // Wakes every subscription (they return CANCELLED) and refuses further writes.
  virtual void Shutdown() = 0;
};

// Why a pod is not ready, in the words of `kubectl get pods`' STATUS column: the first waiting
// container's reason (CrashLoopBackOff, ImagePullBackOff, ErrImagePull, ContainerCreating, ...),
// else a terminated container's reason, else the pod's reason or phase ("Pending", "Failed"),
// else "NotReady". Empty for a ready pod and for a pod that completed (Succeeded).
std::string NotReadyReason(const v1::Pod& pod);

// Pods not ready per (namespace, reason).
std::map<std::pair<std::string, std::string>, int> CountNotReady(const std::vector<v1::Pod>& pods);

}  // namespace elfdeploy::watcher
