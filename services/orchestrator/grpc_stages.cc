#include "services/orchestrator/grpc_stages.h"

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"

namespace elfdeploy::orchestrator {
namespace {

constexpr char kDockerTransport[] = "docker://";

// Applies `timeout` as the call's deadline unless it is infinite.
void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// The call's status as absl::Status, its message prefixed with "<service>.<method>: ".
absl::Status CallError(absl::string_view method, const grpc::Status& status) {
  absl::Status converted = FromGrpcStatus(status);
  return absl::Status(converted.code(), absl::StrCat(method, ": ", converted.message()));
}

absl::Status Cancelled(absl::string_view method) {
  return absl::CancelledError(absl::StrCat(method, ": cancelled"));
}

std::string DockerReference(const std::string& image) {
  if (absl::StartsWith(image, kDockerTransport)) return image;
  return absl::StrCat(kDockerTransport, image);
}

// Polls `cancelled` on its own thread while a call runs and cancels the call once it is true.
class CancelWatch {
 public:
  CancelWatch(grpc::ClientContext* context, CancelledFn cancelled)
      : context_(context), cancelled_(std::move(cancelled)) {
    if (cancelled_) thread_ = std::thread([this] { Run(); });
  }
  CancelWatch(const CancelWatch&) = delete;
  CancelWatch& operator=(const CancelWatch&) = delete;
  ~CancelWatch() { Stop(); }

  // Stops watching; afterwards fired() is stable.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  // True when the watch cancelled the call. Call after Stop().
  bool fired() const { return fired_; }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!done_) {
      if (cancelled_()) {
        fired_ = true;
        context_->TryCancel();
        return;
      }
      cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
  }

  grpc::ClientContext* context_;
  CancelledFn cancelled_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// GrpcBuilder
// ---------------------------------------------------------------------------------------------

GrpcBuilder::GrpcBuilder(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : stub_(v1::BuilderService::NewStub(std::move(channel))), timeout_(timeout) {}

std::string GrpcBuilder::RefName(const DiscoveredApp& app, const std::string& tag) {
  if (absl::StrContains(tag, ':')) return tag;
  return absl::StrCat(app.group, "/", app.name, ":", tag);
}

absl::StatusOr<BuildResult> GrpcBuilder::Build(const DiscoveredApp& app, const std::string& tag,
                                               bool no_cache, const ProgressFn& progress,
                                               const CancelledFn& cancelled) {
  constexpr char kMethod[] = "BuilderService.Build";
  if (cancelled && cancelled()) return Cancelled(kMethod);

  v1::BuildRequest request;
  request.set_context_dir(app.dir);
  request.set_dockerfile(app.dockerfile);
  request.add_tags(RefName(app, tag));
  for (const auto& [key, value] : app.build_args) (*request.mutable_build_args())[key] = value;
  request.set_no_cache(no_cache);

  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  CancelWatch watch(&context, cancelled);
  std::unique_ptr<grpc::ClientReader<v1::BuildResponse>> reader = stub_->Build(&context, request);

  Progress state;
  int64_t written = 0;  // layer bytes of the completed steps
  bool any_miss = false;
  std::optional<v1::BuildResult> result;
  v1::BuildResponse response;
  while (reader->Read(&response)) {
    switch (response.event_case()) {
      case v1::BuildResponse::kQueued:
        state.message = absl::StrCat("queued (position ", response.queued().position(), ")");
        break;
      case v1::BuildResponse::kStarted:
        state.steps_total = response.started().total_steps();
        state.message = "started";
        break;
      case v1::BuildResponse::kPull:
        state.bytes_done = written + response.pull().bytes_done();
        state.bytes_total = written + response.pull().bytes_total();
        state.message =
            absl::StrCat("pull ", response.pull().reference(), " ", response.pull().digest(),
                         response.pull().cached() ? " (cached)" : "");
        break;
      case v1::BuildResponse::kStepStarted:
        state.steps_done = response.step_started().step() - 1;
        if (response.step_started().total_steps() > 0) {
          state.steps_total = response.step_started().total_steps();
        }
        state.message = response.step_started().instruction();
        break;
      case v1::BuildResponse::kStepCompleted:
        state.steps_done = response.step_completed().step();
        written += response.step_completed().bytes_written();
        state.bytes_done = written;
        state.bytes_total = 0;
        if (response.step_completed().cache() == v1::CACHE_RESULT_MISS) any_miss = true;
        break;
      case v1::BuildResponse::kLog:
        state.message = response.log().line();
        break;
      case v1::BuildResponse::kWarning:
        state.message = absl::StrCat("warning: ", response.warning().message());
        break;
      case v1::BuildResponse::kResult:
        result = response.result();
        break;
      case v1::BuildResponse::EVENT_NOT_SET:
        continue;
    }
    if (result.has_value()) continue;
    if (progress) progress(state);
  }
  grpc::Status status = reader->Finish();
  watch.Stop();
  if (!status.ok()) return watch.fired() ? Cancelled(kMethod) : CallError(kMethod, status);
  if (!result.has_value()) {
    return absl::InternalError(absl::StrCat(kMethod, ": stream ended without a result"));
  }
  if (result->layout_reference().empty() || result->manifest_digest().empty()) {
    return absl::InternalError(
        absl::StrCat(kMethod, ": result without layout reference or manifest digest"));
  }
  BuildResult out;
  out.layout_reference = result->layout_reference();
  out.digest = result->manifest_digest();
  out.cached = !no_cache && !any_miss && result->bytes_written() == 0;
  out.source_revision = result->source_revision();
  return out;
}

// ---------------------------------------------------------------------------------------------
// GrpcRegistry
// ---------------------------------------------------------------------------------------------

GrpcRegistry::GrpcRegistry(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : stub_(v1::RegistrySyncService::NewStub(std::move(channel))), timeout_(timeout) {}

absl::StatusOr<PushResult> GrpcRegistry::Push(const std::string& layout_reference,
                                              const std::string& image,
                                              const v1::RegistryTarget& target,
                                              const ProgressFn& progress,
                                              const CancelledFn& cancelled) {
  constexpr char kMethod[] = "RegistrySyncService.Copy";
  if (cancelled && cancelled()) return Cancelled(kMethod);

  v1::CopyRequest request;
  request.set_source(layout_reference);
  request.set_destination(DockerReference(image));
  if (target.has_credentials()) {
    *request.mutable_destination_credentials() = target.credentials();
  }

  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  CancelWatch watch(&context, cancelled);
  std::unique_ptr<grpc::ClientReader<v1::CopyResponse>> reader = stub_->Copy(&context, request);

  Progress state;
  std::map<std::string, int64_t> blob_bytes;  // digest -> bytes transferred so far
  std::map<std::string, bool> blob_done;
  std::optional<v1::CopyResult> result;
  v1::CopyResponse response;
  while (reader->Read(&response)) {
    switch (response.event_case()) {
      case v1::CopyResponse::kStarted:
        state.bytes_total = response.started().total_bytes();
        state.steps_total = response.started().total_blobs();
        state.message = "started";
        break;
      case v1::CopyResponse::kBlob: {
        const v1::BlobProgress& blob = response.blob();
        int64_t& bytes = blob_bytes[blob.digest()];
        state.bytes_done += blob.bytes_done() - bytes;
        bytes = blob.bytes_done();
        if (blob.done() && !blob_done[blob.digest()]) {
          blob_done[blob.digest()] = true;
          ++state.steps_done;
        }
        state.message = blob.digest();
        break;
      }
      case v1::CopyResponse::kResult:
        result = response.result();
        continue;
      case v1::CopyResponse::EVENT_NOT_SET:
        continue;
    }
    if (progress) progress(state);
  }
  grpc::Status status = reader->Finish();
  watch.Stop();
  if (!status.ok()) return watch.fired() ? Cancelled(kMethod) : CallError(kMethod, status);
  if (!result.has_value() || result->manifest_digest().empty()) {
    return absl::InternalError(absl::StrCat(kMethod, ": stream ended without a result"));
  }
  PushResult out;
  out.digest = result->manifest_digest();
  out.bytes_pushed = std::max(state.bytes_done, result->bytes_transferred());
  return out;
}

absl::StatusOr<std::string> GrpcRegistry::Resolve(const std::string& image,
                                                  const v1::RegistryTarget& target) {
  v1::ResolveRequest request;
  request.set_reference(DockerReference(image));
  if (target.has_credentials()) *request.mutable_credentials() = target.credentials();
  v1::ResolveResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->Resolve(&context, request, &response);
  if (!status.ok()) return CallError("RegistrySyncService.Resolve", status);
  return response.digest();
}

// ---------------------------------------------------------------------------------------------
// GrpcPublisher
// ---------------------------------------------------------------------------------------------

GrpcPublisher::GrpcPublisher(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : stub_(v1::ManifestPublisherService::NewStub(std::move(channel))), timeout_(timeout) {}

namespace {

void AddApps(const std::vector<PublishApp>& apps,
             google::protobuf::RepeatedPtrField<v1::AppManifest>* out) {
  for (const PublishApp& app : apps) {
    v1::AppManifest* manifest = out->Add();
    manifest->set_name(app.name);
    manifest->set_group(app.group);
    manifest->set_image(app.image);
    manifest->set_deployment_yaml(app.deployment_yaml);
  }
}

void AddApplications(const google::protobuf::RepeatedPtrField<v1::PublishedApplication>& in,
                     PublishResult* out) {
  for (const v1::PublishedApplication& application : in) {
    out->applications.emplace_back(application.application().name(), application.group());
    out->definitions.push_back(application.application());
  }
}

}  // namespace

absl::StatusOr<PublishResult> GrpcPublisher::Publish(const std::vector<PublishApp>& apps,
                                                     const v1::GitOpsTarget& gitops,
                                                     const v1::ClusterDestination& destination,
                                                     const std::string& correlation_id,
                                                     const std::string& message) {
  v1::PublishRequest request;
  AddApps(apps, request.mutable_apps());
  *request.mutable_target() = gitops;
  *request.mutable_destination() = destination;
  request.set_correlation_id(correlation_id);
  request.set_message(message);

  v1::PublishResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->Publish(&context, request, &response);
  if (!status.ok()) return CallError("ManifestPublisherService.Publish", status);
  PublishResult out;
  out.commit = response.commit();
  out.no_op = response.no_op();
  out.parent = response.parent_commit();
  AddApplications(response.applications(), &out);
  return out;
}

absl::StatusOr<PublishResult> GrpcPublisher::Applications(
    const std::vector<PublishApp>& apps, const v1::GitOpsTarget& gitops,
    const v1::ClusterDestination& destination) {
  v1::RenderRequest request;
  AddApps(apps, request.mutable_apps());
  *request.mutable_target() = gitops;
  *request.mutable_destination() = destination;

  v1::RenderResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->Render(&context, request, &response);
  if (!status.ok()) return CallError("ManifestPublisherService.Render", status);
  PublishResult out;
  AddApplications(response.applications(), &out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// GrpcCluster
// ---------------------------------------------------------------------------------------------

GrpcCluster::GrpcCluster(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : stub_(v1::ClusterWatcherService::NewStub(std::move(channel))), timeout_(timeout) {}

absl::Status GrpcCluster::ApplyApplication(const std::string& cluster,
                                           const v1::ApplicationDefinition& application) {
  v1::ApplyApplicationRequest request;
  request.set_cluster(cluster);
  *request.mutable_application() = application;
  v1::ApplyApplicationResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->ApplyApplication(&context, request, &response);
  if (!status.ok()) return CallError("ClusterWatcherService.ApplyApplication", status);
  return absl::OkStatus();
}

absl::Status GrpcCluster::EnsureImagePullSecret(const std::string& cluster, const std::string& ns,
                                                const std::string& name,
                                                const std::string& registry,
                                                const v1::RegistryCredentials& credentials) {
  v1::EnsureImagePullSecretRequest request;
  request.set_cluster(cluster);
  request.set_namespace_(ns);
  request.set_name(name);
  request.set_registry(registry);
  *request.mutable_credentials() = credentials;
  request.set_create_namespace(true);
  v1::EnsureImagePullSecretResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->EnsureImagePullSecret(&context, request, &response);
  if (!status.ok()) return CallError("ClusterWatcherService.EnsureImagePullSecret", status);
  return absl::OkStatus();
}

absl::Status GrpcCluster::Refresh(const std::string& cluster, const std::string& application) {
  v1::RefreshRequest request;
  request.set_cluster(cluster);
  request.set_name(application);
  v1::RefreshResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->Refresh(&context, request, &response);
  if (!status.ok()) return CallError("ClusterWatcherService.Refresh", status);
  return absl::OkStatus();
}

absl::StatusOr<v1::DiagnoseResponse> GrpcCluster::Diagnose(const v1::DiagnoseRequest& request) {
  v1::DiagnoseResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout_);
  grpc::Status status = stub_->Diagnose(&context, request, &response);
  if (!status.ok()) return CallError("ClusterWatcherService.Diagnose", status);
  return response;
}

}  // namespace elfdeploy::orchestrator
