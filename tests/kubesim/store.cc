#include "tests/kubesim/store.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;

// Bounds one Watcher::Next batch (and so what a stream writes between two checks).
constexpr size_t kMaxEventsPerNext = 100;
// How often the states that fell out of history are freed (see ObjectStore::Reap).
constexpr absl::Duration kReapInterval = absl::Milliseconds(5);

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Rfc3339(absl::Time time) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", time, absl::UTCTimeZone());
}

// A string member of an object, or "" when absent or not a string.
std::string StringAt(const json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

const json& Metadata(const json& object) {
  static const json* empty = new json(json::object());
  if (!object.is_object()) return *empty;
  auto it = object.find("metadata");
  return it != object.end() && it->is_object() ? *it : *empty;
}

std::string ResourceVersionOf(const json& object) {
  return StringAt(Metadata(object), "resourceVersion");
}

// The value of a dotted field path as a field selector compares it: "" when absent.
std::string FieldValue(const json& object, absl::string_view path) {
  const json* node = &object;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (!node->is_object()) return "";
    auto it = node->find(std::string(part));
    if (it == node->end()) return "";
    node = &*it;
  }
  if (node->is_string()) return node->get<std::string>();
  if (node->is_null()) return "";
  return Dump(*node);
}

// The object without the fields that do not count for metadata.generation.
json SpecPart(const json& object) {
  json copy = object;
  if (copy.is_object()) {
    copy.erase("metadata");
    copy.erase("status");
  }
  return copy;
}

absl::StatusOr<uint64_t> ParseResourceVersion(absl::string_view text) {
  uint64_t rv = 0;
  if (!absl::SimpleAtoi(text, &rv)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid resource version \"", text, "\""));
  }
  return rv;
}

absl::Status TooOld(uint64_t requested, uint64_t oldest) {
  return absl::OutOfRangeError(
      absl::StrFormat("too old resource version: %d (%d)", requested, oldest));
}

absl::Status TooLarge(uint64_t requested, uint64_t current) {
  return absl::DeadlineExceededError(
      absl::StrFormat("Too large resource version: %d, current: %d", requested, current));
}

constexpr absl::string_view kContinueExpired =
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list.";

std::string EncodeContinue(uint64_t rv, const std::pair<std::string, std::string>& last,
                           bool namespaced) {
  std::string key = namespaced ? absl::StrCat(last.first, "/", last.second) : last.second;
  json token = {{"v", "meta.k8s.io/v1"}, {"rv", rv}, {"start", key + std::string(1, '\0')}};
  return absl::WebSafeBase64Escape(Dump(token));
}

struct ContinueToken {
  uint64_t rv = 0;
  std::pair<std::string, std::string> after;
};

absl::StatusOr<ContinueToken> DecodeContinue(absl::string_view text, bool namespaced) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("continue key is not valid: ", why));
  };
  std::string raw;
  if (!absl::WebSafeBase64Unescape(text, &raw)) return invalid("not base64");
  json token = json::parse(raw, nullptr, false);
  if (!token.is_object() || StringAt(token, "v") != "meta.k8s.io/v1") {
    return invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
  }
  auto rv = token.find("rv");
  if (rv == token.end() || !rv->is_number_unsigned()) return invalid("no resourceVersion");
  ContinueToken out;
  out.rv = rv->get<uint64_t>();
  std::string start_text = StringAt(token, "start");
  absl::string_view start = start_text;
  if (!absl::ConsumeSuffix(&start, absl::string_view("\0", 1))) return invalid("bad start key");
  if (namespaced) {
    std::pair<std::string, std::string> parts = absl::StrSplit(start, absl::MaxSplits('/', 1));
    out.after = std::move(parts);
  } else {
    out.after = {"", std::string(start)};
  }
  return out;
}

std::vector<std::string> ContainerNames(const json& pod) {
  std::vector<std::string> names;
  if (!pod.is_object() || !pod.contains("spec") || !pod["spec"].is_object()) return names;
  for (const char* list : {"initContainers", "containers", "ephemeralContainers"}) {
    auto it = pod["spec"].find(list);
    if (it == pod["spec"].end() || !it->is_array()) continue;
    for (const json& container : *it) {
      std::string name = StringAt(container, "name");
      if (!name.empty()) names.push_back(name);
    }
  }
  return names;
}

std::vector<std::string> MainContainerNames(const json& pod) {
  std::vector<std::string> names;
  if (!pod.is_object() || !pod.contains("spec") || !pod["spec"].is_object()) return names;
  auto it = pod["spec"].find("containers");
  if (it == pod["spec"].end() || !it->is_array()) return names;
  for (const json& container : *it) names.push_back(StringAt(container, "name"));
  return names;
}

}  // namespace

std::string ResourceType::ApiVersion() const {
  return group.empty() ? version : absl::StrCat(group, "/", version);
}

std::string ResourceType::QualifiedResource() const {
  return group.empty() ? resource : absl::StrCat(resource, ".", group);
}

const std::vector<ResourceType>& ResourceTypes() {
  static const auto* types = new std::vector<ResourceType>{
      {"", "v1", "pods", "Pod", true, true, false},
      {"", "v1", "events", "Event", true, false, false},
      {"", "v1", "services", "Service", true, true, false},
      {"", "v1", "configmaps", "ConfigMap", true, false, false},
      {"", "v1", "secrets", "Secret", true, false, false},
      {"", "v1", "serviceaccounts", "ServiceAccount", true, false, false},
      {"", "v1", "namespaces", "Namespace", false, true, false},
      {"", "v1", "nodes", "Node", false, true, false},
      {"apps", "v1", "deployments", "Deployment", true, true, true},
      {"apps", "v1", "replicasets", "ReplicaSet", true, true, true},
      // Argo CD's CRDs have no status subresource: status is written with the object.
      {"argoproj.io", "v1alpha1", "applications", "Application", true, false, true},
      {"argoproj.io", "v1alpha1", "appprojects", "AppProject", true, false, true},
  };
  return *types;
}

const ResourceType* FindResource(absl::string_view resource) {
  for (const ResourceType& type : ResourceTypes()) {
    if (type.resource == resource) return &type;
  }
  return nullptr;
}

const ResourceType* FindResourceByKind(absl::string_view api_version, absl::string_view kind) {
  for (const ResourceType& type : ResourceTypes()) {
    if (type.kind == kind && type.ApiVersion() == api_version) return &type;
  }
  return nullptr;
}

absl::string_view EventTypeName(EventType type) {
  switch (type) {
    case EventType::kAdded:
      return "ADDED";
    case EventType::kModified:
      return "MODIFIED";
    case EventType::kDeleted:
      return "DELETED";
  }
  return "ERROR";
}

// ---------------------------------------------------------------------------------------------
// Selectors.

absl::StatusOr<LabelSelector> LabelSelector::Parse(absl::string_view text) {
  LabelSelector selector;
  size_t pos = 0;
  auto skip_spaces = [&] {
    while (pos < text.size() && text[pos] == ' ') ++pos;
  };
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("unable to parse requirement: ", why, " in labelSelector \"", text, "\""));
  };
  auto read_word = [&] {
    size_t start = pos;
    while (pos < text.size() && !absl::StrContains(" =!,()", text[pos])) ++pos;
    return std::string(text.substr(start, pos - start));
  };
  skip_spaces();
  while (pos < text.size()) {
    Requirement req;
    skip_spaces();
    bool negated = false;
    if (text[pos] == '!') {
      negated = true;
      ++pos;
      skip_spaces();
    }
    req.key = read_word();
    if (req.key.empty()) return invalid("empty key");
    skip_spaces();
    if (negated) {
      req.op = Requirement::Op::kDoesNotExist;
    } else if (pos >= text.size() || text[pos] == ',') {
      req.op = Requirement::Op::kExists;
    } else if (text.substr(pos, 2) == "!=") {
      pos += 2;
      req.op = Requirement::Op::kNotEquals;
    } else if (text.substr(pos, 2) == "==") {
      pos += 2;
      req.op = Requirement::Op::kEquals;
    } else if (text[pos] == '=') {
      pos += 1;
      req.op = Requirement::Op::kEquals;
    } else {
      std::string op = read_word();
      if (op == "in") {
        req.op = Requirement::Op::kIn;
      } else if (op == "notin") {
        req.op = Requirement::Op::kNotIn;
      } else {
        return invalid(absl::StrCat("unknown operator \"", op, "\""));
      }
      skip_spaces();
      if (pos >= text.size() || text[pos] != '(') return invalid("expected '('");
      ++pos;
      size_t close = text.find(')', pos);
      if (close == absl::string_view::npos) return invalid("expected ')'");
      for (absl::string_view value : absl::StrSplit(text.substr(pos, close - pos), ',')) {
        req.values.emplace_back(absl::StripAsciiWhitespace(value));
      }
      pos = close + 1;
    }
    if (req.op == Requirement::Op::kEquals || req.op == Requirement::Op::kNotEquals) {
      skip_spaces();
      req.values.push_back(read_word());
    }
    selector.requirements_.push_back(std::move(req));
    skip_spaces();
    if (pos < text.size()) {
      if (text[pos] != ',') return invalid("expected ','");
      ++pos;
      skip_spaces();
      if (pos >= text.size()) return invalid("trailing ','");
    }
  }
  return selector;
}

bool LabelSelector::Matches(const json& labels) const {
  for (const Requirement& req : requirements_) {
    bool has = labels.is_object() && labels.contains(req.key);
    std::string value = has ? StringAt(labels, req.key.c_str()) : "";
    bool in = std::find(req.values.begin(), req.values.end(), value) != req.values.end();
    bool ok = false;
    switch (req.op) {
      case Requirement::Op::kEquals:
      case Requirement::Op::kIn:
        ok = has && in;
        break;
      case Requirement::Op::kNotEquals:
      case Requirement::Op::kNotIn:
        ok = !has || !in;
        break;
      case Requirement::Op::kExists:
        ok = has;
        break;
      case Requirement::Op::kDoesNotExist:
        ok = !has;
        break;
    }
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<FieldSelector> FieldSelector::Parse(absl::string_view text,
                                                   const ResourceType& type) {
  static const auto* per_type = new std::map<std::string, std::set<std::string>>{
      {"pods",
       {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"}},
      {"events",
       {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "type"}},
      {"secrets", {"type"}},
      {"namespaces", {"status.phase"}},
      {"replicasets", {"status.replicas"}},
      {"nodes", {"spec.unschedulable"}},
  };
  FieldSelector selector;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    Term term;
    size_t op = part.find("!=");
    size_t value_at;
    if (op != absl::string_view::npos) {
      term.equals = false;
      value_at = op + 2;
    } else if ((op = part.find("==")) != absl::string_view::npos) {
      term.equals = true;
      value_at = op + 2;
    } else if ((op = part.find('=')) != absl::string_view::npos) {
      term.equals = true;
      value_at = op + 1;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid selector: '", text, "'; can't understand '", part, "'"));
    }
    term.field = std::string(absl::StripAsciiWhitespace(part.substr(0, op)));
    term.value = std::string(absl::StripAsciiWhitespace(part.substr(value_at)));
    bool supported = term.field == "metadata.name" || term.field == "metadata.namespace";
    if (!supported) {
      auto it = per_type->find(type.resource);
      supported = it != per_type->end() && it->second.count(term.field) > 0;
    }
    if (!supported) {
      return absl::InvalidArgumentError(absl::StrCat("field label not supported: ", term.field));
    }
    selector.terms_.push_back(std::move(term));
  }
  return selector;
}

bool FieldSelector::Matches(const json& object) const {
  for (const Term& term : terms_) {
    if ((FieldValue(object, term.field) == term.value) != term.equals) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Status objects.

json MakeStatus(int code, absl::string_view reason, absl::string_view message) {
  return {{"kind", "Status"},
          {"apiVersion", "v1"},
          {"metadata", json::object()},
          {"status", "Failure"},
          {"message", std::string(message)},
          {"reason", std::string(reason)},
          {"code", code}};
}

int HttpCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kOutOfRange:
      return 410;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kUnimplemented:
      return 415;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

json StatusFor(const absl::Status& status) {
  absl::string_view reason = "InternalError";
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      reason = "NotFound";
      break;
    case absl::StatusCode::kAlreadyExists:
      reason = "AlreadyExists";
      break;
    case absl::StatusCode::kAborted:
      reason = "Conflict";
      break;
    case absl::StatusCode::kInvalidArgument:
      reason = "BadRequest";
      break;
    case absl::StatusCode::kOutOfRange:
      reason = "Expired";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      reason = "Timeout";
      break;
    case absl::StatusCode::kUnimplemented:
      reason = "UnsupportedMediaType";
      break;
    case absl::StatusCode::kUnauthenticated:
      reason = "Unauthorized";
      break;
    case absl::StatusCode::kPermissionDenied:
      reason = "Forbidden";
      break;
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnavailable:
      reason = "ServiceUnavailable";
      break;
    default:
      break;
  }
  return MakeStatus(HttpCodeFor(status), reason, status.message());
}

// ---------------------------------------------------------------------------------------------
// Watcher.

Watcher::~Watcher() {
  absl::MutexLock lock(&store_->mu_);
  --store_->watchers_;
}

absl::Status Watcher::Next(absl::Time deadline, std::vector<WatchEvent>* out) {
  out->clear();
  absl::MutexLock lock(&store_->mu_);
  return store_->NextLocked(this, deadline, out);
}

bool Watcher::Matches(const json& object) const {
  if (!options_.namespace_name.empty() &&
      StringAt(Metadata(object), "namespace") != options_.namespace_name) {
    return false;
  }
  if (!labels_.empty()) {
    const json& metadata = Metadata(object);
    auto it = metadata.find("labels");
    if (!labels_.Matches(it != metadata.end() ? *it : json())) return false;
  }
  return fields_.empty() || fields_.Matches(object);
}

// ---------------------------------------------------------------------------------------------
// ObjectStore.

ObjectStore::ObjectStore(Options options) : options_(std::move(options)), random_(options_.seed) {
  if (options_.create_default_namespaces) {
    for (const char* name : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
      json ns = {{"metadata", {{"name", name}}}};
      (void)Create("namespaces", std::move(ns));
    }
  }
  reaper_ = std::thread([this] { Reap(); });
}

ObjectStore::~ObjectStore() {
  Shutdown();
  if (reaper_.joinable()) reaper_.join();
}

void ObjectStore::Reap() {
  while (true) {
    std::vector<Change> garbage;  // freed outside the lock, off the writers' threads
    absl::MutexLock lock(&mu_);
    auto due = [this]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_ || !dropped_.empty(); };
    mu_.Await(absl::Condition(&due));
    // Let a few writes' worth gather, then free them in one go.
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), kReapInterval);
    garbage.swap(dropped_);
    if (shutdown_) return;
  }
}

uint64_t ObjectStore::resource_version() const {
  absl::MutexLock lock(&mu_);
  return rv_;
}

uint64_t ObjectStore::compacted_resource_version() const {
  absl::MutexLock lock(&mu_);
  return compacted_rv_;
}

int ObjectStore::watcher_count() const {
  absl::MutexLock lock(&mu_);
  return watchers_;
}

void ObjectStore::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
}

absl::StatusOr<const ResourceType*> ObjectStore::Type(absl::string_view resource) const {
  const ResourceType* type = FindResource(resource);
  if (type == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("the server could not find the requested resource (", resource, ")"));
  }
  return type;
}

ObjectStore::Objects& ObjectStore::ObjectsOf(const ResourceType* type) { return objects_[type]; }

const ObjectStore::Objects* ObjectStore::ObjectsOfOrNull(const ResourceType* type) const {
  auto it = objects_.find(type);
  return it == objects_.end() ? nullptr : &it->second;
}

std::string ObjectStore::NewUid() {
  uint64_t hi = random_();
  uint64_t lo = random_();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0xffff,
                         lo >> 48, lo & 0xffffffffffffULL);
}

std::string ObjectStore::RandomSuffix() {
  static constexpr absl::string_view kAlphabet = "bcdfghjklmnpqrstvwxz2456789";
  std::string out;
  for (int i = 0; i < 5; ++i) out.push_back(kAlphabet[random_() % kAlphabet.size()]);
  return out;
}

ObjectPtr ObjectStore::Commit(const ResourceType* type, const Key& key, EventType event,
                              json object, const Entry* previous) {
  ++rv_;
  object["metadata"]["resourceVersion"] = absl::StrCat(rv_);
  auto stored = std::make_shared<const json>(std::move(object));
  auto text = std::make_shared<const std::string>(Dump(*stored));
  Objects& objects = ObjectsOf(type);
  if (event == EventType::kDeleted) {
    objects.erase(key);
  } else {
    objects[key] = Entry{stored, text};
  }
  Change change{rv_,
                type,
                event,
                stored,
                text,
                previous != nullptr ? previous->object : nullptr,
                previous != nullptr ? previous->text : nullptr,
                key};
  history_.push_back(std::move(change));
  windows_[type].last_rv = rv_;
  while (history_.size() > std::max<size_t>(options_.history_window, 1)) {
    compacted_rv_ = history_.front().rv;
    windows_[history_.front().type].compacted_rv = compacted_rv_;
    dropped_.push_back(std::move(history_.front()));
    history_.pop_front();
  }
  changed_.SignalAll();
  return stored;
}

absl::StatusOr<ObjectPtr> ObjectStore::Create(absl::string_view resource, json object) {
  absl::StatusOr<const ResourceType*> type_or = Type(resource);
  if (!type_or.ok()) return type_or.status();
  const ResourceType* type = *type_or;
  if (!object.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body of a ", type->kind, " must be a JSON object"));
  }
  if (!object.contains("metadata") || !object["metadata"].is_object()) {
    object["metadata"] = json::object();
  }
  json& metadata = object["metadata"];
  std::string ns = StringAt(metadata, "namespace");
  if (type->namespaced && ns.empty()) {
    return absl::InvalidArgumentError("the namespace of the object is required");
  }
  if (!type->namespaced) {
    metadata.erase("namespace");
    ns.clear();
  }
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::CancelledError("the store is shutting down");
  std::string name = StringAt(metadata, "name");
  if (name.empty()) {
    std::string prefix = StringAt(metadata, "generateName");
    if (prefix.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(type->kind,
                       " \"\" is invalid: metadata.name: Required value: name or "
                       "generateName is required"));
    }
    const Objects& existing = ObjectsOf(type);
    do {
      name = prefix + RandomSuffix();
    } while (existing.count({ns, name}) > 0);
    metadata["name"] = name;
  }
  if (type->namespaced) {
    const Objects* namespaces = ObjectsOfOrNull(FindResource("namespaces"));
    if (namespaces == nullptr || namespaces->count({"", ns}) == 0) {
      return absl::NotFoundError(absl::StrCat("namespaces \"", ns, "\" not found"));
    }
  }
  Key key{ns, name};
  if (ObjectsOf(type).count(key) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(type->QualifiedResource(), " \"", name, "\" already exists"));
  }
  object["kind"] = type->kind;
  object["apiVersion"] = type->ApiVersion();
  metadata.erase("resourceVersion");
  metadata.erase("deletionTimestamp");
  metadata["uid"] = NewUid();
  metadata["creationTimestamp"] = Rfc3339(options_.now());
  if (type->has_generation) {
    metadata["generation"] = 1;
  } else {
    metadata.erase("generation");
  }
  if (type->resource == "namespaces") {
    object["status"] = {{"phase", "Active"}};
    if (!object.contains("spec")) object["spec"] = {{"finalizers", {"kubernetes"}}};
    if (!metadata.contains("labels") || !metadata["labels"].is_object()) {
      metadata["labels"] = json::object();
    }
    metadata["labels"]["kubernetes.io/metadata.name"] = name;
  }
  return Commit(type, key, EventType::kAdded, std::move(object), nullptr);
}

absl::StatusOr<ObjectPtr> ObjectStore::FinishUpdateLocked(const ResourceType* type, const Key& key,
                                                          const Entry& existing, json updated) {
  if (!updated.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body of a ", type->kind, " must be a JSON object"));
  }
  const json& old = *existing.object;
  const json& old_meta = Metadata(old);
  if (!updated.contains("metadata") || !updated["metadata"].is_object()) {
    updated["metadata"] = json::object();
  }
  json& meta = updated["metadata"];
  for (const char* field : {"name", "namespace", "uid", "creationTimestamp", "generation",
                            "deletionTimestamp", "resourceVersion"}) {
    auto it = old_meta.find(field);
    if (it != old_meta.end()) {
      meta[field] = *it;
    } else {
      meta.erase(field);
    }
  }
  updated["kind"] = type->kind;
  updated["apiVersion"] = type->ApiVersion();
  if (type->has_generation && SpecPart(updated) != SpecPart(old)) {
    int64_t generation = old_meta.value("generation", int64_t{0});
    meta["generation"] = generation + 1;
  }
  if (updated == old) return existing.object;  // no-op: no new resourceVersion, no event
  return Commit(type, key, EventType::kModified, std::move(updated), &existing);
}

absl::StatusOr<ObjectPtr> ObjectStore::UpdateWith(
    const ResourceType* type, const Key& key, absl::string_view precondition_rv,
    const std::function<absl::StatusOr<json>(const json&)>& make) {
  absl::MutexLock lock(&mu_);

  if (shutdown_) return absl::CancelledError("the store is shutting down");
  Objects& objects = ObjectsOf(type);
  auto it = objects.find(key);
  if (it == objects.end()) {
    return absl::NotFoundError(
        absl::StrCat(type->QualifiedResource(), " \"", key.second, "\" not found"));
  }
  Entry existing = it->second;
  if (!precondition_rv.empty() && precondition_rv != ResourceVersionOf(*existing.object)) {
    return absl::AbortedError(absl::StrCat(
        "Operation cannot be fulfilled on ", type->QualifiedResource(), " \"", key.second,
        "\": the object has been modified; please apply your changes to the latest version and "
        "try again"));
  }
  absl::StatusOr<json> updated = make(*existing.object);
  if (!updated.ok()) return updated.status();
  return FinishUpdateLocked(type, key, existing, *std::move(updated));
}

absl::StatusOr<ObjectPtr> ObjectStore::Update(absl::string_view resource, json object,
                                              bool keep_status) {
  absl::StatusOr<const ResourceType*> type = Type(resource);
  if (!type.ok()) return type.status();
  const json& meta = Metadata(object);
  Key key{(*type)->namespaced ? StringAt(meta, "namespace") : "", StringAt(meta, "name")};
  std::string precondition = StringAt(meta, "resourceVersion");
  return UpdateWith(*type, key, precondition, [&](const json& old) -> absl::StatusOr<json> {
    json updated = std::move(object);
    if (keep_status && updated.is_object()) {
      if (old.contains("status")) {
        updated["status"] = old["status"];
      } else {
        updated.erase("status");
      }
    }
    return updated;
  });
}

absl::StatusOr<ObjectPtr> ObjectStore::UpdateStatus(absl::string_view resource, json object) {
  absl::StatusOr<const ResourceType*> type = Type(resource);
  if (!type.ok()) return type.status();
  const json& meta = Metadata(object);
  Key key{(*type)->namespaced ? StringAt(meta, "namespace") : "", StringAt(meta, "name")};
  std::string precondition = StringAt(meta, "resourceVersion");
  return UpdateWith(*type, key, precondition, [&](const json& old) -> absl::StatusOr<json> {
    json updated = old;
    if (object.is_object() && object.contains("status")) {
      updated["status"] = object["status"];
    } else {
      updated.erase("status");
    }
    return updated;
  });
}

absl::StatusOr<ObjectPtr> ObjectStore::MergePatch(absl::string_view resource,
                                                  absl::string_view namespace_name,
                                                  absl::string_view name, const json& patch,
                                                  bool status_only) {
  absl::StatusOr<const ResourceType*> type = Type(resource);
  if (!type.ok()) return type.status();
  if (!patch.is_object()) {
    return absl::InvalidArgumentError("a merge patch must be a JSON object");
  }
  Key key{(*type)->namespaced ? std::string(namespace_name) : "", std::string(name)};
  std::string precondition = ResourceVersionOf(patch);
  return UpdateWith(*type, key, precondition, [&](const json& old) -> absl::StatusOr<json> {
    json updated = old;
    if (status_only) {
      if (patch.contains("status")) {
        json status = old.contains("status") ? old["status"] : json(nullptr);
        status.merge_patch(patch["status"]);
        updated["status"] = std::move(status);
        if (updated["status"].is_null()) updated.erase("status");
      }
    } else {
      updated.merge_patch(patch);
    }
    return updated;
  });
}

absl::StatusOr<ObjectPtr> ObjectStore::JsonPatch(absl::string_view resource,
                                                 absl::string_view namespace_name,
                                                 absl::string_view name, const json& patch) {
  absl::StatusOr<const ResourceType*> type = Type(resource);
  if (!type.ok()) return type.status();
  Key key{(*type)->namespaced ? std::string(namespace_name) : "", std::string(name)};
  return UpdateWith(*type, key, "", [&](const json& old) -> absl::StatusOr<json> {
    try {
      return old.patch(patch);
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("the JSON patch does not apply: ", e.what()));
    }
  });
}

absl::StatusOr<ObjectPtr> ObjectStore::Mutate(absl::string_view resource,
                                              absl::string_view namespace_name,
                                              absl::string_view name,
                                              const std::function<absl::Status(json&)>& mutate) {
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<ObjectPtr> current = Get(resource, namespace_name, name);
    if (!current.ok()) return current.status();
    json copy = **current;
    absl::Status status = mutate(copy);
    if (!status.ok()) return status;
    if (!copy.is_object()) return absl::InvalidArgumentError("the object must stay an object");
    copy["metadata"]["resourceVersion"] = ResourceVersionOf(**current);
    copy["metadata"]["name"] = std::string(name);
    if (!namespace_name.empty()) copy["metadata"]["namespace"] = std::string(namespace_name);
    absl::StatusOr<ObjectPtr> updated = Update(resource, std::move(copy));
    if (updated.ok() || !absl::IsAborted(updated.status()) || attempt >= 100) return updated;
  }
}

absl::StatusOr<ObjectPtr> ObjectStore::DeleteLocked(const ResourceType* type, const Key& key,
                                                    absl::string_view precondition_rv) {
  Objects& objects = ObjectsOf(type);
  auto it = objects.find(key);
  if (it == objects.end()) {
    return absl::NotFoundError(
        absl::StrCat(type->QualifiedResource(), " \"", key.second, "\" not found"));
  }
  Entry existing = it->second;
  if (!precondition_rv.empty() && precondition_rv != ResourceVersionOf(*existing.object)) {
    return absl::AbortedError(absl::StrCat(
        "Operation cannot be fulfilled on ", type->QualifiedResource(), " \"", key.second,
        "\": the ResourceVersion in the precondition (", precondition_rv,
        ") does not match the ResourceVersion in record (", ResourceVersionOf(*existing.object),
        "). The object might have been modified"));
  }
  if (type->resource == "namespaces") {
    // Everything in the namespace goes first, as the namespace controller would do it.
    for (const ResourceType& member : ResourceTypes()) {
      if (!member.namespaced) continue;
      Objects& members = ObjectsOf(&member);
      std::vector<Key> doomed;
      for (auto m = members.lower_bound({key.second, ""});
           m != members.end() && m->first.first == key.second; ++m) {
        doomed.push_back(m->first);
      }
      for (const Key& k : doomed) (void)DeleteLocked(&member, k, "");
    }
  }
  if (type->resource == "pods" && logs_.erase(key) > 0) ++log_version_;
  json last = *existing.object;
  return Commit(type, key, EventType::kDeleted, std::move(last), &existing);
}

absl::StatusOr<ObjectPtr> ObjectStore::Delete(absl::string_view resource,
                                              absl::string_view namespace_name,
                                              absl::string_view name,
                                              absl::string_view precondition_rv) {
  absl::StatusOr<const ResourceType*> type = Type(resource);
  if (!type.ok()) return type.status();
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::CancelledError("the store is shutting down");
  Key key{(*type)->namespaced ? std::string(namespace_name) : "", std::string(name)};
  return DeleteLocked(*type, key, precondition_rv);
}

absl::StatusOr<ObjectPtr> ObjectStore::Get(absl::string_view resource,
                                           absl::string_view namespace_name,
                                           absl::string_view name) const {
  absl::StatusOr<const ResourceType*> type = Type(resource);
  if (!type.ok()) return type.status();
  absl::MutexLock lock(&mu_);
  const Objects* objects = ObjectsOfOrNull(*type);
  Key key{(*type)->namespaced ? std::string(namespace_name) : "", std::string(name)};
  if (objects != nullptr) {
    auto it = objects->find(key);
    if (it != objects->end()) return it->second.object;
  }
  return absl::NotFoundError(
      absl::StrCat((*type)->QualifiedResource(), " \"", name, "\" not found"));
}

absl::StatusOr<ListResult> ObjectStore::List(absl::string_view resource,
                                             const ListOptions& options) const {
  absl::StatusOr<const ResourceType*> type_or = Type(resource);
  if (!type_or.ok()) return type_or.status();
  const ResourceType* type = *type_or;
  absl::StatusOr<LabelSelector> labels = LabelSelector::Parse(options.label_selector);
  if (!labels.ok()) return labels.status();
  absl::StatusOr<FieldSelector> fields = FieldSelector::Parse(options.field_selector, *type);
  if (!fields.ok()) return fields.status();
  std::optional<ContinueToken> token;
  if (!options.continue_token.empty()) {
    if (!options.resource_version.empty() && options.resource_version != "0") {
      return absl::InvalidArgumentError(
          "specifying resource version is not allowed when using continue");
    }
    absl::StatusOr<ContinueToken> decoded =
        DecodeContinue(options.continue_token, type->namespaced);
    if (!decoded.ok()) return decoded.status();
    token = *decoded;
  }
  std::optional<uint64_t> requested_rv;
  if (!options.resource_version.empty() && options.resource_version != "0") {
    absl::StatusOr<uint64_t> rv = ParseResourceVersion(options.resource_version);
    if (!rv.ok()) return rv.status();
    requested_rv = *rv;
  }

  absl::MutexLock lock(&mu_);
  uint64_t snapshot = rv_;
  if (token.has_value()) {
    if (token->rv < compacted_rv_) return absl::OutOfRangeError(kContinueExpired);
    if (token->rv > rv_) return absl::InvalidArgumentError("continue key is not valid: future rv");
    snapshot = token->rv;
  } else if (requested_rv.has_value()) {
    if (*requested_rv > rv_) return TooLarge(*requested_rv, rv_);
    if (options.resource_version_match == "Exact") {
      if (*requested_rv < compacted_rv_) return TooOld(*requested_rv, compacted_rv_);
      snapshot = *requested_rv;
    }
  }

  // The state at `snapshot`: the current objects, with every object changed since then replaced
  // by its state before the first such change (null when it did not exist).
  std::map<Key, std::pair<ObjectPtr, TextPtr>> past;
  if (snapshot < rv_ && !history_.empty()) {
    size_t first = static_cast<size_t>(snapshot + 1 - history_.front().rv);
    for (size_t i = first; i < history_.size(); ++i) {
      const Change& change = history_[i];
      if (change.type != type) continue;
      past.emplace(change.key, std::make_pair(change.previous, change.previous_text));
    }
  }
  static const Objects* kEmpty = new Objects();
  const Objects* current = ObjectsOfOrNull(type);
  if (current == nullptr) current = kEmpty;

  const std::string& ns = type->namespaced ? options.namespace_name : std::string();
  Key begin{ns, ""};
  bool exclusive = false;
  if (token.has_value()) {
    begin = token->after;
    exclusive = true;
  }
  auto cur = exclusive ? current->upper_bound(begin) : current->lower_bound(begin);
  auto old = exclusive ? past.upper_bound(begin) : past.lower_bound(begin);

  ListResult result;
  result.resource_version = snapshot;
  Key last;
  bool more = false;
  int64_t remaining = 0;
  bool no_selectors = labels->empty() && fields->empty();
  while (cur != current->end() || old != past.end()) {
    const Key* key;
    ObjectPtr object;
    TextPtr text;
    if (old == past.end() || (cur != current->end() && cur->first < old->first)) {
      key = &cur->first;
      object = cur->second.object;
      text = cur->second.text;
      ++cur;
    } else {
      if (cur != current->end() && cur->first == old->first) ++cur;
      key = &old->first;
      object = old->second.first;
      text = old->second.second;
      ++old;
    }
    if (!ns.empty() && key->first != ns) break;
    if (object == nullptr) continue;
    const json& metadata = Metadata(*object);
    auto label_it = metadata.find("labels");
    if (!labels->Matches(label_it != metadata.end() ? *label_it : json())) continue;
    if (!fields->Matches(*object)) continue;
    if (options.limit > 0 && static_cast<int64_t>(result.items.size()) >= options.limit) {
      more = true;
      if (!no_selectors) break;
      ++remaining;
      continue;
    }
    result.items.push_back(object);
    result.texts.push_back(text);
    last = *key;
  }
  if (more) {
    result.continue_token = EncodeContinue(snapshot, last, type->namespaced);
    if (no_selectors) result.remaining_item_count = remaining;
  }
  return result;
}

absl::StatusOr<std::unique_ptr<Watcher>> ObjectStore::Watch(absl::string_view resource,
                                                            const WatchOptions& options) {
  absl::StatusOr<const ResourceType*> type_or = Type(resource);
  if (!type_or.ok()) return type_or.status();
  const ResourceType* type = *type_or;
  absl::StatusOr<LabelSelector> labels = LabelSelector::Parse(options.label_selector);
  if (!labels.ok()) return labels.status();
  absl::StatusOr<FieldSelector> fields = FieldSelector::Parse(options.field_selector, *type);
  if (!fields.ok()) return fields.status();
  bool initial = options.resource_version.empty() || options.resource_version == "0";
  uint64_t start = 0;
  if (!initial) {
    absl::StatusOr<uint64_t> rv = ParseResourceVersion(options.resource_version);
    if (!rv.ok()) return rv.status();
    start = *rv;
  }
  WatchOptions stored = options;
  if (!type->namespaced) stored.namespace_name.clear();

  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::CancelledError("the store is shutting down");
  if (!initial && start < WindowOf(type).compacted_rv) {
    return TooOld(start, WindowOf(type).compacted_rv);
  }
  auto watcher =
      std::unique_ptr<Watcher>(new Watcher(this, type, std::move(stored), *std::move(labels),
                                           *std::move(fields), initial ? rv_ : start));
  ++watchers_;
  if (initial) {
    const Objects* objects = ObjectsOfOrNull(type);
    if (objects != nullptr) {
      for (const auto& [key, entry] : *objects) {
        if (!watcher->Matches(*entry.object)) continue;
        watcher->initial_.push_back(WatchEvent{EventType::kAdded, entry.object, entry.text,
                                               std::stoull(ResourceVersionOf(*entry.object))});
      }
    }
  }
  return watcher;
}

absl::Status ObjectStore::NextLocked(Watcher* watcher, absl::Time deadline,
                                     std::vector<WatchEvent>* out) {
  if (!watcher->initial_.empty()) {
    out->swap(watcher->initial_);
    watcher->initial_.clear();
    return absl::OkStatus();
  }
  // Woken only by a change of the watcher's own type (or its compaction, or shutdown): the
  // committer evaluates this on unlock, so other types' churn costs a sleeping watch nothing.
  auto due = [this, watcher]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const TypeWindow window = WindowOf(watcher->type_);
    return shutdown_ || window.last_rv > watcher->cursor_ || window.compacted_rv > watcher->cursor_;
  };
  while (true) {
    if (shutdown_) return absl::CancelledError("the server is shutting down");
    const uint64_t type_compacted = WindowOf(watcher->type_).compacted_rv;
    if (watcher->cursor_ < type_compacted) return TooOld(watcher->cursor_, type_compacted);
    if (!history_.empty() && watcher->cursor_ < rv_) {
      // Changes compacted past the cursor were of other types: start at the oldest kept.
      size_t i = watcher->cursor_ + 1 < history_.front().rv
                     ? 0
                     : static_cast<size_t>(watcher->cursor_ + 1 - history_.front().rv);
      for (; i < history_.size() && out->size() < kMaxEventsPerNext; ++i) {
        const Change& change = history_[i];
        watcher->cursor_ = change.rv;
        if (change.type != watcher->type_) continue;
        bool now = watcher->Matches(*change.object);
        bool before = change.previous != nullptr && watcher->Matches(*change.previous);
        EventType type = change.event;
        if (change.event == EventType::kModified) {
          if (!now && !before) continue;
          if (now && !before) type = EventType::kAdded;
          if (!now && before) type = EventType::kDeleted;
        } else if (!now) {
          continue;
        }
        out->push_back(WatchEvent{type, change.object, change.text, change.rv});
      }
      if (!out->empty()) return absl::OkStatus();
    }
    if (!mu_.AwaitWithDeadline(absl::Condition(&due), deadline)) return absl::OkStatus();
  }
}

ObjectStore::TypeWindow ObjectStore::WindowOf(const ResourceType* type) const {
  auto it = windows_.find(type);
  return it != windows_.end() ? it->second : TypeWindow{};
}

// ---------------------------------------------------------------------------------------------
// Logs.

absl::StatusOr<std::string> ObjectStore::ResolveContainerLocked(const Key& pod_key,
                                                                absl::string_view container) const {
  const Objects* pods = ObjectsOfOrNull(FindResource("pods"));
  auto it = pods != nullptr ? pods->find(pod_key) : decltype(pods->end()){};
  if (pods == nullptr || it == pods->end()) {
    return absl::NotFoundError(absl::StrCat("pods \"", pod_key.second, "\" not found"));
  }
  const json& pod = *it->second.object;
  if (container.empty()) {
    std::vector<std::string> main = MainContainerNames(pod);
    if (main.size() == 1) return main[0];
    return absl::InvalidArgumentError(absl::StrCat("a container name must be specified for pod ",
                                                   pod_key.second, ", choose one of: [",
                                                   absl::StrJoin(main, " "), "]"));
  }
  std::vector<std::string> all = ContainerNames(pod);
  if (std::find(all.begin(), all.end(), container) == all.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("container ", container, " is not valid for pod ", pod_key.second));
  }
  return std::string(container);
}

absl::StatusOr<std::string> ObjectStore::ResolveContainer(absl::string_view namespace_name,
                                                          absl::string_view pod,
                                                          absl::string_view container) const {
  absl::MutexLock lock(&mu_);
  return ResolveContainerLocked({std::string(namespace_name), std::string(pod)}, container);
}

absl::Status ObjectStore::AppendLog(absl::string_view namespace_name, absl::string_view pod,
                                    absl::string_view container,
                                    const std::vector<std::string>& lines) {
  absl::MutexLock lock(&mu_);
  Key key{std::string(namespace_name), std::string(pod)};
  absl::StatusOr<std::string> name = ResolveContainerLocked(key, container);
  if (!name.ok()) return name.status();
  std::string uid = StringAt(Metadata(*ObjectsOf(FindResource("pods"))[key].object), "uid");
  PodLog& log = logs_[key];
  if (log.uid != uid) {
    log.containers.clear();
    log.uid = uid;
  }
  std::vector<std::string>& stored = log.containers[*name];
  stored.insert(stored.end(), lines.begin(), lines.end());
  ++log_version_;
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<LogChunk> ObjectStore::ReadLog(absl::string_view namespace_name,
                                              absl::string_view pod,
                                              const LogOptions& options) const {
  absl::MutexLock lock(&mu_);
  Key key{std::string(namespace_name), std::string(pod)};
  absl::StatusOr<std::string> name = ResolveContainerLocked(key, options.container);
  if (!name.ok()) return name.status();
  LogChunk chunk;
  chunk.container = *name;
  chunk.pod_uid = StringAt(Metadata(*ObjectsOfOrNull(FindResource("pods"))->at(key).object), "uid");
  auto log = logs_.find(key);
  if (log == logs_.end() || log->second.uid != chunk.pod_uid) return chunk;
  auto lines = log->second.containers.find(*name);
  if (lines == log->second.containers.end()) return chunk;
  const std::vector<std::string>& all = lines->second;
  size_t from = 0;
  if (options.tail_lines >= 0 && static_cast<size_t>(options.tail_lines) < all.size()) {
    from = all.size() - static_cast<size_t>(options.tail_lines);
  }
  chunk.lines.assign(all.begin() + static_cast<std::ptrdiff_t>(from), all.end());
  chunk.next_offset = all.size();
  return chunk;
}

absl::StatusOr<LogChunk> ObjectStore::WaitLog(absl::string_view namespace_name,
                                              absl::string_view pod, absl::string_view container,
                                              absl::string_view pod_uid, size_t offset,
                                              absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  Key key{std::string(namespace_name), std::string(pod)};
  LogChunk chunk;
  chunk.container = std::string(container);
  chunk.pod_uid = std::string(pod_uid);
  chunk.next_offset = offset;
  while (true) {
    if (shutdown_) return absl::CancelledError("the server is shutting down");
    const Objects* pods = ObjectsOfOrNull(FindResource("pods"));
    auto pod_it = pods != nullptr ? pods->find(key) : decltype(pods->end()){};
    if (pods == nullptr || pod_it == pods->end() ||
        StringAt(Metadata(*pod_it->second.object), "uid") != pod_uid) {
      chunk.ended = true;
      return chunk;
    }
    auto log = logs_.find(key);
    if (log != logs_.end() && log->second.uid == pod_uid) {
      auto lines = log->second.containers.find(container);
      if (lines != log->second.containers.end() && lines->second.size() > offset) {
        chunk.lines.assign(lines->second.begin() + static_cast<std::ptrdiff_t>(offset),
                           lines->second.end());
        chunk.next_offset = lines->second.size();
        return chunk;
      }
    }
    if (changed_.WaitWithDeadline(&mu_, deadline) && absl::Now() >= deadline) return chunk;
  }
}

}  // namespace elfdeploy::kubesim
