#include "services/orchestrator/runner.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/common/proto_time.h"

namespace elfdeploy::orchestrator {
namespace {

// The repository path of an image reference: registry host (a first component with '.' or ':',
// or "localhost"), tag and digest dropped.
std::string RepositoryOf(std::string image) {
  if (size_t at = image.find('@'); at != std::string::npos) image.resize(at);
  size_t slash = image.find('/');
  if (slash != std::string::npos) {
    std::string first = image.substr(0, slash);
    if (absl::StrContains(first, '.') || absl::StrContains(first, ':') || first == "localhost") {
      image = image.substr(slash + 1);
    }
  }
  size_t last_slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon != std::string::npos && (last_slash == std::string::npos || colon > last_slash)) {
    image.resize(colon);
  }
  return image;
}

v1::Finding MakeFinding(v1::FindingKind kind, const std::string& reason, const std::string& app,
                        const std::string& message, bool fatal) {
  v1::Finding finding;
  finding.set_kind(kind);
  finding.set_reason(reason);
  finding.set_severity(v1::SEVERITY_ERROR);
  finding.set_fatal(fatal);
  finding.set_app(app);
  finding.set_message(message);
  return finding;
}

// The rollout record being advanced and the events not stored yet. Thread-safe: builds of
// several apps report at once.
class Recorder {
 public:
  Recorder(RolloutStore& store, v1::Rollout rollout, std::function<absl::Time()> now)
      : store_(store), rollout_(std::move(rollout)), now_(std::move(now)) {}

  v1::Rollout Snapshot() {
    absl::MutexLock lock(&mu_);
    return rollout_;
  }

  // Applies `change` to the app's status; when `stage` differs from the app's, records the
  // stage change (with timing) and stores it.
  absl::Status App(const std::string& name, v1::Stage stage, const std::string& message,
                   const std::function<void(v1::AppRollout&)>& change = nullptr) {
    absl::MutexLock lock(&mu_);
    v1::AppRollout* app = Find(name);
    if (app == nullptr)
      return absl::InternalError(absl::StrCat("no app ", name, " in the rollout"));
    v1::Stage previous = app->stage();
    // The verify loop reports every poll; only a change reaches the store.
    std::optional<v1::AppRollout> before;
    if (stage == previous) before = *app;
    if (change) change(*app);
    app->set_message(message);
    if (before.has_value() && google::protobuf::util::MessageDifferencer::Equals(*before, *app)) {
      return absl::OkStatus();
    }
    if (stage != previous) {
      absl::Time now = now_();
      if (app->stage_timings_size() > 0) {
        v1::StageTiming* last = app->mutable_stage_timings(app->stage_timings_size() - 1);
        if (!last->has_end_time()) *last->mutable_end_time() = ToTimestamp(now);
      }
      app->set_stage(stage);
      v1::StageTiming* timing = app->add_stage_timings();
      timing->set_stage(stage);
      *timing->mutable_start_time() = ToTimestamp(now);
      if (stage == v1::STAGE_SUCCEEDED || stage == v1::STAGE_FAILED ||
          stage == v1::STAGE_CANCELLED) {
        *timing->mutable_end_time() = ToTimestamp(now);
      }
      v1::WatchRolloutResponse event;
      v1::AppStageChange* stage_change = event.mutable_app_stage();
      stage_change->set_app(name);
      stage_change->set_previous_stage(previous);
      stage_change->set_stage(stage);
      stage_change->set_message(message);
      *stage_change->mutable_status() = *app;
      pending_.push_back(std::move(event));
    }
    return FlushLocked();
  }

  absl::Status Finding(const v1::Finding& finding) {
    absl::MutexLock lock(&mu_);
    v1::AppRollout* app = finding.app().empty() ? nullptr : Find(finding.app());
    *(app != nullptr ? app->add_findings() : rollout_.add_findings()) = finding;
    v1::WatchRolloutResponse event;
    event.mutable_finding()->set_app(finding.app());
    *event.mutable_finding()->mutable_finding() = finding;
    pending_.push_back(std::move(event));
    return FlushLocked();
  }

  absl::Status Rollout(const std::function<void(v1::Rollout&)>& change) {
    absl::MutexLock lock(&mu_);
    change(rollout_);
    return FlushLocked();
  }

  absl::Status State(v1::RolloutState state, const std::string& message) {
    absl::MutexLock lock(&mu_);
    v1::RolloutState previous = rollout_.state();
    rollout_.set_state(state);
    rollout_.set_message(message);
    if (IsTerminal(state)) {
      v1::Stage app_stage = state == v1::ROLLOUT_STATE_SUCCEEDED   ? v1::STAGE_SUCCEEDED
                            : state == v1::ROLLOUT_STATE_CANCELLED ? v1::STAGE_CANCELLED
                                                                   : v1::STAGE_FAILED;
      absl::Time now = now_();
      for (v1::AppRollout& app : *rollout_.mutable_apps()) {
        if (app.stage() == v1::STAGE_SUCCEEDED || app.stage() == v1::STAGE_FAILED) continue;
        if (app_stage == v1::STAGE_SUCCEEDED && app.stage() != v1::STAGE_VERIFYING) continue;
        if (app.stage_timings_size() > 0) {
          v1::StageTiming* last = app.mutable_stage_timings(app.stage_timings_size() - 1);
          if (!last->has_end_time()) *last->mutable_end_time() = ToTimestamp(now);
        }
        v1::StageTiming* timing = app.add_stage_timings();
        timing->set_stage(app_stage);
        *timing->mutable_start_time() = ToTimestamp(now);
        *timing->mutable_end_time() = ToTimestamp(now);
        app.set_stage(app_stage);
      }
    }
    v1::WatchRolloutResponse event;
    v1::RolloutStateChange* change = event.mutable_state();
    change->set_previous_state(previous);
    change->set_state(state);
    change->set_message(message);
    *change->mutable_rollout() = rollout_;
    pending_.push_back(std::move(event));
    return FlushLocked();
  }

 private:
  v1::AppRollout* Find(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (v1::AppRollout& app : *rollout_.mutable_apps()) {
      if (app.name() == name) return &app;
    }
    return nullptr;
  }

  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<v1::WatchRolloutResponse> events;
    events.swap(pending_);
    absl::StatusOr<std::vector<v1::WatchRolloutResponse>> stored =
        store_.Update(rollout_, std::move(events));
    if (!stored.ok()) return stored.status();
    if (!stored->empty()) rollout_.set_last_sequence(stored->back().sequence());
    return absl::OkStatus();
  }

  RolloutStore& store_;
  absl::Mutex mu_;
  v1::Rollout rollout_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::WatchRolloutResponse> pending_ ABSL_GUARDED_BY(mu_);
  const std::function<absl::Time()> now_;
};

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return text.str();
}

std::string PullHost(const v1::RegistryTarget& registry) {
  std::string url = registry.pull_url().empty() ? registry.url() : registry.pull_url();
  return url.substr(0, url.find('/'));
}

// "<registry url>/<repository>:<tag>" as pushed, and the same on the pull side.
std::string PushImage(const v1::RegistryTarget& registry, const std::string& repository,
                      const std::string& tag) {
  return absl::StrCat(registry.url(), "/", repository, ":", tag);
}

std::string PullImage(const v1::RegistryTarget& registry, const std::string& repository,
                      const std::string& tag) {
  const std::string& base = registry.pull_url().empty() ? registry.url() : registry.pull_url();
  return absl::StrCat(base, "/", repository, ":", tag);
}

}  // namespace

std::string ImageRepository(const std::string& deployment_yaml, const std::string& app) {
  try {
    for (const YAML::Node& doc : YAML::LoadAll(deployment_yaml)) {
      const YAML::Node containers = doc["spec"]["template"]["spec"]["containers"];
      if (!containers || !containers.IsSequence()) continue;
      for (const YAML::Node& container : containers) {
        const YAML::Node image = container["image"];
        if (!image || !image.IsScalar()) continue;
        std::string repository = RepositoryOf(image.Scalar());
        std::string last = repository.substr(repository.rfind('/') + 1);
        if (last == app) return repository;
      }
    }
  } catch (const YAML::Exception&) {
    // The publisher reports bad YAML with its position; the name alone is a fine repository.
  }
  return app;
}

Runner::Runner(RolloutStore& store, Builder& builder, Registry& registry, Publisher& publisher,
               Cluster& cluster, RunnerOptions options)
    : store_(store),
      builder_(builder),
      registry_(registry),
      publisher_(publisher),
      cluster_(cluster),
      options_(std::move(options)) {}

void CommitLineage::Record(const std::string& commit, const std::string& parent) {
  absl::MutexLock lock(&mu_);
  parent_[commit] = parent;
}

bool CommitLineage::Descends(const std::string& descendant, const std::string& ancestor) const {
  absl::MutexLock lock(&mu_);
  std::string at = descendant;
  for (size_t hops = 0; hops <= parent_.size(); ++hops) {  // bounded even if links were bad
    if (at == ancestor) return true;
    auto it = parent_.find(at);
    if (it == parent_.end() || it->second.empty()) return false;
    at = it->second;
  }
  return false;
}

absl::Status Runner::Run(const std::string& id, const CancelledFn& cancelled,
                         const v1::DeployRequest* live_request, const CancelledFn& interrupted,
                         const std::function<std::string()>& cancel_reason) {
  absl::StatusOr<v1::Rollout> stored = store_.Get(id);
  if (!stored.ok()) return stored.status();
  if (IsTerminal(stored->state())) return absl::OkStatus();
  Recorder record(store_, *stored, options_.now);
  const v1::DeployRequest& request = live_request != nullptr ? *live_request : stored->request();
  if (stored->state() == v1::ROLLOUT_STATE_PENDING) {
    absl::Time start = options_.now();
    absl::Duration timeout = options_.default_timeout;
    if (request.has_timeout()) {
      timeout =
          absl::Seconds(request.timeout().seconds()) + absl::Nanoseconds(request.timeout().nanos());
    }
    if (absl::Status s = record.Rollout([&](v1::Rollout& r) {
          *r.mutable_start_time() = ToTimestamp(start);
          *r.mutable_deadline() = ToTimestamp(start + timeout);
        });
        !s.ok()) {
      return s;
    }
    if (absl::Status s = record.State(v1::ROLLOUT_STATE_RUNNING, "started"); !s.ok()) return s;
  }
  const absl::Time deadline = FromTimestamp(record.Snapshot().deadline());
  auto fail = [&](const v1::Finding& finding, const std::string& message) -> absl::Status {
    if (absl::Status s = record.Finding(finding); !s.ok()) return s;
    return record.State(v1::ROLLOUT_STATE_FAILED, message);
  };
  auto stop_if_cancelled = [&]() -> std::optional<absl::Status> {
    if (interrupted && interrupted()) return absl::OkStatus();  // resumed by the next process
    if (cancelled && cancelled()) {
      std::string reason = cancel_reason ? cancel_reason() : "";
      return record.State(v1::ROLLOUT_STATE_CANCELLED,
                          reason.empty() ? "cancelled" : absl::StrCat("cancelled: ", reason));
    }
    if (options_.now() > deadline) {
      return record.State(v1::ROLLOUT_STATE_TIMED_OUT, "the rollout's deadline passed");
    }
    return std::nullopt;
  };

  absl::StatusOr<std::vector<DiscoveredApp>> apps = DiscoverApps(request);
  if (!apps.ok()) {
    return fail(MakeFinding(v1::FINDING_KIND_OTHER, "AppsNotFound", "",
                            std::string(apps.status().message()), true),
                std::string(apps.status().message()));
  }
  const std::string tag = request.tag().empty() ? id : request.tag();
  // Each app's deployment.yaml, read once: the image repository pushed to comes from the same
  // text that is published.
  std::map<std::string, std::string> deployments;
  for (const DiscoveredApp& app : *apps) {
    absl::StatusOr<std::string> text = ReadText(app.deployment_path);
    if (!text.ok()) {
      return fail(MakeFinding(v1::FINDING_KIND_OTHER, "DeploymentUnreadable", app.name,
                              std::string(text.status().message()), true),
                  absl::StrCat(app.name, ": ", text.status().message()));
    }
    deployments[app.name] = *std::move(text);
  }

  // Build and push, apps in parallel; apps whose image is recorded are done.
  {
    std::vector<const DiscoveredApp*> todo;
    v1::Rollout now = record.Snapshot();
    for (const DiscoveredApp& app : *apps) {
      for (const v1::AppRollout& status : now.apps()) {
        if (status.name() == app.name && status.image().empty()) todo.push_back(&app);
      }
    }
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    absl::Mutex error_mu;
    absl::Status store_error;
    std::optional<v1::Finding> first_failure;
    // Also stops the build or push in flight when the rollout's deadline passes.
    auto cancelled_or_failed = [&] {
      return failed.load() || (cancelled && cancelled()) || (interrupted && interrupted()) ||
             options_.now() > deadline;
    };
    // Progress goes to live watchers only (options_.progress); the record keeps the stages.
    auto post_progress = [this, &id](const std::string& app, v1::Stage stage) -> ProgressFn {
      if (options_.progress == nullptr) return nullptr;
      return [this, &id, app, stage](const Progress& p) {
        v1::AppProgress progress;
        progress.set_app(app);
        progress.set_stage(stage);
        progress.set_bytes_done(p.bytes_done);
        progress.set_bytes_total(p.bytes_total);
        progress.set_steps_done(p.steps_done);
        progress.set_steps_total(p.steps_total);
        progress.set_message(p.message);
        options_.progress->Post(id, std::move(progress));
      };
    };
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < todo.size() && !cancelled_or_failed();) {
        const DiscoveredApp& app = *todo[i];
        auto note = [&](absl::Status s) {
          if (!s.ok()) {
            absl::MutexLock lock(&error_mu);
            if (store_error.ok()) store_error = s;
            failed = true;
          }
        };
        note(record.App(app.name, v1::STAGE_BUILDING, "building"));
        absl::StatusOr<BuildResult> built =
            builder_.Build(app, tag, request.no_cache(),
                           post_progress(app.name, v1::STAGE_BUILDING), cancelled_or_failed);
        if (!built.ok()) {
          absl::MutexLock lock(&error_mu);
          if (!first_failure.has_value() && !(cancelled && cancelled())) {
            first_failure = MakeFinding(v1::FINDING_KIND_BUILD_FAILED, "BuildFailed", app.name,
                                        std::string(built.status().message()), true);
          }
          failed = true;
          return;
        }
        std::string repository = ImageRepository(deployments.at(app.name), app.name);
        note(record.App(app.name, v1::STAGE_PUSHING, "pushing", [&](v1::AppRollout& a) {
          a.set_build_skipped(built->cached);
          a.set_source_revision(built->source_revision);
        }));
        absl::StatusOr<PushResult> pushed = registry_.Push(
            built->layout_reference, PushImage(request.registry(), repository, tag),
            request.registry(), post_progress(app.name, v1::STAGE_PUSHING), cancelled_or_failed);
        if (!pushed.ok()) {
          absl::MutexLock lock(&error_mu);
          if (!first_failure.has_value() && !(cancelled && cancelled())) {
            first_failure = MakeFinding(v1::FINDING_KIND_PUSH_FAILED, "PushFailed", app.name,
                                        std::string(pushed.status().message()), true);
          }
          failed = true;
          return;
        }
        note(record.App(app.name, v1::STAGE_PUBLISHING, "waiting for the other apps",
                        [&](v1::AppRollout& a) {
                          a.set_image_digest(pushed->digest);
                          a.set_bytes_pushed(pushed->bytes_pushed);
                          a.set_image(absl::StrCat(PullImage(request.registry(), repository, tag),
                                                   "@", pushed->digest));
                        }));
      }
    };
    std::vector<std::thread> workers;
    int threads =
        std::max(1, std::min<int>(options_.max_parallel_builds, static_cast<int>(todo.size())));
    for (int t = 1; t < threads; ++t) workers.emplace_back(work);
    work();
    for (std::thread& worker : workers) worker.join();
    if (!store_error.ok()) return store_error;
    if (std::optional<absl::Status> stop = stop_if_cancelled()) return *stop;
    if (first_failure.has_value()) {
      return fail(*first_failure,
                  absl::StrCat(first_failure->app(), ": ", first_failure->message()));
    }
  }

  // One commit for every app.
  std::vector<PublishApp> publish;
  {
    const v1::Rollout snapshot = record.Snapshot();
    for (const DiscoveredApp& app : *apps) {
      for (const v1::AppRollout& status : snapshot.apps()) {
        if (status.name() != app.name) continue;
        publish.push_back({app.name, app.group, status.image(), deployments.at(app.name)});
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> applications;
  std::vector<v1::ApplicationDefinition> published_definitions;
  if (record.Snapshot().commit().empty()) {
    for (const PublishApp& app : publish) {
      if (absl::Status s = record.App(app.name, v1::STAGE_PUBLISHING, "publishing"); !s.ok()) {
        return s;
      }
    }
    absl::StatusOr<PublishResult> published =
        publisher_.Publish(publish, request.gitops(), request.destination(),
                           record.Snapshot().correlation_id(), request.message());
    if (!published.ok()) {
      return fail(MakeFinding(v1::FINDING_KIND_PUBLISH_FAILED, "PublishFailed", "",
                              std::string(published.status().message()), true),
                  absl::StrCat("publishing failed: ", published.status().message()));
    }
    applications = published->applications;
    published_definitions = published->definitions;
    if (options_.lineage != nullptr && !published->no_op) {
      options_.lineage->Record(published->commit, published->parent);
    }
    if (absl::Status s = record.Rollout([&](v1::Rollout& r) {
          r.set_commit(published->commit);
          r.set_commit_no_op(published->no_op);
        });
        !s.ok()) {
      return s;
    }
  }
  if (published_definitions.empty()) {
    // Resumed after the commit was recorded: the Applications that publish wrote, as the
    // publisher renders them for these apps (nothing is committed).
    absl::StatusOr<PublishResult> rendered =
        publisher_.Applications(publish, request.gitops(), request.destination());
    if (!rendered.ok()) {
      return fail(
          MakeFinding(v1::FINDING_KIND_PUBLISH_FAILED, "ApplicationsUnknown", "",
                      std::string(rendered.status().message()), true),
          absl::StrCat("asking the publisher for the Applications: ", rendered.status().message()));
    }
    applications = rendered->applications;
    published_definitions = rendered->definitions;
  }
  const std::string commit = record.Snapshot().commit();
  std::map<std::string, std::string> application_of;  // group -> Application
  for (const auto& [name, group] : applications) application_of[group] = name;
  for (const DiscoveredApp& app : *apps) {
    if (!application_of.contains(app.group)) {
      return fail(
          MakeFinding(v1::FINDING_KIND_PUBLISH_FAILED, "ApplicationsUnknown", app.name,
                      absl::StrCat("the publisher named no Application for group ", app.group),
                      true),
          absl::StrCat("no Application for group ", app.group));
    }
  }

  // The cluster side: Applications (the seed's kubectl apply), the pull Secret, a refresh.
  const v1::ClusterDestination& destination = request.destination();
  const std::string cluster = destination.cluster();
  std::map<std::string, v1::ApplicationDefinition> definition_of;  // by Application name
  for (const v1::ApplicationDefinition& definition : published_definitions) {
    definition_of[definition.name()] = definition;
  }
  for (const auto& [application, definition] : definition_of) {
    if (absl::Status s = cluster_.ApplyApplication(cluster, definition); !s.ok()) {
      return fail(MakeFinding(v1::FINDING_KIND_SYNC_ERROR, "ApplyApplicationFailed", "",
                              std::string(s.message()), true),
                  absl::StrCat("applying Application ", application, ": ", s.message()));
    }
  }
  if (!destination.no_image_pull_secret()) {
    const v1::RegistryCredentials& credentials = request.registry().has_pull_credentials()
                                                     ? request.registry().pull_credentials()
                                                     : request.registry().credentials();
    if (credentials.source_case() != v1::RegistryCredentials::SOURCE_NOT_SET) {
      absl::Status s = cluster_.EnsureImagePullSecret(
          cluster, destination.namespace_(),
          destination.image_pull_secret().empty() ? "regcred" : destination.image_pull_secret(),
          PullHost(request.registry()), credentials);
      if (!s.ok()) {
        return fail(MakeFinding(v1::FINDING_KIND_IMAGE_PULL, "PullSecretFailed", "",
                                std::string(s.message()), true),
                    absl::StrCat("ensuring the image pull Secret: ", s.message()));
      }
    }
  }
  for (const auto& [group, application] : application_of) {
    cluster_.Refresh(cluster, application).IgnoreError();  // the poll catches up anyway
  }
  for (const DiscoveredApp& app : *apps) {
    if (absl::Status s = record.App(app.name, v1::STAGE_SYNCING, "waiting for Argo CD",
                                    [&](v1::AppRollout& a) {
                                      a.set_application(application_of[app.group]);
                                      a.set_namespace_(destination.namespace_());
                                    });
        !s.ok()) {
      return s;
    }
  }

  // Sync and verify: Diagnose until healthy, a fatal finding, cancel or the deadline.
  v1::DiagnoseResponse last;
  std::map<std::string, absl::Time> ready_since;  // app -> first time seen ready, continuously
  while (true) {
    if (options_.now() > deadline) {
      // The last diagnosis says why: its findings for this rollout's apps go in first.
      const v1::Rollout snapshot = record.Snapshot();
      std::set<std::string> ours;
      for (const v1::AppRollout& status : snapshot.apps()) ours.insert(status.name());
      std::string why;
      for (const v1::Finding& finding : last.findings()) {
        if (!finding.app().empty() && !ours.contains(finding.app())) continue;
        if (why.empty()) why = finding.message();
        if (absl::Status s = record.Finding(finding); !s.ok()) return s;
      }
      return record.State(v1::ROLLOUT_STATE_TIMED_OUT,
                          why.empty() ? "the rollout's deadline passed"
                                      : absl::StrCat("the rollout's deadline passed: ", why));
    }
    if (std::optional<absl::Status> stop = stop_if_cancelled()) return *stop;
    bool all_healthy = true;
    for (const auto& [group, application] : application_of) {
      v1::DiagnoseRequest diagnose;
      diagnose.set_cluster(cluster);
      diagnose.set_application(application);
      diagnose.set_argocd_namespace(destination.argocd_namespace());
      diagnose.set_expected_revision(commit);
      diagnose.set_check_discovery(!request.verify().skip_discovery());
      diagnose.set_discovery_deployment(request.verify().discovery_deployment());
      const v1::Rollout snapshot = record.Snapshot();
      for (const v1::AppRollout& status : snapshot.apps()) {
        (*diagnose.mutable_expected_digests())[status.name()] = status.image_digest();
      }
      absl::StatusOr<v1::DiagnoseResponse> diagnosis = cluster_.Diagnose(diagnose);
      if (!diagnosis.ok()) {
        all_healthy = false;
        continue;  // the watcher may not know the Application yet
      }
      last = *diagnosis;
      std::set<std::string> ours;
      for (const v1::AppRollout& status : snapshot.apps()) ours.insert(status.name());
      // Only this rollout's apps count: a group's Application may also hold apps of earlier
      // rollouts, healthy or not.
      const std::string& revision = diagnosis->application().sync_revision();
      const bool synced = revision == commit || (options_.lineage != nullptr &&
                                                 options_.lineage->Descends(revision, commit));
      std::set<std::string> ready;
      for (const v1::WorkloadStatus& workload : diagnosis->workloads()) {
        if (!ours.contains(workload.app())) continue;
        bool discovered = workload.discovered() || request.verify().skip_discovery();
        if (synced && workload.ready() && discovered) {
          absl::Time since = ready_since.try_emplace(workload.app(), options_.now()).first->second;
          if (options_.now() - since >= options_.settle) ready.insert(workload.app());
        } else {
          ready_since.erase(workload.app());
        }
        v1::Stage stage = synced ? v1::STAGE_VERIFYING : v1::STAGE_SYNCING;
        absl::Status s = record.App(
            workload.app(), stage,
            synced ? "verifying pods and discovery" : "waiting for Argo CD to sync the commit",
            [&](v1::AppRollout& a) {
              a.set_observed_revision(diagnosis->application().sync_revision());
              a.set_sync_status(diagnosis->application().sync_status());
              a.set_health_status(diagnosis->application().health_status());
              a.set_pods_ready(workload.pods_ready());
              a.set_pods_desired(workload.has_deployment() ? workload.deployment().replicas() : 0);
              a.set_discovered(discovered);
            });
        if (!s.ok()) return s;
      }
      std::string reason;
      for (const v1::Finding& finding : diagnosis->findings()) {
        if (!finding.fatal()) continue;
        if (!finding.app().empty() && !ours.contains(finding.app())) continue;
        if (reason.empty()) reason = finding.message();
        if (absl::Status s = record.Finding(finding); !s.ok()) return s;
      }
      if (!reason.empty()) {
        return record.State(v1::ROLLOUT_STATE_FAILED,
                            absl::StrCat("Application ", application, ": ", reason));
      }
      for (const DiscoveredApp& app : *apps) {
        if (application_of[app.group] == application && !ready.contains(app.name)) {
          all_healthy = false;
        }
      }
    }
    if (all_healthy) return record.State(v1::ROLLOUT_STATE_SUCCEEDED, "every app verified");
    absl::SleepFor(options_.poll_interval);
  }
}

}  // namespace elfdeploy::orchestrator
