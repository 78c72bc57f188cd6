#include "services/orchestrator/orchestrator_service.h"

#include <grpcpp/grpcpp.h>

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "services/common/grpc_status.h"
#include "services/common/proto_time.h"
#include "services/orchestrator/grpc_stages.h"

namespace elfdeploy {

grpc::Status OrchestratorServiceImpl::Deploy(grpc::ServerContext* /*context*/,
                                             const v1::DeployRequest* request,
                                             v1::DeployResponse* response) {
  absl::StatusOr<v1::Rollout> rollout = orchestrator_.Deploy(*request);
  if (!rollout.ok()) return ToGrpcStatus(rollout.status());
  *response->mutable_rollout() = *std::move(rollout);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::WatchRollout(
    grpc::ServerContext* context, const v1::WatchRolloutRequest* request,
    grpc::ServerWriter<v1::WatchRolloutResponse>* writer) {
  return ToGrpcStatus(orchestrator_.Watch(
      request->id(), request->from_sequence(), [context] { return context->IsCancelled(); },
      [writer](const v1::WatchRolloutResponse& event) { return writer->Write(event); }));
}

grpc::Status OrchestratorServiceImpl::GetRollout(grpc::ServerContext* /*context*/,
                                                 const v1::GetRolloutRequest* request,
                                                 v1::GetRolloutResponse* response) {
  if (request->id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id is required");
  }
  absl::StatusOr<v1::Rollout> rollout = orchestrator_.Get(request->id());
  if (!rollout.ok()) return ToGrpcStatus(rollout.status());
  *response->mutable_rollout() = *std::move(rollout);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::ListRollouts(grpc::ServerContext* /*context*/,
                                                   const v1::ListRolloutsRequest* request,
                                                   v1::ListRolloutsResponse* response) {
  absl::StatusOr<v1::ListRolloutsResponse> listed = orchestrator_.List(*request);
  if (!listed.ok()) return ToGrpcStatus(listed.status());
  *response = *std::move(listed);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::CancelRollout(grpc::ServerContext* /*context*/,
                                                    const v1::CancelRolloutRequest* request,
                                                    v1::CancelRolloutResponse* response) {
  if (request->id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id is required");
  }
  absl::StatusOr<v1::Rollout> rollout = orchestrator_.Cancel(request->id(), request->reason());
  if (!rollout.ok()) return ToGrpcStatus(rollout.status());
  *response->mutable_rollout() = *std::move(rollout);
  return grpc::Status::OK;
}

void BindOrchestratorConfig(ConfigBinder& binder, OrchestratorOptions* options) {
  binder.Bind("registry", &options->registry);
  binder.EnvAlias("DOCKER_REGISTRY", "registry");
  binder.Bind("gitops.repo", &options->gitops_repo);
  binder.EnvAlias("GITOPS_REPO", "gitops.repo");
  binder.Bind("gitops.branch", &options->gitops_branch);
  binder.Bind("gitops.path_prefix", &options->gitops_path_prefix);
  binder.Bind("orchestrator.builder_addr", &options->builder_addr);
  binder.Bind("orchestrator.registry_sync_addr", &options->registry_sync_addr);
  binder.Bind("orchestrator.manifest_publisher_addr", &options->manifest_publisher_addr);
  binder.Bind("orchestrator.cluster_watcher_addr", &options->cluster_watcher_addr);
  binder.Bind("orchestrator.data_dir", &options->data_dir);
  binder.Bind("orchestrator.namespace", &options->namespace_);
  binder.Bind("orchestrator.max_parallel_builds", &options->max_parallel_builds);
  binder.Bind("orchestrator.poll_interval", &options->poll_interval);
  binder.Bind("orchestrator.settle", &options->settle);
  binder.Bind("orchestrator.default_timeout", &options->default_timeout);
  binder.Bind("orchestrator.peer_call_timeout", &options->peer_call_timeout);
  binder.Bind("orchestrator.tls_ca_file", &options->peer_tls.ca_file);
  binder.Bind("orchestrator.tls_cert_file", &options->peer_tls.cert_file);
  binder.Bind("orchestrator.tls_key_file", &options->peer_tls.key_file);
}

namespace {

// Owns the channels, the stage clients and the orchestrator the service adapts; Stop() interrupts
// running rollouts (they resume at the next start).
class OrchestratorComponent final : public Component {
 public:
  OrchestratorComponent(const OrchestratorOptions& options,
                        const std::shared_ptr<grpc::ChannelCredentials>& peers,
                        std::unique_ptr<orchestrator::RolloutStore> store,
                        orchestrator::OrchestratorMetrics metrics)
      : builder_(grpc::CreateChannel(options.builder_addr, peers)),
        registry_(grpc::CreateChannel(options.registry_sync_addr, peers)),
        publisher_(grpc::CreateChannel(options.manifest_publisher_addr, peers),
                   options.peer_call_timeout),
        cluster_(grpc::CreateChannel(options.cluster_watcher_addr, peers),
                 options.peer_call_timeout),
        orchestrator_(
            std::move(store), builder_, registry_, publisher_, cluster_,
            orchestrator::DeployDefaults{options.registry, options.gitops_repo,
                                         options.gitops_branch, options.gitops_path_prefix,
                                         options.namespace_},
            orchestrator::RunnerOptions{.max_parallel_builds = options.max_parallel_builds,
                                        .poll_interval = options.poll_interval,
                                        .default_timeout = options.default_timeout,
                                        .settle = options.settle},
            std::move(metrics)),
        service_(orchestrator_) {
    orchestrator_.Start();
  }
  std::vector<std::pair<std::string, grpc::Service*>> Services() override {
    return {{v1::OrchestratorService::service_full_name(), &service_}};
  }
  void Stop() override { orchestrator_.Stop(); }

 private:
  orchestrator::GrpcBuilder builder_;
  orchestrator::GrpcRegistry registry_;
  orchestrator::GrpcPublisher publisher_;
  orchestrator::GrpcCluster cluster_;
  orchestrator::Orchestrator orchestrator_;
  OrchestratorServiceImpl service_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Component>> MakeOrchestratorServices(
    const OrchestratorOptions& options, std::shared_ptr<prometheus::Registry> metrics) {
  if (options.max_parallel_builds < 1) {
    return absl::InvalidArgumentError("orchestrator.max_parallel_builds must be at least 1");
  }
  if (options.poll_interval <= absl::ZeroDuration() ||
      options.default_timeout <= absl::ZeroDuration() ||
      options.peer_call_timeout <= absl::ZeroDuration() || options.settle < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "orchestrator.poll_interval, default_timeout and peer_call_timeout must be positive, "
        "orchestrator.settle not negative");
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> peers =
      ClientCredentials(options.peer_tls);
  if (!peers.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("orchestrator.tls_*: ", peers.status().message()));
  }
  absl::StatusOr<std::unique_ptr<orchestrator::RolloutStore>> store =
      orchestrator::RolloutStore::Open({options.data_dir});
  if (!store.ok()) return store.status();
  orchestrator::OrchestratorMetrics hooks;
  if (metrics != nullptr) {
    auto& rollouts = prometheus::BuildCounter()
                         .Name("elfdeploy_rollouts_total")
                         .Help("Rollouts ended, by result.")
                         .Register(*metrics);
    for (const char* result : {"succeeded", "failed", "timed_out", "cancelled"}) {
      rollouts.Add({{"result", result}});  // every series exists from the start
    }
    auto& stages = prometheus::BuildHistogram()
                       .Name("elfdeploy_rollout_stage_seconds")
                       .Help("Time apps spent in each rollout stage.")
                       .Register(*metrics);
    auto& in_progress = prometheus::BuildGauge()
                            .Name("elfdeploy_rollouts_in_progress")
                            .Help("Rollouts running now.")
                            .Register(*metrics)
                            .Add({});
    const prometheus::Histogram::BucketBoundaries buckets = {0.1, 0.5, 1,   2.5, 5,  10,
                                                             30,  60,  120, 300, 900};
    hooks.finished = [&rollouts, &stages, buckets](const v1::Rollout& rollout) {
      std::string result = absl::AsciiStrToLower(v1::RolloutState_Name(rollout.state()));
      result = std::string(absl::StripPrefix(result, "rollout_state_"));
      rollouts.Add({{"result", result}}).Increment();
      for (const v1::AppRollout& app : rollout.apps()) {
        for (const v1::StageTiming& timing : app.stage_timings()) {
          if (!timing.has_end_time()) continue;
          std::string stage = absl::AsciiStrToLower(v1::Stage_Name(timing.stage()));
          stage = std::string(absl::StripPrefix(stage, "stage_"));
          double seconds = absl::ToDoubleSeconds(FromTimestamp(timing.end_time()) -
                                                 FromTimestamp(timing.start_time()));
          stages.Add({{"stage", stage}}, buckets).Observe(seconds);
        }
      }
    };
    hooks.in_progress = [&in_progress](int n) { in_progress.Set(n); };
  }
  return std::unique_ptr<Component>(std::make_unique<OrchestratorComponent>(
      options, *peers, *std::move(store), std::move(hooks)));
}

}  // namespace elfdeploy
