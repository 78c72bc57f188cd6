#include "services/cluster_watcher/state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "services/common/log.h"
#include "services/common/proto_time.h"

// The change log ("changes.log"): an 8-byte magic, then frames of
//   u32 little-endian payload length | u32 little-endian zlib crc32 of the payload | payload
// where the payload holds the records of one Apply (a crash keeps all or none of them), each
//   u32 little-endian length | serialized v1::WatchResponse
// and a record is:
// - `cluster_state`: an agent hello (cluster, epoch, versions, peer, connected time). A larger
//   epoch than the cluster's current one starts a new epoch (acked sequence 0, nothing announced).
// - `change` with sequence > 0: an object change, numbered by the watcher (consecutive numbers).
// - `change` with sequence 0: a progress marker: (cluster, agent_epoch, agent_sequence) is stored.
//   When it carries an ObjectChange of type UNSPECIFIED, it also records the agent's
//   snapshot_complete for the object's kind (the object's namespace is the scope).
// Replaying the records in order rebuilds the whole state.
namespace elfdeploy::watcher {
namespace {

constexpr char kLogName[] = "changes.log";
constexpr char kCompactName[] = "changes.log.compact";
constexpr char kMagic[] = "ELFWLOG1";
constexpr size_t kMagicSize = 8;
constexpr size_t kRecordHeaderSize = 8;
constexpr uint32_t kMaxRecordBytes = 64u << 20;
// Bounds the work of one Subscription::Next call.
constexpr size_t kMaxItemsPerNext = 1024;
constexpr size_t kMaxScanPerNext = 16384;
constexpr size_t kKinds = 5;  // indexed by v1::ObjectKind

using ChangePtr = std::shared_ptr<const v1::WatchChange>;
using Key = std::pair<std::string, std::string>;  // namespace, name
using ObjectMap = std::map<Key, ChangePtr>;

v1::ObjectKind KindOf(const v1::ClusterObject& object) {
  switch (object.object_case()) {
    case v1::ClusterObject::kApplication:
      return v1::OBJECT_KIND_APPLICATION;
    case v1::ClusterObject::kDeployment:
      return v1::OBJECT_KIND_DEPLOYMENT;
    case v1::ClusterObject::kPod:
      return v1::OBJECT_KIND_POD;
    case v1::ClusterObject::kEvent:
      return v1::OBJECT_KIND_EVENT;
    default:
      return v1::OBJECT_KIND_UNSPECIFIED;
  }
}

const v1::ObjectMeta& MetaOf(const v1::ClusterObject& object) {
  switch (object.object_case()) {
    case v1::ClusterObject::kApplication:
      return object.application().meta();
    case v1::ClusterObject::kDeployment:
      return object.deployment().meta();
    case v1::ClusterObject::kPod:
      return object.pod().meta();
    case v1::ClusterObject::kEvent:
      return object.event().meta();
    default:
      return v1::ObjectMeta::default_instance();
  }
}

v1::ObjectMeta* MutableMetaOfKind(v1::ClusterObject* object, v1::ObjectKind kind) {
  switch (kind) {
    case v1::OBJECT_KIND_APPLICATION:
      return object->mutable_application()->mutable_meta();
    case v1::OBJECT_KIND_DEPLOYMENT:
      return object->mutable_deployment()->mutable_meta();
    case v1::OBJECT_KIND_POD:
      return object->mutable_pod()->mutable_meta();
    case v1::OBJECT_KIND_EVENT:
      return object->mutable_event()->mutable_meta();
    default:
      return nullptr;
  }
}

Key KeyOf(const v1::ObjectMeta& meta) { return {meta.namespace_(), meta.name()}; }

void PutU32(uint32_t value, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint32_t GetU32(const char* p) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(p[i]);
  return value;
}

uint32_t Crc(absl::string_view data) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
}

void AddRecord(const v1::WatchResponse& record, std::string* payload) {
  const std::string bytes = record.SerializeAsString();
  PutU32(static_cast<uint32_t>(bytes.size()), payload);
  payload->append(bytes);
}

void AppendFrame(absl::string_view payload, std::string* out) {
  PutU32(static_cast<uint32_t>(payload.size()), out);
  PutU32(Crc(payload), out);
  out->append(payload.data(), payload.size());
}

// The records of a frame's payload; false when it is malformed.
bool ParseFrame(absl::string_view payload, std::vector<v1::WatchResponse>* records) {
  while (!payload.empty()) {
    if (payload.size() < 4) return false;
    const uint32_t length = GetU32(payload.data());
    payload.remove_prefix(4);
    if (length > payload.size()) return false;
    if (!records->emplace_back().ParseFromArray(payload.data(), static_cast<int>(length))) {
      return false;
    }
    payload.remove_prefix(length);
  }
  return true;
}

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("cannot fsync", dir);
  return absl::OkStatus();
}

// Buffered sequential reads of the log.
class LogReader {
 public:
  explicit LogReader(int fd) : fd_(fd) {}
  // True when `n` bytes are available at the current position; false at end of file.
  absl::StatusOr<bool> Ensure(size_t n) {
    while (buffer_.size() - pos_ < n && !eof_) {
      buffer_.erase(0, pos_);
      base_ += pos_;
      pos_ = 0;
      const size_t want = std::max<size_t>(n, 1 << 20);
      const size_t old = buffer_.size();
      buffer_.resize(old + want);
      ssize_t got = ::pread(fd_, buffer_.data() + old, want, static_cast<off_t>(base_ + old));
      if (got < 0) {
        buffer_.resize(old);
        if (errno == EINTR) continue;
        return absl::InternalError(std::strerror(errno));
      }
      buffer_.resize(old + static_cast<size_t>(got));
      if (got == 0) eof_ = true;
    }
    return buffer_.size() - pos_ >= n;
  }
  const char* data() const { return buffer_.data() + pos_; }
  size_t available() const { return buffer_.size() - pos_; }
  void Skip(size_t n) { pos_ += n; }
  // File offset of the current position.
  uint64_t offset() const { return base_ + pos_; }

 private:
  int fd_;
  std::string buffer_;
  size_t pos_ = 0;
  uint64_t base_ = 0;
  bool eof_ = false;
};

// "<deployment>-<pod-template-hash>": the ReplicaSets a Deployment creates.
bool IsReplicaSetOf(absl::string_view replica_set, absl::string_view deployment) {
  if (deployment.empty() || replica_set.size() <= deployment.size() + 1) return false;
  if (!absl::StartsWith(replica_set, deployment) || replica_set[deployment.size()] != '-') {
    return false;
  }
  return replica_set.substr(deployment.size() + 1).find('-') == absl::string_view::npos;
}

// "<replicaset>-<suffix>": the name a ReplicaSet gives its pods.
bool PodNameOfDeployment(absl::string_view pod, absl::string_view deployment) {
  size_t dash = pod.rfind('-');
  return dash != absl::string_view::npos && IsReplicaSetOf(pod.substr(0, dash), deployment);
}

// A pod belongs to a Deployment by its owning ReplicaSet's name; a pod without a ReplicaSet owner
// by the Deployment's selector (when known).
bool PodOfDeployment(const v1::Pod& pod, absl::string_view deployment_name,
                     const v1::Deployment* deployment) {
  for (const v1::ObjectRef& owner : pod.meta().owner_references()) {
    if (owner.kind() == "ReplicaSet") return IsReplicaSetOf(owner.name(), deployment_name);
  }
  if (deployment == nullptr || deployment->selector().empty()) return false;
  for (const auto& [key, value] : deployment->selector()) {
    auto it = pod.meta().labels().find(key);
    if (it == pod.meta().labels().end() || it->second != value) return false;
  }
  return true;
}

std::string EncodePageToken(const Key& key) {
  return absl::WebSafeBase64Escape(absl::StrCat(key.first, "\x1f", key.second));
}

absl::StatusOr<std::optional<Key>> DecodePageToken(const std::string& token) {
  if (token.empty()) return std::optional<Key>();
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) {
    return absl::InvalidArgumentError("bad page_token");
  }
  size_t sep = raw.find('\x1f');
  if (sep == std::string::npos) return absl::InvalidArgumentError("bad page_token");
  return std::optional<Key>(Key(raw.substr(0, sep), raw.substr(sep + 1)));
}

absl::StatusOr<int> PageSize(int requested) {
  if (requested < 0) return absl::InvalidArgumentError("page_size must not be negative");
  if (requested == 0) return 100;
  return std::min(requested, 1000);
}

// A parsed Kubernetes label selector (equality- and set-based).
struct Requirement {
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kNotExists };
  std::string key;
  Op op;
  std::set<std::string> values;
};

bool ValidLabelToken(absl::string_view text, bool allow_slash) {
  if (text.empty() || text.size() > 316) return false;
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        !(allow_slash && c == '/')) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::vector<Requirement>> ParseSelector(absl::string_view selector) {
  std::vector<Requirement> out;
  // Split on commas outside parentheses.
  std::vector<std::string> terms;
  std::string current;
  int depth = 0;
  for (char c : selector) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth < 0) return absl::InvalidArgumentError(absl::StrCat("bad selector: ", selector));
    if (c == ',' && depth == 0) {
      terms.push_back(current);
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (depth != 0) return absl::InvalidArgumentError(absl::StrCat("bad selector: ", selector));
  if (!current.empty() || !terms.empty()) terms.push_back(current);
  for (const std::string& raw : terms) {
    absl::string_view term = absl::StripAsciiWhitespace(raw);
    auto bad = [&] {
      return absl::InvalidArgumentError(absl::StrCat("bad label selector term \"", term, "\""));
    };
    Requirement requirement;
    size_t op_pos = term.find_first_of("!=");
    if (absl::StartsWith(term, "!")) {
      requirement.op = Requirement::Op::kNotExists;
      requirement.key = std::string(absl::StripAsciiWhitespace(term.substr(1)));
    } else if (op_pos != absl::string_view::npos) {
      absl::string_view key = absl::StripAsciiWhitespace(term.substr(0, op_pos));
      absl::string_view rest = term.substr(op_pos);
      if (absl::ConsumePrefix(&rest, "!=")) {
        requirement.op = Requirement::Op::kNotEquals;
      } else if (absl::ConsumePrefix(&rest, "==") || absl::ConsumePrefix(&rest, "=")) {
        requirement.op = Requirement::Op::kEquals;
      } else {
        return bad();
      }
      rest = absl::StripAsciiWhitespace(rest);
      if (!rest.empty() && !ValidLabelToken(rest, false)) return bad();
      requirement.key = std::string(key);
      requirement.values.insert(std::string(rest));
    } else {
      // "key", "key in (a,b)", "key notin (a,b)".
      std::vector<absl::string_view> words =
          absl::StrSplit(term, absl::MaxSplits(absl::ByAnyChar(" \t("), 1), absl::SkipEmpty());
      requirement.key = std::string(words.empty() ? "" : words[0]);
      if (words.size() <= 1) {
        requirement.op = Requirement::Op::kExists;
      } else {
        absl::string_view rest = absl::StripAsciiWhitespace(term.substr(words[0].size()));
        if (absl::ConsumePrefix(&rest, "notin")) {
          requirement.op = Requirement::Op::kNotIn;
        } else if (absl::ConsumePrefix(&rest, "in")) {
          requirement.op = Requirement::Op::kIn;
        } else {
          return bad();
        }
        rest = absl::StripAsciiWhitespace(rest);
        if (!absl::ConsumePrefix(&rest, "(") || !absl::ConsumeSuffix(&rest, ")")) return bad();
        for (absl::string_view value : absl::StrSplit(rest, ',')) {
          value = absl::StripAsciiWhitespace(value);
          if (!value.empty() && !ValidLabelToken(value, false)) return bad();
          requirement.values.insert(std::string(value));
        }
      }
    }
    if (!ValidLabelToken(requirement.key, true)) return bad();
    out.push_back(std::move(requirement));
  }
  return out;
}

bool SelectorMatches(const std::vector<Requirement>& selector,
                     const google::protobuf::Map<std::string, std::string>& labels) {
  for (const Requirement& r : selector) {
    auto it = labels.find(r.key);
    const bool has = it != labels.end();
    switch (r.op) {
      case Requirement::Op::kEquals:
      case Requirement::Op::kIn:
        if (!has || !r.values.contains(it->second)) return false;
        break;
      case Requirement::Op::kNotEquals:
      case Requirement::Op::kNotIn:
        if (has && r.values.contains(it->second)) return false;
        break;
      case Requirement::Op::kExists:
        if (!has) return false;
        break;
      case Requirement::Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

struct ClusterData {
  v1::Cluster info;
  // By kind (index v1::ObjectKind), the last change of every live object.
  std::array<ObjectMap, kKinds> objects;
  // Events by the sequence of their last change, for eviction of the oldest.
  std::map<uint64_t, Key> event_order;
  // Kinds with a change, and kinds with a snapshot_complete, in the current epoch.
  std::set<int> kinds_changed;
  std::set<int> kinds_completed;

  const v1::Deployment* FindDeployment(const std::string& ns, const std::string& name) const {
    auto it = objects[v1::OBJECT_KIND_DEPLOYMENT].find({ns, name});
    if (it == objects[v1::OBJECT_KIND_DEPLOYMENT].end()) return nullptr;
    return &it->second->change().object().deployment();
  }
  const v1::Pod* FindPod(const std::string& ns, const std::string& name) const {
    auto it = objects[v1::OBJECT_KIND_POD].find({ns, name});
    if (it == objects[v1::OBJECT_KIND_POD].end()) return nullptr;
    return &it->second->change().object().pod();
  }
  void UpdateSynced() {
    info.set_synced(!kinds_completed.empty() &&
                    std::includes(kinds_completed.begin(), kinds_completed.end(),
                                  kinds_changed.begin(), kinds_changed.end()));
  }
  v1::Cluster Info() const {
    v1::Cluster out = info;
    out.set_application_count(static_cast<int32_t>(objects[v1::OBJECT_KIND_APPLICATION].size()));
    out.set_deployment_count(static_cast<int32_t>(objects[v1::OBJECT_KIND_DEPLOYMENT].size()));
    out.set_pod_count(static_cast<int32_t>(objects[v1::OBJECT_KIND_POD].size()));
    return out;
  }
};

// True when the object (of `kind`, in `ns` unless an Event) is Deployment `name` in namespace `ns`
// (any namespace when `ns` is null), one of its pods, or an Event about it, its ReplicaSets or
// its pods.
bool InDeploymentScope(const ClusterData& data, const v1::ClusterObject& object,
                       const std::string* ns, const std::string& name) {
  const v1::ObjectMeta& meta = MetaOf(object);
  switch (object.object_case()) {
    case v1::ClusterObject::kDeployment:
      return meta.name() == name && (ns == nullptr || meta.namespace_() == *ns);
    case v1::ClusterObject::kPod:
      if (ns != nullptr && meta.namespace_() != *ns) return false;
      return PodOfDeployment(object.pod(), name, data.FindDeployment(meta.namespace_(), name));
    case v1::ClusterObject::kEvent: {
      const v1::ObjectRef& involved = object.event().involved_object();
      const std::string& involved_ns =
          involved.namespace_().empty() ? meta.namespace_() : involved.namespace_();
      if (ns != nullptr && involved_ns != *ns) return false;
      if (involved.kind() == "Deployment") return involved.name() == name;
      if (involved.kind() == "ReplicaSet") return IsReplicaSetOf(involved.name(), name);
      if (involved.kind() == "Pod") {
        const v1::Pod* pod = data.FindPod(involved_ns, involved.name());
        if (pod != nullptr) {
          return PodOfDeployment(*pod, name, data.FindDeployment(involved_ns, name));
        }
        return PodNameOfDeployment(involved.name(), name);
      }
      return false;
    }
    default:
      return false;
  }
}

// True when the object is Application `app` or managed by it (its status.resources, their pods,
// and Events about any of them).
bool InApplicationScope(const ClusterData& data, const v1::ClusterObject& object,
                        const v1::Application& app) {
  const v1::ObjectMeta& meta = MetaOf(object);
  if (object.has_application()) return meta.name() == app.meta().name();
  if (object.has_event()) {
    const v1::ObjectRef& involved = object.event().involved_object();
    if (involved.kind() == "Application" && involved.name() == app.meta().name()) return true;
  }
  for (const v1::ApplicationResource& resource : app.resources()) {
    const std::string& ns =
        resource.namespace_().empty() ? app.spec().destination_namespace() : resource.namespace_();
    if (resource.kind() == "Deployment") {
      if (InDeploymentScope(data, object, &ns, resource.name())) return true;
    } else {
      if (object.has_pod() && resource.kind() == "Pod" && meta.namespace_() == ns &&
          meta.name() == resource.name()) {
        return true;
      }
      if (object.has_event()) {
        const v1::ObjectRef& involved = object.event().involved_object();
        const std::string& involved_ns =
            involved.namespace_().empty() ? meta.namespace_() : involved.namespace_();
        if (involved.kind() == resource.kind() && involved.name() == resource.name() &&
            involved_ns == ns) {
          return true;
        }
      }
    }
  }
  return false;
}

struct Filter {
  WatchFilter raw;
  std::set<int> kinds;  // empty: all
};

bool FilterMatches(const Filter& filter, const ClusterData& data, const v1::WatchChange& change) {
  if (!filter.raw.cluster.empty() && change.cluster() != filter.raw.cluster) return false;
  const v1::ClusterObject& object = change.change().object();
  const v1::ObjectKind kind = KindOf(object);
  if (!filter.kinds.empty() && !filter.kinds.contains(kind)) return false;
  const v1::ObjectMeta& meta = MetaOf(object);
  if (!filter.raw.namespace_.empty() && meta.namespace_() != filter.raw.namespace_ &&
      !(object.has_application() &&
        object.application().spec().destination_namespace() == filter.raw.namespace_)) {
    return false;
  }
  if (!filter.raw.app.empty() && !InDeploymentScope(data, object, nullptr, filter.raw.app)) {
    return false;
  }
  if (!filter.raw.application.empty()) {
    if (object.has_application()) return meta.name() == filter.raw.application;
    bool found = false;
    for (const auto& [key, app_change] : data.objects[v1::OBJECT_KIND_APPLICATION]) {
      const v1::Application& app = app_change->change().object().application();
      if (key.second == filter.raw.application && InApplicationScope(data, object, app)) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

class SubscriptionImpl;

// Everything; shared with the subscriptions so that they may outlive the ClusterState handle.
class Core : public std::enable_shared_from_this<Core> {
 public:
  explicit Core(ClusterStateOptions options) : options_(std::move(options)) {}
  ~Core() {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Load();

  absl::StatusOr<uint64_t> Connected(const v1::AgentHello& hello, const std::string& peer);
  void Disconnected(const std::string& cluster, uint64_t epoch, const std::string& reason);
  void Seen(const std::string& cluster);
  absl::StatusOr<uint64_t> Apply(const std::string& cluster, uint64_t epoch,
                                 std::vector<v1::AgentEvent> events);
  uint64_t duplicates_dropped() const { return duplicates_.load(); }
  uint64_t latest_sequence() const {
    absl::ReaderMutexLock lock(&mu_);
    return latest_sequence_;
  }

  absl::StatusOr<std::string> ResolveCluster(const std::string& cluster) const {
    absl::ReaderMutexLock lock(&mu_);
    return ResolveLocked(cluster);
  }
  absl::StatusOr<v1::ListClustersResponse> ListClusters(
      const v1::ListClustersRequest& request) const;
  absl::StatusOr<v1::Cluster> GetCluster(const std::string& cluster) const;
  absl::StatusOr<v1::GetApplicationResponse> GetApplication(
      const v1::GetApplicationRequest& request) const;
  absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request) const;
  absl::StatusOr<ClusterState::Snapshot> GetSnapshot(const std::string& cluster) const;

  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(const WatchFilter& filter,
                                                          uint64_t from_sequence,
                                                          bool initial_snapshot);
  absl::Status Next(SubscriptionImpl* subscription, absl::Time deadline,
                    std::vector<v1::WatchResponse>* out);
  void Unregister(SubscriptionImpl* subscription);

  void Shutdown();

 private:
  std::string LogPath() const { return absl::StrCat(options_.data_dir, "/", kLogName); }
  absl::Time Now() const { return options_.now ? options_.now() : absl::Now(); }

  absl::StatusOr<std::string> ResolveLocked(const std::string& cluster) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  uint64_t OldestLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return window_.empty() ? latest_sequence_ + 1 : window_.front()->sequence();
  }

  // Appends records to the log (one write, one fsync). On failure the log is cut back to its
  // previous end so that no torn record precedes later ones.
  absl::Status AppendLocked(const std::vector<v1::WatchResponse>& records)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);
  // Rewrites the log when it holds far more records than the state needs.
  void MaybeCompactLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);
  absl::Status CompactLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);

  // Applies one log record to memory; shared by replay and live writes.
  // Takes the change out of `record`.
  void ApplyRecordLocked(v1::WatchResponse* record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotifyClusterStateLocked(const ClusterData& data) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClusterStateOptions options_;

  // Serializes writers; held across the disk write so that readers (mu_) are not blocked by it.
  // Order: log_mu_ before mu_.
  absl::Mutex log_mu_;
  int fd_ ABSL_GUARDED_BY(log_mu_) = -1;
  uint64_t file_size_ ABSL_GUARDED_BY(log_mu_) = 0;
  uint64_t file_records_ ABSL_GUARDED_BY(log_mu_) = 0;
  absl::Status broken_ ABSL_GUARDED_BY(log_mu_);

  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  std::map<std::string, ClusterData> clusters_ ABSL_GUARDED_BY(mu_);
  // The last `retention` changes, consecutive sequences.
  std::deque<ChangePtr> window_ ABSL_GUARDED_BY(mu_);
  uint64_t latest_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::set<SubscriptionImpl*> subscribers_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint64_t> duplicates_{0};

  friend class SubscriptionImpl;
};

class SubscriptionImpl final : public Subscription {
 public:
  SubscriptionImpl(std::shared_ptr<Core> core, Filter filter, uint64_t cursor, uint64_t oldest,
                   uint64_t latest)
      : core_(std::move(core)),
        filter_(std::move(filter)),
        cursor_(cursor),
        oldest_(oldest),
        latest_(latest) {}
  ~SubscriptionImpl() override { core_->Unregister(this); }

  absl::Status Next(absl::Time deadline, std::vector<v1::WatchResponse>* out) override {
    return core_->Next(this, deadline, out);
  }
  uint64_t oldest_sequence() const override { return oldest_; }
  uint64_t latest_sequence() const override { return latest_; }

 private:
  friend class Core;
  std::shared_ptr<Core> core_;
  const Filter filter_;
  // Guarded by core_->mu_.
  uint64_t cursor_;                        // last sequence looked at
  std::deque<v1::WatchResponse> pending_;  // snapshot items and cluster states
  const uint64_t oldest_;
  const uint64_t latest_;
};

absl::Status Core::Load() {
  if (options_.data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  if (options_.retention == 0) return absl::InvalidArgumentError("retention must be at least 1");
  std::error_code ec;
  std::filesystem::create_directories(options_.data_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create data directory ", options_.data_dir, ": ", ec.message()));
  }
  std::filesystem::remove(absl::StrCat(options_.data_dir, "/", kCompactName), ec);

  absl::MutexLock log_lock(&log_mu_);
  absl::MutexLock lock(&mu_);
  const std::string path = LogPath();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) return ErrnoStatus("cannot open", path);

  // Stream the records; stop at the first torn or corrupt one.
  LogReader reader(fd_);
  uint64_t good = 0;  // end of the last good record
  absl::StatusOr<bool> has_header = reader.Ensure(kMagicSize);
  if (!has_header.ok()) return ErrnoStatus("cannot read", path);
  const bool header_checked = *has_header;
  if (header_checked) {
    if (std::memcmp(reader.data(), kMagic, kMagicSize) != 0) {
      return absl::InternalError(absl::StrCat(path, " is not a cluster-watcher change log"));
    }
    reader.Skip(kMagicSize);
    good = kMagicSize;
    while (true) {
      absl::StatusOr<bool> more = reader.Ensure(kRecordHeaderSize);
      if (!more.ok()) return ErrnoStatus("cannot read", path);
      if (!*more) break;
      const uint32_t length = GetU32(reader.data());
      const uint32_t crc = GetU32(reader.data() + 4);
      if (length > kMaxRecordBytes) break;
      more = reader.Ensure(kRecordHeaderSize + length);
      if (!more.ok()) return ErrnoStatus("cannot read", path);
      if (!*more) break;
      absl::string_view payload(reader.data() + kRecordHeaderSize, length);
      std::vector<v1::WatchResponse> records;
      if (Crc(payload) != crc || !ParseFrame(payload, &records)) break;
      for (v1::WatchResponse& record : records) ApplyRecordLocked(&record);
      file_records_ += records.size();
      reader.Skip(kRecordHeaderSize + length);
      good = reader.offset();
    }
  } else {
    // Empty, or a crash while creating it: start over, unless it is some other file.
    absl::string_view start(reader.data(), reader.available());
    if (!absl::StartsWith(absl::string_view(kMagic, kMagicSize), start)) {
      return absl::InternalError(absl::StrCat(path, " is not a cluster-watcher change log"));
    }
  }

  struct stat st;
  if (::fstat(fd_, &st) != 0) return ErrnoStatus("cannot stat", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (!header_checked) {
    if (::ftruncate(fd_, 0) != 0) return ErrnoStatus("cannot truncate", path);
    absl::Status written = WriteAll(fd_, absl::string_view(kMagic, kMagicSize), path);
    if (!written.ok()) return written;
    if (::fsync(fd_) != 0) return ErrnoStatus("cannot fsync", path);
    absl::Status synced = SyncDir(options_.data_dir);
    if (!synced.ok()) return synced;
    file_size_ = kMagicSize;
  } else {
    if (good < size) {
      log::Warning("change log: dropping a torn or corrupt tail",
                   {{"file", path},
                    {"offset", static_cast<uint64_t>(good)},
                    {"dropped_bytes", static_cast<uint64_t>(size - good)}});
      if (::ftruncate(fd_, static_cast<off_t>(good)) != 0) {
        return ErrnoStatus("cannot truncate", path);
      }
      if (::fsync(fd_) != 0) return ErrnoStatus("cannot fsync", path);
    }
    file_size_ = good;
  }
  for (auto& [name, data] : clusters_) {
    data.info.set_state(v1::CONNECTION_STATE_DISCONNECTED);
    data.info.set_disconnect_reason("watcher restarted");
  }
  return absl::OkStatus();
}

void Core::ApplyRecordLocked(v1::WatchResponse* record) {
  if (record->has_cluster_state()) {
    const v1::Cluster& hello = record->cluster_state().cluster();
    ClusterData& data = clusters_[hello.name()];
    if (data.info.name().empty() || hello.agent_epoch() > data.info.agent_epoch()) {
      data.info.set_agent_epoch(hello.agent_epoch());
      data.info.set_acked_sequence(0);
      data.kinds_changed.clear();
      data.kinds_completed.clear();
    }
    data.info.set_name(hello.name());
    data.info.set_agent_version(hello.agent_version());
    data.info.set_kubernetes_version(hello.kubernetes_version());
    data.info.set_peer(hello.peer());
    *data.info.mutable_connected_time() = hello.connected_time();
    data.UpdateSynced();
    return;
  }
  if (!record->has_change()) return;
  auto change = std::make_shared<v1::WatchChange>();
  change->Swap(record->mutable_change());
  ClusterData& data = clusters_[change->cluster()];
  if (data.info.name().empty()) data.info.set_name(change->cluster());
  const bool current_epoch = change->agent_epoch() == data.info.agent_epoch();
  if (current_epoch) {
    data.info.set_acked_sequence(std::max(data.info.acked_sequence(), change->agent_sequence()));
  }
  const v1::ObjectKind kind = KindOf(change->change().object());
  if (change->sequence() == 0) {
    if (current_epoch && change->has_change() &&
        change->change().type() == v1::CHANGE_TYPE_UNSPECIFIED &&
        kind != v1::OBJECT_KIND_UNSPECIFIED) {
      data.kinds_completed.insert(kind);
      data.UpdateSynced();
    }
    return;
  }
  latest_sequence_ = std::max(latest_sequence_, change->sequence());
  if (!window_.empty() && window_.back()->sequence() + 1 != change->sequence()) window_.clear();
  window_.push_back(change);
  while (window_.size() > options_.retention) window_.pop_front();
  if (kind == v1::OBJECT_KIND_UNSPECIFIED) return;
  if (current_epoch) {
    data.kinds_changed.insert(kind);
    data.UpdateSynced();
  }
  ObjectMap& objects = data.objects[kind];
  const Key key = KeyOf(MetaOf(change->change().object()));
  auto it = objects.find(key);
  if (kind == v1::OBJECT_KIND_EVENT && it != objects.end()) {
    data.event_order.erase(it->second->sequence());
  }
  if (change->change().type() == v1::CHANGE_TYPE_DELETED) {
    if (it != objects.end()) objects.erase(it);
    return;
  }
  if (it != objects.end()) {
    it->second = change;
  } else {
    objects.emplace(key, change);
  }
  if (kind == v1::OBJECT_KIND_EVENT) {
    data.event_order.emplace(change->sequence(), key);
    while (data.event_order.size() > options_.max_events_per_cluster) {
      objects.erase(data.event_order.begin()->second);
      data.event_order.erase(data.event_order.begin());
    }
  }
}

absl::Status Core::AppendLocked(const std::vector<v1::WatchResponse>& records) {
  if (!broken_.ok()) return broken_;
  std::string buffer;
  std::string payload;
  for (const v1::WatchResponse& record : records) AddRecord(record, &payload);
  AppendFrame(payload, &buffer);
  const std::string path = LogPath();
  absl::Status status = WriteAll(fd_, buffer, path);
  if (status.ok() && options_.fsync && ::fdatasync(fd_) != 0) {
    status = ErrnoStatus("cannot fsync", path);
  }
  if (!status.ok()) {
    log::Error("change log write failed", {{"file", path}, {"error", status}});
    if (::ftruncate(fd_, static_cast<off_t>(file_size_)) != 0) {
      broken_ = absl::InternalError(
          absl::StrCat("change log ", path, " cannot be repaired after a failed write"));
    }
    return status;
  }
  file_size_ += buffer.size();
  file_records_ += records.size();
  return absl::OkStatus();
}

void Core::MaybeCompactLocked() {
  size_t live = 0;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, data] : clusters_) {
      for (const ObjectMap& objects : data.objects) live += objects.size();
      live += 3;
    }
  }
  if (file_records_ <= 2 * options_.retention + live + 1024) return;
  absl::Status status = CompactLocked();
  if (!status.ok()) log::Warning("change log compaction failed", {{"error", status}});
}

absl::Status Core::CompactLocked() {
  std::vector<v1::WatchResponse> heads;  // per cluster: the epoch
  std::vector<ChangePtr> changes;
  std::vector<v1::WatchResponse> tails;  // per cluster: progress and completed kinds
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, data] : clusters_) {
      v1::WatchResponse head;
      *head.mutable_cluster_state()->mutable_cluster() = data.info;
      heads.push_back(std::move(head));
      for (const ObjectMap& objects : data.objects) {
        for (const auto& [key, change] : objects) changes.push_back(change);
      }
      v1::WatchResponse progress;
      v1::WatchChange* marker = progress.mutable_change();
      marker->set_cluster(name);
      marker->set_agent_epoch(data.info.agent_epoch());
      marker->set_agent_sequence(data.info.acked_sequence());
      for (int kind : data.kinds_completed) {
        v1::WatchResponse completed = progress;
        completed.mutable_change()->mutable_change()->set_type(v1::CHANGE_TYPE_UNSPECIFIED);
        MutableMetaOfKind(completed.mutable_change()->mutable_change()->mutable_object(),
                          static_cast<v1::ObjectKind>(kind));
        tails.push_back(std::move(completed));
      }
      tails.push_back(std::move(progress));
    }
    changes.insert(changes.end(), window_.begin(), window_.end());
  }
  std::sort(changes.begin(), changes.end(),
            [](const ChangePtr& a, const ChangePtr& b) { return a->sequence() < b->sequence(); });
  changes.erase(std::unique(changes.begin(), changes.end(),
                            [](const ChangePtr& a, const ChangePtr& b) {
                              return a->sequence() == b->sequence();
                            }),
                changes.end());

  const std::string temp = absl::StrCat(options_.data_dir, "/", kCompactName);
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", temp);
  std::string buffer(kMagic, kMagicSize);
  uint64_t size = 0;
  uint64_t count = 0;
  absl::Status status;
  auto flush = [&](bool force) {
    if (!status.ok() || (!force && buffer.size() < (4 << 20))) return;
    status = WriteAll(fd, buffer, temp);
    size += buffer.size();
    buffer.clear();
  };
  // One record per frame: the file is replaced atomically, so frames need not group records.
  std::string payload;
  auto add = [&](const v1::WatchResponse& record) {
    payload.clear();
    AddRecord(record, &payload);
    AppendFrame(payload, &buffer);
    ++count;
    flush(false);
  };
  for (const v1::WatchResponse& head : heads) add(head);
  v1::WatchResponse record;
  for (const ChangePtr& change : changes) {
    *record.mutable_change() = *change;
    add(record);
  }
  for (const v1::WatchResponse& tail : tails) add(tail);
  flush(true);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoStatus("cannot fsync", temp);
  ::close(fd);
  const std::string path = LogPath();
  if (status.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    status = ErrnoStatus("cannot rename to", path);
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  absl::Status dir_synced = SyncDir(options_.data_dir);
  int new_fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (new_fd < 0) {
    // The old descriptor now points at the unlinked file: refuse writes rather than lose them.
    broken_ = ErrnoStatus("cannot reopen", path);
    return broken_;
  }
  ::close(fd_);
  fd_ = new_fd;
  log::Info("change log compacted", {{"file", path},
                                     {"records_before", file_records_},
                                     {"records_after", count},
                                     {"bytes", size}});
  file_size_ = size;
  file_records_ = count;
  return dir_synced;
}

void Core::NotifyClusterStateLocked(const ClusterData& data) {
  v1::WatchResponse item;
  *item.mutable_cluster_state()->mutable_cluster() = data.Info();
  for (SubscriptionImpl* subscription : subscribers_) {
    if (!subscription->filter_.raw.cluster.empty() &&
        subscription->filter_.raw.cluster != data.info.name()) {
      continue;
    }
    subscription->pending_.push_back(item);
  }
  changed_.SignalAll();
}

absl::StatusOr<uint64_t> Core::Connected(const v1::AgentHello& hello, const std::string& peer) {
  if (hello.cluster().empty()) return absl::InvalidArgumentError("hello: cluster is empty");
  if (hello.agent_epoch() == 0) return absl::InvalidArgumentError("hello: agent_epoch is 0");
  absl::MutexLock log_lock(&log_mu_);
  uint64_t acked = 0;
  v1::WatchResponse record;
  const absl::Time now = Now();
  {
    absl::ReaderMutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("cluster-watcher is shutting down");
    auto it = clusters_.find(hello.cluster());
    if (it != clusters_.end()) {
      const uint64_t current = it->second.info.agent_epoch();
      if (hello.agent_epoch() < current) {
        return absl::FailedPreconditionError(
            absl::StrCat("cluster ", hello.cluster(), ": agent epoch ", hello.agent_epoch(),
                         " is older than the current epoch ", current));
      }
      if (hello.agent_epoch() == current) acked = it->second.info.acked_sequence();
    }
    v1::Cluster* cluster = record.mutable_cluster_state()->mutable_cluster();
    cluster->set_name(hello.cluster());
    cluster->set_state(v1::CONNECTION_STATE_CONNECTED);
    cluster->set_agent_epoch(hello.agent_epoch());
    cluster->set_agent_version(hello.agent_version());
    cluster->set_kubernetes_version(hello.kubernetes_version());
    cluster->set_peer(peer);
    *cluster->mutable_connected_time() = ToTimestamp(now);
  }
  absl::Status written = AppendLocked({record});
  if (!written.ok()) return written;
  absl::MutexLock lock(&mu_);
  ApplyRecordLocked(&record);
  ClusterData& data = clusters_[hello.cluster()];
  data.info.set_state(v1::CONNECTION_STATE_CONNECTED);
  data.info.clear_disconnect_reason();
  *data.info.mutable_last_seen_time() = ToTimestamp(now);
  NotifyClusterStateLocked(data);
  return acked;
}

void Core::Disconnected(const std::string& cluster, uint64_t epoch, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  auto it = clusters_.find(cluster);
  if (it == clusters_.end() || it->second.info.agent_epoch() != epoch ||
      it->second.info.state() != v1::CONNECTION_STATE_CONNECTED) {
    return;
  }
  it->second.info.set_state(v1::CONNECTION_STATE_DISCONNECTED);
  it->second.info.set_disconnect_reason(reason);
  NotifyClusterStateLocked(it->second);
}

void Core::Seen(const std::string& cluster) {
  const absl::Time now = Now();
  absl::MutexLock lock(&mu_);
  auto it = clusters_.find(cluster);
  if (it != clusters_.end()) *it->second.info.mutable_last_seen_time() = ToTimestamp(now);
}

absl::StatusOr<uint64_t> Core::Apply(const std::string& cluster, uint64_t epoch,
                                     std::vector<v1::AgentEvent> events) {
  for (size_t i = 1; i < events.size(); ++i) {
    if (events[i].sequence() <= events[i - 1].sequence()) {
      return absl::InvalidArgumentError(absl::StrCat("cluster ", cluster, ": sequence ",
                                                     events[i].sequence(), " follows ",
                                                     events[i - 1].sequence(), " in one batch"));
    }
  }
  absl::MutexLock log_lock(&log_mu_);
  const absl::Time now = Now();
  std::vector<v1::WatchResponse> records;
  uint64_t acked = 0;
  uint64_t last_new = 0;
  uint64_t duplicates = 0;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("cluster-watcher is shutting down");
    auto it = clusters_.find(cluster);
    if (it == clusters_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("cluster ", cluster, " has not connected"));
    }
    const ClusterData& data = it->second;
    if (data.info.agent_epoch() != epoch) {
      return absl::InvalidArgumentError(absl::StrCat("cluster ", cluster, ": epoch ", epoch,
                                                     " is not the current epoch ",
                                                     data.info.agent_epoch()));
    }
    acked = data.info.acked_sequence();
    uint64_t next_sequence = latest_sequence_ + 1;
    // Objects changed earlier in this batch: true when present after the change.
    std::map<std::pair<int, Key>, bool> touched;
    const google::protobuf::Timestamp received = ToTimestamp(now);
    auto add_change = [&](const v1::AgentEvent& event, v1::ObjectChange change) {
      v1::WatchResponse record;
      v1::WatchChange* out = record.mutable_change();
      out->set_sequence(next_sequence++);
      out->set_cluster(cluster);
      *out->mutable_change() = std::move(change);
      *out->mutable_observed_time() = event.observed_time();
      *out->mutable_received_time() = received;
      out->set_agent_epoch(epoch);
      out->set_agent_sequence(event.sequence());
      records.push_back(std::move(record));
    };
    for (v1::AgentEvent& event : events) {
      if (event.sequence() <= acked) {
        ++duplicates;
        continue;
      }
      last_new = event.sequence();
      if (event.has_change()) {
        const v1::ObjectChange& change = event.change();
        const v1::ObjectKind kind = KindOf(change.object());
        const v1::ObjectMeta& meta = MetaOf(change.object());
        if (kind == v1::OBJECT_KIND_UNSPECIFIED || meta.name().empty() ||
            change.type() == v1::CHANGE_TYPE_UNSPECIFIED ||
            !v1::ChangeType_IsValid(change.type())) {
          log::Warning("ignoring a malformed agent event",
                       {{"cluster", cluster}, {"sequence", event.sequence()}});
          continue;
        }
        touched[{kind, KeyOf(meta)}] = change.type() != v1::CHANGE_TYPE_DELETED;
        add_change(event, std::move(*event.mutable_change()));
      } else if (event.has_snapshot_complete()) {
        const v1::ObjectKind kind = event.snapshot_complete().kind();
        const std::string& scope = event.snapshot_complete().namespace_();
        if (kind <= v1::OBJECT_KIND_UNSPECIFIED || kind >= static_cast<int>(kKinds)) {
          log::Warning("ignoring a snapshot_complete without a kind",
                       {{"cluster", cluster}, {"sequence", event.sequence()}});
          continue;
        }
        for (const auto& [key, last] : data.objects[kind]) {
          if (!scope.empty() && key.first != scope) continue;
          if (touched.contains({kind, key})) continue;
          if (last->agent_epoch() == epoch) continue;
          v1::ObjectChange deleted;
          deleted.set_type(v1::CHANGE_TYPE_DELETED);
          *deleted.mutable_object() = last->change().object();
          touched[{kind, key}] = false;
          add_change(event, std::move(deleted));
        }
        v1::WatchResponse marker;
        v1::WatchChange* out = marker.mutable_change();
        out->set_cluster(cluster);
        out->set_agent_epoch(epoch);
        out->set_agent_sequence(event.sequence());
        *out->mutable_observed_time() = event.observed_time();
        *out->mutable_received_time() = received;
        out->mutable_change()->set_type(v1::CHANGE_TYPE_UNSPECIFIED);
        MutableMetaOfKind(out->mutable_change()->mutable_object(), kind)->set_namespace_(scope);
        records.push_back(std::move(marker));
      }
    }
    if (last_new != 0 && (records.empty() || records.back().change().agent_sequence() < last_new)) {
      v1::WatchResponse marker;
      marker.mutable_change()->set_cluster(cluster);
      marker.mutable_change()->set_agent_epoch(epoch);
      marker.mutable_change()->set_agent_sequence(last_new);
      records.push_back(std::move(marker));
    }
  }
  duplicates_ += duplicates;
  if (records.empty()) {
    Seen(cluster);
    return acked;
  }
  absl::Status written = AppendLocked(records);
  if (!written.ok()) return written;
  {
    absl::MutexLock lock(&mu_);
    for (v1::WatchResponse& record : records) ApplyRecordLocked(&record);
    auto it = clusters_.find(cluster);
    if (it != clusters_.end()) *it->second.info.mutable_last_seen_time() = ToTimestamp(now);
    changed_.SignalAll();
  }
  MaybeCompactLocked();
  return last_new;
}

absl::StatusOr<std::string> Core::ResolveLocked(const std::string& cluster) const {
  if (cluster.empty()) {
    if (clusters_.empty()) return absl::NotFoundError("no cluster is known yet");
    if (clusters_.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cluster is required: ", clusters_.size(), " clusters are known (",
          absl::StrJoin(clusters_, ", ",
                        [](std::string* out, const auto& entry) { out->append(entry.first); }),
          ")"));
    }
    return clusters_.begin()->first;
  }
  if (!clusters_.contains(cluster)) {
    return absl::NotFoundError(absl::StrCat("cluster ", cluster, " is not known"));
  }
  return cluster;
}

absl::StatusOr<v1::ListClustersResponse> Core::ListClusters(
    const v1::ListClustersRequest& request) const {
  absl::StatusOr<int> page_size = PageSize(request.page_size());
  if (!page_size.ok()) return page_size.status();
  absl::StatusOr<std::optional<Key>> after = DecodePageToken(request.page_token());
  if (!after.ok()) return after.status();
  absl::ReaderMutexLock lock(&mu_);
  v1::ListClustersResponse response;
  auto it = after->has_value() ? clusters_.upper_bound((*after)->second) : clusters_.begin();
  for (; it != clusters_.end(); ++it) {
    if (response.clusters_size() == *page_size) {
      response.set_next_page_token(EncodePageToken({"", response.clusters().rbegin()->name()}));
      break;
    }
    *response.add_clusters() = it->second.Info();
  }
  return response;
}

absl::StatusOr<v1::Cluster> Core::GetCluster(const std::string& cluster) const {
  absl::ReaderMutexLock lock(&mu_);
  absl::StatusOr<std::string> name = ResolveLocked(cluster);
  if (!name.ok()) return name.status();
  return clusters_.at(*name).Info();
}

absl::StatusOr<v1::GetApplicationResponse> Core::GetApplication(
    const v1::GetApplicationRequest& request) const {
  if (request.name().empty()) return absl::InvalidArgumentError("name is required");
  if (request.max_events() < 0) return absl::InvalidArgumentError("max_events is negative");
  const std::string ns = request.namespace_().empty() ? "argocd" : request.namespace_();
  const size_t max_events = request.max_events() == 0 ? 20 : request.max_events();
  absl::ReaderMutexLock lock(&mu_);
  absl::StatusOr<std::string> name = ResolveLocked(request.cluster());
  if (!name.ok()) return name.status();
  const ClusterData& data = clusters_.at(*name);
  auto app_it = data.objects[v1::OBJECT_KIND_APPLICATION].find({ns, request.name()});
  if (app_it == data.objects[v1::OBJECT_KIND_APPLICATION].end()) {
    return absl::NotFoundError(
        absl::StrCat("Application ", ns, "/", request.name(), " not found on cluster ", *name));
  }
  const v1::Application& app = app_it->second->change().object().application();
  v1::GetApplicationResponse response;
  response.set_cluster(*name);
  *response.mutable_application() = app;
  response.set_cluster_state(data.info.state());
  for (const auto& [key, change] : data.objects[v1::OBJECT_KIND_DEPLOYMENT]) {
    if (InApplicationScope(data, change->change().object(), app)) {
      *response.add_deployments() = change->change().object().deployment();
    }
  }
  for (const auto& [key, change] : data.objects[v1::OBJECT_KIND_POD]) {
    if (InApplicationScope(data, change->change().object(), app)) {
      *response.add_pods() = change->change().object().pod();
    }
  }
  for (auto it = data.event_order.rbegin();
       it != data.event_order.rend() && static_cast<size_t>(response.events_size()) < max_events;
       ++it) {
    const ChangePtr& change = data.objects[v1::OBJECT_KIND_EVENT].at(it->second);
    if (InApplicationScope(data, change->change().object(), app)) {
      *response.add_events() = change->change().object().event();
    }
  }
  return response;
}

absl::StatusOr<v1::ListPodsResponse> Core::ListPods(const v1::ListPodsRequest& request) const {
  absl::StatusOr<int> page_size = PageSize(request.page_size());
  if (!page_size.ok()) return page_size.status();
  absl::StatusOr<std::optional<Key>> after = DecodePageToken(request.page_token());
  if (!after.ok()) return after.status();
  absl::StatusOr<std::vector<Requirement>> selector = ParseSelector(request.label_selector());
  if (!selector.ok()) return selector.status();
  absl::ReaderMutexLock lock(&mu_);
  absl::StatusOr<std::string> name = ResolveLocked(request.cluster());
  if (!name.ok()) return name.status();
  const ClusterData& data = clusters_.at(*name);
  const v1::Application* app = nullptr;
  if (!request.application().empty()) {
    auto it = data.objects[v1::OBJECT_KIND_APPLICATION].find({"argocd", request.application()});
    if (it == data.objects[v1::OBJECT_KIND_APPLICATION].end()) {
      // No such Application: it manages no pods.
      v1::ListPodsResponse empty;
      empty.set_cluster_state(data.info.state());
      return empty;
    }
    app = &it->second->change().object().application();
  }
  v1::ListPodsResponse response;
  response.set_cluster_state(data.info.state());
  const ObjectMap& pods = data.objects[v1::OBJECT_KIND_POD];
  auto it = after->has_value() ? pods.upper_bound(**after) : pods.begin();
  for (; it != pods.end(); ++it) {
    const v1::ClusterObject& object = it->second->change().object();
    const v1::Pod& pod = object.pod();
    if (!request.namespace_().empty() && pod.meta().namespace_() != request.namespace_()) continue;
    if (!SelectorMatches(*selector, pod.meta().labels())) continue;
    if (app != nullptr && !InApplicationScope(data, object, *app)) continue;
    if (!request.deployment().empty() &&
        !InDeploymentScope(data, object, nullptr, request.deployment())) {
      continue;
    }
    if (response.pods_size() == *page_size) {
      response.set_next_page_token(EncodePageToken(KeyOf(response.pods().rbegin()->meta())));
      break;
    }
    *response.add_pods() = pod;
  }
  return response;
}

absl::StatusOr<ClusterState::Snapshot> Core::GetSnapshot(const std::string& cluster) const {
  absl::ReaderMutexLock lock(&mu_);
  absl::StatusOr<std::string> name = ResolveLocked(cluster);
  if (!name.ok()) return name.status();
  const ClusterData& data = clusters_.at(*name);
  ClusterState::Snapshot snapshot;
  for (const auto& [key, change] : data.objects[v1::OBJECT_KIND_APPLICATION]) {
    snapshot.applications.push_back(change->change().object().application());
  }
  for (const auto& [key, change] : data.objects[v1::OBJECT_KIND_DEPLOYMENT]) {
    snapshot.deployments.push_back(change->change().object().deployment());
  }
  for (const auto& [key, change] : data.objects[v1::OBJECT_KIND_POD]) {
    snapshot.pods.push_back(change->change().object().pod());
  }
  for (const auto& [sequence, key] : data.event_order) {
    snapshot.events.push_back(
        data.objects[v1::OBJECT_KIND_EVENT].at(key)->change().object().event());
  }
  snapshot.cluster = data.Info();
  return snapshot;
}

absl::StatusOr<std::unique_ptr<Subscription>> Core::Subscribe(const WatchFilter& filter,
                                                              uint64_t from_sequence,
                                                              bool initial_snapshot) {
  Filter parsed{filter, {}};
  for (v1::ObjectKind kind : filter.kinds) {
    if (!v1::ObjectKind_IsValid(kind)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown kind ", static_cast<int>(kind)));
    }
    if (kind == v1::OBJECT_KIND_UNSPECIFIED) {
      parsed.kinds.clear();
      break;
    }
    parsed.kinds.insert(kind);
  }
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::CancelledError("cluster-watcher is shutting down");
  const uint64_t oldest = OldestLocked();
  if (from_sequence != 0 && (from_sequence + 1 < oldest || from_sequence > latest_sequence_)) {
    return absl::OutOfRangeError(
        absl::StrCat("from_sequence ", from_sequence, " is outside the retention window [",
                     oldest - 1, ", ", latest_sequence_, "]: resubscribe with initial_snapshot"));
  }
  auto subscription = std::make_unique<SubscriptionImpl>(
      shared_from_this(), parsed, from_sequence != 0 ? from_sequence : latest_sequence_, oldest,
      latest_sequence_);
  if (from_sequence == 0 && initial_snapshot) {
    for (const auto& [name, data] : clusters_) {
      if (!filter.cluster.empty() && name != filter.cluster) continue;
      for (const ObjectMap& objects : data.objects) {
        for (const auto& [key, change] : objects) {
          if (!FilterMatches(parsed, data, *change)) continue;
          v1::WatchResponse item;
          v1::WatchChange* out = item.mutable_change();
          *out = *change;
          out->set_snapshot(true);
          out->mutable_change()->set_type(v1::CHANGE_TYPE_ADDED);
          subscription->pending_.push_back(std::move(item));
        }
      }
    }
    v1::WatchResponse complete;
    complete.mutable_snapshot_complete()->set_sequence(latest_sequence_);
    subscription->pending_.push_back(std::move(complete));
  }
  subscribers_.insert(subscription.get());
  return std::unique_ptr<Subscription>(std::move(subscription));
}

void Core::Unregister(SubscriptionImpl* subscription) {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(subscription);
}

absl::Status Core::Next(SubscriptionImpl* sub, absl::Time deadline,
                        std::vector<v1::WatchResponse>* out) {
  absl::MutexLock lock(&mu_);
  while (true) {
    if (shutdown_) return absl::CancelledError("cluster-watcher is shutting down");
    const uint64_t oldest = OldestLocked();
    if (sub->cursor_ + 1 < oldest) {
      return absl::OutOfRangeError(absl::StrCat(
          "the subscriber fell behind the retention window: last sequence seen ", sub->cursor_,
          ", oldest retained ", oldest, "; resubscribe with initial_snapshot"));
    }
    while (!sub->pending_.empty() && out->size() < kMaxItemsPerNext) {
      out->push_back(std::move(sub->pending_.front()));
      sub->pending_.pop_front();
    }
    size_t scanned = 0;
    if (!window_.empty() && sub->cursor_ < latest_sequence_) {
      size_t index = sub->cursor_ + 1 - window_.front()->sequence();
      for (; index < window_.size() && out->size() < kMaxItemsPerNext && scanned < kMaxScanPerNext;
           ++index, ++scanned) {
        const ChangePtr& change = window_[index];
        sub->cursor_ = change->sequence();
        auto data = clusters_.find(change->cluster());
        if (data == clusters_.end() || !FilterMatches(sub->filter_, data->second, *change))
          continue;
        *out->emplace_back().mutable_change() = *change;
      }
    }
    if (!out->empty()) return absl::OkStatus();
    if (scanned == kMaxScanPerNext) {
      // Let writers in between long scans of changes that do not match.
      mu_.Unlock();
      mu_.Lock();
      continue;
    }
    if (absl::Now() >= deadline) return absl::OkStatus();
    changed_.WaitWithDeadline(&mu_, deadline);
  }
}

void Core::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
}

class ClusterStateImpl final : public ClusterState {
 public:
  explicit ClusterStateImpl(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~ClusterStateImpl() override { core_->Shutdown(); }

  absl::StatusOr<uint64_t> Connected(const v1::AgentHello& hello,
                                     const std::string& peer) override {
    return core_->Connected(hello, peer);
  }
  void Disconnected(const std::string& cluster, uint64_t epoch,
                    const std::string& reason) override {
    core_->Disconnected(cluster, epoch, reason);
  }
  void Seen(const std::string& cluster) override { core_->Seen(cluster); }
  absl::StatusOr<uint64_t> Apply(const std::string& cluster, uint64_t epoch,
                                 std::vector<v1::AgentEvent> events) override {
    return core_->Apply(cluster, epoch, std::move(events));
  }
  uint64_t duplicates_dropped() const override { return core_->duplicates_dropped(); }
  uint64_t latest_sequence() const override { return core_->latest_sequence(); }
  absl::StatusOr<std::string> ResolveCluster(const std::string& cluster) const override {
    return core_->ResolveCluster(cluster);
  }
  absl::StatusOr<v1::ListClustersResponse> ListClusters(
      const v1::ListClustersRequest& request) const override {
    return core_->ListClusters(request);
  }
  absl::StatusOr<v1::Cluster> GetCluster(const std::string& cluster) const override {
    return core_->GetCluster(cluster);
  }
  absl::StatusOr<v1::GetApplicationResponse> GetApplication(
      const v1::GetApplicationRequest& request) const override {
    return core_->GetApplication(request);
  }
  absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request) const override {
    return core_->ListPods(request);
  }
  absl::StatusOr<Snapshot> GetSnapshot(const std::string& cluster) const override {
    return core_->GetSnapshot(cluster);
  }
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(const WatchFilter& filter,
                                                          uint64_t from_sequence,
                                                          bool initial_snapshot) override {
    return core_->Subscribe(filter, from_sequence, initial_snapshot);
  }
  void Shutdown() override { core_->Shutdown(); }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ClusterState>> ClusterState::Open(Options options) {
  auto core = std::make_shared<Core>(std::move(options));
  absl::Status loaded = core->Load();
  if (!loaded.ok()) return loaded;
  return std::unique_ptr<ClusterState>(std::make_unique<ClusterStateImpl>(std::move(core)));
}

std::string NotReadyReason(const v1::Pod& pod) {
  if (pod.ready() || pod.phase() == v1::POD_PHASE_SUCCEEDED) return "";
  for (const auto* statuses : {&pod.init_container_statuses(), &pod.container_statuses()}) {
    for (const v1::ContainerStatus& status : *statuses) {
      if (status.state().has_waiting() && !status.state().waiting().reason().empty()) {
        return status.state().waiting().reason();
      }
    }
  }
  for (const v1::ContainerStatus& status : pod.container_statuses()) {
    if (status.state().has_terminated() && !status.state().terminated().reason().empty()) {
      return status.state().terminated().reason();
    }
  }
  if (!pod.reason().empty()) return pod.reason();
  switch (pod.phase()) {
    case v1::POD_PHASE_PENDING:
      return "Pending";
    case v1::POD_PHASE_FAILED:
      return "Failed";
    default:
      return "NotReady";
  }
}

std::map<std::pair<std::string, std::string>, int> CountNotReady(const std::vector<v1::Pod>& pods) {
  std::map<std::pair<std::string, std::string>, int> counts;
  for (const v1::Pod& pod : pods) {
    std::string reason = NotReadyReason(pod);
    if (!reason.empty()) ++counts[{pod.meta().namespace_(), std::move(reason)}];
  }
  return counts;
}

}  // namespace elfdeploy::watcher
