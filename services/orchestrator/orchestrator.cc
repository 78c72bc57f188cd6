#include "services/orchestrator/orchestrator.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/common/k8s_names.h"
#include "services/common/log.h"
#include "services/common/oci/reference.h"
#include "services/common/proto_time.h"
#include "services/orchestrator/discovery.h"

namespace elfdeploy::orchestrator {
namespace {

// How long a watch waits for a stored event before it looks for progress again.
constexpr absl::Duration kWatchPoll = absl::Milliseconds(250);

}  // namespace

Orchestrator::Orchestrator(std::unique_ptr<RolloutStore> store, Builder& builder,
                           Registry& registry, Publisher& publisher, Cluster& cluster,
                           DeployDefaults defaults, RunnerOptions runner_options,
                           OrchestratorMetrics metrics)
    : store_(std::move(store)),
      builder_(builder),
      registry_(registry),
      publisher_(publisher),
      cluster_(cluster),
      defaults_(std::move(defaults)),
      runner_options_([&] {
        if (runner_options.lineage == nullptr) runner_options.lineage = &lineage_;
        if (runner_options.progress == nullptr) runner_options.progress = &progress_;
        return std::move(runner_options);
      }()),
      metrics_(std::move(metrics)) {}

Orchestrator::~Orchestrator() { Stop(); }

void Orchestrator::Start() {
  absl::StatusOr<std::vector<v1::Rollout>> unfinished = store_->Unfinished();
  if (!unfinished.ok()) {
    log::Error("cannot list unfinished rollouts", {{"error", unfinished.status()}});
    return;
  }
  for (const v1::Rollout& rollout : *unfinished) {
    log::Info("resuming rollout", {{"rollout", rollout.id()}});
    Launch(rollout.id(), nullptr);
  }
}

void Orchestrator::Stop() {
  stopping_ = true;
  std::map<std::string, std::unique_ptr<Running>> running;
  std::vector<std::unique_ptr<Running>> finished;
  {
    absl::MutexLock lock(&mu_);
    running.swap(running_);
    finished.swap(finished_);
  }
  for (auto& [id, run] : running) {
    if (run->thread.joinable()) run->thread.join();
  }
  for (std::unique_ptr<Running>& done : finished) done->thread.join();
}

void Orchestrator::Launch(const std::string& id, std::unique_ptr<v1::DeployRequest> live_request) {
  auto run = std::make_unique<Running>();
  Running* raw = run.get();
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  // These threads have left running_ under this lock already: joining them here cannot wait long.
  for (std::unique_ptr<Running>& done : finished_) done->thread.join();
  finished_.clear();
  raw->thread = std::thread([this, id, raw, live = std::move(live_request)] {
    Runner runner(*store_, builder_, registry_, publisher_, cluster_, runner_options_);
    // Stopping the process is not a cancel: the rollout stays unfinished and resumes later.
    auto cancelled = [raw] { return raw->cancel.load(); };
    auto reason = [raw] {
      absl::MutexLock lock(&raw->mu);
      return raw->cancel_reason;
    };
    auto interrupted = [this] { return stopping_.load(); };
    absl::Status status = runner.Run(id, cancelled, live.get(), interrupted, reason);
    if (!status.ok()) {
      log::Error("rollout stopped on a store error", {{"rollout", id}, {"error", status}});
    }
    absl::StatusOr<v1::Rollout> ended = store_->Get(id);
    runner_options_.progress->Forget(id);  // ended, or resumed from the start of a stage later
    if (ended.ok() && IsTerminal(ended->state())) {
      log::Info("rollout ended", {{"rollout", id},
                                  {"state", v1::RolloutState_Name(ended->state())},
                                  {"commit", ended->commit()},
                                  {"message", ended->message()}});
      if (metrics_.finished) metrics_.finished(*ended);
    }
    // Done: leave running_ (a later Cancel ends the record itself) for the next Launch to join.
    absl::MutexLock lock(&mu_);
    auto self = running_.find(id);
    if (self != running_.end() && self->second.get() == raw) {
      finished_.push_back(std::move(self->second));
      running_.erase(self);
    }
    if (metrics_.in_progress) metrics_.in_progress(static_cast<int>(running_.size()));
  });
  running_[id] = std::move(run);
  if (metrics_.in_progress) metrics_.in_progress(static_cast<int>(running_.size()));
}

absl::Status Orchestrator::Watch(const std::string& id, uint64_t from,
                                 const std::function<bool()>& cancelled,
                                 const std::function<bool(const v1::WatchRolloutResponse&)>& emit) {
  if (id.empty()) return absl::InvalidArgumentError("id is required");
  absl::StatusOr<v1::Rollout> rollout = Get(id);
  if (!rollout.ok()) return rollout.status();
  const absl::Status gone = absl::CancelledError("the client went away");
  uint64_t after = from;
  uint64_t progress_version = 0;
  // Each app's stage as the stream last told it: progress of an earlier stage is stale.
  std::map<std::string, v1::Stage> stage_of;
  for (const v1::AppRollout& app : rollout->apps()) stage_of[app.name()] = app.stage();
  while (!cancelled()) {
    absl::StatusOr<std::vector<v1::WatchRolloutResponse>> events = store_->Events(id, after);
    if (!events.ok()) return events.status();
    for (const v1::WatchRolloutResponse& event : *events) {
      if (!emit(event)) return gone;
      after = event.sequence();
      if (event.has_state() && IsTerminal(event.state().state())) return absl::OkStatus();
      if (event.has_app_stage()) stage_of[event.app_stage().app()] = event.app_stage().stage();
    }
    for (v1::AppProgress& progress : runner_options_.progress->Since(id, &progress_version)) {
      auto stage = stage_of.find(progress.app());
      if (stage == stage_of.end() || stage->second != progress.stage()) continue;
      v1::WatchRolloutResponse event;  // sequence 0: progress is not stored
      event.set_rollout_id(id);
      *event.mutable_event_time() = ToTimestamp(absl::Now());
      *event.mutable_progress() = std::move(progress);
      if (!emit(event)) return gone;
    }
    absl::StatusOr<v1::Rollout> now = Get(id);
    if (now.ok() && IsTerminal(now->state()) && now->last_sequence() <= after) {
      return absl::OkStatus();  // ended before this stream reached it (e.g. resumed past it)
    }
    store_->WaitForEvents(id, after, absl::Now() + kWatchPoll);
  }
  return gone;
}

absl::StatusOr<v1::Rollout> Orchestrator::Deploy(v1::DeployRequest request) {
  if (request.registry().url().empty()) request.mutable_registry()->set_url(defaults_.registry);
  if (request.gitops().url().empty()) request.mutable_gitops()->set_url(defaults_.gitops_repo);
  if (request.gitops().branch().empty()) {
    request.mutable_gitops()->set_branch(defaults_.gitops_branch);
  }
  if (request.gitops().path_prefix().empty()) {
    request.mutable_gitops()->set_path_prefix(defaults_.gitops_path_prefix);
  }
  if (request.destination().namespace_().empty()) {
    request.mutable_destination()->set_namespace_(defaults_.namespace_);
  }
  if (request.registry().url().empty()) {
    return absl::InvalidArgumentError("registry.url is required (or DOCKER_REGISTRY)");
  }
  if (request.gitops().url().empty()) {
    return absl::InvalidArgumentError("gitops.url is required (or GITOPS_REPO)");
  }
  if (!IsDns1123Label(request.destination().namespace_())) {
    return absl::InvalidArgumentError(absl::StrCat("destination.namespace \"",
                                                   request.destination().namespace_(),
                                                   "\" is not a DNS-1123 label"));
  }
  if (!request.tag().empty() && !oci::IsValidTag(request.tag())) {
    return absl::InvalidArgumentError(absl::StrCat("tag \"", request.tag(), "\" is not a tag"));
  }
  absl::StatusOr<std::vector<DiscoveredApp>> apps = DiscoverApps(request);
  if (!apps.ok()) return apps.status();
  std::vector<v1::AppRollout> records;
  for (const DiscoveredApp& app : *apps) {
    v1::AppRollout record;
    record.set_name(app.name);
    record.set_group(app.group);
    record.set_source_dir(app.dir);
    record.set_stage(v1::STAGE_PENDING);
    record.set_namespace_(request.destination().namespace_());
    records.push_back(std::move(record));
  }
  auto live = std::make_unique<v1::DeployRequest>(request);
  ClearRequestSecrets(&request);
  absl::StatusOr<std::pair<v1::Rollout, bool>> created = store_->Create(request, records);
  if (!created.ok()) return created.status();
  if (created->second) Launch(created->first.id(), std::move(live));
  return created->first;
}

absl::StatusOr<v1::Rollout> Orchestrator::Get(const std::string& id) const {
  return store_->Get(id);
}

absl::StatusOr<v1::ListRolloutsResponse> Orchestrator::List(
    const v1::ListRolloutsRequest& request) const {
  return store_->List(request);
}

absl::StatusOr<v1::Rollout> Orchestrator::Cancel(const std::string& id, const std::string& reason) {
  absl::StatusOr<v1::Rollout> rollout = store_->Get(id);
  if (!rollout.ok()) return rollout.status();
  if (rollout->state() == v1::ROLLOUT_STATE_CANCELLED) return rollout;
  if (IsTerminal(rollout->state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", id, " already ended: ", v1::RolloutState_Name(rollout->state())));
  }
  bool running = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(id);
    if (it != running_.end()) {
      {
        absl::MutexLock reason_lock(&it->second->mu);
        it->second->cancel_reason = reason;
      }
      it->second->cancel = true;
      running = true;
    }
  }
  rollout->set_cancel_requested(true);
  if (!reason.empty()) rollout->set_message(absl::StrCat("cancel requested: ", reason));
  if (!running) {
    // Nobody runs it in this process: it ends here.
    v1::WatchRolloutResponse event;
    event.mutable_state()->set_previous_state(rollout->state());
    event.mutable_state()->set_state(v1::ROLLOUT_STATE_CANCELLED);
    std::string message = reason.empty() ? "cancelled" : absl::StrCat("cancelled: ", reason);
    event.mutable_state()->set_message(message);
    rollout->set_message(message);
    rollout->set_state(v1::ROLLOUT_STATE_CANCELLED);
    *event.mutable_state()->mutable_rollout() = *rollout;
    std::vector<v1::WatchRolloutResponse> events;
    events.push_back(std::move(event));
    absl::StatusOr<std::vector<v1::WatchRolloutResponse>> stored =
        store_->Update(*rollout, std::move(events));
    if (!stored.ok()) return stored.status();
    return store_->Get(id);
  }
  // Its runner stops at the next check and records CANCELLED; until then it is RUNNING.
  return rollout;
}

}  // namespace elfdeploy::orchestrator
