#include "services/cluster_watcher/diagnose.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/timestamp.pb.h"
#include "services/common/proto_time.h"

namespace elfdeploy::watcher {
namespace {

using google::protobuf::RepeatedPtrField;
using google::protobuf::Timestamp;

constexpr char kDefaultArgoNamespace[] = "argocd";
constexpr char kDefaultGateway[] = "agentgateway";
constexpr char kNameLabel[] = "app.kubernetes.io/name";
constexpr char kHashLabel[] = "pod-template-hash";
constexpr size_t kMaxEvidence = 50;
constexpr size_t kMaxMessageLines = 10;
constexpr size_t kDiscoveryEvidenceLines = 10;

std::string Lower(absl::string_view text) { return absl::AsciiStrToLower(text); }

// "SYNC_STATUS_OUT_OF_SYNC" → "OutOfSync" (the Kubernetes/Argo CD spelling of an enum value).
std::string ShortName(absl::string_view enum_name, size_t prefix_words = 2) {
  std::vector<std::string> words = absl::StrSplit(enum_name, '_');
  std::string out;
  for (size_t i = std::min(prefix_words, words.size()); i < words.size(); ++i) {
    std::string word = absl::AsciiStrToLower(words[i]);
    if (!word.empty()) word[0] = absl::ascii_toupper(static_cast<unsigned char>(word[0]));
    out += word;
  }
  return out;
}

bool ContainsAny(absl::string_view lower_text, std::initializer_list<absl::string_view> needles) {
  for (absl::string_view needle : needles) {
    if (absl::StrContains(lower_text, needle)) return true;
  }
  return false;
}

// Full or abbreviated (at least 7 characters) commit SHAs naming the same commit.
bool RevisionMatches(absl::string_view a, absl::string_view b) {
  if (a.empty() || b.empty()) return false;
  if (a.size() > b.size()) std::swap(a, b);
  return a == b || (a.size() >= 7 && absl::StartsWith(b, a));
}

// Appends a non-empty line unless it is already there.
void AddLine(std::vector<std::string>* lines, absl::string_view line) {
  if (line.empty()) return;
  if (std::find(lines->begin(), lines->end(), line) != lines->end()) return;
  lines->emplace_back(line);
}

// Keeps the first `head` lines and the newest lines after them: kMaxEvidence in all.
void Bound(std::vector<std::string>* lines, size_t head = 0) {
  if (lines->size() <= kMaxEvidence) return;
  head = std::min(head, kMaxEvidence);
  size_t drop = lines->size() - kMaxEvidence;
  lines->erase(lines->begin() + static_cast<std::ptrdiff_t>(head),
               lines->begin() + static_cast<std::ptrdiff_t>(head + drop));
}

// The non-empty lines of `text`, at most `max`.
std::vector<std::string> Lines(absl::string_view text, size_t max) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    if (out.size() == max) break;
    out.emplace_back(absl::StripTrailingAsciiWhitespace(line));
  }
  return out;
}

const v1::Condition* FindCondition(const RepeatedPtrField<v1::Condition>& conditions,
                                   absl::string_view type) {
  for (const v1::Condition& condition : conditions) {
    if (condition.type() == type) return &condition;
  }
  return nullptr;
}

v1::ObjectRef Ref(absl::string_view kind, absl::string_view api_version,
                  const v1::ObjectMeta& meta) {
  v1::ObjectRef ref;
  ref.set_kind(std::string(kind));
  ref.set_api_version(std::string(api_version));
  ref.set_namespace_(meta.namespace_());
  ref.set_name(meta.name());
  ref.set_uid(meta.uid());
  return ref;
}

absl::Time EventTime(const v1::KubernetesEvent& event) {
  if (IsSet(event.last_time())) return FromTimestamp(event.last_time());
  if (IsSet(event.first_time())) return FromTimestamp(event.first_time());
  if (IsSet(event.meta().creation_time())) return FromTimestamp(event.meta().creation_time());
  return absl::InfinitePast();
}

// The container an event's fieldPath names ("spec.containers{app}"); empty when none.
absl::string_view FieldPathContainer(absl::string_view field_path) {
  size_t open = field_path.find('{');
  size_t close = field_path.rfind('}');
  if (open == absl::string_view::npos || close == absl::string_view::npos || close <= open) {
    return {};
  }
  return field_path.substr(open + 1, close - open - 1);
}

// Recent Events by involved object, oldest first, without those older than since_time.
class EventIndex {
 public:
  EventIndex(const std::vector<v1::KubernetesEvent>& events, std::optional<absl::Time> since) {
    for (const v1::KubernetesEvent& event : events) {
      if (since.has_value() && EventTime(event) < *since) continue;
      const v1::ObjectRef& object = event.involved_object();
      by_object_[{object.kind(), object.namespace_(), object.name()}].push_back(&event);
    }
  }

  // Events of (kind, ns, name); with a container, those about it or about no container.
  std::vector<const v1::KubernetesEvent*> For(const std::string& kind, const std::string& ns,
                                              const std::string& name,
                                              absl::string_view container = {}) const {
    auto it = by_object_.find({kind, ns, name});
    if (it == by_object_.end()) return {};
    std::vector<const v1::KubernetesEvent*> out;
    for (const v1::KubernetesEvent* event : it->second) {
      absl::string_view about = FieldPathContainer(event->involved_object().field_path());
      if (!container.empty() && !about.empty() && about != container) continue;
      out.push_back(event);
    }
    return out;
  }

 private:
  std::map<std::tuple<std::string, std::string, std::string>,
           std::vector<const v1::KubernetesEvent*>>
      by_object_;
};

// Sets first/last seen from events (first occurrence, last occurrence).
void SetSeen(const std::vector<const v1::KubernetesEvent*>& events, v1::Finding* finding) {
  std::optional<absl::Time> first, last;
  for (const v1::KubernetesEvent* event : events) {
    absl::Time begin =
        IsSet(event->first_time()) ? FromTimestamp(event->first_time()) : EventTime(*event);
    absl::Time end = EventTime(*event);
    if (begin == absl::InfinitePast()) continue;
    if (!first.has_value() || begin < *first) first = begin;
    if (!last.has_value() || end > *last) last = end;
  }
  if (first.has_value()) *finding->mutable_first_seen_time() = ToTimestamp(*first);
  if (last.has_value()) *finding->mutable_last_seen_time() = ToTimestamp(*last);
}

bool IsPullFailure(absl::string_view reason) {
  return reason == "ErrImagePull" || reason == "ImagePullBackOff";
}

// Whether a kubelet pull error says the registry refused the credentials.
bool SaysAuthRefused(absl::string_view message) {
  return ContainsAny(
      Lower(message),
      {"401 unauthorized", "403 forbidden", "unauthorized", "forbidden", "authentication required",
       "no basic auth credentials", "pull access denied", "authorization failed", "access denied"});
}

// Whether a kubelet pull error says the registry could not be reached.
bool SaysUnreachable(absl::string_view message) {
  return ContainsAny(Lower(message), {"connection refused", "no such host", "i/o timeout",
                                      "network is unreachable", "dial tcp", "tls handshake timeout",
                                      "context deadline exceeded", "server misbehaving"});
}

// Argo CD messages about reading the source repository.
bool SaysRepoAccess(absl::string_view lower) {
  return ContainsAny(
      lower, {"repository not found", "authentication required", "failed to list refs",
              "permission denied", "could not read username", "repository does not exist",
              "authorization failed", "invalid username or password", "ssh: handshake failed"});
}

// A repository access failure no commit can fix (as opposed to a network blip).
bool SaysPermanentRepoAccess(absl::string_view lower) {
  return ContainsAny(
      lower, {"repository not found", "authentication required", "permission denied",
              "could not read username", "repository does not exist", "authorization failed",
              "invalid username or password", "ssh: handshake failed"});
}

// `text` with the password of any "scheme://user:password@host" URL replaced, so that a
// credential Argo CD quotes from a repository URL is never returned.
std::string RedactUrlCredentials(absl::string_view text) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t scheme = text.find("://", pos);
    if (scheme == absl::string_view::npos) break;
    size_t start = scheme + 3;
    size_t end = text.find_first_of("/ \t\n\"'@", start);
    if (end == absl::string_view::npos || text[end] != '@') {
      absl::StrAppend(&out, text.substr(pos, start - pos));
      pos = start;
      continue;
    }
    absl::string_view userinfo = text.substr(start, end - start);
    size_t colon = userinfo.find(':');
    absl::StrAppend(&out, text.substr(pos, start - pos));
    if (colon == absl::string_view::npos) {
      absl::StrAppend(&out, userinfo);
    } else {
      absl::StrAppend(&out, userinfo.substr(0, colon), ":redacted");
    }
    pos = end;
  }
  absl::StrAppend(&out, text.substr(pos));
  return out;
}

// The revision of a SyncError "Failed sync attempt to <revision>: …"; empty when not one.
std::string AttemptedRevision(absl::string_view message) {
  constexpr absl::string_view kPrefix = "Failed sync attempt to ";
  if (!absl::StartsWith(message, kPrefix)) return "";
  absl::string_view rest = message.substr(kPrefix.size());
  return std::string(rest.substr(0, rest.find(':')));
}

// The namespace of a `namespaces "x" not found` message; empty when the message is not one.
std::string MissingNamespace(absl::string_view message) {
  constexpr absl::string_view kPrefix = "namespaces \"";
  size_t at = message.find(kPrefix);
  while (at != absl::string_view::npos) {
    size_t start = at + kPrefix.size();
    size_t end = message.find('"', start);
    if (end == absl::string_view::npos) break;
    if (absl::StartsWith(message.substr(end), "\" not found")) {
      return std::string(message.substr(start, end - start));
    }
    at = message.find(kPrefix, end);
  }
  return "";
}

// True when `line` has "Discovered <app>" with <app> not followed by more of a name.
bool IsDiscoveryLine(absl::string_view line, absl::string_view app) {
  std::string needle = absl::StrCat("Discovered ", app);
  size_t at = line.find(needle);
  while (at != absl::string_view::npos) {
    size_t after = at + needle.size();
    if (after == line.size()) return true;
    char next = line[after];
    if (!absl::ascii_isalnum(static_cast<unsigned char>(next)) && next != '-' && next != '_' &&
        next != '.') {
      return true;
    }
    at = line.find(needle, after);
  }
  return false;
}

// The digest part of an imageID ("docker-pullable://reg/repo@sha256:…" → "sha256:…").
std::string DigestOf(absl::string_view image_id) {
  size_t at = image_id.rfind('@');
  if (at != absl::string_view::npos) return std::string(image_id.substr(at + 1));
  if (absl::StartsWith(image_id, "sha256:")) return std::string(image_id);
  return "";
}

bool LabelsMatch(const google::protobuf::Map<std::string, std::string>& selector,
                 const google::protobuf::Map<std::string, std::string>& labels) {
  if (selector.empty()) return false;
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

// A pod belongs to a Deployment when its ReplicaSet owner is "<deployment>-<hash>"; pods without
// a ReplicaSet owner when they match the Deployment's selector.
bool PodOf(const v1::Pod& pod, const v1::Deployment& deployment) {
  if (pod.meta().namespace_() != deployment.meta().namespace_()) return false;
  for (const v1::ObjectRef& owner : pod.meta().owner_references()) {
    if (owner.kind() != "ReplicaSet") continue;
    std::string prefix = absl::StrCat(deployment.meta().name(), "-");
    if (!absl::StartsWith(owner.name(), prefix)) return false;
    absl::string_view hash = absl::string_view(owner.name()).substr(prefix.size());
    return !hash.empty() && !absl::StrContains(hash, '-');
  }
  return LabelsMatch(deployment.selector(), pod.meta().labels());
}

bool Terminating(const v1::Pod& pod) { return IsSet(pod.meta().deletion_time()); }

// The ReplicaSet hash of a pod: its pod-template-hash label, else its ReplicaSet owner's suffix.
std::string PodHash(const v1::Pod& pod) {
  auto it = pod.meta().labels().find(kHashLabel);
  if (it != pod.meta().labels().end()) return it->second;
  for (const v1::ObjectRef& owner : pod.meta().owner_references()) {
    if (owner.kind() != "ReplicaSet") continue;
    size_t dash = owner.name().rfind('-');
    if (dash != std::string::npos) return owner.name().substr(dash + 1);
  }
  return "";
}

// True when a pod's container images are those of the Deployment's template.
bool RunsTemplate(const v1::Pod& pod, const v1::Deployment& deployment) {
  if (deployment.containers_size() == 0 || pod.containers_size() == 0) return false;
  for (const v1::ContainerSpec& spec : deployment.containers()) {
    bool found = false;
    for (const v1::ContainerSpec& container : pod.containers()) {
      if (container.name() == spec.name() && container.image() == spec.image()) found = true;
    }
    if (!found) return false;
  }
  return true;
}

// A Deployment's rollout is complete (kubectl rollout status), digests aside.
bool RolledOut(const v1::Deployment& deployment) {
  if (deployment.meta().generation() > 0 &&
      deployment.observed_generation() < deployment.meta().generation()) {
    return false;
  }
  const v1::Condition* available = FindCondition(deployment.conditions(), "Available");
  bool is_available = available != nullptr
                          ? available->status() == v1::CONDITION_STATUS_TRUE
                          : deployment.available_replicas() >= deployment.replicas();
  return is_available && deployment.updated_replicas() == deployment.replicas() &&
         deployment.ready_replicas() == deployment.replicas() &&
         deployment.status_replicas() <= deployment.replicas();
}

const v1::ContainerSpec* FindSpec(const RepeatedPtrField<v1::ContainerSpec>& specs,
                                  absl::string_view name) {
  for (const v1::ContainerSpec& spec : specs) {
    if (spec.name() == name) return &spec;
  }
  return nullptr;
}

// Why a pod is not ready, in one line.
std::string PodProblem(const v1::Pod& pod) {
  std::string prefix = absl::StrCat("pod ", pod.meta().name(), ": ");
  const v1::Condition* scheduled = FindCondition(pod.conditions(), "PodScheduled");
  if (scheduled != nullptr && scheduled->status() == v1::CONDITION_STATUS_FALSE) {
    return absl::StrCat(prefix, "not scheduled: ", scheduled->reason(),
                        scheduled->message().empty() ? "" : ": ", scheduled->message());
  }
  std::vector<std::string> parts;
  auto describe = [&](const v1::ContainerStatus& status) {
    if (status.state().has_waiting()) {
      const v1::ContainerStateWaiting& waiting = status.state().waiting();
      parts.push_back(absl::StrCat("container ", status.name(), " waiting: ", waiting.reason(),
                                   waiting.message().empty() ? "" : ": ", waiting.message()));
    } else if (status.state().has_terminated()) {
      const v1::ContainerStateTerminated& terminated = status.state().terminated();
      parts.push_back(absl::StrCat("container ", status.name(),
                                   " terminated: ", terminated.reason(), " (exit code ",
                                   terminated.exit_code(), ")"));
    } else if (!status.ready()) {
      parts.push_back(absl::StrCat("container ", status.name(), " running but not ready",
                                   status.restart_count() > 0
                                       ? absl::StrCat(" (", status.restart_count(), " restarts)")
                                       : ""));
    }
  };
  for (const v1::ContainerStatus& status : pod.init_container_statuses()) {
    if (!status.state().has_terminated() || status.state().terminated().exit_code() != 0) {
      describe(status);
    }
  }
  for (const v1::ContainerStatus& status : pod.container_statuses()) describe(status);
  if (!parts.empty()) return absl::StrCat(prefix, absl::StrJoin(parts, "; "));
  absl::StrAppend(&prefix, "not ready (", ShortName(v1::PodPhase_Name(pod.phase())), ")");
  if (!pod.reason().empty()) absl::StrAppend(&prefix, ": ", pod.reason());
  if (!pod.message().empty()) absl::StrAppend(&prefix, ": ", pod.message());
  return prefix;
}

struct Workload {
  std::string app;
  std::string ns;
  std::string application;
  const v1::Deployment* deployment = nullptr;
  std::vector<const v1::Pod*> pods;  // sorted by name
};

class Diagnoser {
 public:
  Diagnoser(const ClusterState::Snapshot& snapshot, const v1::DiagnoseRequest& request,
            const DiagnoseDeps& deps)
      : snapshot_(snapshot),
        request_(request),
        deps_(deps),
        now_(deps.now ? deps.now() : absl::Now()),
        since_(request.has_since_time()
                   ? std::optional<absl::Time>(FromTimestamp(request.since_time()))
                   : std::nullopt),
        events_(snapshot.events, since_) {}

  absl::StatusOr<v1::DiagnoseResponse> Run();

 private:
  const v1::Application* FindApplication() const;
  std::vector<const v1::Deployment*> FindDeployments(const std::string& app,
                                                     const std::string& ns) const;
  const v1::Deployment* FindDeployment(const std::string& ns, const std::string& name) const;
  const v1::Application* ManagingApplication(const v1::Deployment& deployment) const;
  std::vector<const v1::Pod*> PodsOf(const v1::Deployment& deployment) const;
  void AddWorkload(const std::string& app, const std::string& ns, const std::string& application,
                   const v1::Deployment* deployment);

  void DiagnoseApplication(const v1::Application& application);
  void AddSyncError(const v1::Application& application, const std::string& reason,
                    const std::string& message, const std::string& revision, const Timestamp& seen);
  bool RevisionSynced(const v1::Application& application) const;

  v1::WorkloadStatus DiagnoseWorkload(const Workload& workload);
  void DiagnoseContainers(const Workload& workload);
  void DiagnoseContainer(const Workload& workload, const v1::Pod& pod,
                         const v1::ContainerStatus& status);
  void ImagePull(const Workload& workload, const v1::Pod& pod, const v1::ContainerStatus& status);
  void CrashLoop(const Workload& workload, const v1::Pod& pod, const v1::ContainerStatus& status,
                 const v1::ContainerStateTerminated& termination);
  void DiagnoseRollout(const Workload& workload, bool rolled_out, const std::string& expected,
                       bool digests_ok, const std::vector<std::string>& digest_evidence);
  void DiagnoseDiscovery(const Workload& workload, v1::WorkloadStatus* status);

  // Starts a finding about `workload`; returns nullptr when one with the same (kind, reason,
  // container) already exists for it, after noting `pod` on that one.
  v1::Finding* StartFinding(const Workload& workload, v1::FindingKind kind,
                            const std::string& reason, const std::string& container,
                            const v1::Pod* pod);
  v1::Finding* NewFinding(v1::FindingKind kind, const std::string& reason, v1::Severity severity);
  absl::Status ResolveImage(const std::string& image);

  const ClusterState::Snapshot& snapshot_;
  const v1::DiagnoseRequest& request_;
  const DiagnoseDeps& deps_;
  const absl::Time now_;
  const std::optional<absl::Time> since_;
  const EventIndex events_;

  std::vector<Workload> workloads_;
  std::vector<v1::Finding> findings_;
  // Pods sharing a per-workload finding: finding index → pod names.
  std::map<std::tuple<std::string, std::string, int, std::string, std::string>, size_t> grouped_;
  std::map<size_t, std::vector<std::string>> group_pods_;
  std::map<std::string, absl::Status> resolved_;
  struct GatewayLog {
    absl::Status status;
    std::vector<std::string> lines;
  };
  std::map<std::string, GatewayLog> gateway_logs_;
};

const v1::Application* Diagnoser::FindApplication() const {
  std::string ns =
      request_.argocd_namespace().empty() ? kDefaultArgoNamespace : request_.argocd_namespace();
  for (const v1::Application& application : snapshot_.applications) {
    if (application.meta().name() == request_.application() &&
        (application.meta().namespace_() == ns || application.meta().namespace_().empty())) {
      return &application;
    }
  }
  return nullptr;
}

std::vector<const v1::Deployment*> Diagnoser::FindDeployments(const std::string& app,
                                                              const std::string& ns) const {
  std::vector<const v1::Deployment*> by_name, by_label;
  for (const v1::Deployment& deployment : snapshot_.deployments) {
    if (!ns.empty() && deployment.meta().namespace_() != ns) continue;
    if (deployment.meta().name() == app) {
      by_name.push_back(&deployment);
      continue;
    }
    auto it = deployment.meta().labels().find(kNameLabel);
    if (it != deployment.meta().labels().end() && it->second == app) {
      by_label.push_back(&deployment);
    }
  }
  return by_name.empty() ? by_label : by_name;
}

const v1::Deployment* Diagnoser::FindDeployment(const std::string& ns,
                                                const std::string& name) const {
  for (const v1::Deployment& deployment : snapshot_.deployments) {
    if (deployment.meta().name() == name && deployment.meta().namespace_() == ns) {
      return &deployment;
    }
  }
  return nullptr;
}

const v1::Application* Diagnoser::ManagingApplication(const v1::Deployment& deployment) const {
  for (const v1::Application& application : snapshot_.applications) {
    for (const v1::ApplicationResource& resource : application.resources()) {
      if (resource.kind() == "Deployment" && resource.name() == deployment.meta().name() &&
          resource.namespace_() == deployment.meta().namespace_()) {
        return &application;
      }
    }
  }
  return nullptr;
}

std::vector<const v1::Pod*> Diagnoser::PodsOf(const v1::Deployment& deployment) const {
  std::vector<const v1::Pod*> pods;
  for (const v1::Pod& pod : snapshot_.pods) {
    if (PodOf(pod, deployment)) pods.push_back(&pod);
  }
  std::sort(pods.begin(), pods.end(),
            [](const v1::Pod* a, const v1::Pod* b) { return a->meta().name() < b->meta().name(); });
  return pods;
}

void Diagnoser::AddWorkload(const std::string& app, const std::string& ns,
                            const std::string& application, const v1::Deployment* deployment) {
  for (const Workload& existing : workloads_) {
    if (existing.app == app && existing.ns == ns) return;
  }
  Workload workload;
  workload.app = app;
  workload.ns = ns;
  workload.application = application;
  workload.deployment = deployment;
  if (deployment != nullptr) workload.pods = PodsOf(*deployment);
  workloads_.push_back(std::move(workload));
}

v1::Finding* Diagnoser::NewFinding(v1::FindingKind kind, const std::string& reason,
                                   v1::Severity severity) {
  v1::Finding& finding = findings_.emplace_back();
  finding.set_kind(kind);
  finding.set_reason(reason);
  finding.set_severity(severity);
  finding.set_cluster(snapshot_.cluster.name());
  return &finding;
}

v1::Finding* Diagnoser::StartFinding(const Workload& workload, v1::FindingKind kind,
                                     const std::string& reason, const std::string& container,
                                     const v1::Pod* pod) {
  auto key = std::make_tuple(workload.ns, workload.app, static_cast<int>(kind), reason, container);
  auto it = grouped_.find(key);
  if (it != grouped_.end()) {
    if (pod != nullptr) group_pods_[it->second].push_back(pod->meta().name());
    return nullptr;
  }
  v1::Finding* finding = NewFinding(kind, reason, v1::SEVERITY_ERROR);
  size_t index = findings_.size() - 1;
  grouped_[key] = index;
  if (pod != nullptr) {
    group_pods_[index].push_back(pod->meta().name());
    *finding->mutable_object() = Ref("Pod", "v1", pod->meta());
  }
  finding->set_container(container);
  finding->set_app(workload.app);
  return finding;
}

absl::Status Diagnoser::ResolveImage(const std::string& image) {
  auto it = resolved_.find(image);
  if (it != resolved_.end()) return it->second;
  absl::Status status = absl::UnimplementedError("no registry-sync to resolve images with");
  if (deps_.resolve_image) {
    status = deps_.resolve_image(
        absl::StrCat("docker://", image),
        request_.has_registry_credentials() ? &request_.registry_credentials() : nullptr);
  }
  resolved_.emplace(image, status);
  return status;
}

// --- Application ------------------------------------------------------------------------------

bool Diagnoser::RevisionSynced(const v1::Application& application) const {
  return RevisionMatches(application.sync_revision(), request_.expected_revision()) &&
         application.sync_status() == v1::SYNC_STATUS_SYNCED;
}

void Diagnoser::AddSyncError(const v1::Application& application, const std::string& reason,
                             const std::string& raw_message, const std::string& revision,
                             const Timestamp& seen) {
  const std::string message = RedactUrlCredentials(raw_message);
  const std::string& expected = request_.expected_revision();
  bool fatal = expected.empty() || RevisionMatches(revision, expected);
  if (reason == "RepoAccess") fatal = SaysPermanentRepoAccess(Lower(message));
  for (v1::Finding& existing : findings_) {
    if (existing.kind() == v1::FINDING_KIND_SYNC_ERROR && existing.reason() == reason &&
        existing.object().name() == application.meta().name()) {
      // The same error as a condition and as the operation's message: one finding.
      std::vector<std::string> evidence(existing.evidence().begin(), existing.evidence().end());
      for (const std::string& line : Lines(message, kMaxEvidence)) AddLine(&evidence, line);
      Bound(&evidence);
      existing.clear_evidence();
      for (std::string& line : evidence) existing.add_evidence(std::move(line));
      existing.set_fatal(existing.fatal() || fatal);
      return;
    }
  }

  v1::Finding* finding = NewFinding(v1::FINDING_KIND_SYNC_ERROR, reason, v1::SEVERITY_ERROR);
  finding->set_fatal(fatal);
  *finding->mutable_object() = Ref("Application", "argoproj.io/v1alpha1", application.meta());
  std::string name = application.meta().name();
  if (reason == "RepoAccess") {
    finding->set_message(absl::StrCat("Argo CD cannot read the repository of Application ", name,
                                      " (", RedactUrlCredentials(application.spec().repo_url()),
                                      ")"));
    finding->set_remediation(
        "check that Argo CD has access to the GitOps repository (argocd repo list; the "
        "repository credentials Secret in the Argo CD namespace) and that the URL is right");
  } else if (reason == "NamespaceMissing") {
    std::string ns = MissingNamespace(message);
    finding->set_message(absl::StrCat("Argo CD cannot sync Application ", name, ": namespace ", ns,
                                      " does not exist"));
    finding->set_remediation(absl::StrCat("create namespace ", ns, " (kubectl create namespace ",
                                          ns, ") or add the sync option CreateNamespace=true"));
  } else if (reason == "ComparisonError") {
    finding->set_message(absl::StrCat("Argo CD cannot render the manifests of Application ", name));
    finding->set_remediation(
        "check the manifest syntax under the Application's path (kubectl kustomize <path>) and "
        "that the path exists at the target revision");
  } else if (reason == "InvalidSpecError") {
    finding->set_message(absl::StrCat("Application ", name, " has an invalid spec"));
    finding->set_remediation(
        "fix the Application's source or destination (repo URL, path, destination server and "
        "namespace, project)");
  } else {
    finding->set_message(absl::StrCat("Argo CD failed to sync Application ", name,
                                      revision.empty() ? "" : " to ", revision));
    finding->set_remediation(
        "see the sync error; argocd app get shows the failed resources (invalid fields, missing "
        "CRDs, admission webhooks, RBAC)");
  }
  for (std::string& line : Lines(message, kMaxEvidence)) finding->add_evidence(std::move(line));
  if (IsSet(seen)) {
    *finding->mutable_first_seen_time() = seen;
    *finding->mutable_last_seen_time() = seen;
  }
}

void Diagnoser::DiagnoseApplication(const v1::Application& application) {
  for (const v1::Condition& condition : application.conditions()) {
    std::string lower = Lower(condition.message());
    const std::string& type = condition.type();
    if (type == "ComparisonError") {
      AddSyncError(application, SaysRepoAccess(lower) ? "RepoAccess" : "ComparisonError",
                   condition.message(), application.sync_revision(),
                   condition.last_transition_time());
    } else if (type == "SyncError") {
      std::string reason = !MissingNamespace(condition.message()).empty() ? "NamespaceMissing"
                           : SaysRepoAccess(lower)                        ? "RepoAccess"
                                                                          : "SyncFailed";
      std::string attempted = AttemptedRevision(condition.message());
      AddSyncError(application, reason, condition.message(),
                   attempted.empty() ? application.sync_revision() : attempted,
                   condition.last_transition_time());
    } else if (absl::EndsWith(type, "Error")) {
      AddSyncError(application, type, condition.message(), application.sync_revision(),
                   condition.last_transition_time());
    }
  }
  const v1::OperationState& operation = application.operation_state();
  if (operation.phase() == v1::OPERATION_PHASE_FAILED ||
      operation.phase() == v1::OPERATION_PHASE_ERROR) {
    bool stale = since_.has_value() && IsSet(operation.finished_time()) &&
                 FromTimestamp(operation.finished_time()) < *since_;
    if (!stale) {
      std::string lower = Lower(operation.message());
      std::string reason = !MissingNamespace(operation.message()).empty() ? "NamespaceMissing"
                           : SaysRepoAccess(lower)                        ? "RepoAccess"
                                                                          : "SyncFailed";
      AddSyncError(
          application, reason, operation.message(), operation.sync_revision(),
          IsSet(operation.finished_time()) ? operation.finished_time() : operation.started_time());
    }
  }

  const std::string& expected = request_.expected_revision();
  if (!expected.empty() && !RevisionSynced(application)) {
    bool at_revision = RevisionMatches(application.sync_revision(), expected);
    v1::Finding* finding =
        NewFinding(v1::FINDING_KIND_REVISION_NOT_SYNCED,
                   at_revision ? "OutOfSync" : "RevisionMismatch", v1::SEVERITY_WARNING);
    *finding->mutable_object() = Ref("Application", "argoproj.io/v1alpha1", application.meta());
    std::string status = ShortName(v1::SyncStatus_Name(application.sync_status()));
    if (at_revision) {
      finding->set_message(absl::StrCat("Application ", application.meta().name(),
                                        " compared revision ", application.sync_revision(),
                                        " but is not synced to it yet (sync status ", status, ")"));
    } else {
      finding->set_message(
          absl::StrCat("Application ", application.meta().name(), " is at revision ",
                       application.sync_revision().empty() ? "(none)" : application.sync_revision(),
                       ", expected ", expected));
    }
    finding->add_evidence(absl::StrCat("sync status: ", status));
    finding->add_evidence(absl::StrCat("sync revision: ", application.sync_revision()));
    if (IsSet(application.reconciled_time())) {
      *finding->mutable_last_seen_time() = application.reconciled_time();
    }
    finding->set_remediation(
        "wait for Argo CD to poll the repository, or refresh the Application "
        "(ClusterWatcherService.Refresh / argocd app get --refresh); check that the Application's "
        "targetRevision is the branch the commit was pushed to");
  }

  if (request_.app().empty() && (application.health_status() == v1::HEALTH_STATUS_DEGRADED ||
                                 application.health_status() == v1::HEALTH_STATUS_MISSING)) {
    std::string reason =
        application.health_status() == v1::HEALTH_STATUS_DEGRADED ? "Degraded" : "Missing";
    v1::Finding* finding = NewFinding(v1::FINDING_KIND_OTHER, reason, v1::SEVERITY_WARNING);
    *finding->mutable_object() = Ref("Application", "argoproj.io/v1alpha1", application.meta());
    finding->set_message(absl::StrCat("Application ", application.meta().name(), " is ", reason,
                                      application.health_message().empty() ? "" : ": ",
                                      application.health_message()));
    std::vector<std::string> evidence;
    for (const v1::ApplicationResource& resource : application.resources()) {
      if (resource.health_status() == v1::HEALTH_STATUS_DEGRADED ||
          resource.health_status() == v1::HEALTH_STATUS_MISSING) {
        evidence.push_back(absl::StrCat(resource.kind(), " ", resource.namespace_(), "/",
                                        resource.name(), ": ", resource.health_message()));
      }
    }
    Bound(&evidence);
    for (std::string& line : evidence) finding->add_evidence(std::move(line));
    finding->set_remediation("see the findings of its resources");
  }
}

// --- Containers -------------------------------------------------------------------------------

void Diagnoser::ImagePull(const Workload& workload, const v1::Pod& pod,
                          const v1::ContainerStatus& status) {
  const v1::ContainerStateWaiting& waiting = status.state().waiting();
  const v1::ContainerSpec* spec = FindSpec(pod.containers(), status.name());
  std::string image = spec != nullptr && !spec->image().empty() ? spec->image() : status.image();
  std::vector<const v1::KubernetesEvent*> events =
      events_.For("Pod", pod.meta().namespace_(), pod.meta().name(), status.name());
  std::vector<std::string> evidence;
  bool secret_missing = false;
  std::string kubelet_text = waiting.message();
  for (const v1::KubernetesEvent* event : events) {
    if (event->type() == v1::KUBERNETES_EVENT_TYPE_NORMAL) continue;
    if (event->reason() == "FailedToRetrieveImagePullSecret") secret_missing = true;
    AddLine(&evidence, event->message());
    absl::StrAppend(&kubelet_text, "\n", event->message());
  }
  if (evidence.empty()) AddLine(&evidence, waiting.message());

  absl::Status verdict =
      image.empty() ? absl::InvalidArgumentError("no image") : ResolveImage(image);
  std::string secret = pod.image_pull_secrets_size() > 0 ? pod.image_pull_secrets(0) : "regcred";
  std::string reason = waiting.reason();
  v1::Severity severity = v1::SEVERITY_WARNING;
  bool fatal = false;
  std::string message, remediation;
  if (absl::IsNotFound(verdict)) {
    reason = "ImageNotFound";
    severity = v1::SEVERITY_ERROR;
    fatal = true;
    message = absl::StrCat("image ", image, " does not exist in the registry");
    remediation =
        "push the image (or fix the tag/digest in the manifest); registry-sync Resolve cannot "
        "find it";
  } else if (absl::IsUnauthenticated(verdict) || absl::IsPermissionDenied(verdict)) {
    reason = "CredentialsRefused";
    severity = v1::SEVERITY_ERROR;
    fatal = true;
    message = absl::StrCat("the registry refused the credentials for image ", image);
    remediation = absl::StrCat("check the registry credentials in Secret ", secret, " (namespace ",
                               pod.meta().namespace_(),
                               ", type kubernetes.io/dockerconfigjson) and the pod's "
                               "imagePullSecrets");
  } else if (absl::IsUnavailable(verdict) || absl::IsDeadlineExceeded(verdict)) {
    reason = "RegistryUnreachable";
    message = absl::StrCat("the registry of image ", image, " cannot be reached");
    remediation = "check that the registry is up and reachable from the cluster's nodes";
    AddLine(&evidence, absl::StrCat("registry-sync Resolve: ", verdict.message()));
  } else if (verdict.ok() && (secret_missing || SaysAuthRefused(kubelet_text))) {
    reason = "CredentialsRefused";
    severity = v1::SEVERITY_ERROR;
    fatal = true;
    message = absl::StrCat("image ", image,
                           " exists but the cluster's pull was refused: the image pull Secret is ",
                           secret_missing ? "missing" : "wrong");
    remediation =
        absl::StrCat("create or fix Secret ", secret, " in namespace ", pod.meta().namespace_(),
                     " (type kubernetes.io/dockerconfigjson; "
                     "ClusterWatcherService.EnsureImagePullSecret) and reference it in "
                     "imagePullSecrets");
  } else if (verdict.ok() && SaysUnreachable(kubelet_text)) {
    reason = "RegistryUnreachable";
    message =
        absl::StrCat("image ", image, " exists but the cluster's nodes cannot reach its registry");
    remediation =
        "check the registry address the cluster pulls from (RegistryTarget.pull_url), DNS and "
        "the nodes' network path to it";
  } else {
    message = absl::StrCat("image ", image, " cannot be pulled: ", waiting.reason());
    remediation =
        "see the kubelet events; check the registry credentials and that the image "
        "exists (skopeo inspect docker://<image>)";
    if (!verdict.ok() && !absl::IsUnimplemented(verdict)) {
      AddLine(&evidence, absl::StrCat("registry-sync Resolve: ", verdict.message()));
    }
  }

  v1::Finding* finding =
      StartFinding(workload, v1::FINDING_KIND_IMAGE_PULL, reason, status.name(), &pod);
  if (finding == nullptr) return;
  finding->set_severity(severity);
  finding->set_fatal(fatal);
  finding->set_message(message);
  finding->set_remediation(remediation);
  Bound(&evidence);
  for (std::string& line : evidence) finding->add_evidence(std::move(line));
  SetSeen(events, finding);
}

void Diagnoser::CrashLoop(const Workload& workload, const v1::Pod& pod,
                          const v1::ContainerStatus& status,
                          const v1::ContainerStateTerminated& termination) {
  std::string reason = termination.reason().empty() ? "CrashLoopBackOff" : termination.reason();
  bool has_finish = IsSet(termination.finished_time());
  absl::Time finished =
      has_finish ? FromTimestamp(termination.finished_time()) : absl::InfinitePast();

  v1::Severity severity = v1::SEVERITY_ERROR;
  std::string state;
  // Recovering once is tolerated; a container that keeps restarting is a crash loop even in the
  // moments it is up.
  constexpr int kRestartsOfALoop = 3;
  if (status.ready() && status.restart_count() < kRestartsOfALoop) {
    absl::Time restarted =
        status.state().has_running() && IsSet(status.state().running().started_time())
            ? FromTimestamp(status.state().running().started_time())
            : now_;
    bool quick = has_finish && restarted - finished <= deps_.crash_tolerance;
    severity = quick ? v1::SEVERITY_INFO : v1::SEVERITY_WARNING;
    state = quick ? "recovered" : "recovered late";
  } else if (status.restart_count() <= 1 && has_finish &&
             now_ - finished <= deps_.crash_tolerance) {
    severity = v1::SEVERITY_WARNING;
    state = "crashed";
  } else {
    state = "crash-looping";
  }

  v1::Finding* finding =
      StartFinding(workload, v1::FINDING_KIND_CRASH_LOOP, reason, status.name(), &pod);
  if (finding == nullptr) return;
  finding->set_severity(severity);

  std::string detail;
  if (reason == "OOMKilled") {
    const v1::ContainerSpec* spec = FindSpec(pod.containers(), status.name());
    if (spec == nullptr && workload.deployment != nullptr) {
      spec = FindSpec(workload.deployment->containers(), status.name());
    }
    std::string limit;
    if (spec != nullptr) {
      auto it = spec->limits().find("memory");
      if (it != spec->limits().end()) limit = it->second;
    }
    detail = limit.empty() ? ": out of memory (no memory limit set; the node ran out)"
                           : absl::StrCat(": out of memory, memory limit ", limit, " hit");
    finding->set_remediation(
        limit.empty() ? "set resources.limits.memory and look for a memory leak"
                      : absl::StrCat("raise resources.limits.memory above ", limit,
                                     " in the Deployment or reduce the app's memory use"));
  } else {
    detail = absl::StrCat(" (exit code ", termination.exit_code(), ")");
    finding->set_remediation(
        "check the container's log (kubectl logs --previous), its environment variables, "
        "ConfigMaps and Secrets, and its resource limits");
  }
  finding->set_message(absl::StrCat("container ", status.name(), " of pod ", pod.meta().name(), " ",
                                    state, " (", status.restart_count(), " restarts): ", reason,
                                    detail));

  std::vector<std::string> evidence;
  std::string exit = absl::StrCat("exit code ", termination.exit_code());
  if (termination.signal() != 0) absl::StrAppend(&exit, " (signal ", termination.signal(), ")");
  if (!termination.reason().empty()) absl::StrAppend(&exit, ", reason ", termination.reason());
  evidence.push_back(std::move(exit));
  for (std::string& line : Lines(termination.message(), kMaxMessageLines)) {
    evidence.push_back(std::move(line));
  }
  if (status.state().has_waiting() && !status.state().waiting().message().empty()) {
    AddLine(&evidence, status.state().waiting().message());
  }
  size_t head = evidence.size();
  // Tolerated crashes too: a rollout that times out on a flapping container reports this one.
  if (deps_.read_logs && deps_.log_tail_lines > 0) {
    absl::StatusOr<std::vector<std::string>> logs =
        deps_.read_logs(pod.meta().namespace_(), pod.meta().name(), status.name(),
                        deps_.log_tail_lines, /*previous=*/true);
    if (logs.ok()) {
      size_t skip = logs->size() > static_cast<size_t>(deps_.log_tail_lines)
                        ? logs->size() - static_cast<size_t>(deps_.log_tail_lines)
                        : 0;
      for (size_t i = skip; i < logs->size(); ++i) evidence.push_back((*logs)[i]);
    }
  }
  Bound(&evidence, head);
  for (std::string& line : evidence) finding->add_evidence(std::move(line));

  std::vector<const v1::KubernetesEvent*> events =
      events_.For("Pod", pod.meta().namespace_(), pod.meta().name(), status.name());
  std::vector<const v1::KubernetesEvent*> backoffs;
  for (const v1::KubernetesEvent* event : events) {
    if (event->reason() == "BackOff") backoffs.push_back(event);
  }
  SetSeen(backoffs, finding);
  if (has_finish) {
    if (!finding->has_first_seen_time() || FromTimestamp(finding->first_seen_time()) > finished) {
      *finding->mutable_first_seen_time() = termination.finished_time();
    }
    if (!finding->has_last_seen_time() || FromTimestamp(finding->last_seen_time()) < finished) {
      *finding->mutable_last_seen_time() = termination.finished_time();
    }
  }
}

void Diagnoser::DiagnoseContainer(const Workload& workload, const v1::Pod& pod,
                                  const v1::ContainerStatus& status) {
  const v1::ContainerState& state = status.state();
  std::string waiting = state.has_waiting() ? state.waiting().reason() : "";
  if (IsPullFailure(waiting)) {
    ImagePull(workload, pod, status);
    return;
  }
  auto simple = [&](v1::FindingKind kind, bool fatal, const std::string& message,
                    const std::string& remediation) {
    std::vector<const v1::KubernetesEvent*> events =
        events_.For("Pod", pod.meta().namespace_(), pod.meta().name(), status.name());
    v1::Finding* finding = StartFinding(workload, kind, waiting, status.name(), &pod);
    if (finding == nullptr) return;
    finding->set_fatal(fatal);
    finding->set_message(message);
    finding->set_remediation(remediation);
    std::vector<std::string> evidence;
    AddLine(&evidence, state.waiting().message());
    for (const v1::KubernetesEvent* event : events) {
      if (event->type() != v1::KUBERNETES_EVENT_TYPE_NORMAL) AddLine(&evidence, event->message());
    }
    Bound(&evidence);
    for (std::string& line : evidence) finding->add_evidence(std::move(line));
    SetSeen(events, finding);
  };
  if (waiting == "InvalidImageName") {
    const v1::ContainerSpec* spec = FindSpec(pod.containers(), status.name());
    simple(v1::FINDING_KIND_INVALID_IMAGE, true,
           absl::StrCat("container ", status.name(), " has an invalid image reference \"",
                        spec != nullptr ? spec->image() : status.image(), "\""),
           "fix the image reference in the Deployment (registry/repository:tag or @sha256:…)");
    return;
  }
  if (waiting == "CreateContainerConfigError" || waiting == "CreateContainerError") {
    simple(v1::FINDING_KIND_CONTAINER_CONFIG, waiting == "CreateContainerConfigError",
           absl::StrCat("container ", status.name(), " cannot be created: ",
                        state.waiting().message().empty() ? waiting : state.waiting().message()),
           "create the ConfigMap or Secret the container references (env, envFrom, volumes), or "
           "fix the reference");
    return;
  }
  // Crashes: the last termination (or the current one, before the restart).
  const v1::ContainerStateTerminated* termination = nullptr;
  if (status.last_state().has_terminated()) {
    termination = &status.last_state().terminated();
  } else if (state.has_terminated() && state.terminated().exit_code() != 0) {
    termination = &state.terminated();
  }
  bool looping = waiting == "CrashLoopBackOff";
  if (termination != nullptr && !looping) {
    if (status.restart_count() == 0 && !state.has_terminated()) termination = nullptr;
  }
  if (termination != nullptr && !looping && since_.has_value() &&
      IsSet(termination->finished_time()) &&
      FromTimestamp(termination->finished_time()) < *since_) {
    termination = nullptr;  // an old crash
  }
  if (looping || termination != nullptr) {
    CrashLoop(
        workload, pod, status,
        termination != nullptr ? *termination : v1::ContainerStateTerminated::default_instance());
  }
}

void Diagnoser::DiagnoseContainers(const Workload& workload) {
  for (const v1::Pod* pod : workload.pods) {
    if (Terminating(*pod)) continue;
    const v1::Condition* scheduled = FindCondition(pod->conditions(), "PodScheduled");
    if (scheduled != nullptr && scheduled->status() == v1::CONDITION_STATUS_FALSE) {
      std::string reason = scheduled->reason().empty() ? "Unschedulable" : scheduled->reason();
      std::vector<const v1::KubernetesEvent*> events =
          events_.For("Pod", pod->meta().namespace_(), pod->meta().name());
      v1::Finding* finding =
          StartFinding(workload, v1::FINDING_KIND_UNSCHEDULABLE, reason, "", pod);
      if (finding != nullptr) {
        finding->set_severity(v1::SEVERITY_WARNING);
        finding->set_message(absl::StrCat("pod ", pod->meta().name(), " cannot be scheduled",
                                          scheduled->message().empty() ? "" : ": ",
                                          scheduled->message()));
        finding->set_remediation(
            "free or add node capacity, or lower the pod's resource requests; check node "
            "selectors, taints and tolerations");
        std::vector<std::string> evidence;
        AddLine(&evidence, scheduled->message());
        for (const v1::KubernetesEvent* event : events) {
          if (event->reason() == "FailedScheduling") AddLine(&evidence, event->message());
        }
        Bound(&evidence);
        for (std::string& line : evidence) finding->add_evidence(std::move(line));
        SetSeen(events, finding);
        if (!finding->has_first_seen_time() && IsSet(scheduled->last_transition_time())) {
          *finding->mutable_first_seen_time() = scheduled->last_transition_time();
        }
      }
      continue;
    }
    for (const v1::ContainerStatus& status : pod->init_container_statuses()) {
      DiagnoseContainer(workload, *pod, status);
    }
    for (const v1::ContainerStatus& status : pod->container_statuses()) {
      DiagnoseContainer(workload, *pod, status);
    }
  }
}

// --- Deployment -------------------------------------------------------------------------------

void Diagnoser::DiagnoseRollout(const Workload& workload, bool rolled_out,
                                const std::string& expected, bool digests_ok,
                                const std::vector<std::string>& digest_evidence) {
  const v1::Deployment& deployment = *workload.deployment;
  std::string name = absl::StrCat(deployment.meta().namespace_(), "/", deployment.meta().name());
  std::vector<std::string> pod_lines;
  for (const v1::Pod* pod : workload.pods) {
    if (!Terminating(*pod) && !pod->ready()) pod_lines.push_back(PodProblem(*pod));
  }
  auto start = [&](const std::string& reason, v1::Severity severity) {
    v1::Finding* finding = NewFinding(v1::FINDING_KIND_ROLLOUT_STUCK, reason, severity);
    *finding->mutable_object() = Ref("Deployment", "apps/v1", deployment.meta());
    finding->set_app(workload.app);
    return finding;
  };
  std::string counts = absl::StrCat(deployment.ready_replicas(), "/", deployment.replicas(),
                                    " ready, ", deployment.updated_replicas(), " updated, ",
                                    deployment.available_replicas(), " available");

  const v1::Condition* failure = FindCondition(deployment.conditions(), "ReplicaFailure");
  if (failure != nullptr && failure->status() == v1::CONDITION_STATUS_TRUE) {
    v1::Finding* finding =
        start(failure->reason().empty() ? "ReplicaFailure" : failure->reason(), v1::SEVERITY_ERROR);
    finding->set_message(
        absl::StrCat("Deployment ", name, " cannot create pods: ", failure->message()));
    finding->set_remediation(
        "see the ReplicaSet events (quota, limit ranges, admission, "
        "service account)");
    std::vector<std::string> evidence;
    AddLine(&evidence, failure->message());
    std::vector<const v1::KubernetesEvent*> seen;
    for (const v1::KubernetesEvent& event : snapshot_.events) {
      const v1::ObjectRef& object = event.involved_object();
      if (object.kind() != "ReplicaSet" || object.namespace_() != deployment.meta().namespace_() ||
          !absl::StartsWith(object.name(), absl::StrCat(deployment.meta().name(), "-"))) {
        continue;
      }
      if (since_.has_value() && EventTime(event) < *since_) continue;
      if (event.type() != v1::KUBERNETES_EVENT_TYPE_NORMAL) {
        AddLine(&evidence, event.message());
        seen.push_back(&event);
      }
    }
    Bound(&evidence);
    for (std::string& line : evidence) finding->add_evidence(std::move(line));
    SetSeen(seen, finding);
  }

  const v1::Condition* progressing = FindCondition(deployment.conditions(), "Progressing");
  if (progressing != nullptr && progressing->status() == v1::CONDITION_STATUS_FALSE &&
      progressing->reason() == "ProgressDeadlineExceeded") {
    v1::Finding* finding = start("ProgressDeadlineExceeded", v1::SEVERITY_ERROR);
    finding->set_message(absl::StrCat("Deployment ", name, " exceeded its progress deadline (",
                                      deployment.progress_deadline_seconds(), "s): ", counts));
    finding->set_remediation("see why each pod is not ready (the other findings and evidence)");
    std::vector<std::string> evidence;
    AddLine(&evidence, progressing->message());
    for (const std::string& line : pod_lines) AddLine(&evidence, line);
    if (workload.pods.empty()) AddLine(&evidence, "no pods");
    Bound(&evidence, 1);
    for (std::string& line : evidence) finding->add_evidence(std::move(line));
    if (IsSet(progressing->last_transition_time())) {
      *finding->mutable_first_seen_time() = progressing->last_transition_time();
    }
    const Timestamp& updated = IsSet(progressing->last_update_time())
                                   ? progressing->last_update_time()
                                   : progressing->last_transition_time();
    if (IsSet(updated)) *finding->mutable_last_seen_time() = updated;
  } else if (!rolled_out) {
    v1::Finding* finding = start("Progressing", v1::SEVERITY_WARNING);
    finding->set_message(absl::StrCat("Deployment ", name, " is rolling out: ", counts));
    finding->set_remediation("wait for the rollout; the other findings say what holds it up");
    std::vector<std::string> evidence;
    if (progressing != nullptr) AddLine(&evidence, progressing->message());
    for (const std::string& line : pod_lines) AddLine(&evidence, line);
    Bound(&evidence, 1);
    for (std::string& line : evidence) finding->add_evidence(std::move(line));
  }

  if (!digests_ok) {
    bool synced =
        rolled_out && (request_.expected_revision().empty() ||
                       std::none_of(findings_.begin(), findings_.end(), [](const v1::Finding& f) {
                         return f.kind() == v1::FINDING_KIND_REVISION_NOT_SYNCED;
                       }));
    v1::Finding* finding = NewFinding(v1::FINDING_KIND_OTHER, "DigestMismatch",
                                      synced ? v1::SEVERITY_ERROR : v1::SEVERITY_WARNING);
    *finding->mutable_object() = Ref("Deployment", "apps/v1", deployment.meta());
    finding->set_app(workload.app);
    finding->set_message(absl::StrCat("Deployment ", name, " does not run the expected image ",
                                      expected, " in every pod"));
    finding->set_remediation(
        synced ? "the synced manifests pin another image: check the published image reference"
               : "wait for Argo CD to sync and the rollout to replace the old pods");
    std::vector<std::string> evidence = digest_evidence;
    Bound(&evidence);
    for (std::string& line : evidence) finding->add_evidence(std::move(line));
  }
}

// --- Discovery --------------------------------------------------------------------------------

void Diagnoser::DiagnoseDiscovery(const Workload& workload, v1::WorkloadStatus* status) {
  std::string gateway_ns = workload.ns;
  std::string gateway =
      request_.discovery_deployment().empty() ? kDefaultGateway : request_.discovery_deployment();
  if (size_t slash = gateway.find('/'); slash != std::string::npos) {
    gateway_ns = gateway.substr(0, slash);
    gateway = gateway.substr(slash + 1);
  }
  v1::Severity severity = status->ready() ? v1::SEVERITY_ERROR : v1::SEVERITY_WARNING;
  auto start = [&](const std::string& reason) {
    v1::Finding* finding = NewFinding(v1::FINDING_KIND_DISCOVERY_MISSING, reason, severity);
    finding->set_app(workload.app);
    return finding;
  };
  const v1::Deployment* deployment = FindDeployment(gateway_ns, gateway);
  if (deployment == nullptr) {
    v1::Finding* finding = start("GatewayMissing");
    finding->mutable_object()->set_kind("Deployment");
    finding->mutable_object()->set_api_version("apps/v1");
    finding->mutable_object()->set_namespace_(gateway_ns);
    finding->mutable_object()->set_name(gateway);
    finding->set_message(absl::StrCat("discovery gateway Deployment ", gateway_ns, "/", gateway,
                                      " does not exist, so ", workload.app,
                                      " cannot be discovered"));
    finding->set_remediation(absl::StrCat("deploy ", gateway, " in namespace ", gateway_ns,
                                          " or name the discovery Deployment in the request"));
    return;
  }

  std::string key = absl::StrCat(gateway_ns, "/", gateway);
  auto cached = gateway_logs_.find(key);
  if (cached == gateway_logs_.end()) {
    GatewayLog log;
    std::vector<const v1::Pod*> pods = PodsOf(*deployment);
    std::stable_sort(pods.begin(), pods.end(),
                     [](const v1::Pod* a, const v1::Pod* b) { return a->ready() > b->ready(); });
    if (!deps_.read_logs) {
      log.status = absl::UnimplementedError("no log reader");
    } else if (pods.empty()) {
      log.status = absl::NotFoundError(absl::StrCat("Deployment ", key, " has no pods"));
    } else {
      log.status = absl::NotFoundError("no running gateway pod");
      bool any = false;
      for (const v1::Pod* pod : pods) {
        if (Terminating(*pod) || pod->phase() != v1::POD_PHASE_RUNNING) continue;
        std::string container = pod->containers_size() > 0 ? pod->containers(0).name() : "";
        absl::StatusOr<std::vector<std::string>> lines =
            deps_.read_logs(pod->meta().namespace_(), pod->meta().name(), container,
                            deps_.discovery_tail_lines, /*previous=*/false);
        if (!lines.ok()) {
          if (!any) log.status = lines.status();
          continue;
        }
        any = true;
        log.status = absl::OkStatus();
        log.lines.insert(log.lines.end(), lines->begin(), lines->end());
      }
    }
    cached = gateway_logs_.emplace(key, std::move(log)).first;
  }
  const GatewayLog& log = cached->second;
  if (!log.status.ok()) {
    v1::Finding* finding = start("GatewayLogUnavailable");
    *finding->mutable_object() = Ref("Deployment", "apps/v1", deployment->meta());
    finding->set_severity(v1::SEVERITY_WARNING);
    finding->set_message(absl::StrCat("cannot read the log of discovery gateway ", key,
                                      " to check that ", workload.app, " was discovered"));
    finding->add_evidence(std::string(log.status.message()));
    finding->set_remediation(absl::StrCat("check that ", key,
                                          " runs and that the agent is "
                                          "connected"));
    return;
  }
  for (auto it = log.lines.rbegin(); it != log.lines.rend(); ++it) {
    if (IsDiscoveryLine(*it, workload.app)) {
      status->set_discovered(true);
      status->set_discovery_line(*it);
      return;
    }
  }
  v1::Finding* finding = start("NotDiscovered");
  *finding->mutable_object() = Ref("Deployment", "apps/v1", deployment->meta());
  finding->set_message(absl::StrCat("the log of ", key, " has no \"Discovered ", workload.app,
                                    "\" line",
                                    status->ready() ? "" : " (the app is not ready yet)"));
  finding->set_remediation(absl::StrCat(
      "check the app's Service and A2A agent card, and the gateway's discovery configuration "
      "(kubectl logs deployment/",
      gateway, " -n ", gateway_ns, " | grep Discovered)"));
  std::vector<std::string> evidence;
  for (const std::string& line : log.lines) {
    if (absl::StrContains(line, workload.app)) AddLine(&evidence, line);
  }
  if (evidence.empty()) {
    size_t skip =
        log.lines.size() > kDiscoveryEvidenceLines ? log.lines.size() - kDiscoveryEvidenceLines : 0;
    for (size_t i = skip; i < log.lines.size(); ++i) evidence.push_back(log.lines[i]);
  }
  Bound(&evidence);
  for (std::string& line : evidence) finding->add_evidence(std::move(line));
}

// --- Workloads --------------------------------------------------------------------------------

v1::WorkloadStatus Diagnoser::DiagnoseWorkload(const Workload& workload) {
  v1::WorkloadStatus status;
  status.set_app(workload.app);
  status.set_namespace_(workload.ns);
  status.set_application(workload.application);
  if (workload.deployment == nullptr) {
    bool expected_now = false;
    if (const v1::Application* application = FindApplication(); application != nullptr) {
      expected_now = application->sync_status() == v1::SYNC_STATUS_SYNCED &&
                     (request_.expected_revision().empty() ||
                      RevisionMatches(application->sync_revision(), request_.expected_revision()));
    }
    v1::Finding* finding = NewFinding(v1::FINDING_KIND_OTHER, "DeploymentMissing",
                                      expected_now ? v1::SEVERITY_ERROR : v1::SEVERITY_WARNING);
    finding->set_app(workload.app);
    finding->mutable_object()->set_kind("Deployment");
    finding->mutable_object()->set_api_version("apps/v1");
    finding->mutable_object()->set_namespace_(workload.ns);
    finding->mutable_object()->set_name(workload.app);
    finding->set_message(absl::StrCat(
        "Deployment ", workload.app, workload.ns.empty() ? "" : " in namespace ", workload.ns,
        " does not exist", expected_now ? " although the Application is synced" : ""));
    finding->set_remediation(expected_now
                                 ? "check that the app's manifests are in the Application's path"
                                 : "wait for Argo CD to sync the Application");
    return status;
  }
  const v1::Deployment& deployment = *workload.deployment;
  *status.mutable_deployment() = deployment;

  // The current ReplicaSet: the pod-template-hash whose pods run the template, newest first.
  std::map<std::string, std::pair<bool, absl::Time>> groups;
  for (const v1::Pod* pod : workload.pods) {
    auto& [template_match, newest] =
        groups.try_emplace(PodHash(*pod), false, absl::InfinitePast()).first->second;
    template_match = template_match || RunsTemplate(*pod, deployment);
    if (IsSet(pod->meta().creation_time())) {
      newest = std::max(newest, FromTimestamp(pod->meta().creation_time()));
    }
  }
  std::optional<std::string> current;
  std::pair<bool, absl::Time> best{false, absl::InfinitePast()};
  for (const auto& [hash, rank] : groups) {
    if (hash.empty()) continue;
    if (!current.has_value() || rank > best) {
      current = hash;
      best = rank;
    }
  }

  std::set<std::string> digests;
  std::vector<std::string> digest_evidence;
  bool digests_ok = true;
  auto expected_it = request_.expected_digests().find(workload.app);
  std::string expected =
      expected_it == request_.expected_digests().end() ? "" : DigestOf(expected_it->second);
  if (expected_it != request_.expected_digests().end() && expected.empty()) {
    expected = expected_it->second;
  }
  int ready = 0;
  for (const v1::Pod* pod : workload.pods) {
    std::vector<std::string> pod_digests;
    for (const v1::ContainerStatus& container : pod->container_statuses()) {
      std::string digest = DigestOf(container.image_id());
      if (digest.empty()) continue;
      digests.insert(digest);
      pod_digests.push_back(digest);
    }
    if (Terminating(*pod)) continue;
    if (pod->ready() && (!current.has_value() || PodHash(*pod) == *current)) ++ready;
    if (!expected.empty() &&
        std::find(pod_digests.begin(), pod_digests.end(), expected) == pod_digests.end()) {
      digests_ok = false;
      digest_evidence.push_back(absl::StrCat(
          "pod ", pod->meta().name(), " runs ",
          pod_digests.empty() ? "no pulled image yet" : absl::StrJoin(pod_digests, ", ")));
    }
  }
  status.set_pods_ready(ready);
  status.set_pods_total(static_cast<int32_t>(workload.pods.size()));
  for (const std::string& digest : digests) status.add_running_digests(digest);
  bool rolled_out = RolledOut(deployment);
  status.set_ready(rolled_out && digests_ok);

  DiagnoseContainers(workload);
  DiagnoseRollout(workload, rolled_out, expected, digests_ok, digest_evidence);
  return status;
}

absl::StatusOr<v1::DiagnoseResponse> Diagnoser::Run() {
  if (request_.application().empty() && request_.app().empty()) {
    return absl::InvalidArgumentError("Diagnose needs an application or an app");
  }
  v1::DiagnoseResponse response;
  response.set_cluster(snapshot_.cluster.name());
  *response.mutable_evaluated_time() = ToTimestamp(now_);

  const v1::Application* application = nullptr;
  if (!request_.application().empty()) {
    application = FindApplication();
    if (application == nullptr) {
      std::vector<const v1::Deployment*> found;
      if (!request_.app().empty()) found = FindDeployments(request_.app(), request_.namespace_());
      if (found.empty()) {
        return absl::NotFoundError(absl::StrCat(
            "neither Application ", request_.application(),
            request_.app().empty() ? "" : absl::StrCat(" nor a Deployment of app ", request_.app()),
            " exists in cluster ", snapshot_.cluster.name()));
      }
      v1::Finding* finding = NewFinding(v1::FINDING_KIND_APPLICATION_MISSING, "ApplicationMissing",
                                        v1::SEVERITY_ERROR);
      finding->mutable_object()->set_kind("Application");
      finding->mutable_object()->set_api_version("argoproj.io/v1alpha1");
      finding->mutable_object()->set_namespace_(request_.argocd_namespace().empty()
                                                    ? kDefaultArgoNamespace
                                                    : request_.argocd_namespace());
      finding->mutable_object()->set_name(request_.application());
      finding->set_app(request_.app());
      finding->set_message(absl::StrCat("Argo CD Application ", request_.application(),
                                        " does not exist in namespace ",
                                        finding->object().namespace_()));
      finding->set_remediation(
          "apply the Application (ClusterWatcherService.ApplyApplication / kubectl apply -f "
          "applications/<group>.yaml)");
      for (const v1::Deployment* deployment : found) {
        AddWorkload(deployment->meta().name(), deployment->meta().namespace_(), "", deployment);
      }
    } else {
      *response.mutable_application() = *application;
      for (const v1::ApplicationResource& resource : application->resources()) {
        if (resource.kind() != "Deployment") continue;
        if (!request_.namespace_().empty() && resource.namespace_() != request_.namespace_()) {
          continue;
        }
        const v1::Deployment* deployment = FindDeployment(resource.namespace_(), resource.name());
        if (!request_.app().empty() && resource.name() != request_.app()) {
          if (deployment == nullptr) continue;
          auto it = deployment->meta().labels().find(kNameLabel);
          if (it == deployment->meta().labels().end() || it->second != request_.app()) continue;
        }
        AddWorkload(resource.name(), resource.namespace_(), application->meta().name(), deployment);
      }
      if (!request_.app().empty() && workloads_.empty()) {
        // Not (yet) listed by the Application: look the Deployment up directly.
        std::string ns = !request_.namespace_().empty()
                             ? request_.namespace_()
                             : application->spec().destination_namespace();
        std::vector<const v1::Deployment*> found = FindDeployments(request_.app(), ns);
        for (const v1::Deployment* deployment : found) {
          AddWorkload(deployment->meta().name(), deployment->meta().namespace_(),
                      application->meta().name(), deployment);
        }
        if (found.empty()) AddWorkload(request_.app(), ns, application->meta().name(), nullptr);
      }
      DiagnoseApplication(*application);
    }
  } else {
    std::vector<const v1::Deployment*> found =
        FindDeployments(request_.app(), request_.namespace_());
    if (found.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "no Deployment of app ", request_.app(),
          request_.namespace_().empty() ? ""
                                        : absl::StrCat(" in namespace ", request_.namespace_()),
          " exists in cluster ", snapshot_.cluster.name()));
    }
    for (const v1::Deployment* deployment : found) {
      const v1::Application* managing = ManagingApplication(*deployment);
      AddWorkload(deployment->meta().name(), deployment->meta().namespace_(),
                  managing != nullptr ? managing->meta().name() : "", deployment);
    }
  }

  std::sort(workloads_.begin(), workloads_.end(), [](const Workload& a, const Workload& b) {
    return std::tie(a.app, a.ns) < std::tie(b.app, b.ns);
  });
  bool all_ready = true, all_discovered = true;
  for (const Workload& workload : workloads_) {
    v1::WorkloadStatus status = DiagnoseWorkload(workload);
    if (request_.check_discovery()) {
      DiagnoseDiscovery(workload, &status);
      all_discovered = all_discovered && status.discovered();
    }
    all_ready = all_ready && status.ready();
    *response.add_workloads() = std::move(status);
  }

  // Several pods with the same problem: one finding naming them all.
  for (const auto& [index, pods] : group_pods_) {
    if (pods.size() < 2) continue;
    v1::Finding& finding = findings_[index];
    finding.set_message(absl::StrCat(finding.message(), " (", pods.size(),
                                     " pods: ", absl::StrJoin(pods, ", "), ")"));
  }

  if (snapshot_.cluster.state() == v1::CONNECTION_STATE_DISCONNECTED) {
    v1::Finding* finding =
        NewFinding(v1::FINDING_KIND_AGENT_DISCONNECTED, "AgentDisconnected", v1::SEVERITY_WARNING);
    finding->set_message(absl::StrCat("the agent of cluster ", snapshot_.cluster.name(),
                                      " is not connected; the state shown may be stale"));
    if (!snapshot_.cluster.disconnect_reason().empty()) {
      finding->add_evidence(
          absl::StrCat("disconnect reason: ", snapshot_.cluster.disconnect_reason()));
    }
    if (snapshot_.cluster.has_last_seen_time()) {
      *finding->mutable_last_seen_time() = snapshot_.cluster.last_seen_time();
    }
    finding->set_remediation(
        "check the agent on the Argo CD machine (its log, the watcher address, TLS and token)");
  }

  std::stable_sort(findings_.begin(), findings_.end(),
                   [](const v1::Finding& a, const v1::Finding& b) {
                     if (a.severity() != b.severity()) return a.severity() > b.severity();
                     return a.fatal() && !b.fatal();
                   });
  bool any_error = false, fatal = false;
  for (v1::Finding& finding : findings_) {
    any_error = any_error || finding.severity() == v1::SEVERITY_ERROR;
    fatal = fatal || finding.fatal();
    *response.add_findings() = std::move(finding);
  }

  bool application_ok = true;
  if (!request_.application().empty()) {
    if (application == nullptr) {
      application_ok = false;
    } else {
      bool revision_ok = request_.expected_revision().empty() || RevisionSynced(*application);
      bool health_ok = application->health_status() == v1::HEALTH_STATUS_HEALTHY;
      if (!request_.app().empty()) {
        // Restricted to one app: that app's resource health, not the whole Application's.
        health_ok = true;
        for (const v1::ApplicationResource& resource : application->resources()) {
          bool ours = std::any_of(workloads_.begin(), workloads_.end(), [&](const Workload& w) {
            return resource.kind() == "Deployment" && w.app == resource.name() &&
                   w.ns == resource.namespace_();
          });
          if (ours && resource.health_status() != v1::HEALTH_STATUS_UNSPECIFIED &&
              resource.health_status() != v1::HEALTH_STATUS_HEALTHY) {
            health_ok = false;
          }
        }
      }
      application_ok = revision_ok && health_ok;
    }
  }
  response.set_healthy(application_ok && all_ready && all_discovered && !any_error);
  response.set_fatal(fatal);
  return response;
}

}  // namespace

absl::StatusOr<v1::DiagnoseResponse> Diagnose(const ClusterState::Snapshot& snapshot,
                                              const v1::DiagnoseRequest& request,
                                              const DiagnoseDeps& deps) {
  return Diagnoser(snapshot, request, deps).Run();
}

}  // namespace elfdeploy::watcher
