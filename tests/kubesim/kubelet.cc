#include "tests/kubesim/kubelet.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "services/common/log.h"
#include "services/common/oci/credentials.h"
#include "services/common/oci/digest.h"
#include "services/common/oci/reference.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;
using Key = std::pair<std::string, std::string>;  // (namespace, name)

// k8s.io/apimachinery/pkg/util/rand: the alphabet of generated names and SafeEncodeString.
constexpr char kAlphanums[] = "bcdfghjklmnpqrstvwxz2456789";
constexpr size_t kAlphanumsSize = sizeof(kAlphanums) - 1;
constexpr char kHashLabel[] = "pod-template-hash";
constexpr char kRevision[] = "deployment.kubernetes.io/revision";
constexpr char kExitCodeEnv[] = "ELFDEPLOY_SIM_EXIT_CODE";
constexpr char kGateway[] = "agentgateway";
constexpr char kDockerConfigJson[] = "kubernetes.io/dockerconfigjson";
// The controllers take what changed in this interval as one batch (as informers do), rather than
// waking for every change of a busy cluster.
constexpr absl::Duration kWatchBatchInterval = absl::Milliseconds(5);

std::string Timestamp(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

const json& JAt(const json& object, const char* pointer) {
  static const json kNull;
  json::json_pointer p(pointer);
  return object.contains(p) ? object[p] : kNull;
}

std::string JString(const json& object, const char* pointer) {
  const json& value = JAt(object, pointer);
  return value.is_string() ? value.get<std::string>() : "";
}

int64_t JInt(const json& object, const char* pointer, int64_t fallback = 0) {
  const json& value = JAt(object, pointer);
  return value.is_number_integer() ? value.get<int64_t>() : fallback;
}

uint32_t Fnv32a(absl::string_view data) {
  uint32_t hash = 2166136261u;
  for (char c : data) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 16777619u;
  }
  return hash;
}

uint64_t Fnv64a(absl::string_view data) {
  uint64_t hash = 14695981039346656037ull;
  for (char c : data) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// rand.SafeEncodeString.
std::string SafeEncode(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) out.push_back(kAlphanums[static_cast<uint8_t>(c) % kAlphanumsSize]);
  return out;
}

// The pod-template-hash of a template (controller.ComputeHash, with the template's JSON in place
// of Go's object dump).
std::string TemplateHash(const json& pod_template) {
  return SafeEncode(std::to_string(Fnv32a(pod_template.dump())));
}

// `n`-th string of `length` name characters for `base`, from the seed.
std::string RandomName(uint64_t seed, absl::string_view base, uint64_t n, int length) {
  uint64_t bits = SplitMix64(seed ^ Fnv64a(base) ^ SplitMix64(n));
  std::string out;
  for (int i = 0; i < length; ++i) {
    out.push_back(kAlphanums[bits % kAlphanumsSize]);
    bits /= kAlphanumsSize;
  }
  return out;
}

// Go's time.Duration.String for the durations used here ("10s", "5m0s", "1.5s", "250ms").
std::string GoDuration(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return "0s";
  if (d < absl::Seconds(1)) return absl::FormatDuration(d);
  int64_t hours = absl::IDivDuration(d, absl::Hours(1), &d);
  int64_t minutes = absl::IDivDuration(d, absl::Minutes(1), &d);
  std::string seconds = absl::StrFormat("%.9f", absl::ToDoubleSeconds(d));
  while (seconds.back() == '0') seconds.pop_back();
  if (seconds.back() == '.') seconds.pop_back();
  std::string out;
  if (hours > 0) absl::StrAppend(&out, hours, "h");
  if (hours > 0 || minutes > 0) absl::StrAppend(&out, minutes, "m");
  absl::StrAppend(&out, seconds, "s");
  return out;
}

// intstr value ("25%" or 1) of `replicas`, rounded up or down.
int64_t ScaledValue(const json& value, int64_t replicas, bool round_up, int64_t fallback) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (!value.is_string()) return fallback;
  std::string text = value.get<std::string>();
  int64_t percent = 0;
  if (!absl::EndsWith(text, "%") || !absl::SimpleAtoi(text.substr(0, text.size() - 1), &percent)) {
    return fallback;
  }
  int64_t scaled = percent * replicas;
  return round_up ? (scaled + 99) / 100 : scaled / 100;
}

// deploymentutil.MaxUnavailable.
int64_t MaxUnavailable(const json& deployment, int64_t replicas) {
  if (JString(deployment, "/spec/strategy/type") == "Recreate" || replicas == 0) return 0;
  int64_t surge = ScaledValue(JAt(deployment, "/spec/strategy/rollingUpdate/maxSurge"), replicas,
                              true, (25 * replicas + 99) / 100);
  int64_t unavailable = ScaledValue(JAt(deployment, "/spec/strategy/rollingUpdate/maxUnavailable"),
                                    replicas, false, 25 * replicas / 100);
  if (surge == 0 && unavailable == 0) unavailable = 1;
  return std::min(unavailable, replicas);
}

bool SelectorMatches(const std::map<std::string, std::string>& selector, const json& labels) {
  if (selector.empty() || !labels.is_object()) return false;
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || !it->is_string() || it->get<std::string>() != value) return false;
  }
  return true;
}

// What containerd answers the kubelet when a pull fails, as kubelet shows it.
std::string PullError(const absl::Status& status, const oci::ImageReference& ref) {
  std::string full = ref.ToString();
  std::string prefix = absl::StrCat("failed to pull and unpack image \"", full,
                                    "\": failed to resolve reference \"", full, "\": ");
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return absl::StrCat("rpc error: code = NotFound desc = ", prefix, full, ": not found");
    case absl::StatusCode::kUnauthenticated:
      return absl::StrCat("rpc error: code = Unknown desc = ", prefix, "pulling from host ",
                          ref.domain, " failed with status code [manifests ", ref.Reference(),
                          "]: 401 Unauthorized");
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("rpc error: code = Unknown desc = ", prefix, "pulling from host ",
                          ref.domain, " failed with status code [manifests ", ref.Reference(),
                          "]: 403 Forbidden");
    default:
      return absl::StrCat("rpc error: code = Unknown desc = ", prefix, status.message());
  }
}

}  // namespace

class KubeletSim::Impl {
 public:
  Impl(ObjectStore& store, Options options) : store_(store), options_(std::move(options)) {}
  ~Impl() { Stop(); }

  absl::Status Start();
  void Stop();
  void Wake() {
    absl::MutexLock lock(&mu_);
    woken_ = true;
    wake_.Signal();
  }
  Stats stats() const {
    Stats stats;
    stats.pods = pod_count_.load();
    stats.deployments = deployment_count_.load();
    stats.registry_requests = registry_requests_.load();
    stats.store_writes = store_writes_.load();
    return stats;
  }

 private:
  struct Resolution {
    absl::Status status;
    std::string image_id;
    absl::Time at;
  };
  struct Message {
    enum class Kind { kEvent, kResync, kResolved } kind = Kind::kEvent;
    std::string resource;
    EventType type = EventType::kAdded;
    ObjectPtr object;
    std::vector<ObjectPtr> objects;
    std::string cache_key;
    std::shared_ptr<const Resolution> resolution;
  };
  struct ResolveJob {
    std::string cache_key;
    std::string client_key;
    oci::ImageReference ref;
    std::optional<oci::RegistryCredential> credential;
  };
  struct Waiter {
    Key pod;
    std::string uid;
    size_t index;
    uint64_t epoch;
  };
  struct EventRecord {
    std::string name;
    int64_t count = 0;
  };
  struct Container {
    std::string name;
    std::string image;
    std::string pull_policy;
    int64_t port = 0;
    std::optional<int> exit_code;
    std::optional<oci::ImageReference> ref;
    enum class State { kWaiting, kRunning, kTerminated } state = State::kWaiting;
    std::string reason = "ContainerCreating";
    std::string message;
    std::string image_id;
    std::string container_id;
    bool ready = false;
    bool started = false;
    bool ever_started = false;
    int restart_count = 0;
    int pull_failures = 0;
    int exits = 0;
    absl::Time started_at;
    absl::Time pull_started;
    std::string cache_key;  // of the pull in progress
    json last_terminated;   // lastState.terminated, or null
    json terminated;        // state.terminated while kTerminated
    // Bumped on every transition; timers and lookups started before it are stale.
    uint64_t epoch = 0;
  };
  struct Pod {
    Key key;
    std::string uid;
    json labels;
    std::string rs_uid;
    bool gateway = false;
    std::string restart_policy = "Always";
    std::vector<std::string> pull_secrets;
    std::vector<Container> containers;
    std::string pod_ip;
    absl::Time start_time;
    uint64_t seq = 0;
    bool ready = false;
    absl::Time ready_transition;
    std::set<std::string> discovered;
  };
  struct ReplicaSet {
    std::string name;
    std::string uid;
    std::string hash;
    Key deployment;
    int64_t replicas = 0;
    int64_t revision = 0;
    uint64_t next_suffix = 0;
    json pod_template;
    json written;  // the last status and spec written
  };
  struct Condition {
    std::string status;
    std::string reason;
    std::string message;
    absl::Time update;
    absl::Time transition;
  };
  struct Deployment {
    Key key;
    std::string uid;
    int64_t observed = -1;
    std::map<std::string, std::unique_ptr<ReplicaSet>> sets;  // by pod-template-hash
    std::optional<Condition> available;
    std::optional<Condition> progressing;
    int64_t replicas = 0, updated = 0, ready = 0, available_count = 0;
    json written;
    absl::Time deadline_timer = absl::InfinitePast();
  };
  struct Service {
    Key key;
    std::map<std::string, std::string> selector;
    int64_t port = 0;
  };
  struct Timer {
    absl::Time at;
    uint64_t seq;
    std::function<void()> run;
    bool operator>(const Timer& other) const {
      return at != other.at ? at > other.at : seq > other.seq;
    }
  };
  struct Involved {
    std::string api_version;
    std::string kind;
    Key key;
    std::string uid;
    std::string field_path;
    std::string component;
  };

  absl::Time Now() const { return options_.now(); }
  bool Stopping() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }
  void Post(std::vector<Message> messages);
  void WatchLoop(const std::string& resource, uint64_t resource_version);
  void WorkLoop();
  void ResolveLoop();
  Resolution Resolve(const ResolveJob& job);

  void Handle(const Message& message);
  void HandlePod(EventType type, const ObjectPtr& object);
  void HandleDeployment(EventType type, const ObjectPtr& object);
  void HandleReplicaSet(EventType type, const ObjectPtr& object);
  void HandleService(EventType type, const ObjectPtr& object);
  void Resync(const std::string& resource, const std::vector<ObjectPtr>& objects);
  void After(absl::Duration delay, std::function<void()> run);
  // Runs `run` on the container after `delay` unless it moved on (epoch) or the pod is gone.
  void AfterForContainer(absl::Duration delay, const Pod& pod, size_t index,
                         std::function<void(Pod&, size_t)> run);
  void RunDueTimers();

  void SyncDeployment(const Key& key);
  void DeleteDeployment(const Key& key);
  void AdoptReplicaSet(Deployment& d, const json& object);
  ReplicaSet* CreateReplicaSet(Deployment& d, const json& deployment, const std::string& hash,
                               int64_t replicas, int64_t revision);
  void ScaleReplicaSet(Deployment& d, ReplicaSet& rs, int64_t replicas);
  void CreatePod(ReplicaSet& rs);
  void WriteReplicaSet(ReplicaSet& rs);
  void DeleteReplicaSet(ReplicaSet& rs);
  void DeletePod(const Key& key, bool write);
  int64_t PodsOf(const ReplicaSet& rs) const;
  int64_t ReadyPods(const ReplicaSet& rs) const;
  void MarkOwnerDirty(const std::string& rs_uid);
  void WriteDeploymentStatus(Deployment& d, const json& object, const ReplicaSet& current,
                             bool created_new);

  void Admit(const json& object);
  void PullImage(Pod& pod, size_t index, bool restart);
  void ApplyResolution(Pod& pod, size_t index, const Resolution& resolution, bool restart);
  void StartContainer(Pod& pod, size_t index);
  void ExitContainer(Pod& pod, size_t index);
  void SetReady(Pod& pod, size_t index, bool ready);
  void WritePodStatus(Pod& pod);
  json PodStatus(const Pod& pod) const;
  std::optional<oci::RegistryCredential> PullCredential(Pod& pod, const oci::ImageReference& ref);

  void PodReadyChanged(Pod& pod);
  void GatewayStarted(Pod& pod);
  // `ready_pod`, when given, is a ready pod the service selects.
  void Discover(const Service& service, const Pod* ready_pod = nullptr);
  bool Discoverable(const Service& service, const Pod* ready_pod = nullptr) const;
  void Announce(Pod& gateway, const Service& service);

  void RecordEvent(const Involved& object, const std::string& type, const std::string& reason,
                   const std::string& message);
  void RecordPodEvent(const Pod& pod, int container, const std::string& type,
                      const std::string& reason, const std::string& message);
  void RecordDeploymentEvent(const Deployment& d, const std::string& reason,
                             const std::string& message);
  void RecordReplicaSetEvent(const ReplicaSet& rs, const std::string& reason,
                             const std::string& message);
  void Count(const absl::Status& status, absl::string_view what, const Key& key);

  ObjectStore& store_;
  const Options options_;

  absl::Mutex mu_;
  absl::CondVar wake_;
  std::deque<Message> inbox_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ = false;
  std::vector<std::thread> threads_;

  absl::Mutex resolve_mu_;
  absl::CondVar resolve_cv_;
  std::deque<ResolveJob> jobs_ ABSL_GUARDED_BY(resolve_mu_);
  bool resolve_stopping_ ABSL_GUARDED_BY(resolve_mu_) = false;
  std::map<std::string, std::shared_ptr<oci::Registry>> clients_ ABSL_GUARDED_BY(resolve_mu_);

  std::atomic<int64_t> registry_requests_{0};
  std::atomic<int64_t> store_writes_{0};
  std::atomic<int64_t> pod_count_{0};
  std::atomic<int64_t> deployment_count_{0};

  // Everything below belongs to the worker thread.
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t timer_seq_ = 0;
  std::map<Key, std::unique_ptr<Pod>> pods_;
  uint64_t pod_seq_ = 0;
  std::map<std::string, std::set<Key>> rs_pods_;  // replicaset uid -> pods
  std::map<Key, std::unique_ptr<Deployment>> deployments_;
  std::map<std::string, Key> rs_owner_;  // replicaset uid -> deployment
  // ReplicaSets found at Start, by the uid of their Deployment, adopted on its first sync.
  std::map<std::string, std::vector<ObjectPtr>> orphan_sets_;
  std::set<Key> dirty_;
  std::map<Key, Service> services_;
  std::map<std::string, std::set<Key>> ready_pods_;  // namespace -> ready pods
  std::set<Key> gateways_;                           // agentgateway pods that have started
  std::map<std::string, std::shared_ptr<const Resolution>> resolutions_;
  std::map<std::string, std::vector<Waiter>> waiting_;
  // (image, credentials) -> imageID: images "on the node".
  std::map<std::string, std::string> present_;
  std::map<std::string, std::map<std::string, EventRecord>> events_;  // uid -> key -> record
  std::map<std::string, uint64_t> event_counters_;                    // uid -> events named
};

// ---------------------------------------------------------------------------------------------
// Threads.

absl::Status KubeletSim::Impl::Start() {
  if (started_) return absl::FailedPreconditionError("the kubelet is already started");
  // ReplicaSets first (adopted by their Deployments), then services and pods so that the first
  // Deployment syncs see the pods that exist.
  absl::StatusOr<ListResult> sets = store_.List("replicasets", {});
  if (!sets.ok()) return sets.status();
  for (const ObjectPtr& rs : sets->items) {
    const json& owners = JAt(*rs, "/metadata/ownerReferences");
    if (!owners.is_array()) continue;
    for (const json& owner : owners) {
      if (owner.value("kind", "") == "Deployment" && owner.value("controller", false)) {
        orphan_sets_[owner.value("uid", "")].push_back(rs);
      }
    }
  }
  std::vector<std::pair<std::string, uint64_t>> watches = {{"replicasets", sets->resource_version}};
  std::vector<Message> initial;
  for (const char* resource : {"services", "pods", "deployments"}) {
    absl::StatusOr<ListResult> list = store_.List(resource, {});
    if (!list.ok()) return list.status();
    Message message;
    message.kind = Message::Kind::kResync;
    message.resource = resource;
    message.objects = std::move(list->items);
    initial.push_back(std::move(message));
    watches.emplace_back(resource, list->resource_version);
  }
  started_ = true;
  Post(std::move(initial));
  threads_.emplace_back([this] { WorkLoop(); });
  for (const auto& [resource, rv] : watches) {
    threads_.emplace_back([this, resource = resource, rv = rv] { WatchLoop(resource, rv); });
  }
  for (int i = 0; i < std::max(1, options_.resolver_threads); ++i) {
    threads_.emplace_back([this] { ResolveLoop(); });
  }
  return absl::OkStatus();
}

void KubeletSim::Impl::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  {
    absl::MutexLock lock(&resolve_mu_);
    resolve_stopping_ = true;
    resolve_cv_.SignalAll();
  }
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

void KubeletSim::Impl::Post(std::vector<Message> messages) {
  if (messages.empty()) return;
  absl::MutexLock lock(&mu_);
  for (Message& message : messages) inbox_.push_back(std::move(message));
  wake_.Signal();
}

void KubeletSim::Impl::WatchLoop(const std::string& resource, uint64_t resource_version) {
  std::string from = std::to_string(resource_version);
  while (!Stopping()) {
    WatchOptions watch_options;
    watch_options.resource_version = from;
    absl::StatusOr<std::unique_ptr<Watcher>> watcher = store_.Watch(resource, watch_options);
    absl::Status status = watcher.status();
    std::vector<WatchEvent> events;
    while (status.ok() && !Stopping()) {
      status = (*watcher)->Next(absl::Now() + absl::Milliseconds(200), &events);
      if (!status.ok()) break;
      std::vector<Message> messages;
      for (WatchEvent& event : events) {
        if (resource == "pods") {
          // Another node's pod is never this kubelet's (nodeName does not change once set).
          std::string node = JString(*event.object, "/spec/nodeName");
          if (!node.empty() && node != options_.node_name) continue;
        }
        Message message;
        message.resource = resource;
        message.type = event.type;
        message.object = std::move(event.object);
        messages.push_back(std::move(message));
      }
      from = std::to_string((*watcher)->resource_version());
      if (!messages.empty()) Post(std::move(messages));
      if (!events.empty()) absl::SleepFor(kWatchBatchInterval);
    }
    if (absl::IsCancelled(status)) return;
    if (absl::IsOutOfRange(status)) {
      // Fell behind the history window: relist, as an informer does.
      absl::StatusOr<ListResult> list = store_.List(resource, {});
      if (list.ok()) {
        Message message;
        message.kind = Message::Kind::kResync;
        message.resource = resource;
        message.objects = std::move(list->items);
        from = std::to_string(list->resource_version);
        Post({std::move(message)});
        continue;
      }
      status = list.status();
      if (absl::IsCancelled(status)) return;
    }
    if (!status.ok()) {
      log::Warning("kubelet watch failed", {{"resource", resource}, {"error", status}});
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
}

void KubeletSim::Impl::WorkLoop() {
  while (true) {
    std::deque<Message> batch;
    {
      absl::MutexLock lock(&mu_);
      absl::Duration wait = options_.max_timer_wait;
      if (!timers_.empty()) wait = std::min(wait, timers_.top().at - Now());
      if (!dirty_.empty()) wait = absl::ZeroDuration();
      if (inbox_.empty() && !stopping_ && !woken_ && wait > absl::ZeroDuration()) {
        wake_.WaitWithTimeout(&mu_, wait);
      }
      if (stopping_) return;
      woken_ = false;
      batch.swap(inbox_);
    }
    for (const Message& message : batch) Handle(message);
    RunDueTimers();
    std::set<Key> dirty;
    dirty.swap(dirty_);
    for (const Key& key : dirty) SyncDeployment(key);
  }
}

void KubeletSim::Impl::ResolveLoop() {
  while (true) {
    ResolveJob job;
    {
      absl::MutexLock lock(&resolve_mu_);
      while (jobs_.empty() && !resolve_stopping_) resolve_cv_.Wait(&resolve_mu_);
      if (resolve_stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    auto resolution = std::make_shared<Resolution>(Resolve(job));
    Message message;
    message.kind = Message::Kind::kResolved;
    message.cache_key = job.cache_key;
    message.resolution = std::move(resolution);
    Post({std::move(message)});
  }
}

KubeletSim::Impl::Resolution KubeletSim::Impl::Resolve(const ResolveJob& job) {
  std::shared_ptr<oci::Registry> client;
  {
    absl::MutexLock lock(&resolve_mu_);
    std::shared_ptr<oci::Registry>& slot = clients_[job.client_key];
    if (slot == nullptr) {
      oci::RegistryClientOptions client_options;
      if (job.credential.has_value())
        client_options.credentials.Set(job.ref.domain, *job.credential);
      client_options.insecure_registries = options_.insecure_registries;
      client_options.ca_file = options_.ca_file;
      client_options.max_attempts = std::max(1, options_.registry_max_attempts);
      client_options.initial_backoff = absl::Milliseconds(200);
      client_options.max_backoff = absl::Seconds(1);
      slot = options_.registry_factory ? options_.registry_factory(std::move(client_options))
                                       : oci::NewRegistryClient(std::move(client_options));
    }
    client = slot;
  }
  ++registry_requests_;
  absl::StatusOr<oci::Descriptor> head = client->HeadManifest(job.ref);
  Resolution resolution;
  resolution.at = Now();
  if (head.ok()) {
    resolution.image_id = absl::StrCat(job.ref.Name(), "@", head->digest.ToString());
  } else {
    resolution.status = head.status();
  }
  return resolution;
}

void KubeletSim::Impl::After(absl::Duration delay, std::function<void()> run) {
  timers_.push(Timer{Now() + std::max(delay, absl::ZeroDuration()), timer_seq_++, std::move(run)});
}

void KubeletSim::Impl::AfterForContainer(absl::Duration delay, const Pod& pod, size_t index,
                                         std::function<void(Pod&, size_t)> run) {
  After(delay, [this, key = pod.key, uid = pod.uid, index, epoch = pod.containers[index].epoch,
                run = std::move(run)] {
    auto it = pods_.find(key);
    if (it == pods_.end() || it->second->uid != uid) return;
    if (it->second->containers[index].epoch != epoch) return;
    run(*it->second, index);
  });
}

void KubeletSim::Impl::RunDueTimers() {
  absl::Time now = Now();
  while (!timers_.empty() && timers_.top().at <= now) {
    std::function<void()> run = timers_.top().run;
    timers_.pop();
    run();
  }
}

// ---------------------------------------------------------------------------------------------
// Watch events.

void KubeletSim::Impl::Handle(const Message& message) {
  switch (message.kind) {
    case Message::Kind::kResync:
      Resync(message.resource, message.objects);
      return;
    case Message::Kind::kResolved: {
      resolutions_[message.cache_key] = message.resolution;
      auto it = waiting_.find(message.cache_key);
      if (it == waiting_.end()) return;
      std::vector<Waiter> waiters = std::move(it->second);
      waiting_.erase(it);
      for (const Waiter& waiter : waiters) {
        auto pod = pods_.find(waiter.pod);
        if (pod == pods_.end() || pod->second->uid != waiter.uid) continue;
        if (pod->second->containers[waiter.index].epoch != waiter.epoch) continue;
        ApplyResolution(*pod->second, waiter.index, *message.resolution, false);
      }
      return;
    }
    case Message::Kind::kEvent:
      if (message.resource == "pods") {
        HandlePod(message.type, message.object);
      } else if (message.resource == "deployments") {
        HandleDeployment(message.type, message.object);
      } else if (message.resource == "replicasets") {
        HandleReplicaSet(message.type, message.object);
      } else if (message.resource == "services") {
        HandleService(message.type, message.object);
      }
      return;
  }
}

void KubeletSim::Impl::Resync(const std::string& resource, const std::vector<ObjectPtr>& objects) {
  std::set<Key> listed;
  for (const ObjectPtr& object : objects) {
    listed.emplace(JString(*object, "/metadata/namespace"), JString(*object, "/metadata/name"));
  }
  if (resource == "pods") {
    std::vector<Key> gone;
    for (const auto& [key, pod] : pods_) {
      if (!listed.contains(key)) gone.push_back(key);
    }
    for (const Key& key : gone) {
      std::string rs_uid = pods_[key]->rs_uid;
      DeletePod(key, false);
      MarkOwnerDirty(rs_uid);
    }
    for (const ObjectPtr& object : objects) HandlePod(EventType::kAdded, object);
  } else if (resource == "deployments") {
    std::vector<Key> gone;
    for (const auto& [key, d] : deployments_) {
      if (!listed.contains(key)) gone.push_back(key);
    }
    for (const Key& key : gone) DeleteDeployment(key);
    for (const ObjectPtr& object : objects) HandleDeployment(EventType::kAdded, object);
  } else if (resource == "services") {
    services_.clear();
    for (const ObjectPtr& object : objects) HandleService(EventType::kAdded, object);
  }
  // replicasets: a relist changes nothing; deletions are noticed on the next Deployment sync.
}

void KubeletSim::Impl::HandlePod(EventType type, const ObjectPtr& object) {
  Key key(JString(*object, "/metadata/namespace"), JString(*object, "/metadata/name"));
  std::string uid = JString(*object, "/metadata/uid");
  auto it = pods_.find(key);
  if (it == pods_.end() && type != EventType::kDeleted) {
    std::string node = JString(*object, "/spec/nodeName");
    if (!node.empty() && node != options_.node_name) return;  // another node's pod (churn)
  }
  if (type == EventType::kDeleted) {
    if (it == pods_.end() || it->second->uid != uid) return;
    std::string rs_uid = it->second->rs_uid;
    DeletePod(key, false);
    MarkOwnerDirty(rs_uid);
    return;
  }
  if (it != pods_.end()) {
    if (it->second->uid == uid) return;  // our own writes, or changes we do not act on
    std::string rs_uid = it->second->rs_uid;
    DeletePod(key, false);  // replaced by a new pod with the same name
    MarkOwnerDirty(rs_uid);
  }
  // Act on the pod as it is now (the event may be older than our own deletion of it).
  absl::StatusOr<ObjectPtr> current = store_.Get("pods", key.first, key.second);
  if (!current.ok() || JString(**current, "/metadata/uid") != uid) return;
  std::string node = JString(**current, "/spec/nodeName");
  if (!node.empty() && node != options_.node_name) return;
  if (JString(**current, "/status/phase") == "Succeeded" ||
      JString(**current, "/status/phase") == "Failed") {
    return;
  }
  ObjectPtr pod = *current;
  if (node.empty()) {
    // The scheduler's binding.
    absl::StatusOr<ObjectPtr> bound =
        store_.Mutate("pods", key.first, key.second, [&](json& o) -> absl::Status {
          if (JString(o, "/metadata/uid") != uid) return absl::NotFoundError("replaced");
          o["spec"]["nodeName"] = options_.node_name;
          return absl::OkStatus();
        });
    Count(bound.status(), "bind pod", key);
    if (!bound.ok()) return;
    pod = *bound;
    RecordEvent({"v1", "Pod", key, uid, "", "default-scheduler"}, "Normal", "Scheduled",
                absl::StrCat("Successfully assigned ", key.first, "/", key.second, " to ",
                             options_.node_name));
  }
  Admit(*pod);
}

void KubeletSim::Impl::HandleDeployment(EventType type, const ObjectPtr& object) {
  Key key(JString(*object, "/metadata/namespace"), JString(*object, "/metadata/name"));
  std::string uid = JString(*object, "/metadata/uid");
  auto it = deployments_.find(key);
  if (type == EventType::kDeleted) {
    if (it != deployments_.end() && it->second->uid == uid) DeleteDeployment(key);
    return;
  }
  if (it != deployments_.end() && it->second->uid == uid) {
    int64_t generation = JInt(*object, "/metadata/generation", 1);
    // Our own status writes come back here: nothing to do when nothing we own changed.
    if (generation == it->second->observed &&
        JInt(*object, "/status/observedGeneration", -1) == generation) {
      return;
    }
  }
  dirty_.insert(key);
}

void KubeletSim::Impl::HandleReplicaSet(EventType type, const ObjectPtr& object) {
  if (type != EventType::kDeleted) return;
  std::string uid = JString(*object, "/metadata/uid");
  auto owner = rs_owner_.find(uid);
  if (owner == rs_owner_.end()) return;
  Key deployment_key = owner->second;
  auto d = deployments_.find(deployment_key);
  if (d == deployments_.end()) return;
  for (auto it = d->second->sets.begin(); it != d->second->sets.end(); ++it) {
    if (it->second->uid != uid) continue;
    // Deleted by someone else: the garbage collector deletes its pods, the Deployment makes a
    // new one.
    std::set<Key> members = rs_pods_[uid];
    for (const Key& pod : members) DeletePod(pod, true);
    rs_pods_.erase(uid);
    rs_owner_.erase(uid);
    d->second->sets.erase(it);
    break;
  }
  dirty_.insert(deployment_key);
}

void KubeletSim::Impl::HandleService(EventType type, const ObjectPtr& object) {
  Key key(JString(*object, "/metadata/namespace"), JString(*object, "/metadata/name"));
  if (type == EventType::kDeleted) {
    services_.erase(key);
    return;
  }
  Service service;
  service.key = key;
  const json& selector = JAt(*object, "/spec/selector");
  if (selector.is_object()) {
    for (const auto& [label, value] : selector.items()) {
      if (value.is_string()) service.selector[label] = value.get<std::string>();
    }
  }
  const json& ports = JAt(*object, "/spec/ports");
  if (ports.is_array() && !ports.empty()) service.port = ports[0].value("port", int64_t{0});
  services_[key] = service;
  Discover(services_[key]);
}

// ---------------------------------------------------------------------------------------------
// Deployment and ReplicaSet controllers.

void KubeletSim::Impl::SyncDeployment(const Key& key) {
  absl::StatusOr<ObjectPtr> got = store_.Get("deployments", key.first, key.second);
  if (!got.ok()) {
    if (absl::IsNotFound(got.status())) DeleteDeployment(key);
    return;
  }
  const json& object = **got;
  std::string uid = JString(object, "/metadata/uid");
  auto it = deployments_.find(key);
  if (it != deployments_.end() && it->second->uid != uid) {
    DeleteDeployment(key);
    it = deployments_.end();
  }
  if (it == deployments_.end()) {
    auto fresh = std::make_unique<Deployment>();
    fresh->key = key;
    fresh->uid = uid;
    it = deployments_.emplace(key, std::move(fresh)).first;
    ++deployment_count_;
    auto orphans = orphan_sets_.find(uid);
    if (orphans != orphan_sets_.end()) {
      for (const ObjectPtr& rs : orphans->second) AdoptReplicaSet(*it->second, *rs);
      orphan_sets_.erase(orphans);
    }
  }
  Deployment& d = *it->second;
  int64_t replicas = std::max<int64_t>(0, JInt(object, "/spec/replicas", 1));
  bool recreate = JString(object, "/spec/strategy/type") == "Recreate";
  std::string hash = TemplateHash(JAt(object, "/spec/template"));
  int64_t max_revision = 0;
  for (const auto& [h, rs] : d.sets) max_revision = std::max(max_revision, rs->revision);

  auto current_it = d.sets.find(hash);
  ReplicaSet* current = current_it == d.sets.end() ? nullptr : current_it->second.get();
  bool created_new = false;
  if (current == nullptr) {
    if (recreate) {
      for (auto& [h, rs] : d.sets) ScaleReplicaSet(d, *rs, 0);
    }
    current = CreateReplicaSet(d, object, hash, replicas, max_revision + 1);
    if (current == nullptr) {
      After(absl::Seconds(1), [this, key] { dirty_.insert(key); });
      return;
    }
    created_new = true;
  } else if (current->revision < max_revision) {
    current->revision = max_revision + 1;  // back to an older template: a rollback
  }
  ScaleReplicaSet(d, *current, replicas);
  bool new_ready = ReadyPods(*current) >= replicas && PodsOf(*current) == replicas;
  std::vector<ReplicaSet*> old_sets;
  for (auto& [h, rs] : d.sets) {
    if (rs.get() == current) continue;
    old_sets.push_back(rs.get());
    // RollingUpdate with maxSurge 100%: the old pods go once every new one is ready.
    ScaleReplicaSet(d, *rs, new_ready || recreate ? 0 : rs->replicas);
  }
  // revisionHistoryLimit: the oldest scaled-down ReplicaSets beyond it are deleted.
  int64_t limit = JInt(object, "/spec/revisionHistoryLimit", 10);
  std::sort(old_sets.begin(), old_sets.end(),
            [](const ReplicaSet* a, const ReplicaSet* b) { return a->revision < b->revision; });
  int64_t excess = static_cast<int64_t>(old_sets.size()) - limit;
  for (ReplicaSet* rs : old_sets) {
    if (excess <= 0) break;
    if (rs->replicas != 0 || PodsOf(*rs) != 0) continue;
    --excess;
    std::string rs_hash = rs->hash;
    DeleteReplicaSet(*rs);
    d.sets.erase(rs_hash);
  }
  WriteDeploymentStatus(d, object, *current, created_new);
}

void KubeletSim::Impl::WriteDeploymentStatus(Deployment& d, const json& object,
                                             const ReplicaSet& current, bool created_new) {
  absl::Time now = Now();
  int64_t generation = JInt(object, "/metadata/generation", 1);
  int64_t replicas = std::max<int64_t>(0, JInt(object, "/spec/replicas", 1));
  int64_t total = 0, ready = 0;
  for (const auto& [h, rs] : d.sets) {
    total += PodsOf(*rs);
    ready += ReadyPods(*rs);
  }
  int64_t updated = PodsOf(current);
  int64_t available = ready;  // minReadySeconds is not simulated
  bool progressed = updated > d.updated || (total - updated) < (d.replicas - d.updated) ||
                    ready > d.ready || available > d.available_count;
  d.replicas = total;
  d.updated = updated;
  d.ready = ready;
  d.available_count = available;

  auto set_condition = [&](std::optional<Condition>& condition, const std::string& status,
                           const std::string& reason, const std::string& message, bool touch) {
    if (condition.has_value() && condition->status == status && condition->reason == reason &&
        !touch) {
      return;
    }
    absl::Time transition =
        condition.has_value() && condition->status == status ? condition->transition : now;
    condition = Condition{status, reason, message, now, transition};
  };
  if (available >= replicas - MaxUnavailable(object, replicas)) {
    set_condition(d.available, "True", "MinimumReplicasAvailable",
                  "Deployment has minimum availability.", false);
  } else {
    set_condition(d.available, "False", "MinimumReplicasUnavailable",
                  "Deployment does not have minimum availability.", false);
  }
  bool complete = updated == replicas && total == replicas && available == replicas;
  absl::Duration deadline =
      options_.progress_deadline_unit * JInt(object, "/spec/progressDeadlineSeconds", 600);
  std::string rs_quoted = absl::StrCat("ReplicaSet \"", current.name, "\"");
  if (created_new) {
    set_condition(d.progressing, "True", "NewReplicaSetCreated",
                  absl::StrCat("Created new replica set \"", current.name, "\""), true);
  } else if (complete) {
    set_condition(d.progressing, "True", "NewReplicaSetAvailable",
                  absl::StrCat(rs_quoted, " has successfully progressed."), false);
  } else if (progressed || !d.progressing.has_value()) {
    set_condition(d.progressing, "True", "ReplicaSetUpdated",
                  absl::StrCat(rs_quoted, " is progressing."), true);
  } else if (d.progressing->status == "True" && now >= d.progressing->update + deadline) {
    set_condition(d.progressing, "False", "ProgressDeadlineExceeded",
                  absl::StrCat(rs_quoted, " has timed out progressing."), false);
  }
  if (!complete && d.progressing->status == "True") {
    absl::Time due = d.progressing->update + deadline;
    if (due != d.deadline_timer) {
      d.deadline_timer = due;
      After(due - now + absl::Milliseconds(1), [this, key = d.key] { dirty_.insert(key); });
    }
  }

  json status = json::object();
  status["observedGeneration"] = generation;
  auto put = [&status](const char* field, int64_t value) {
    if (value != 0) status[field] = value;
  };
  put("replicas", total);
  put("updatedReplicas", updated);
  put("readyReplicas", ready);
  put("availableReplicas", available);
  put("unavailableReplicas", std::max<int64_t>(0, replicas - available));
  json conditions = json::array();
  for (const auto* entry : {&d.available, &d.progressing}) {
    const std::optional<Condition>& c = *entry;
    conditions.push_back({{"type", entry == &d.available ? "Available" : "Progressing"},
                          {"status", c->status},
                          {"lastUpdateTime", Timestamp(c->update)},
                          {"lastTransitionTime", Timestamp(c->transition)},
                          {"reason", c->reason},
                          {"message", c->message}});
  }
  status["conditions"] = std::move(conditions);
  d.observed = generation;
  json written = {{"status", status}, {"revision", std::to_string(current.revision)}};
  if (written == d.written) return;
  std::string uid = d.uid;
  absl::StatusOr<ObjectPtr> result =
      store_.Mutate("deployments", d.key.first, d.key.second, [&](json& o) -> absl::Status {
        if (JString(o, "/metadata/uid") != uid) return absl::NotFoundError("replaced");
        o["metadata"]["annotations"][kRevision] = std::to_string(current.revision);
        o["status"] = status;
        return absl::OkStatus();
      });
  Count(result.status(), "write deployment status", d.key);
  if (result.ok()) d.written = std::move(written);
}

void KubeletSim::Impl::AdoptReplicaSet(Deployment& d, const json& object) {
  auto rs = std::make_unique<ReplicaSet>();
  rs->name = JString(object, "/metadata/name");
  rs->uid = JString(object, "/metadata/uid");
  rs->hash = JString(object, "/metadata/labels/pod-template-hash");
  rs->deployment = d.key;
  rs->replicas = JInt(object, "/spec/replicas", 0);
  int64_t revision = 0;
  absl::SimpleAtoi(JString(object, "/metadata/annotations/deployment.kubernetes.io~1revision"),
                   &revision);
  rs->revision = revision;
  rs->pod_template = JAt(object, "/spec/template");
  if (rs->hash.empty() || d.sets.contains(rs->hash)) return;
  rs_owner_[rs->uid] = d.key;
  d.sets[rs->hash] = std::move(rs);
}

KubeletSim::Impl::ReplicaSet* KubeletSim::Impl::CreateReplicaSet(Deployment& d,
                                                                 const json& deployment,
                                                                 const std::string& hash,
                                                                 int64_t replicas,
                                                                 int64_t revision) {
  std::string name = absl::StrCat(d.key.second, "-", hash);
  json pod_template = JAt(deployment, "/spec/template");
  if (!pod_template.is_object()) pod_template = json::object();
  pod_template["metadata"]["labels"][kHashLabel] = hash;
  json selector = JAt(deployment, "/spec/selector");
  if (!selector.is_object()) selector = json::object();
  selector["matchLabels"][kHashLabel] = hash;
  int64_t surge = ScaledValue(JAt(deployment, "/spec/strategy/rollingUpdate/maxSurge"), replicas,
                              true, (25 * replicas + 99) / 100);
  json rs = {{"apiVersion", "apps/v1"},
             {"kind", "ReplicaSet"},
             {"metadata",
              {{"name", name},
               {"namespace", d.key.first},
               {"labels", pod_template["metadata"]["labels"]},
               {"annotations",
                {{"deployment.kubernetes.io/desired-replicas", std::to_string(replicas)},
                 {"deployment.kubernetes.io/max-replicas", std::to_string(replicas + surge)},
                 {kRevision, std::to_string(revision)}}},
               {"ownerReferences", json::array({{{"apiVersion", "apps/v1"},
                                                 {"kind", "Deployment"},
                                                 {"name", d.key.second},
                                                 {"uid", d.uid},
                                                 {"controller", true},
                                                 {"blockOwnerDeletion", true}}})}}},
             {"spec", {{"replicas", 0}, {"selector", selector}, {"template", pod_template}}},
             {"status", {{"replicas", 0}}}};
  absl::StatusOr<ObjectPtr> created = store_.Create("replicasets", rs);
  if (absl::IsAlreadyExists(created.status())) {
    created = store_.Get("replicasets", d.key.first, name);
  } else {
    Count(created.status(), "create replicaset", {d.key.first, name});
  }
  if (!created.ok()) return nullptr;
  AdoptReplicaSet(d, **created);
  auto it = d.sets.find(hash);
  if (it == d.sets.end()) return nullptr;
  it->second->revision = revision;
  it->second->pod_template = pod_template;
  return it->second.get();
}

void KubeletSim::Impl::ScaleReplicaSet(Deployment& d, ReplicaSet& rs, int64_t replicas) {
  if (rs.replicas != replicas) {
    RecordDeploymentEvent(
        d, "ScalingReplicaSet",
        absl::StrCat("Scaled ", replicas > rs.replicas ? "up" : "down", " replica set ", rs.name,
                     " to ", replicas, " from ", rs.replicas));
    rs.replicas = replicas;
  }
  std::set<Key>& members = rs_pods_[rs.uid];
  int64_t attempts = 0;
  while (static_cast<int64_t>(members.size()) < replicas && attempts++ < replicas + 10) {
    CreatePod(rs);
  }
  if (static_cast<int64_t>(members.size()) > replicas) {
    // Not-ready pods go first, then the newest (ReplicaSet controller's ranking, simplified).
    std::vector<const Pod*> ranked;
    for (const Key& key : members) ranked.push_back(pods_.at(key).get());
    std::sort(ranked.begin(), ranked.end(), [](const Pod* a, const Pod* b) {
      if (a->ready != b->ready) return !a->ready;
      return a->seq > b->seq;
    });
    std::vector<Key> doomed;
    for (size_t i = 0; i < members.size() - static_cast<size_t>(replicas); ++i) {
      doomed.push_back(ranked[i]->key);
    }
    for (const Key& key : doomed) {
      DeletePod(key, true);
      RecordReplicaSetEvent(rs, "SuccessfulDelete", absl::StrCat("Deleted pod: ", key.second));
    }
  }
  WriteReplicaSet(rs);
}

void KubeletSim::Impl::CreatePod(ReplicaSet& rs) {
  std::string name;
  do {
    name = absl::StrCat(rs.name, "-", RandomName(options_.seed, rs.name, rs.next_suffix++, 5));
  } while (pods_.contains({rs.deployment.first, name}));
  json pod_template = rs.pod_template;
  json metadata = pod_template.contains("metadata") ? pod_template["metadata"] : json::object();
  metadata.erase("creationTimestamp");
  metadata["name"] = name;
  metadata["generateName"] = rs.name + "-";
  metadata["namespace"] = rs.deployment.first;
  metadata["ownerReferences"] = json::array({{{"apiVersion", "apps/v1"},
                                              {"kind", "ReplicaSet"},
                                              {"name", rs.name},
                                              {"uid", rs.uid},
                                              {"controller", true},
                                              {"blockOwnerDeletion", true}}});
  json spec = pod_template.contains("spec") ? pod_template["spec"] : json::object();
  spec["nodeName"] = options_.node_name;
  if (!spec.contains("restartPolicy")) spec["restartPolicy"] = "Always";
  if (!spec.contains("dnsPolicy")) spec["dnsPolicy"] = "ClusterFirst";
  if (!spec.contains("schedulerName")) spec["schedulerName"] = "default-scheduler";
  if (!spec.contains("terminationGracePeriodSeconds")) spec["terminationGracePeriodSeconds"] = 30;
  if (!spec.contains("serviceAccountName")) spec["serviceAccountName"] = "default";
  json pod = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", std::move(metadata)},
              {"spec", std::move(spec)},
              {"status", {{"phase", "Pending"}, {"qosClass", "BestEffort"}}}};
  absl::StatusOr<ObjectPtr> created = store_.Create("pods", std::move(pod));
  Count(created.status(), "create pod", {rs.deployment.first, name});
  if (!created.ok()) return;
  RecordReplicaSetEvent(rs, "SuccessfulCreate", absl::StrCat("Created pod: ", name));
  RecordEvent({"v1",
               "Pod",
               {rs.deployment.first, name},
               JString(**created, "/metadata/uid"),
               "",
               "default-scheduler"},
              "Normal", "Scheduled",
              absl::StrCat("Successfully assigned ", rs.deployment.first, "/", name, " to ",
                           options_.node_name));
  Admit(**created);
}

void KubeletSim::Impl::WriteReplicaSet(ReplicaSet& rs) {
  int64_t pods = PodsOf(rs);
  int64_t ready = ReadyPods(rs);
  json want = {
      {"replicas", rs.replicas}, {"revision", rs.revision}, {"pods", pods}, {"ready", ready}};
  if (want == rs.written) return;
  std::string uid = rs.uid;
  absl::StatusOr<ObjectPtr> result =
      store_.Mutate("replicasets", rs.deployment.first, rs.name, [&](json& o) -> absl::Status {
        if (JString(o, "/metadata/uid") != uid) return absl::NotFoundError("replaced");
        int64_t generation = JInt(o, "/metadata/generation", 1);
        if (JInt(o, "/spec/replicas", -1) != rs.replicas) {
          o["spec"]["replicas"] = rs.replicas;
          ++generation;  // the store bumps it for the spec change
        }
        o["metadata"]["annotations"][kRevision] = std::to_string(rs.revision);
        o["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            std::to_string(rs.replicas);
        json status = {{"replicas", pods}, {"observedGeneration", generation}};
        if (pods != 0) status["fullyLabeledReplicas"] = pods;
        if (ready != 0) status["readyReplicas"] = ready;
        if (ready != 0) status["availableReplicas"] = ready;
        o["status"] = std::move(status);
        return absl::OkStatus();
      });
  Count(result.status(), "write replicaset", {rs.deployment.first, rs.name});
  if (result.ok()) rs.written = std::move(want);
}

void KubeletSim::Impl::DeleteReplicaSet(ReplicaSet& rs) {
  std::set<Key> members = rs_pods_[rs.uid];
  for (const Key& key : members) DeletePod(key, true);
  rs_pods_.erase(rs.uid);
  rs_owner_.erase(rs.uid);
  events_.erase(rs.uid);
  event_counters_.erase(rs.uid);
  absl::StatusOr<ObjectPtr> deleted = store_.Delete("replicasets", rs.deployment.first, rs.name);
  if (!absl::IsNotFound(deleted.status())) {
    Count(deleted.status(), "delete replicaset", {rs.deployment.first, rs.name});
  }
}

void KubeletSim::Impl::DeleteDeployment(const Key& key) {
  auto it = deployments_.find(key);
  if (it == deployments_.end()) return;
  // Background propagation: the garbage collector deletes the ReplicaSets and their pods.
  for (auto& [hash, rs] : it->second->sets) DeleteReplicaSet(*rs);
  events_.erase(it->second->uid);
  event_counters_.erase(it->second->uid);
  deployments_.erase(it);
  dirty_.erase(key);
  --deployment_count_;
}

void KubeletSim::Impl::DeletePod(const Key& key, bool write) {
  auto it = pods_.find(key);
  if (it == pods_.end()) return;
  Pod& pod = *it->second;
  if (pod.ready) {
    auto ready = ready_pods_.find(key.first);
    if (ready != ready_pods_.end()) ready->second.erase(key);
  }
  gateways_.erase(key);
  if (!pod.rs_uid.empty()) {
    auto members = rs_pods_.find(pod.rs_uid);
    if (members != rs_pods_.end()) members->second.erase(key);
  }
  std::string uid = pod.uid;
  events_.erase(uid);
  event_counters_.erase(uid);
  pods_.erase(it);
  --pod_count_;
  if (!write) return;
  absl::StatusOr<ObjectPtr> deleted = store_.Delete("pods", key.first, key.second);
  if (!absl::IsNotFound(deleted.status())) Count(deleted.status(), "delete pod", key);
}

int64_t KubeletSim::Impl::PodsOf(const ReplicaSet& rs) const {
  auto it = rs_pods_.find(rs.uid);
  return it == rs_pods_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

int64_t KubeletSim::Impl::ReadyPods(const ReplicaSet& rs) const {
  auto it = rs_pods_.find(rs.uid);
  if (it == rs_pods_.end()) return 0;
  int64_t ready = 0;
  for (const Key& key : it->second) {
    auto pod = pods_.find(key);
    if (pod != pods_.end() && pod->second->ready) ++ready;
  }
  return ready;
}

void KubeletSim::Impl::MarkOwnerDirty(const std::string& rs_uid) {
  if (rs_uid.empty()) return;
  auto owner = rs_owner_.find(rs_uid);
  if (owner != rs_owner_.end()) dirty_.insert(owner->second);
}

// ---------------------------------------------------------------------------------------------
// Kubelet.

void KubeletSim::Impl::Admit(const json& object) {
  auto pod = std::make_unique<Pod>();
  pod->key = {JString(object, "/metadata/namespace"), JString(object, "/metadata/name")};
  pod->uid = JString(object, "/metadata/uid");
  pod->labels = JAt(object, "/metadata/labels");
  const json& owners = JAt(object, "/metadata/ownerReferences");
  if (owners.is_array()) {
    for (const json& owner : owners) {
      if (owner.value("kind", "") != "ReplicaSet" || !owner.value("controller", false)) continue;
      pod->rs_uid = owner.value("uid", "");
      std::string rs_name = owner.value("name", "");
      // "<deployment>-<hash>": the Deployment's name.
      pod->gateway = rs_name.substr(0, rs_name.rfind('-')) == kGateway;
    }
  }
  std::string policy = JString(object, "/spec/restartPolicy");
  if (!policy.empty()) pod->restart_policy = policy;
  const json& secrets = JAt(object, "/spec/imagePullSecrets");
  if (secrets.is_array()) {
    for (const json& secret : secrets) {
      if (secret.is_object() && secret.contains("name")) {
        pod->pull_secrets.push_back(secret.value("name", ""));
      }
    }
  }
  const json& containers = JAt(object, "/spec/containers");
  if (containers.is_array()) {
    for (const json& spec : containers) {
      Container c;
      c.name = spec.value("name", "");
      c.image = spec.value("image", "");
      absl::StatusOr<oci::ImageReference> ref = oci::ParseImageReference(c.image);
      if (ref.ok()) c.ref = *ref;
      c.pull_policy = spec.value("imagePullPolicy", "");
      if (c.pull_policy.empty()) {
        c.pull_policy = c.ref.has_value() && c.ref->digest.empty() &&
                                (c.ref->tag.empty() || c.ref->tag == "latest")
                            ? "Always"
                            : "IfNotPresent";
      }
      const json& ports = JAt(spec, "/ports");
      if (ports.is_array() && !ports.empty() && ports[0].is_object()) {
        c.port = ports[0].value("containerPort", int64_t{0});
      }
      const json& env = JAt(spec, "/env");
      if (env.is_array()) {
        for (const json& var : env) {
          int code = 0;
          if (var.is_object() && var.value("name", "") == kExitCodeEnv &&
              absl::SimpleAtoi(var.value("value", ""), &code)) {
            c.exit_code = code;
          }
        }
      }
      pod->containers.push_back(std::move(c));
    }
  }
  uint64_t n = pod_seq_++;
  pod->seq = n;
  pod->pod_ip = absl::StrCat("10.244.", (n / 250) % 256, ".", n % 250 + 2);
  pod->start_time = Now();
  pod->ready_transition = pod->start_time;
  if (!pod->rs_uid.empty()) rs_pods_[pod->rs_uid].insert(pod->key);
  Pod& admitted = *pod;
  pods_[pod->key] = std::move(pod);
  ++pod_count_;
  WritePodStatus(admitted);
  for (size_t i = 0; i < admitted.containers.size(); ++i) PullImage(admitted, i, false);
}

void KubeletSim::Impl::PullImage(Pod& pod, size_t index, bool restart) {
  Container& c = pod.containers[index];
  ++c.epoch;
  int field = static_cast<int>(index);
  if (!c.ref.has_value()) {
    c.state = Container::State::kWaiting;
    c.reason = "InvalidImageName";
    c.message = absl::StrCat("Failed to apply default image tag \"", c.image,
                             "\": couldn't parse image reference \"", c.image,
                             "\": invalid reference format");
    RecordPodEvent(pod, field, "Warning", "InspectFailed", c.message);
    RecordPodEvent(pod, field, "Warning", "Failed", "Error: InvalidImageName");
    WritePodStatus(pod);
    return;
  }
  // The pull secrets are looked up (and missing ones reported) on every attempt.
  std::optional<oci::RegistryCredential> credential = PullCredential(pod, *c.ref);
  std::string client_key = c.ref->domain;
  if (credential.has_value()) {
    // A fingerprint of the credentials, so that the cache never mixes them; never logged.
    absl::StrAppend(&client_key, "\n", credential->username, "\n",
                    oci::Digest::Sha256Of(absl::StrCat(credential->password.Reveal(), "\n",
                                                       credential->identity_token.Reveal()))
                        .hex());
  }
  std::string cache_key = absl::StrCat(c.ref->ToString(), "\n", client_key);
  if (c.pull_policy != "Always") {
    // Present only for pods with the same credentials (KubeletEnsureSecretPulledImages).
    auto present = present_.find(cache_key);
    if (present != present_.end()) {
      Resolution resolution;
      resolution.image_id = present->second;
      ApplyResolution(pod, index, resolution, restart);
      return;
    }
  }
  RecordPodEvent(pod, field, "Normal", "Pulling", absl::StrCat("Pulling image \"", c.image, "\""));
  c.pull_started = Now();
  c.cache_key = cache_key;
  auto cached = resolutions_.find(cache_key);
  if (cached != resolutions_.end() && Now() - cached->second->at < options_.resolve_cache_ttl) {
    ApplyResolution(pod, index, *cached->second, false);
    return;
  }
  std::vector<Waiter>& waiters = waiting_[cache_key];
  waiters.push_back(Waiter{pod.key, pod.uid, index, c.epoch});
  if (waiters.size() > 1) return;  // a lookup is already in flight
  ResolveJob job;
  job.cache_key = cache_key;
  job.client_key = client_key;
  job.ref = *c.ref;
  job.credential = std::move(credential);
  absl::MutexLock lock(&resolve_mu_);
  jobs_.push_back(std::move(job));
  resolve_cv_.Signal();
}

std::optional<oci::RegistryCredential> KubeletSim::Impl::PullCredential(
    Pod& pod, const oci::ImageReference& ref) {
  oci::CredentialStore merged;
  std::vector<std::string> missing;
  for (const std::string& name : pod.pull_secrets) {
    absl::StatusOr<ObjectPtr> secret = store_.Get("secrets", pod.key.first, name);
    if (!secret.ok()) {
      missing.push_back(name);
      continue;
    }
    if (JString(**secret, "/type") != kDockerConfigJson) continue;
    std::string decoded;
    if (!absl::Base64Unescape(JString(**secret, "/data/.dockerconfigjson"), &decoded)) continue;
    absl::StatusOr<oci::CredentialStore> parsed =
        oci::CredentialStore::Parse(decoded, absl::StrCat("secret ", pod.key.first, "/", name));
    if (parsed.ok()) merged.Merge(*parsed);
  }
  if (!missing.empty()) {
    RecordPodEvent(
        pod, -1, "Warning", "FailedToRetrieveImagePullSecret",
        absl::StrCat("Unable to retrieve some image pull secrets (", absl::StrJoin(missing, ", "),
                     "); attempting to pull the image may not succeed."));
  }
  return merged.Find(ref.domain);
}

void KubeletSim::Impl::ApplyResolution(Pod& pod, size_t index, const Resolution& resolution,
                                       bool restart) {
  Container& c = pod.containers[index];
  int field = static_cast<int>(index);
  ++c.epoch;
  if (resolution.status.ok()) {
    bool pulled = c.pull_started != absl::Time();
    if (pulled) {
      present_[c.cache_key] = resolution.image_id;
      std::string took = GoDuration(Now() - c.pull_started);
      RecordPodEvent(pod, field, "Normal", "Pulled",
                     absl::StrCat("Successfully pulled image \"", c.image, "\" in ", took, " (",
                                  took, " including waiting)"));
    } else {
      RecordPodEvent(pod, field, "Normal", "Pulled",
                     absl::StrCat("Container image \"", c.image, "\" already present on machine"));
    }
    c.pull_started = absl::Time();
    c.pull_failures = 0;
    c.image_id = resolution.image_id;
    if (restart) {
      StartContainer(pod, index);
    } else {
      AfterForContainer(options_.container_start_delay, pod, index,
                        [this](Pod& p, size_t i) { StartContainer(p, i); });
    }
    return;
  }
  c.pull_started = absl::Time();
  ++c.pull_failures;
  std::string error = PullError(resolution.status, *c.ref);
  RecordPodEvent(pod, field, "Warning", "Failed",
                 absl::StrCat("Failed to pull image \"", c.image, "\": ", error));
  RecordPodEvent(pod, field, "Warning", "Failed", "Error: ErrImagePull");
  c.state = Container::State::kWaiting;
  c.reason = "ErrImagePull";
  c.message = error;
  WritePodStatus(pod);
  AfterForContainer(options_.err_image_pull_hold, pod, index, [this](Pod& p, size_t i) {
    Container& waiting = p.containers[i];
    std::string message = absl::StrCat("Back-off pulling image \"", waiting.image, "\"");
    waiting.reason = "ImagePullBackOff";
    waiting.message = message;
    RecordPodEvent(p, static_cast<int>(i), "Normal", "BackOff", message);
    RecordPodEvent(p, static_cast<int>(i), "Warning", "Failed", "Error: ImagePullBackOff");
    WritePodStatus(p);
  });
  absl::Duration backoff = options_.image_pull_backoff;
  for (int i = 1; i < c.pull_failures && backoff < options_.image_pull_backoff_max; ++i) {
    backoff *= 2;
  }
  backoff = std::min(backoff, options_.image_pull_backoff_max);
  AfterForContainer(backoff, pod, index,
                    [this, restart](Pod& p, size_t i) { PullImage(p, i, restart); });
}

void KubeletSim::Impl::StartContainer(Pod& pod, size_t index) {
  Container& c = pod.containers[index];
  int field = static_cast<int>(index);
  ++c.epoch;
  absl::Time now = Now();
  c.state = Container::State::kRunning;
  c.reason.clear();
  c.message.clear();
  c.started = true;
  c.ever_started = true;
  c.started_at = now;
  c.container_id = absl::StrCat(
      "containerd://", oci::Digest::Sha256Of(absl::StrCat(options_.seed, "/", pod.uid, "/", c.name,
                                                          "/", c.restart_count))
                           .hex());
  RecordPodEvent(pod, field, "Normal", "Created", absl::StrCat("Created container ", c.name));
  RecordPodEvent(pod, field, "Normal", "Started", absl::StrCat("Started container ", c.name));
  std::vector<std::string> lines = {absl::StrCat("starting ", c.name, " (image ", c.image, ")")};
  if (c.port != 0) lines.push_back(absl::StrCat("listening on :", c.port));
  absl::Status logged = store_.AppendLog(pod.key.first, pod.key.second, c.name, lines);
  if (!logged.ok() && !absl::IsNotFound(logged)) Count(logged, "append log", pod.key);
  if (options_.ready_delay <= absl::ZeroDuration()) {
    SetReady(pod, index, true);
  } else {
    AfterForContainer(options_.ready_delay, pod, index, [this](Pod& p, size_t i) {
      SetReady(p, i, true);
      WritePodStatus(p);
    });
  }
  WritePodStatus(pod);
  if (pod.gateway && index == 0) GatewayStarted(pod);
  if (c.exit_code.has_value()) {
    AfterForContainer(options_.crash_after, pod, index,
                      [this](Pod& p, size_t i) { ExitContainer(p, i); });
  }
}

void KubeletSim::Impl::ExitContainer(Pod& pod, size_t index) {
  Container& c = pod.containers[index];
  int code = c.exit_code.value_or(0);
  ++c.epoch;
  absl::Status logged = store_.AppendLog(pod.key.first, pod.key.second, c.name,
                                         {absl::StrCat("exiting with code ", code)});
  if (!logged.ok() && !absl::IsNotFound(logged)) Count(logged, "append log", pod.key);
  absl::Time now = Now();
  json terminated = {{"exitCode", code},
                     {"reason", code == 0 ? "Completed" : "Error"},
                     {"startedAt", Timestamp(c.started_at)},
                     {"finishedAt", Timestamp(now)},
                     {"containerID", c.container_id}};
  ++c.exits;
  c.started = false;
  SetReady(pod, index, false);
  if (pod.gateway && index == 0) gateways_.erase(pod.key);
  if (pod.restart_policy == "Never" || (pod.restart_policy == "OnFailure" && code == 0)) {
    c.state = Container::State::kTerminated;
    c.terminated = std::move(terminated);
    WritePodStatus(pod);
    return;
  }
  c.last_terminated = std::move(terminated);
  if (c.exits == 1) {
    // The first restart is immediate; later ones wait in CrashLoopBackOff.
    ++c.restart_count;
    PullImage(pod, index, true);
    return;
  }
  absl::Duration backoff = options_.crash_backoff;
  for (int i = 2; i < c.exits && backoff < options_.crash_backoff_max; ++i) backoff *= 2;
  backoff = std::min(backoff, options_.crash_backoff_max);
  std::string pod_ref = absl::StrCat(pod.key.second, "_", pod.key.first, "(", pod.uid, ")");
  c.state = Container::State::kWaiting;
  c.reason = "CrashLoopBackOff";
  c.message = absl::StrCat("back-off ", GoDuration(backoff),
                           " restarting failed container=", c.name, " pod=", pod_ref);
  RecordPodEvent(
      pod, static_cast<int>(index), "Warning", "BackOff",
      absl::StrCat("Back-off restarting failed container ", c.name, " in pod ", pod_ref));
  WritePodStatus(pod);
  AfterForContainer(backoff, pod, index, [this](Pod& p, size_t i) {
    ++p.containers[i].restart_count;
    PullImage(p, i, true);
  });
}

void KubeletSim::Impl::SetReady(Pod& pod, size_t index, bool ready) {
  pod.containers[index].ready = ready;
  bool all = !pod.containers.empty();
  for (const Container& c : pod.containers) all = all && c.ready;
  if (all == pod.ready) return;
  pod.ready = all;
  pod.ready_transition = Now();
  PodReadyChanged(pod);
  MarkOwnerDirty(pod.rs_uid);
}

json KubeletSim::Impl::PodStatus(const Pod& pod) const {
  bool all_started = true;
  bool all_terminated = !pod.containers.empty();
  bool all_succeeded = true;
  std::vector<std::string> unready;
  json statuses = json::array();
  for (const Container& c : pod.containers) {
    all_started = all_started && c.ever_started;
    bool terminated = c.state == Container::State::kTerminated;
    all_terminated = all_terminated && terminated;
    all_succeeded = all_succeeded && terminated && c.terminated.value("exitCode", 1) == 0;
    if (!c.ready) unready.push_back(c.name);
    json state;
    switch (c.state) {
      case Container::State::kRunning:
        state["running"] = {{"startedAt", Timestamp(c.started_at)}};
        break;
      case Container::State::kTerminated:
        state["terminated"] = c.terminated;
        break;
      case Container::State::kWaiting:
        state["waiting"] = {{"reason", c.reason}};
        if (!c.message.empty()) state["waiting"]["message"] = c.message;
        break;
    }
    json status = {{"name", c.name},
                   {"image", c.ref.has_value() ? c.ref->ToString() : c.image},
                   {"imageID", c.image_id},
                   {"ready", c.ready},
                   {"restartCount", c.restart_count},
                   {"started", c.started},
                   {"state", std::move(state)},
                   {"lastState", json::object()}};
    if (!c.container_id.empty()) status["containerID"] = c.container_id;
    if (!c.last_terminated.is_null()) status["lastState"]["terminated"] = c.last_terminated;
    statuses.push_back(std::move(status));
  }
  std::string phase = "Pending";
  if (pod.restart_policy != "Always" && all_terminated) {
    phase = all_succeeded ? "Succeeded" : "Failed";
  } else if (all_started) {
    phase = "Running";
  }
  std::string start = Timestamp(pod.start_time);
  auto condition = [&](const char* type, bool status, absl::Time transition) {
    json c = {{"type", type},
              {"status", status ? "True" : "False"},
              {"lastProbeTime", nullptr},
              {"lastTransitionTime", Timestamp(transition)}};
    if (!status) {
      c["reason"] = phase == "Succeeded" ? "PodCompleted" : "ContainersNotReady";
      c["message"] =
          absl::StrCat("containers with unready status: [", absl::StrJoin(unready, " "), "]");
    }
    return c;
  };
  return {{"phase", phase},
          {"conditions", json::array({condition("PodReadyToStartContainers", true, pod.start_time),
                                      condition("Initialized", true, pod.start_time),
                                      condition("Ready", pod.ready, pod.ready_transition),
                                      condition("ContainersReady", pod.ready, pod.ready_transition),
                                      condition("PodScheduled", true, pod.start_time)})},
          {"hostIP", options_.host_ip},
          {"hostIPs", json::array({{{"ip", options_.host_ip}}})},
          {"podIP", pod.pod_ip},
          {"podIPs", json::array({{{"ip", pod.pod_ip}}})},
          {"startTime", start},
          {"qosClass", "BestEffort"},
          {"containerStatuses", std::move(statuses)}};
}

void KubeletSim::Impl::WritePodStatus(Pod& pod) {
  json status = PodStatus(pod);
  std::string uid = pod.uid;
  absl::StatusOr<ObjectPtr> result =
      store_.Mutate("pods", pod.key.first, pod.key.second, [&](json& o) -> absl::Status {
        if (JString(o, "/metadata/uid") != uid) return absl::NotFoundError("replaced");
        o["status"] = status;
        return absl::OkStatus();
      });
  if (!absl::IsNotFound(result.status())) Count(result.status(), "write pod status", pod.key);
}

// ---------------------------------------------------------------------------------------------
// agentgateway discovery.

void KubeletSim::Impl::PodReadyChanged(Pod& pod) {
  std::set<Key>& ready = ready_pods_[pod.key.first];
  if (!pod.ready) {
    ready.erase(pod.key);
    return;
  }
  ready.insert(pod.key);
  if (gateways_.empty()) return;
  for (auto it = services_.lower_bound({pod.key.first, ""});
       it != services_.end() && it->first.first == pod.key.first; ++it) {
    if (SelectorMatches(it->second.selector, pod.labels)) Discover(it->second, &pod);
  }
}

void KubeletSim::Impl::GatewayStarted(Pod& pod) {
  gateways_.insert(pod.key);
  for (const auto& [key, service] : services_) {
    if (Discoverable(service)) Announce(pod, service);
  }
}

void KubeletSim::Impl::Discover(const Service& service, const Pod* ready_pod) {
  if (gateways_.empty() || !Discoverable(service, ready_pod)) return;
  for (const Key& key : gateways_) {
    auto it = pods_.find(key);
    if (it != pods_.end()) Announce(*it->second, service);
  }
}

bool KubeletSim::Impl::Discoverable(const Service& service, const Pod* ready_pod) const {
  if (service.selector.empty() || service.key.second == kGateway) return false;
  for (const Key& key : gateways_) {
    auto gateway = pods_.find(key);
    if (gateway != pods_.end() && SelectorMatches(service.selector, gateway->second->labels)) {
      return false;  // the gateway's own Service
    }
  }
  if (ready_pod != nullptr) return true;
  auto ready = ready_pods_.find(service.key.first);
  if (ready == ready_pods_.end()) return false;
  for (const Key& key : ready->second) {
    auto pod = pods_.find(key);
    if (pod != pods_.end() && SelectorMatches(service.selector, pod->second->labels)) return true;
  }
  return false;
}

void KubeletSim::Impl::Announce(Pod& gateway, const Service& service) {
  const std::string& app = service.key.second;
  if (!gateway.discovered.insert(absl::StrCat(service.key.first, "/", app, ":", service.port))
           .second) {
    return;
  }
  std::string line = absl::StrCat("Discovered ", app, " at http://", app, ".", service.key.first,
                                  ".svc.cluster.local:", service.port);
  absl::Status logged = store_.AppendLog(gateway.key.first, gateway.key.second,
                                         gateway.containers.front().name, {line});
  if (!logged.ok() && !absl::IsNotFound(logged)) Count(logged, "append log", gateway.key);
}

// ---------------------------------------------------------------------------------------------
// Events.

void KubeletSim::Impl::RecordEvent(const Involved& object, const std::string& type,
                                   const std::string& reason, const std::string& message) {
  std::string record_key = absl::StrCat(object.component, "\x1f", object.field_path, "\x1f", type,
                                        "\x1f", reason, "\x1f", message);
  std::map<std::string, EventRecord>& records = events_[object.uid];
  std::string now = Timestamp(Now());
  auto it = records.find(record_key);
  if (it != records.end()) {
    int64_t count = it->second.count + 1;
    absl::StatusOr<ObjectPtr> bumped =
        store_.Mutate("events", object.key.first, it->second.name, [&](json& e) {
          e["count"] = count;
          e["lastTimestamp"] = now;
          return absl::OkStatus();
        });
    if (bumped.ok()) {
      ++store_writes_;
      it->second.count = count;
      return;
    }
    if (!absl::IsNotFound(bumped.status())) {
      Count(bumped.status(), "update event", {object.key.first, it->second.name});
      return;
    }
    records.erase(it);  // deleted by someone: a new one, as the recorder does
  }
  uint64_t n = event_counters_[object.uid]++;
  std::string name = absl::StrCat(
      object.key.second, ".",
      absl::StrFormat("%016x", SplitMix64(options_.seed ^ Fnv64a(object.uid) ^ SplitMix64(n))));
  json involved = {{"apiVersion", object.api_version},
                   {"kind", object.kind},
                   {"name", object.key.second},
                   {"namespace", object.key.first},
                   {"uid", object.uid}};
  if (!object.field_path.empty()) involved["fieldPath"] = object.field_path;
  json source = {{"component", object.component}};
  bool kubelet = object.component == "kubelet";
  if (kubelet) source["host"] = options_.node_name;
  json event = {{"apiVersion", "v1"},
                {"kind", "Event"},
                {"metadata", {{"name", name}, {"namespace", object.key.first}}},
                {"involvedObject", std::move(involved)},
                {"reason", reason},
                {"message", message},
                {"source", std::move(source)},
                {"firstTimestamp", now},
                {"lastTimestamp", now},
                {"count", 1},
                {"type", type},
                {"eventTime", nullptr},
                {"reportingComponent", object.component},
                {"reportingInstance", kubelet ? options_.node_name : ""}};
  absl::StatusOr<ObjectPtr> created = store_.Create("events", std::move(event));
  Count(created.status(), "create event", {object.key.first, name});
  if (created.ok()) records[record_key] = EventRecord{name, 1};
}

void KubeletSim::Impl::RecordPodEvent(const Pod& pod, int container, const std::string& type,
                                      const std::string& reason, const std::string& message) {
  std::string field_path;
  if (container >= 0) {
    field_path = absl::StrCat("spec.containers{", pod.containers[container].name, "}");
  }
  RecordEvent({"v1", "Pod", pod.key, pod.uid, field_path, "kubelet"}, type, reason, message);
}

void KubeletSim::Impl::RecordDeploymentEvent(const Deployment& d, const std::string& reason,
                                             const std::string& message) {
  RecordEvent({"apps/v1", "Deployment", d.key, d.uid, "", "deployment-controller"}, "Normal",
              reason, message);
}

void KubeletSim::Impl::RecordReplicaSetEvent(const ReplicaSet& rs, const std::string& reason,
                                             const std::string& message) {
  RecordEvent({"apps/v1",
               "ReplicaSet",
               {rs.deployment.first, rs.name},
               rs.uid,
               "",
               "replicaset-controller"},
              "Normal", reason, message);
}

void KubeletSim::Impl::Count(const absl::Status& status, absl::string_view what, const Key& key) {
  if (status.ok()) {
    ++store_writes_;
    return;
  }
  if (absl::IsCancelled(status)) return;  // the store is shutting down
  log::Warning("kubelet write failed", {{"what", std::string(what)},
                                        {"namespace", key.first},
                                        {"name", key.second},
                                        {"error", status}});
}

// ---------------------------------------------------------------------------------------------

KubeletSim::KubeletSim(ObjectStore& store, Options options)
    : impl_(std::make_unique<Impl>(store, std::move(options))) {}

KubeletSim::~KubeletSim() = default;

absl::Status KubeletSim::Start() { return impl_->Start(); }

void KubeletSim::Stop() { impl_->Stop(); }

void KubeletSim::Wake() { impl_->Wake(); }

KubeletSim::Stats KubeletSim::stats() const { return impl_->stats(); }

}  // namespace elfdeploy::kubesim
