#include "services/registry_sync/registry_sync_service.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"

namespace elfdeploy {
namespace {

RequestCredential FromProto(const v1::RegistryCredentials& proto) {
  RequestCredential out;
  switch (proto.source_case()) {
    case v1::RegistryCredentials::kRef:
      out.kind = RequestCredential::Kind::kRef;
      out.ref = proto.ref();
      break;
    case v1::RegistryCredentials::kBasic:
      out.kind = RequestCredential::Kind::kBasic;
      out.credential.username = proto.basic().username();
      out.credential.password = Secret(proto.basic().password());
      break;
    case v1::RegistryCredentials::kIdentityToken:
      out.kind = RequestCredential::Kind::kIdentityToken;
      out.credential.identity_token = Secret(proto.identity_token());
      break;
    default:
      break;
  }
  return out;
}

absl::StatusOr<oci::CopyOptions> CopyOptionsFrom(bool all_platforms, const v1::Platform* platform) {
  oci::CopyOptions options;
  options.all_platforms = all_platforms;
  options.parallelism = 0;  // the service's configured value
  if (platform != nullptr && !platform->os().empty()) {
    options.platform.os = platform->os();
    options.platform.architecture = platform->architecture();
    options.platform.variant = platform->variant();
    if (options.platform.architecture.empty()) {
      return absl::InvalidArgumentError("platform.architecture is required with platform.os");
    }
  }
  return options;
}

v1::BlobAction ToProto(oci::BlobAction action) {
  switch (action) {
    case oci::BlobAction::kSkipped:
      return v1::BLOB_ACTION_SKIPPED;
    case oci::BlobAction::kMounted:
      return v1::BLOB_ACTION_MOUNTED;
    default:
      return v1::BLOB_ACTION_UPLOADED;
  }
}

void FillBlob(const oci::BlobEvent& event, v1::BlobProgress* blob) {
  blob->set_digest(event.blob.digest.ToString());
  blob->set_media_type(event.blob.media_type);
  blob->set_size_bytes(event.blob.size);
  blob->set_bytes_done(event.bytes);
  blob->set_action(ToProto(event.action));
  blob->set_done(true);
}

void FillPlatform(const oci::Platform& platform, v1::Platform* out) {
  out->set_os(platform.os);
  out->set_architecture(platform.architecture);
  out->set_variant(platform.variant);
}

}  // namespace

grpc::Status RegistrySyncServiceImpl::Copy(grpc::ServerContext* context,
                                           const v1::CopyRequest* request,
                                           grpc::ServerWriter<v1::CopyResponse>* writer) {
  absl::StatusOr<oci::CopyOptions> options = CopyOptionsFrom(
      request->all_platforms(), request->has_platform() ? &request->platform() : nullptr);
  if (!options.ok()) return ToGrpcStatus(options.status());
  oci::CopyObserver observer;
  observer.on_plan = [writer](const oci::CopyPlan& plan) {
    v1::CopyResponse event;
    event.mutable_started()->set_source_digest(plan.source_digest.ToString());
    event.mutable_started()->set_total_blobs(plan.total_blobs);
    event.mutable_started()->set_total_bytes(plan.total_bytes);
    writer->Write(event);
  };
  observer.on_blob = [writer](const oci::BlobEvent& blob) {
    v1::CopyResponse event;
    FillBlob(blob, event.mutable_blob());
    writer->Write(event);
  };
  observer.cancelled = [context] { return context->IsCancelled(); };
  absl::Time start = absl::Now();
  absl::StatusOr<oci::CopyResult> result = logic_->Copy(
      request->source(), request->destination(), FromProto(request->source_credentials()),
      FromProto(request->destination_credentials()), *options, observer);
  if (!result.ok()) return ToGrpcStatus(result.status());
  v1::CopyResponse final_event;
  v1::CopyResult* out = final_event.mutable_result();
  out->set_manifest_digest(result->manifest_digest.ToString());
  out->set_media_type(result->media_type);
  out->set_size_bytes(result->manifest_size);
  oci::TransportReference pinned = result->destination;
  if (pinned.kind == oci::TransportReference::Kind::kDocker) {
    pinned.image.digest = result->manifest_digest.ToString();
  }
  out->set_destination_reference(pinned.ToString());
  out->set_blobs_uploaded(result->blobs_transferred);
  out->set_blobs_skipped(result->blobs_skipped);
  out->set_blobs_mounted(result->blobs_mounted);
  out->set_bytes_transferred(result->bytes_transferred);
  *out->mutable_duration() = google::protobuf::util::TimeUtil::NanosecondsToDuration(
      absl::ToInt64Nanoseconds(absl::Now() - start));
  writer->Write(final_event);
  return grpc::Status::OK;
}

grpc::Status RegistrySyncServiceImpl::Resolve(grpc::ServerContext* /*context*/,
                                              const v1::ResolveRequest* request,
                                              v1::ResolveResponse* response) {
  std::optional<oci::Platform> platform;
  if (request->has_platform() && !request->platform().os().empty()) {
    platform = oci::Platform{request->platform().os(), request->platform().architecture(),
                             request->platform().variant(), ""};
  }
  absl::StatusOr<ResolveOutcome> outcome =
      logic_->Resolve(request->reference(), FromProto(request->credentials()), platform);
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  response->set_digest(outcome->image.descriptor.digest.ToString());
  response->set_media_type(outcome->image.descriptor.media_type);
  response->set_size_bytes(outcome->image.descriptor.size);
  response->set_canonical_reference(outcome->canonical_reference);
  for (const oci::Descriptor& d : outcome->image.manifests) {
    v1::ContentDescriptor* entry = response->add_manifests();
    entry->set_media_type(d.media_type);
    entry->set_digest(d.digest.ToString());
    entry->set_size_bytes(d.size);
    if (d.platform.has_value()) {
      FillPlatform(*d.platform, entry->mutable_platform());
      FillPlatform(*d.platform, response->add_platforms());
    }
  }
  if (outcome->platform_manifest.has_value()) {
    response->set_platform_digest(outcome->platform_manifest->digest.ToString());
  }
  return grpc::Status::OK;
}

grpc::Status RegistrySyncServiceImpl::Sync(grpc::ServerContext* context,
                                           const v1::SyncRequest* request,
                                           grpc::ServerWriter<v1::SyncResponse>* writer) {
  absl::StatusOr<oci::CopyOptions> options = CopyOptionsFrom(request->all_platforms(), nullptr);
  if (!options.ok()) return ToGrpcStatus(options.status());
  v1::SyncSummary summary;
  oci::CopyObserver observer;
  observer.on_blob = [writer](const oci::BlobEvent& blob) {
    v1::SyncResponse event;
    FillBlob(blob, event.mutable_blob());
    writer->Write(event);
  };
  observer.cancelled = [context] { return context->IsCancelled(); };
  absl::Time start = absl::Now();
  absl::Status status = logic_->Sync(
      request->source_repository(), request->destination_repository(), request->tag_filter(),
      FromProto(request->source_credentials()), FromProto(request->destination_credentials()),
      *options, request->dry_run(), observer, [&](const TagOutcome& tag) {
        v1::SyncResponse event;
        event.set_current_tag(tag.tag);
        v1::TagResult* out = event.mutable_tag();
        out->set_tag(tag.tag);
        out->set_digest(tag.digest);
        out->set_bytes_transferred(tag.bytes_transferred);
        out->set_error(tag.error);
        summary.set_tags_matched(summary.tags_matched() + 1);
        switch (tag.action) {
          case TagOutcome::Action::kCopied:
            out->set_action(v1::TAG_ACTION_COPIED);
            summary.set_tags_copied(summary.tags_copied() + 1);
            break;
          case TagOutcome::Action::kSkipped:
            out->set_action(v1::TAG_ACTION_SKIPPED);
            summary.set_tags_skipped(summary.tags_skipped() + 1);
            break;
          case TagOutcome::Action::kFailed:
            out->set_action(v1::TAG_ACTION_FAILED);
            summary.set_tags_failed(summary.tags_failed() + 1);
            break;
        }
        summary.set_bytes_transferred(summary.bytes_transferred() + tag.bytes_transferred);
        writer->Write(event);
      });
  if (!status.ok()) return ToGrpcStatus(status);
  *summary.mutable_duration() = google::protobuf::util::TimeUtil::NanosecondsToDuration(
      absl::ToInt64Nanoseconds(absl::Now() - start));
  v1::SyncResponse final_event;
  *final_event.mutable_summary() = summary;
  writer->Write(final_event);
  return grpc::Status::OK;
}

namespace {

class RegistrySyncComponent : public ServiceSet {
 public:
  explicit RegistrySyncComponent(std::shared_ptr<prometheus::Registry> registry)
      : metrics_(*registry), registry_(std::move(registry)) {}
  RegistryMetrics* metrics() { return &metrics_; }

 private:
  RegistryMetrics metrics_;
  std::shared_ptr<prometheus::Registry> registry_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Component>> MakeRegistrySyncComponent(
    const RegistrySyncOptions& options, const ComponentContext& context) {
  auto component = std::make_unique<RegistrySyncComponent>(context.metrics);
  absl::StatusOr<std::unique_ptr<RegistrySync>> logic =
      RegistrySync::Create(options, component->metrics());
  if (!logic.ok()) return logic.status();
  component->Add(v1::RegistrySyncService::service_full_name(),
                 std::make_unique<RegistrySyncServiceImpl>(*std::move(logic)));
  return std::unique_ptr<Component>(std::move(component));
}

}  // namespace elfdeploy
