#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

// The in-memory Kubernetes object store of elfdeploy-kubesim: what etcd plus the API server's
// registry do, without HTTP. Everything the simulator changes goes through ObjectStore, and every
// change is visible to list and watch clients exactly as a real API server would show it.
//
// Errors are absl::Status codes that the HTTP layer maps to Kubernetes Status reasons:
//   kNotFound -> 404 NotFound          kAlreadyExists -> 409 AlreadyExists
//   kAborted -> 409 Conflict           kInvalidArgument -> 400 BadRequest
//   kOutOfRange -> 410 Expired         (resourceVersion or continue token older than the window)
//   kDeadlineExceeded -> 504 Timeout   (resourceVersion newer than the store's)
//   kUnimplemented -> 415 UnsupportedMediaType, kCancelled -> 503 (store shut down)
namespace elfdeploy::kubesim {

// One served resource type.
struct ResourceType {
  std::string group = {};     // "" for the core group, "apps", "argoproj.io"
  std::string version = {};   // "v1", "v1alpha1"
  std::string resource = {};  // plural, as in URLs: "pods"
  std::string kind = {};      // "Pod"
  bool namespaced = true;
  // Whether the API server serves a /status subresource (PUT to the main resource keeps status).
  bool status_subresource = false;
  // Whether metadata.generation is kept (bumped when anything but metadata and status changes).
  bool has_generation = false;

  // "v1", "apps/v1".
  std::string ApiVersion() const;
  // "PodList".
  std::string ListKind() const { return kind + "List"; }
  // "pods", "deployments.apps": the name used in API server messages.
  std::string QualifiedResource() const;
};

// Every served type: pods, events, services, configmaps, secrets, serviceaccounts, namespaces,
// nodes, deployments and replicasets (apps/v1), applications and appprojects
// (argoproj.io/v1alpha1). Resource names are unique across groups.
const std::vector<ResourceType>& ResourceTypes();
// The type called `resource` ("pods"); nullptr when not served.
const ResourceType* FindResource(absl::string_view resource);
// The type of `kind` in `api_version` ("apps/v1", "Deployment"); nullptr when not served.
const ResourceType* FindResourceByKind(absl::string_view api_version, absl::string_view kind);

// A parsed labelSelector: "a=b,c!=d,e in (f,g),h notin (i),j,!k" ("==" too). Empty matches all.
class LabelSelector {
 public:
  static absl::StatusOr<LabelSelector> Parse(absl::string_view text);
  // `labels` is metadata.labels (an object, or null).
  bool Matches(const nlohmann::json& labels) const;
  bool empty() const { return requirements_.empty(); }

 private:
  struct Requirement {
    enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };
    std::string key;
    Op op;
    std::vector<std::string> values;
  };
  std::vector<Requirement> requirements_;
};

// A parsed fieldSelector: "metadata.name=x,metadata.namespace!=y" ("==" too). Supported fields
// are metadata.name and metadata.namespace for every type, plus the per-type fields the API
// server supports (pods: spec.nodeName, status.phase, ...; events: involvedObject.*, reason, type;
// secrets: type). Others are INVALID_ARGUMENT, as on a real cluster.
class FieldSelector {
 public:
  static absl::StatusOr<FieldSelector> Parse(absl::string_view text, const ResourceType& type);
  bool Matches(const nlohmann::json& object) const;
  bool empty() const { return terms_.empty(); }

 private:
  struct Term {
    std::string field;
    bool equals;
    std::string value;
  };
  std::vector<Term> terms_;
};

// Immutable, shared snapshot of an object. Callers never modify what a pointer points at.
using ObjectPtr = std::shared_ptr<const nlohmann::json>;
// The object's JSON text, serialized once when it was stored.
using TextPtr = std::shared_ptr<const std::string>;

struct ListOptions {
  // "" lists every namespace (and is required for cluster-scoped types).
  std::string namespace_name = {};
  std::string label_selector = {};
  std::string field_selector = {};
  // Maximum items in this page; 0 = no limit.
  int64_t limit = 0;
  // The metadata.continue of the previous page. The page is served from the same snapshot.
  std::string continue_token = {};
  // "" or "0": the current state. Otherwise a decimal resourceVersion: with
  // resource_version_match "Exact" the state at exactly that version (OUT_OF_RANGE when
  // compacted), else ("NotOlderThan", "") the current state, provided it is not older.
  std::string resource_version = {};
  std::string resource_version_match = {};
};

struct ListResult {
  std::vector<ObjectPtr> items = {};
  std::vector<TextPtr> texts = {};  // items[i] serialized
  // The resourceVersion the list is consistent at.
  uint64_t resource_version = 0;
  // Empty on the last page.
  std::string continue_token = {};
  // Items after this page; set only for a paged list without selectors, as the API server does.
  std::optional<int64_t> remaining_item_count = {};
};

enum class EventType { kAdded, kModified, kDeleted };
// "ADDED", "MODIFIED", "DELETED".
absl::string_view EventTypeName(EventType type);

struct WatchEvent {
  EventType type = EventType::kAdded;
  ObjectPtr object = {};
  TextPtr text = {};
  uint64_t resource_version = 0;
};

struct WatchOptions {
  std::string namespace_name = {};
  std::string label_selector = {};
  std::string field_selector = {};
  // "" or "0": first a synthetic ADDED event per existing object, then every later change.
  // Otherwise every change after that resourceVersion; OUT_OF_RANGE when it is compacted.
  std::string resource_version = {};
};

class ObjectStore;

// One watch: a cursor into the store's change history. Owned by the caller; must not outlive the
// store. Not thread-safe (one reader), but any number of watchers may read concurrently.
class Watcher {
 public:
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;
  ~Watcher();

  // Appends the next events to `*out` (cleared first), in resourceVersion order, blocking until
  // there is at least one or `deadline` passes (then OK with none). A change that makes an object
  // start or stop matching the selectors is delivered as ADDED or DELETED, as the API server does.
  // OUT_OF_RANGE (410 Expired) once the watcher has fallen behind the history window: the caller
  // must relist. CANCELLED after ObjectStore::Shutdown.
  absl::Status Next(absl::Time deadline, std::vector<WatchEvent>* out);

  // The resourceVersion up to which this watcher has seen every change: the value of a BOOKMARK.
  uint64_t resource_version() const { return cursor_; }

 private:
  friend class ObjectStore;
  Watcher(ObjectStore* store, const ResourceType* type, WatchOptions options, LabelSelector labels,
          FieldSelector fields, uint64_t cursor)
      : store_(store),
        type_(type),
        options_(std::move(options)),
        labels_(std::move(labels)),
        fields_(std::move(fields)),
        cursor_(cursor) {}
  bool Matches(const nlohmann::json& object) const;

  ObjectStore* store_;
  const ResourceType* type_;
  WatchOptions options_;
  LabelSelector labels_;
  FieldSelector fields_;
  uint64_t cursor_;
  std::vector<WatchEvent> initial_;
};

struct LogOptions {
  // Empty: the pod's only container (INVALID_ARGUMENT when it has several).
  std::string container = {};
  // The last n lines only; negative = all.
  int64_t tail_lines = -1;
};

// Lines of one container's log, read from a position.
struct LogChunk {
  std::vector<std::string> lines;  // without newlines
  // The container read (resolved when LogOptions::container was empty) and the pod's uid: pass
  // both back to WaitLog.
  std::string container = {};
  std::string pod_uid = {};
  // Pass back to WaitLog for the lines after these.
  size_t next_offset = 0;
  // True once the pod was deleted (or replaced by another with the same name): no more lines.
  bool ended = false;
};

struct ObjectStoreOptions {
  // How many changes are kept for watches and consistent pages; older resourceVersions are
  // compacted (410 Expired).
  size_t history_window = 10000;
  // Seeds uids and generated names: the same seed and the same calls give the same objects.
  uint64_t seed = 1;
  // creationTimestamp and deletion times come from this clock.
  std::function<absl::Time()> now = absl::Now;
  // Creates "default", "kube-system", "kube-public" and "kube-node-lease" at construction.
  bool create_default_namespaces = true;
};

// The object store. Thread-safe: any number of writers, readers and watchers.
class ObjectStore {
 public:
  using Options = ObjectStoreOptions;

  explicit ObjectStore(Options options = {});
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;
  ~ObjectStore();

  // The current (latest) resourceVersion.
  uint64_t resource_version() const;
  // The oldest resourceVersion a watch may start from (everything after it is still in history).
  uint64_t compacted_resource_version() const;

  // Stores a new object of type `resource`. Sets kind/apiVersion when missing, a name from
  // metadata.generateName when there is no name, uid, creationTimestamp, resourceVersion,
  // generation (types that have it) and a namespace's status.phase. ALREADY_EXISTS when the name is
  // taken; NOT_FOUND when its namespace does not exist; INVALID_ARGUMENT without a name or
  // namespace.
  absl::StatusOr<ObjectPtr> Create(absl::string_view resource, nlohmann::json object);

  // Replaces the object named by object.metadata.{namespace,name}. When the object carries
  // metadata.resourceVersion it must be the current one (ABORTED, 409 Conflict, otherwise).
  // uid, creationTimestamp and generation are kept by the store (generation is bumped when the
  // spec changes). With `keep_status` the stored status is kept (the API server's PUT on a type
  // with a status subresource). NOT_FOUND when absent.
  absl::StatusOr<ObjectPtr> Update(absl::string_view resource, nlohmann::json object,
                                   bool keep_status = false);

  // Replaces only .status of the object (PUT .../status); the resourceVersion precondition as in
  // Update.
  absl::StatusOr<ObjectPtr> UpdateStatus(absl::string_view resource, nlohmann::json object);

  // Applies an RFC 7386 JSON merge patch. A metadata.resourceVersion in the patch is a
  // precondition. With `status_only` only the patch's "status" is applied (PATCH .../status).
  absl::StatusOr<ObjectPtr> MergePatch(absl::string_view resource, absl::string_view namespace_name,
                                       absl::string_view name, const nlohmann::json& patch,
                                       bool status_only = false);

  // Applies an RFC 6902 JSON patch. INVALID_ARGUMENT when an operation fails.
  absl::StatusOr<ObjectPtr> JsonPatch(absl::string_view resource, absl::string_view namespace_name,
                                      absl::string_view name, const nlohmann::json& patch);

  // Read-modify-write for the simulator: `mutate` edits a copy of the current object (outside the
  // store's lock) and the result is stored with Update semantics; retried on conflicts. A
  // non-OK status from `mutate` is returned as is and nothing changes.
  absl::StatusOr<ObjectPtr> Mutate(absl::string_view resource, absl::string_view namespace_name,
                                   absl::string_view name,
                                   const std::function<absl::Status(nlohmann::json&)>& mutate);

  // Deletes the object and returns it as last stored, with the deletion's resourceVersion.
  // `precondition_rv`, when not empty, must be the current resourceVersion (ABORTED otherwise).
  // Deleting a namespace deletes everything in it; deleting a pod drops its logs.
  absl::StatusOr<ObjectPtr> Delete(absl::string_view resource, absl::string_view namespace_name,
                                   absl::string_view name, absl::string_view precondition_rv = "");

  // The current object; NOT_FOUND with the API server's message when absent.
  absl::StatusOr<ObjectPtr> Get(absl::string_view resource, absl::string_view namespace_name,
                                absl::string_view name) const;

  // A list, paged and consistent as ListOptions describes. The continue token is the API
  // server's format (base64 of {"v","rv","start"}); OUT_OF_RANGE (410 Expired) once its
  // resourceVersion is compacted.
  absl::StatusOr<ListResult> List(absl::string_view resource, const ListOptions& options) const;

  // Starts a watch. OUT_OF_RANGE (410 Expired, "too old resource version") when
  // options.resource_version is compacted; INVALID_ARGUMENT for bad selectors or versions.
  absl::StatusOr<std::unique_ptr<Watcher>> Watch(absl::string_view resource,
                                                 const WatchOptions& options);

  // Appends lines to a container's log. NOT_FOUND when the pod does not exist; INVALID_ARGUMENT
  // when the container is not in its spec.
  absl::Status AppendLog(absl::string_view namespace_name, absl::string_view pod,
                         absl::string_view container, const std::vector<std::string>& lines);

  // The log so far (or its tail), with the offset to follow from.
  absl::StatusOr<LogChunk> ReadLog(absl::string_view namespace_name, absl::string_view pod,
                                   const LogOptions& options) const;

  // Lines appended after `offset` of the log ReadLog returned, blocking until there is one, the
  // pod is gone (ended), or `deadline` (OK with none). CANCELLED after Shutdown.
  absl::StatusOr<LogChunk> WaitLog(absl::string_view namespace_name, absl::string_view pod,
                                   absl::string_view container, absl::string_view pod_uid,
                                   size_t offset, absl::Time deadline) const;

  // The name ReadLog used for an empty LogOptions::container, or the error it gave.
  absl::StatusOr<std::string> ResolveContainer(absl::string_view namespace_name,
                                               absl::string_view pod,
                                               absl::string_view container) const;

  // Wakes every blocked Watcher::Next and WaitLog; they return CANCELLED from then on.
  void Shutdown();

  // Number of watchers alive (tests and metrics).
  int watcher_count() const;

 private:
  friend class Watcher;

  using Key = std::pair<std::string, std::string>;  // (namespace, name)
  struct Entry {
    ObjectPtr object;
    TextPtr text;
  };
  struct Change {
    uint64_t rv;
    const ResourceType* type;
    EventType event;
    ObjectPtr object;    // the new state (the last state, with the deletion's rv, for DELETED)
    TextPtr text;        // object serialized
    ObjectPtr previous;  // the state before; null for ADDED
    TextPtr previous_text;
    Key key;
  };
  struct PodLog {
    std::string uid;
    std::map<std::string, std::vector<std::string>, std::less<>> containers;
  };
  using Objects = std::map<Key, Entry>;

  const ResourceType* TypeOrNull(absl::string_view resource) const;
  absl::StatusOr<const ResourceType*> Type(absl::string_view resource) const;
  Objects& ObjectsOf(const ResourceType* type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const Objects* ObjectsOfOrNull(const ResourceType* type) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Records a change: bumps the resourceVersion, stamps it into `object`, stores it, appends it to
  // the history and wakes watchers. Returns the stored object.
  ObjectPtr Commit(const ResourceType* type, const Key& key, EventType event, nlohmann::json object,
                   const Entry* previous) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<ObjectPtr> DeleteLocked(const ResourceType* type, const Key& key,
                                         absl::string_view precondition_rv)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores `updated` as the new state of the existing object at `key`: identity metadata
  // (uid, creationTimestamp, ...) is kept, generation bumped when the spec changed; a no-op
  // returns the existing object without a new resourceVersion.
  absl::StatusOr<ObjectPtr> FinishUpdateLocked(const ResourceType* type, const Key& key,
                                               const Entry& existing, nlohmann::json updated)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Locks, finds the object at `key` and checks `precondition_rv` (when not empty).
  absl::StatusOr<ObjectPtr> UpdateWith(
      const ResourceType* type, const Key& key, absl::string_view precondition_rv,
      const std::function<absl::StatusOr<nlohmann::json>(const nlohmann::json&)>& make);
  std::string NewUid() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string RandomSuffix() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> ResolveContainerLocked(const Key& pod_key,
                                                     absl::string_view container) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The reaper thread's loop, until Shutdown.
  void Reap();
  // Watcher::Next under the store's lock.
  absl::Status NextLocked(Watcher* watcher, absl::Time deadline, std::vector<WatchEvent>* out);

  const Options options_;
  mutable absl::Mutex mu_;
  mutable absl::CondVar changed_;
  std::map<const ResourceType*, Objects> objects_ ABSL_GUARDED_BY(mu_);
  std::deque<Change> history_ ABSL_GUARDED_BY(mu_);
  // Changes pushed out of history, freed by reaper_ every few milliseconds: as an API server's
  // garbage collector does, off the writers' path.
  std::vector<Change> dropped_ ABSL_GUARDED_BY(mu_);
  // Per type, like the API server's watch cache: the last change in history and the last one
  // compacted out of it. A watch sleeps until its own type changes, and is too old only when a
  // change of its type is gone.
  struct TypeWindow {
    uint64_t last_rv = 0;
    uint64_t compacted_rv = 1;
  };
  TypeWindow WindowOf(const ResourceType* type) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::map<const ResourceType*, TypeWindow> windows_ ABSL_GUARDED_BY(mu_);
  uint64_t rv_ ABSL_GUARDED_BY(mu_) = 1;
  // Every change after this resourceVersion is in history_.
  uint64_t compacted_rv_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<Key, PodLog> logs_ ABSL_GUARDED_BY(mu_);
  // Bumped on every log append, so WaitLog can wait on changed_ too.
  uint64_t log_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::mt19937_64 random_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  int watchers_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread reaper_;
};

// The Kubernetes Status object for an error of this store (and of the HTTP layer): kind Status,
// status Failure, message, reason and code per the table at the top of this file.
nlohmann::json StatusFor(const absl::Status& status);
// The HTTP status code StatusFor uses.
int HttpCodeFor(const absl::Status& status);
// A Status object with an explicit reason and code.
nlohmann::json MakeStatus(int code, absl::string_view reason, absl::string_view message);

}  // namespace elfdeploy::kubesim
