#include "tests/kubesim/argocd.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/log.h"
#include "tests/kubesim/manifests.h"
#include "tests/kubesim/source_render.h"

namespace elfdeploy::kubesim {
namespace {

// How often the resource watches that feed health checks hand over what changed.
constexpr absl::Duration kWatchBatchInterval = absl::Milliseconds(5);

using json = nlohmann::json;

constexpr char kApplications[] = "applications";
constexpr char kRefreshAnnotation[] = "argocd.argoproj.io/refresh";
constexpr char kInstanceLabel[] = "app.kubernetes.io/instance";
constexpr char kLastApplied[] = "kubectl.kubernetes.io/last-applied-configuration";
constexpr char kInClusterServer[] = "https://kubernetes.default.svc";
// Types an Application may manage and that are searched for objects to prune.
constexpr const char* kManagedResources[] = {"configmaps", "secrets", "serviceaccounts", "services",
                                             "deployments"};

std::string Timestamp(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

const json& At(const json& object, const char* pointer) {
  static const json kNull;
  json::json_pointer p(pointer);
  return object.contains(p) ? object[p] : kNull;
}

std::string StringAt(const json& object, const char* pointer) {
  const json& value = At(object, pointer);
  return value.is_string() ? value.get<std::string>() : "";
}

int64_t IntAt(const json& object, const char* pointer, int64_t fallback = 0) {
  const json& value = At(object, pointer);
  return value.is_number_integer() ? value.get<int64_t>() : fallback;
}

// Argo CD's sync order: namespaces, then objects others refer to, workloads last.
int KindOrder(const std::string& kind) {
  static const std::vector<std::string> kOrder = {"Namespace", "ServiceAccount", "Secret",
                                                  "ConfigMap", "Service",        "Deployment"};
  auto it = std::find(kOrder.begin(), kOrder.end(), kind);
  return static_cast<int>(it - kOrder.begin());
}

struct Health {
  std::string status;
  std::string message;
};

int Severity(const std::string& status) {
  static const std::vector<std::string> kOrder = {"Healthy", "Suspended", "Progressing",
                                                  "Missing", "Degraded",  "Unknown"};
  auto it = std::find(kOrder.begin(), kOrder.end(), status);
  return static_cast<int>(it - kOrder.begin());
}

// Argo CD's health check for apps/v1 Deployments (gitops-engine pkg/health/health_deployment.go).
Health DeploymentHealth(const json& d) {
  std::string name = StringAt(d, "/metadata/name");
  if (At(d, "/spec/paused").is_boolean() && At(d, "/spec/paused").get<bool>()) {
    return {"Suspended", "Deployment is paused"};
  }
  if (IntAt(d, "/metadata/generation") > IntAt(d, "/status/observedGeneration", -1)) {
    return {"Progressing",
            "Waiting for rollout to finish: observed deployment generation less than desired "
            "generation"};
  }
  const json& conditions = At(d, "/status/conditions");
  if (conditions.is_array()) {
    for (const json& c : conditions) {
      if (c.value("type", "") == "Progressing" &&
          c.value("reason", "") == "ProgressDeadlineExceeded") {
        return {"Degraded",
                absl::StrCat("Deployment \"", name, "\" exceeded its progress deadline")};
      }
    }
  }
  int64_t replicas = IntAt(d, "/spec/replicas", 1);
  int64_t updated = IntAt(d, "/status/updatedReplicas");
  int64_t total = IntAt(d, "/status/replicas");
  int64_t available = IntAt(d, "/status/availableReplicas");
  if (updated < replicas) {
    return {"Progressing", absl::StrCat("Waiting for rollout to finish: ", updated, " out of ",
                                        replicas, " new replicas have been updated...")};
  }
  if (total > updated) {
    return {"Progressing", absl::StrCat("Waiting for rollout to finish: ", total - updated,
                                        " old replicas are pending termination...")};
  }
  if (available < updated) {
    return {"Progressing", absl::StrCat("Waiting for rollout to finish: ", available, " of ",
                                        updated, " updated replicas are available...")};
  }
  return {"Healthy", ""};
}

Health ResourceHealth(const std::string& kind, const json* live) {
  if (live == nullptr) return {"Missing", ""};
  if (kind == "Deployment") return DeploymentHealth(*live);
  return {"Healthy", ""};
}

// The object as applied: destination namespace, Argo CD's tracking label, and kubectl's
// last-applied annotation holding what the repository says.
json Prepare(const json& object, const std::string& app, const std::string& ns) {
  json prepared = object;
  const ResourceType* type =
      FindResourceByKind(object.value("apiVersion", ""), object.value("kind", ""));
  json& metadata = prepared["metadata"];
  if ((type == nullptr || type->namespaced) && StringAt(prepared, "/metadata/namespace").empty()) {
    metadata["namespace"] = ns;
  }
  metadata["labels"][kInstanceLabel] = app;
  json applied = prepared;
  applied.erase("status");
  metadata["annotations"][kLastApplied] = applied.dump();
  return prepared;
}

// Whether the live object has what the desired one says (spec, data, labels and annotations
// present in both): Argo CD's diff, less its normalizations.
bool InSync(const json& desired, const json& live) {
  for (const char* field : {"spec", "data", "stringData", "type"}) {
    if (desired.contains(field) && (!live.contains(field) || live[field] != desired[field])) {
      return false;
    }
  }
  for (const char* field : {"/metadata/labels", "/metadata/annotations"}) {
    const json& want = At(desired, field);
    const json& have = At(live, field);
    if (!want.is_object()) continue;
    for (const auto& [key, value] : want.items()) {
      if (!have.is_object() || !have.contains(key) || have[key] != value) return false;
    }
  }
  return true;
}

std::string ResourceKey(const json& object) {
  return absl::StrCat(StringAt(object, "/kind"), "/", StringAt(object, "/metadata/namespace"), "/",
                      StringAt(object, "/metadata/name"));
}

json Condition(const std::string& type, const std::string& message, absl::Time now) {
  return {{"type", type}, {"message", message}, {"lastTransitionTime", Timestamp(now)}};
}

bool HasSyncOption(const json& app, const std::string& option) {
  const json& options = At(app, "/spec/syncPolicy/syncOptions");
  if (!options.is_array()) return false;
  return std::any_of(options.begin(), options.end(), [&](const json& o) {
    return o.is_string() && o.get<std::string>() == option;
  });
}

}  // namespace

ArgoController::ArgoController(ObjectStore& store, ArgoOptions options)
    : store_(store), options_(std::move(options)) {}

ArgoController::~ArgoController() { Stop(); }

void ArgoController::Start() {
  threads_.emplace_back([this] { WatchApplications(); });
  for (const char* resource : kManagedResources) {
    threads_.emplace_back([this, resource] { WatchResources(resource); });
  }
  threads_.emplace_back([this] { PollRepositories(); });
  threads_.emplace_back([this] { Work(); });
}

void ArgoController::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

void ArgoController::Enqueue(const std::string& name, bool fetch) {
  absl::MutexLock lock(&mu_);
  bool& pending = queue_[name];
  pending = pending || fetch;
}

absl::StatusOr<GitSource*> ArgoController::Source(const std::string& url) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<GitSource>& source = sources_[url];
  if (source == nullptr) {
    absl::StatusOr<std::unique_ptr<GitSource>> opened =
        GitSource::Open(url, absl::StrCat(options_.cache_dir, "/repos"));
    if (!opened.ok()) {
      sources_.erase(url);
      return opened.status();
    }
    source = *std::move(opened);
  }
  return source.get();
}

absl::Status ArgoController::ReconcileAll() {
  if (!options_.gitops_repo.empty()) {
    if (absl::Status s = LoadApplicationsFromRepo(); !s.ok()) return s;
  }
  ListOptions list;
  list.namespace_name = options_.argocd_namespace;
  absl::StatusOr<ListResult> apps = store_.List(kApplications, list);
  if (!apps.ok()) return apps.status();
  for (const ObjectPtr& app : apps->items) {
    Reconcile(StringAt(*app, "/metadata/name"), /*fetch=*/true);
  }
  return absl::OkStatus();
}

absl::Status ArgoController::LoadApplicationsFromRepo() {
  absl::StatusOr<GitSource*> source = Source(options_.gitops_repo);
  if (!source.ok()) return source.status();
  if (absl::Status s = (*source)->Fetch(); !s.ok()) return s;
  absl::StatusOr<std::string> commit = (*source)->Resolve(options_.gitops_branch);
  if (!commit.ok()) return commit.status();
  absl::StatusOr<std::unique_ptr<TreeView>> tree = (*source)->Tree(*commit);
  if (!tree.ok()) return tree.status();
  std::string dir = options_.gitops_prefix.empty()
                        ? "applications"
                        : absl::StrCat(options_.gitops_prefix, "/applications");
  absl::StatusOr<std::optional<std::vector<std::string>>> names = (*tree)->ListDir(dir);
  if (!names.ok()) return names.status();
  if (!names->has_value()) return absl::OkStatus();
  for (const std::string& name : **names) {
    if (!absl::EndsWith(name, ".yaml") && !absl::EndsWith(name, ".yml")) continue;
    std::string path = absl::StrCat(dir, "/", name);
    absl::StatusOr<std::optional<std::string>> text = (*tree)->ReadFile(path);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::vector<json>> docs = ParseManifests(text->value_or(""), path);
    if (!docs.ok()) {
      log::Warning("kubesim argocd: skipping an Application file",
                   {{"path", path}, {"error", docs.status()}});
      continue;
    }
    for (json& doc : *docs) {
      if (doc.value("kind", "") != "Application") continue;
      doc["metadata"]["namespace"] = options_.argocd_namespace;
      std::string app = StringAt(doc, "/metadata/name");
      absl::StatusOr<ObjectPtr> created = store_.Create(kApplications, doc);
      if (absl::IsAlreadyExists(created.status())) {
        created = store_.Mutate(kApplications, options_.argocd_namespace, app, [&](json& live) {
          live["spec"] = doc["spec"];
          for (const char* field : {"labels", "annotations"}) {
            if (doc["metadata"].contains(field)) live["metadata"][field] = doc["metadata"][field];
          }
          return absl::OkStatus();
        });
      }
      if (!created.ok()) {
        log::Warning("kubesim argocd: cannot store an Application",
                     {{"path", path}, {"application", app}, {"error", created.status()}});
      }
    }
  }
  return absl::OkStatus();
}

void ArgoController::WatchApplications() {
  std::map<std::string, uint64_t> generations;
  std::unique_ptr<Watcher> watcher;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (watcher == nullptr) {
      WatchOptions options;
      options.namespace_name = options_.argocd_namespace;
      absl::StatusOr<std::unique_ptr<Watcher>> started = store_.Watch(kApplications, options);
      if (!started.ok()) return;
      watcher = *std::move(started);
    }
    std::vector<WatchEvent> events;
    absl::Status status = watcher->Next(absl::Now() + absl::Milliseconds(200), &events);
    if (absl::IsCancelled(status)) return;
    if (!status.ok()) {
      watcher.reset();
      continue;
    }
    for (const WatchEvent& event : events) {
      const json& app = *event.object;
      std::string name = StringAt(app, "/metadata/name");
      if (event.type == EventType::kDeleted) {
        generations.erase(name);
        continue;
      }
      uint64_t generation = static_cast<uint64_t>(IntAt(app, "/metadata/generation"));
      bool refresh = At(app, "/metadata/annotations").is_object() &&
                     app["metadata"]["annotations"].contains(kRefreshAnnotation);
      auto seen = generations.find(name);
      if (seen == generations.end() || seen->second != generation || refresh) {
        generations[name] = generation;
        Enqueue(name, /*fetch=*/true);
      }
    }
  }
}

void ArgoController::WatchResources(std::string resource) {
  std::unique_ptr<Watcher> watcher;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (watcher == nullptr) {
      absl::StatusOr<std::unique_ptr<Watcher>> started = store_.Watch(resource, {});
      if (!started.ok()) return;
      watcher = *std::move(started);
    }
    std::vector<WatchEvent> events;
    absl::Status status = watcher->Next(absl::Now() + absl::Milliseconds(200), &events);
    if (absl::IsCancelled(status)) return;
    if (!status.ok()) {
      watcher.reset();
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      for (const WatchEvent& event : events) {
        std::string app = StringAt(*event.object, "/metadata/labels/app.kubernetes.io~1instance");
        if (!app.empty()) health_queue_.insert(app);
      }
    }
    // What changed meanwhile comes as one batch, rather than a wake-up per change of a busy
    // cluster.
    if (!events.empty()) absl::SleepFor(kWatchBatchInterval);
  }
}

void ArgoController::PollRepositories() {
  absl::Time next_resync = absl::Now() + options_.app_resync;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.repo_poll)) return;
    }
    if (!options_.gitops_repo.empty()) {
      absl::Status loaded = LoadApplicationsFromRepo();
      if (!loaded.ok()) {
        log::Debug("kubesim argocd: cannot read Applications",
                   {{"repo", options_.gitops_repo}, {"error", loaded}});
      }
    }
    // Which sources the Applications follow, and at what revision.
    ListOptions list;
    list.namespace_name = options_.argocd_namespace;
    absl::StatusOr<ListResult> apps = store_.List(kApplications, list);
    if (!apps.ok()) continue;
    bool resync = absl::Now() >= next_resync;
    if (resync) next_resync = absl::Now() + options_.app_resync;
    std::map<std::string, std::string> heads;  // "url\nrevision" -> commit
    for (const ObjectPtr& app : apps->items) {
      std::string name = StringAt(*app, "/metadata/name");
      std::string url = StringAt(*app, "/spec/source/repoURL");
      std::string revision = StringAt(*app, "/spec/source/targetRevision");
      std::string key = absl::StrCat(url, "\n", revision);
      if (!heads.contains(key)) {
        absl::StatusOr<GitSource*> source = Source(url);
        absl::Status fetched = source.ok() ? (*source)->Fetch() : source.status();
        absl::StatusOr<std::string> commit =
            fetched.ok() ? (*source)->Resolve(revision) : absl::StatusOr<std::string>(fetched);
        heads[key] = commit.ok() ? *commit : absl::StrCat("error: ", commit.status().message());
      }
      bool moved;
      {
        absl::MutexLock lock(&mu_);
        std::string& last = heads_[absl::StrCat(name, "\n", key)];
        moved = last != heads[key];
        last = heads[key];
      }
      if (moved || resync) Enqueue(name, /*fetch=*/false);
    }
  }
}

void ArgoController::Work() {
  while (true) {
    std::string name;
    bool fetch = false;
    bool health_only = false;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty() || !health_queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      if (!queue_.empty()) {
        name = queue_.begin()->first;
        fetch = queue_.begin()->second;
        queue_.erase(queue_.begin());
        health_queue_.erase(name);
      } else {
        name = *health_queue_.begin();
        health_queue_.erase(health_queue_.begin());
        health_only = true;
      }
    }
    if (health_only) {
      Refresh(name);
    } else {
      Reconcile(name, fetch);
    }
  }
}

namespace {

// What one comparison found.
struct Comparison {
  json resources = json::array();
  std::vector<json> extras;  // live objects of the app that the repository no longer has
  bool synced = true;
  Health health{"Healthy", ""};
};

Comparison Compare(ObjectStore& store, const std::string& app, const std::vector<json>& desired) {
  Comparison result;
  std::set<std::string> wanted;
  for (const json& object : desired) {
    std::string kind = object.value("kind", "");
    std::string ns = StringAt(object, "/metadata/namespace");
    std::string name = StringAt(object, "/metadata/name");
    wanted.insert(ResourceKey(object));
    const ResourceType* type = FindResourceByKind(object.value("apiVersion", ""), kind);
    absl::StatusOr<ObjectPtr> live =
        type == nullptr ? absl::StatusOr<ObjectPtr>(absl::NotFoundError(""))
                        : store.Get(type->resource, type->namespaced ? ns : "", name);
    const json* live_object = live.ok() ? live->get() : nullptr;
    bool in_sync = live_object != nullptr && InSync(object, *live_object);
    Health health = ResourceHealth(kind, live_object);
    json entry = {{"group", type != nullptr ? type->group : ""},
                  {"version", type != nullptr ? type->version : ""},
                  {"kind", kind},
                  {"namespace", ns},
                  {"name", name},
                  {"status", in_sync ? "Synced" : "OutOfSync"}};
    if (kind == "Deployment" || live_object == nullptr) {
      entry["health"] = {{"status", health.status}};
      if (!health.message.empty()) entry["health"]["message"] = health.message;
    }
    result.resources.push_back(std::move(entry));
    result.synced = result.synced && in_sync;
    if (Severity(health.status) > Severity(result.health.status)) result.health = health;
  }
  for (const char* resource : kManagedResources) {
    ListOptions list;
    list.label_selector = absl::StrCat(kInstanceLabel, "=", app);
    absl::StatusOr<ListResult> live = store.List(resource, list);
    if (!live.ok()) continue;
    for (const ObjectPtr& object : live->items) {
      if (wanted.contains(ResourceKey(*object))) continue;
      result.extras.push_back(*object);
      const ResourceType* type = FindResource(resource);
      result.resources.push_back({{"group", type->group},
                                  {"version", type->version},
                                  {"kind", type->kind},
                                  {"namespace", StringAt(*object, "/metadata/namespace")},
                                  {"name", StringAt(*object, "/metadata/name")},
                                  {"status", "OutOfSync"},
                                  {"requiresPruning", true}});
      result.synced = false;
    }
  }
  return result;
}

json Images(const std::vector<json>& desired) {
  std::set<std::string> images;
  for (const json& object : desired) {
    for (const char* list :
         {"/spec/template/spec/containers", "/spec/template/spec/initContainers"}) {
      const json& containers = At(object, list);
      if (!containers.is_array()) continue;
      for (const json& c : containers) {
        if (c.contains("image") && c["image"].is_string()) images.insert(c["image"]);
      }
    }
  }
  return json(std::vector<std::string>(images.begin(), images.end()));
}

}  // namespace

void ArgoController::Reconcile(const std::string& name, bool fetch) {
  absl::MutexLock reconcile_lock(&reconcile_mu_);
  const std::string& ns = options_.argocd_namespace;
  absl::StatusOr<ObjectPtr> current = store_.Get(kApplications, ns, name);
  if (!current.ok()) {
    apps_.erase(name);
    return;
  }
  const json& app = **current;
  AppState& state = apps_[name];
  absl::Time now = options_.now();
  std::string url = StringAt(app, "/spec/source/repoURL");
  std::string path = StringAt(app, "/spec/source/path");
  std::string revision = StringAt(app, "/spec/source/targetRevision");
  std::string dest_ns = StringAt(app, "/spec/destination/namespace");
  std::string server = StringAt(app, "/spec/destination/server");

  json status = app.contains("status") ? app["status"] : json::object();
  json conditions = json::array();
  auto fail_comparison = [&](const std::string& type, const std::string& message) {
    conditions.push_back(Condition(type, message, now));
    status["sync"] = {
        {"status", "Unknown"},
        {"comparedTo",
         {{"source", At(app, "/spec/source")}, {"destination", At(app, "/spec/destination")}}}};
    if (!status.contains("health")) status["health"] = {{"status", "Unknown"}};
    status["conditions"] = conditions;
    status["reconciledAt"] = Timestamp(now);
    state.comparison_error = true;
    store_
        .Mutate(kApplications, ns, name,
                [&](json& live) {
                  live["status"] = status;
                  if (live["metadata"].contains("annotations")) {
                    live["metadata"]["annotations"].erase(kRefreshAnnotation);
                  }
                  return absl::OkStatus();
                })
        .IgnoreError();
  };
  if (!server.empty() && server != kInClusterServer) {
    fail_comparison("InvalidSpecError",
                    absl::StrCat("cluster '", server, "' has not been configured"));
    return;
  }
  constexpr char kPrefix[] =
      "Failed to load target state: failed to generate manifest for source 1 of 1: rpc error: "
      "code = Unknown desc = ";
  absl::StatusOr<GitSource*> source = Source(url);
  absl::Status fetched = source.ok() ? absl::OkStatus() : source.status();
  if (fetched.ok() && (fetch || state.revision.empty())) fetched = (*source)->Fetch();
  if (!fetched.ok()) {
    fail_comparison("ComparisonError", absl::StrCat(kPrefix, fetched.message()));
    return;
  }
  absl::StatusOr<std::string> commit = (*source)->Resolve(revision);
  if (!commit.ok()) {
    fail_comparison("ComparisonError", absl::StrCat(kPrefix, commit.status().message()));
    return;
  }
  absl::StatusOr<std::unique_ptr<TreeView>> tree = (*source)->Tree(*commit);
  absl::StatusOr<RenderedSource> rendered =
      tree.ok() ? RenderSource(**tree, path) : absl::StatusOr<RenderedSource>(tree.status());
  if (!rendered.ok()) {
    fail_comparison("ComparisonError", absl::StrCat(kPrefix, rendered.status().message()));
    return;
  }
  state.comparison_error = false;
  state.revision = *commit;
  state.generation = static_cast<uint64_t>(IntAt(app, "/metadata/generation"));
  state.desired.clear();
  for (const json& object : rendered->objects) {
    state.desired.push_back(Prepare(object, name, dest_ns));
  }
  std::string dump;
  for (const json& object : state.desired) dump += object.dump();
  state.desired_hash = std::to_string(std::hash<std::string>()(dump));
  status["sourceType"] = rendered->source_type;
  status["reconciledAt"] = Timestamp(now);
  Evaluate(name, app, state, status, /*allow_sync=*/true);
}

void ArgoController::Refresh(const std::string& name) {
  absl::MutexLock reconcile_lock(&reconcile_mu_);
  auto it = apps_.find(name);
  if (it == apps_.end() || it->second.comparison_error || it->second.revision.empty()) return;
  absl::StatusOr<ObjectPtr> current = store_.Get(kApplications, options_.argocd_namespace, name);
  if (!current.ok()) return;
  json status = (*current)->contains("status") ? (**current)["status"] : json::object();
  bool self_heal = At(**current, "/spec/syncPolicy/automated/selfHeal").is_boolean() &&
                   At(**current, "/spec/syncPolicy/automated/selfHeal").get<bool>();
  Evaluate(name, **current, it->second, status, self_heal);
}

void ArgoController::Evaluate(const std::string& name, const json& app, AppState& state,
                              json status, bool allow_sync) {
  const std::string& ns = options_.argocd_namespace;
  absl::Time now = options_.now();
  std::string dest_ns = StringAt(app, "/spec/destination/namespace");
  const json& automated = At(app, "/spec/syncPolicy/automated");
  bool prune = automated.is_object() && automated.value("prune", false);
  Comparison comparison = Compare(store_, name, state.desired);
  json conditions = json::array();
  std::string attempt = absl::StrCat(state.revision, "/", state.desired_hash);
  if (allow_sync && automated.is_object() && !comparison.synced && state.failed_sync != attempt) {
    absl::Time started = now;
    json results = json::array();
    std::string first_error;
    auto record = [&](const json& object, const std::string& result_status,
                      const std::string& message) {
      const ResourceType* type =
          FindResourceByKind(object.value("apiVersion", ""), object.value("kind", ""));
      results.push_back({{"group", type != nullptr ? type->group : ""},
                         {"version", type != nullptr ? type->version : ""},
                         {"kind", object.value("kind", "")},
                         {"namespace", StringAt(object, "/metadata/namespace")},
                         {"name", StringAt(object, "/metadata/name")},
                         {"status", result_status},
                         {"message", message},
                         {"syncPhase", "Sync"}});
      if (result_status == "SyncFailed" && first_error.empty()) first_error = message;
    };
    std::vector<const json*> ordered;
    for (const json& object : state.desired) ordered.push_back(&object);
    std::stable_sort(ordered.begin(), ordered.end(), [](const json* a, const json* b) {
      return KindOrder(a->value("kind", "")) < KindOrder(b->value("kind", ""));
    });
    if (HasSyncOption(app, "CreateNamespace=true") && !dest_ns.empty() &&
        absl::IsNotFound(store_.Get("namespaces", "", dest_ns).status())) {
      json namespace_object = {
          {"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", dest_ns}}}};
      absl::StatusOr<ObjectPtr> created = store_.Create("namespaces", namespace_object);
      if (created.ok() || absl::IsAlreadyExists(created.status())) {
        record(namespace_object, "Synced", absl::StrCat("namespace/", dest_ns, " created"));
      } else {
        record(namespace_object, "SyncFailed", std::string(created.status().message()));
      }
    }
    for (const json* object : ordered) {
      std::string kind = object->value("kind", "");
      std::string object_ns = StringAt(*object, "/metadata/namespace");
      std::string object_name = StringAt(*object, "/metadata/name");
      const ResourceType* type = FindResourceByKind(object->value("apiVersion", ""), kind);
      if (type == nullptr) {
        record(*object, "SyncFailed",
               absl::StrCat("the server could not find the requested resource (", kind, " in ",
                            object->value("apiVersion", ""), ")"));
        continue;
      }
      std::string display = absl::StrCat(
          type->group.empty() ? type->resource : absl::StrCat(type->resource, ".", type->group),
          "/", object_name);
      if (type->namespaced && absl::IsNotFound(store_.Get("namespaces", "", object_ns).status())) {
        record(*object, "SyncFailed", absl::StrCat("namespaces \"", object_ns, "\" not found"));
        continue;
      }
      absl::StatusOr<ObjectPtr> applied = store_.Create(type->resource, *object);
      std::string verb = "created";
      if (absl::IsAlreadyExists(applied.status())) {
        verb = "configured";
        absl::StatusOr<ObjectPtr> live =
            store_.Get(type->resource, type->namespaced ? object_ns : "", object_name);
        if (live.ok() && InSync(*object, **live)) {
          verb = "unchanged";
        } else {
          json replacement = *object;
          replacement["metadata"].erase("resourceVersion");
          applied = store_.Update(type->resource, std::move(replacement), type->status_subresource);
        }
      }
      if (!applied.ok() && verb != "unchanged") {
        record(*object, "SyncFailed", std::string(applied.status().message()));
      } else {
        record(*object, "Synced", absl::StrCat(display, " ", verb));
      }
    }
    for (const json& extra : comparison.extras) {
      if (!prune) {
        record(extra, "PruneSkipped", "ignored (requires pruning)");
        continue;
      }
      const ResourceType* type =
          FindResourceByKind(extra.value("apiVersion", ""), extra.value("kind", ""));
      absl::Status deleted =
          type == nullptr ? absl::NotFoundError("unknown type")
                          : store_
                                .Delete(type->resource, StringAt(extra, "/metadata/namespace"),
                                        StringAt(extra, "/metadata/name"))
                                .status();
      record(extra, deleted.ok() || absl::IsNotFound(deleted) ? "Pruned" : "SyncFailed",
             deleted.ok() || absl::IsNotFound(deleted) ? "pruned" : std::string(deleted.message()));
    }
    bool failed = !first_error.empty();
    json operation_state = {
        {"operation",
         {{"sync", {{"revision", state.revision}, {"prune", prune}}},
          {"initiatedBy", {{"automated", true}}},
          {"retry", json::object()}}},
        {"phase", failed ? "Failed" : "Succeeded"},
        {"message", failed
                        ? absl::StrCat("one or more objects failed to apply, reason: ", first_error)
                        : "successfully synced (all tasks run)"},
        {"startedAt", Timestamp(started)},
        {"finishedAt", Timestamp(options_.now())},
        {"syncResult",
         {{"revision", state.revision},
          {"resources", results},
          {"source", At(app, "/spec/source")}}}};
    status["operationState"] = operation_state;
    if (failed) {
      state.failed_sync = attempt;
      conditions.push_back(
          Condition("SyncError",
                    absl::StrCat("Failed sync attempt to ", state.revision,
                                 ": one or more objects failed to apply, reason: ", first_error),
                    now));
    } else {
      state.failed_sync.clear();
      state.history.push_back({{"id", state.next_history_id++},
                               {"revision", state.revision},
                               {"deployStartedAt", Timestamp(started)},
                               {"deployedAt", Timestamp(options_.now())},
                               {"source", At(app, "/spec/source")}});
      if (state.history.size() > 10) state.history.erase(state.history.begin());
    }
    comparison = Compare(store_, name, state.desired);
  } else if (state.failed_sync == attempt && status.contains("conditions")) {
    for (const json& condition : status["conditions"]) {
      if (condition.value("type", "") == "SyncError") conditions.push_back(condition);
    }
  }
  status["sync"] = {
      {"status", comparison.synced ? "Synced" : "OutOfSync"},
      {"revision", state.revision},
      {"comparedTo",
       {{"source", At(app, "/spec/source")}, {"destination", At(app, "/spec/destination")}}}};
  status["health"] = {{"status", comparison.health.status}};
  if (!comparison.health.message.empty()) {
    status["health"]["message"] = comparison.health.message;
  }
  status["resources"] = comparison.resources;
  status["summary"] = {{"images", Images(state.desired)}};
  status["history"] = state.history;
  status["conditions"] = conditions;
  if (status["conditions"].empty()) status.erase("conditions");
  store_
      .Mutate(kApplications, ns, name,
              [&](json& live) {
                live["status"] = status;
                if (live["metadata"].contains("annotations")) {
                  live["metadata"]["annotations"].erase(kRefreshAnnotation);
                }
                return absl::OkStatus();
              })
      .IgnoreError();
}

}  // namespace elfdeploy::kubesim
