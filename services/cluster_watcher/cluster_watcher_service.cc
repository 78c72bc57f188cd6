#include "services/cluster_watcher/cluster_watcher_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "elfdeploy/v1/registry_sync.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "services/cluster_watcher/diagnose.h"
#include "services/common/grpc_status.h"
#include "services/common/log.h"
#include "services/common/oci/credentials.h"

namespace elfdeploy {

namespace {

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp out;
  const int64_t nanos = absl::ToUnixNanos(time);
  out.set_seconds(nanos / 1000000000);
  out.set_nanos(static_cast<int32_t>(nanos % 1000000000));
  return out;
}

}  // namespace

void BindClusterWatcherConfig(ConfigBinder& binder, ClusterWatcherOptions* options) {
  binder.Bind("watcher.data_dir", &options->data_dir);
  binder.Bind("watcher.retention", &options->retention);
  binder.Bind("watcher.watch_heartbeat", &options->watch_heartbeat);
  binder.Bind("watcher.agent_token", &options->agent_token);
  binder.Bind("watcher.agent_token_file", &options->agent_token_file);
  binder.Bind("watcher.agent_heartbeat", &options->agent_heartbeat);
  binder.Bind("watcher.agent_request_timeout", &options->agent_request_timeout);
  binder.Bind("watcher.registry_sync_addr", &options->registry_sync_addr);
  binder.Bind("watcher.registry_sync_tls_ca_file", &options->registry_sync_tls.ca_file);
  binder.Bind("watcher.registry_sync_tls_cert_file", &options->registry_sync_tls.cert_file);
  binder.Bind("watcher.registry_sync_tls_key_file", &options->registry_sync_tls.key_file);
  binder.Bind("watcher.registry_auth_file", &options->registry_auth_file);
}

ClusterWatcherServiceImpl::ClusterWatcherServiceImpl(std::shared_ptr<watcher::ClusterState> state,
                                                     absl::Duration watch_heartbeat,
                                                     watcher::AgentHub* hub,
                                                     ClusterWatcherOptions options,
                                                     std::shared_ptr<grpc::Channel> registry_sync)
    : state_(std::move(state)),
      watch_heartbeat_(watch_heartbeat),
      hub_(hub),
      options_(std::move(options)),
      registry_sync_(std::move(registry_sync)) {}

grpc::Status ClusterWatcherServiceImpl::ListClusters(grpc::ServerContext* /*context*/,
                                                     const v1::ListClustersRequest* request,
                                                     v1::ListClustersResponse* response) {
  absl::StatusOr<v1::ListClustersResponse> result = state_->ListClusters(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::GetApplication(grpc::ServerContext* /*context*/,
                                                       const v1::GetApplicationRequest* request,
                                                       v1::GetApplicationResponse* response) {
  absl::StatusOr<v1::GetApplicationResponse> result = state_->GetApplication(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::ListPods(grpc::ServerContext* /*context*/,
                                                 const v1::ListPodsRequest* request,
                                                 v1::ListPodsResponse* response) {
  absl::StatusOr<v1::ListPodsResponse> result = state_->ListPods(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::Watch(grpc::ServerContext* context,
                                              const v1::WatchRequest* request,
                                              grpc::ServerWriter<v1::WatchResponse>* writer) {
  watcher::WatchFilter filter;
  filter.cluster = request->cluster();
  filter.namespace_ = request->namespace_();
  filter.application = request->application();
  filter.app = request->app();
  for (int kind : request->kinds()) filter.kinds.push_back(static_cast<v1::ObjectKind>(kind));
  absl::StatusOr<std::unique_ptr<watcher::Subscription>> subscription =
      state_->Subscribe(filter, request->from_sequence(), request->initial_snapshot());
  if (!subscription.ok()) return ToGrpcStatus(subscription.status());
  v1::WatchResponse started;
  started.mutable_started()->set_oldest_sequence((*subscription)->oldest_sequence());
  started.mutable_started()->set_latest_sequence((*subscription)->latest_sequence());
  const grpc::Status client_gone(grpc::StatusCode::CANCELLED, "the client went away");
  if (!writer->Write(started)) return client_gone;

  // Cancellation is noticed within kPoll; heartbeats go out after watch_heartbeat_ of silence.
  constexpr absl::Duration kPoll = absl::Milliseconds(250);
  absl::Time next_heartbeat = absl::Now() + watch_heartbeat_;
  std::vector<v1::WatchResponse> batch;
  while (!context->IsCancelled()) {
    batch.clear();
    absl::Status status =
        (*subscription)->Next(std::min(next_heartbeat, absl::Now() + kPoll), &batch);
    if (absl::IsCancelled(status)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "cluster-watcher is shutting down: resume with from_sequence");
    }
    if (!status.ok()) return ToGrpcStatus(status);
    for (size_t i = 0; i < batch.size(); ++i) {
      grpc::WriteOptions options;
      if (i + 1 < batch.size()) options.set_buffer_hint();
      if (!writer->Write(batch[i], options)) return client_gone;
    }
    const absl::Time now = absl::Now();
    if (!batch.empty()) {
      next_heartbeat = now + watch_heartbeat_;
    } else if (now >= next_heartbeat) {
      v1::WatchResponse heartbeat;
      heartbeat.mutable_heartbeat()->set_latest_sequence(state_->latest_sequence());
      *heartbeat.mutable_heartbeat()->mutable_sent_time() = ToTimestamp(now);
      if (!writer->Write(heartbeat)) return client_gone;
      next_heartbeat = now + watch_heartbeat_;
    }
  }
  return client_gone;
}

absl::StatusOr<v1::AgentReply> ClusterWatcherServiceImpl::CallAgent(const std::string& cluster,
                                                                    v1::AgentRequest request) {
  if (hub_ == nullptr) return absl::UnavailableError("this watcher has no agent link");
  absl::StatusOr<v1::AgentReply> reply =
      hub_->Call(cluster, std::move(request), options_.agent_request_timeout);
  if (!reply.ok()) return reply.status();
  if (reply->code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(reply->code()),
                        absl::StrCat("agent of cluster ", cluster, ": ", reply->message()));
  }
  return reply;
}

absl::StatusOr<std::vector<std::string>> ClusterWatcherServiceImpl::ReadLogs(
    const std::string& cluster, const std::string& ns, const std::string& pod,
    const std::string& container, int tail_lines, bool previous) {
  v1::AgentRequest request;
  v1::PodLogsCommand* logs = request.mutable_pod_logs();
  logs->set_namespace_(ns);
  logs->set_pod(pod);
  logs->set_container(container);
  logs->set_tail_lines(tail_lines);
  logs->set_previous(previous);
  absl::StatusOr<v1::AgentReply> reply = CallAgent(cluster, std::move(request));
  if (!reply.ok()) return reply.status();
  return std::vector<std::string>(reply->pod_logs().lines().begin(),
                                  reply->pod_logs().lines().end());
}

grpc::Status ClusterWatcherServiceImpl::Diagnose(grpc::ServerContext* /*context*/,
                                                 const v1::DiagnoseRequest* request,
                                                 v1::DiagnoseResponse* response) {
  if (request->application().empty() && request->app().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "application or app is required");
  }
  absl::StatusOr<std::string> cluster = state_->ResolveCluster(request->cluster());
  if (!cluster.ok()) return ToGrpcStatus(cluster.status());
  absl::StatusOr<watcher::ClusterState::Snapshot> snapshot = state_->GetSnapshot(*cluster);
  if (!snapshot.ok()) return ToGrpcStatus(snapshot.status());
  watcher::DiagnoseDeps deps;
  deps.read_logs = [this, &cluster](const std::string& ns, const std::string& pod,
                                    const std::string& container, int tail_lines, bool previous) {
    return ReadLogs(*cluster, ns, pod, container, tail_lines, previous);
  };
  if (registry_sync_ != nullptr) {
    deps.resolve_image = [this](const std::string& image,
                                const v1::RegistryCredentials* credentials) -> absl::Status {
      std::unique_ptr<v1::RegistrySyncService::Stub> stub =
          v1::RegistrySyncService::NewStub(registry_sync_);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
      v1::ResolveRequest resolve;
      resolve.set_reference(image);
      if (credentials != nullptr) *resolve.mutable_credentials() = *credentials;
      v1::ResolveResponse resolved;
      return FromGrpcStatus(stub->Resolve(&context, resolve, &resolved));
    };
  }
  absl::StatusOr<v1::DiagnoseResponse> result = watcher::Diagnose(*snapshot, *request, deps);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  response->set_cluster(*cluster);
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::GetLogs(grpc::ServerContext* /*context*/,
                                                const v1::GetLogsRequest* request,
                                                v1::GetLogsResponse* response) {
  if (request->namespace_().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "namespace is required");
  }
  if (request->pod().empty() && request->deployment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "pod or deployment is required");
  }
  absl::StatusOr<std::string> cluster = state_->ResolveCluster(request->cluster());
  if (!cluster.ok()) return ToGrpcStatus(cluster.status());
  std::string pod = request->pod();
  if (pod.empty()) {
    // As `kubectl logs deployment/<name>`: a ready pod of the Deployment first.
    v1::ListPodsRequest list;
    list.set_cluster(*cluster);
    list.set_namespace_(request->namespace_());
    list.set_deployment(request->deployment());
    list.set_page_size(1000);
    absl::StatusOr<v1::ListPodsResponse> pods = state_->ListPods(list);
    if (!pods.ok()) return ToGrpcStatus(pods.status());
    for (const v1::Pod& candidate : pods->pods()) {
      if (candidate.ready()) {
        pod = candidate.meta().name();
        break;
      }
      if (pod.empty()) pod = candidate.meta().name();
    }
    if (pod.empty()) {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("no pod of deployment ", request->namespace_(), "/", request->deployment()));
    }
  }
  int tail = request->tail_lines() == 0 ? 100 : std::min(request->tail_lines(), 10000);
  v1::AgentRequest agent_request;
  v1::PodLogsCommand* logs = agent_request.mutable_pod_logs();
  logs->set_namespace_(request->namespace_());
  logs->set_pod(pod);
  logs->set_container(request->container());
  logs->set_tail_lines(tail);
  logs->set_previous(request->previous());
  if (request->has_since_time()) *logs->mutable_since_time() = request->since_time();
  absl::StatusOr<v1::AgentReply> reply = CallAgent(*cluster, std::move(agent_request));
  if (!reply.ok()) return ToGrpcStatus(reply.status());
  response->set_pod(pod);
  response->set_container(request->container());
  response->set_truncated(reply->pod_logs().truncated());
  for (const std::string& line : reply->pod_logs().lines()) {
    if (request->contains().empty() || absl::StrContains(line, request->contains())) {
      response->add_lines(line);
    }
  }
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::Refresh(grpc::ServerContext* /*context*/,
                                                const v1::RefreshRequest* request,
                                                v1::RefreshResponse* response) {
  if (request->name().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name is required");
  }
  absl::StatusOr<std::string> cluster = state_->ResolveCluster(request->cluster());
  if (!cluster.ok()) return ToGrpcStatus(cluster.status());
  v1::AgentRequest agent_request;
  v1::RefreshApplicationCommand* refresh = agent_request.mutable_refresh_application();
  refresh->set_namespace_(request->namespace_().empty() ? "argocd" : request->namespace_());
  refresh->set_name(request->name());
  refresh->set_hard(request->hard());
  absl::StatusOr<v1::AgentReply> reply = CallAgent(*cluster, std::move(agent_request));
  if (!reply.ok()) return ToGrpcStatus(reply.status());
  *response->mutable_application() = reply->refresh_application().application();
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::ApplyApplication(grpc::ServerContext* /*context*/,
                                                         const v1::ApplyApplicationRequest* request,
                                                         v1::ApplyApplicationResponse* response) {
  const v1::ApplicationDefinition& app = request->application();
  for (const auto& [value, what] : std::vector<std::pair<std::string, const char*>>{
           {app.name(), "application.name"},
           {app.spec().repo_url(), "application.spec.repo_url"},
           {app.spec().path(), "application.spec.path"},
           {app.spec().destination_namespace(), "application.spec.destination_namespace"}}) {
    if (value.empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat(what, " is required"));
    }
  }
  absl::StatusOr<std::string> cluster = state_->ResolveCluster(request->cluster());
  if (!cluster.ok()) return ToGrpcStatus(cluster.status());
  v1::AgentRequest agent_request;
  *agent_request.mutable_apply_application()->mutable_application() = app;
  absl::StatusOr<v1::AgentReply> reply = CallAgent(*cluster, std::move(agent_request));
  if (!reply.ok()) return ToGrpcStatus(reply.status());
  response->set_result(reply->apply_application().result());
  *response->mutable_application() = reply->apply_application().application();
  return grpc::Status::OK;
}

grpc::Status ClusterWatcherServiceImpl::EnsureImagePullSecret(
    grpc::ServerContext* /*context*/, const v1::EnsureImagePullSecretRequest* request,
    v1::EnsureImagePullSecretResponse* response) {
  if (request->namespace_().empty() || request->registry().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "namespace and registry are required");
  }
  absl::StatusOr<std::string> cluster = state_->ResolveCluster(request->cluster());
  if (!cluster.ok()) return ToGrpcStatus(cluster.status());
  // The Secret's .dockerconfigjson: the request's credentials, else the configured ones.
  std::string username;
  std::string password;
  std::string identity_token;
  const v1::RegistryCredentials& credentials = request->credentials();
  if (credentials.has_basic()) {
    username = credentials.basic().username();
    password = credentials.basic().password();
  } else if (!credentials.identity_token().empty()) {
    identity_token = credentials.identity_token();
  } else {
    if (!credentials.ref().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("unknown credentials ref \"", credentials.ref(), "\""));
    }
    absl::StatusOr<oci::CredentialStore> store = oci::CredentialStore::LoadDefault(
        options_.registry_auth_file, [](const char* name) { return std::getenv(name); });
    if (!store.ok()) return ToGrpcStatus(store.status());
    std::optional<oci::RegistryCredential> found = store->Find(request->registry());
    if (!found.has_value()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("no credentials for registry ", request->registry(),
                                       " in the request or the watcher's configuration"));
    }
    username = found->username;
    password = found->password.Reveal();
    identity_token = found->identity_token.Reveal();
  }
  nlohmann::json entry = nlohmann::json::object();
  if (!username.empty() || !password.empty()) {
    entry["username"] = username;
    entry["password"] = password;
    entry["auth"] = absl::Base64Escape(absl::StrCat(username, ":", password));
  }
  if (!identity_token.empty()) entry["identitytoken"] = identity_token;
  nlohmann::json config = {{"auths", {{request->registry(), entry}}}};
  v1::AgentRequest agent_request;
  v1::EnsureImagePullSecretCommand* command = agent_request.mutable_ensure_image_pull_secret();
  command->set_namespace_(request->namespace_());
  command->set_name(request->name().empty() ? "regcred" : request->name());
  command->set_docker_config_json(config.dump());
  command->set_create_namespace(request->create_namespace());
  const std::string name = command->name();
  absl::StatusOr<v1::AgentReply> reply = CallAgent(*cluster, std::move(agent_request));
  if (!reply.ok()) return ToGrpcStatus(reply.status());
  response->set_result(reply->ensure_image_pull_secret().result());
  response->set_namespace_(request->namespace_());
  response->set_name(name);
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<ClusterWatcherComponent>> MakeClusterWatcherServices(
    const ClusterWatcherOptions& options, std::shared_ptr<prometheus::Registry> metrics) {
  if (options.retention < 1) {
    return absl::InvalidArgumentError("watcher.retention must be at least 1");
  }
  if (options.watch_heartbeat <= absl::ZeroDuration() ||
      options.agent_heartbeat <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "watcher.watch_heartbeat and watcher.agent_heartbeat must be positive");
  }
  watcher::AgentLinkOptions link_options;
  link_options.heartbeat_interval = options.agent_heartbeat;
  link_options.watcher_id = absl::StrCat(absl::ToUnixNanos(absl::Now()));
  if (!options.agent_token.empty()) link_options.tokens.push_back(options.agent_token);
  if (!options.agent_token_file.empty()) {
    std::ifstream in(options.agent_token_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      return absl::FailedPreconditionError(
          absl::StrCat("watcher.agent_token_file ", options.agent_token_file, " cannot be read"));
    }
    for (absl::string_view line : absl::StrSplit(text.str(), '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (!line.empty()) link_options.tokens.push_back(Secret(std::string(line)));
    }
  }
  if (link_options.tokens.empty()) {
    log::Warning(
        "no agent token configured (watcher.agent_token or watcher.agent_token_file): "
        "every agent will be refused");
  }
  std::shared_ptr<grpc::Channel> registry_sync;
  if (!options.registry_sync_addr.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        ClientCredentials(options.registry_sync_tls);
    if (!credentials.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("watcher.registry_sync_tls_*: ", credentials.status().message()));
    }
    registry_sync = grpc::CreateChannel(options.registry_sync_addr, *credentials);
  }
  watcher::ClusterState::Options state_options;
  state_options.data_dir = options.data_dir;
  state_options.retention = static_cast<uint64_t>(options.retention);
  absl::StatusOr<std::unique_ptr<watcher::ClusterState>> state =
      watcher::ClusterState::Open(std::move(state_options));
  if (!state.ok()) return state.status();
  auto component = std::make_unique<ClusterWatcherComponent>(
      std::shared_ptr<watcher::ClusterState>(*std::move(state)));

  watcher::AgentLinkMetrics link_metrics;
  if (metrics != nullptr) {
    auto& received = prometheus::BuildCounter()
                         .Name("elfdeploy_watcher_events_received_total")
                         .Help("Agent events received (duplicates included).")
                         .Register(*metrics)
                         .Add({});
    auto& duplicates = prometheus::BuildCounter()
                           .Name("elfdeploy_watcher_duplicates_dropped_total")
                           .Help("Agent events dropped because they were already stored.")
                           .Register(*metrics)
                           .Add({});
    auto& connected = prometheus::BuildGauge()
                          .Name("elfdeploy_watcher_agents_connected")
                          .Help("Agents connected now.")
                          .Register(*metrics)
                          .Add({});
    auto& lag = prometheus::BuildHistogram()
                    .Name("elfdeploy_watcher_event_lag_seconds")
                    .Help("From the agent observing a change to the watcher receiving it.")
                    .Register(*metrics)
                    .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.02, 0.05,
                                                                     0.1, 0.25, 0.5, 1, 5, 30});
    watcher::ClusterState* raw_state = component->state().get();
    auto last_duplicates = std::make_shared<std::atomic<uint64_t>>(0);
    link_metrics.received = [&received, &duplicates, raw_state, last_duplicates](size_t n) {
      received.Increment(static_cast<double>(n));
      uint64_t now = raw_state->duplicates_dropped();
      uint64_t before = last_duplicates->exchange(now);
      if (now > before) duplicates.Increment(static_cast<double>(now - before));
    };
    link_metrics.agents_connected = [&connected](int n) { connected.Set(n); };
    component->ExportPodsNotReady(
        prometheus::BuildGauge()
            .Name("elfdeploy_watcher_pods_not_ready")
            .Help("Pods not ready, by cluster, namespace and reason (as kubectl get pods says it).")
            .Register(*metrics),
        absl::Seconds(5));
    link_metrics.lag = [&lag](double seconds) { lag.Observe(seconds); };
  }
  auto link =
      std::make_unique<watcher::AgentLinkService>(*component->state(), link_options, link_metrics);
  watcher::AgentLinkService* hub = link.get();
  component->set_link(hub);
  component->Add(
      v1::ClusterWatcherService::service_full_name(),
      std::make_unique<ClusterWatcherServiceImpl>(component->state(), options.watch_heartbeat, hub,
                                                  options, std::move(registry_sync)));
  component->Add(v1::AgentLinkService::service_full_name(), std::move(link));
  return component;
}

ClusterWatcherComponent::~ClusterWatcherComponent() { Stop(); }

void ClusterWatcherComponent::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
  if (link_ != nullptr) link_->Shutdown();
  state_->Shutdown();
}

void ClusterWatcherComponent::ExportPodsNotReady(prometheus::Family<prometheus::Gauge>& family,
                                                 absl::Duration period) {
  refresher_ = std::thread([this, &family, period] {
    absl::MutexLock lock(&mu_);
    while (!stopping_) {
      mu_.Unlock();
      RefreshPodsNotReady(family);
      mu_.Lock();
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), period);
    }
  });
}

void ClusterWatcherComponent::RefreshPodsNotReady(prometheus::Family<prometheus::Gauge>& family) {
  absl::StatusOr<v1::ListClustersResponse> clusters = state_->ListClusters({});
  if (!clusters.ok()) return;
  std::map<std::vector<std::string>, prometheus::Gauge*> now;
  for (const v1::Cluster& cluster : clusters->clusters()) {
    absl::StatusOr<watcher::ClusterState::Snapshot> snapshot = state_->GetSnapshot(cluster.name());
    if (!snapshot.ok()) continue;
    for (const auto& [where, count] : watcher::CountNotReady(snapshot->pods)) {
      std::vector<std::string> key = {cluster.name(), where.first, where.second};
      prometheus::Gauge& gauge =
          family.Add({{"cluster", key[0]}, {"namespace", key[1]}, {"reason", key[2]}});
      gauge.Set(count);
      now.emplace(std::move(key), &gauge);
    }
  }
  for (const auto& [key, gauge] : not_ready_) {
    if (!now.contains(key)) family.Remove(gauge);
  }
  not_ready_ = std::move(now);
}

}  // namespace elfdeploy
