#include "services/manifest_publisher/manifest_publisher_service.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"

namespace elfdeploy {
namespace {

using publisher::Change;

absl::StatusOr<publisher::PublishParams> ParamsFrom(
    const google::protobuf::RepeatedPtrField<v1::AppManifest>& apps, const v1::GitOpsTarget& target,
    const v1::ClusterDestination& destination, const std::string& message,
    const std::string& correlation_id, const ManifestPublisherServiceOptions& options) {
  if (target.url().empty()) return absl::InvalidArgumentError("target.url is required");
  if (destination.namespace_().empty()) {
    return absl::InvalidArgumentError("destination.namespace is required");
  }
  publisher::PublishParams params;
  for (const v1::AppManifest& app : apps) {
    publisher::AppInput in;
    in.name = app.name();
    in.group = app.group();
    in.image = app.image();
    in.deployment_yaml = app.deployment_yaml();
    in.service_yaml = app.service_yaml();
    in.configmap_yaml = app.configmap_yaml();
    in.port = app.port();
    in.config = {app.config().begin(), app.config().end()};
    in.match_images = {app.match_images().begin(), app.match_images().end()};
    in.namespace_ = app.namespace_();
    params.apps.push_back(std::move(in));
  }
  params.tree.path_prefix = target.path_prefix();
  params.tree.repo_url = target.argocd_repo_url().empty() ? target.url() : target.argocd_repo_url();
  params.tree.target_revision = target.branch().empty() ? "main" : target.branch();
  params.tree.namespace_ = destination.namespace_();
  if (!destination.server().empty()) params.tree.destination_server = destination.server();
  if (!destination.argocd_namespace().empty()) {
    params.tree.argocd_namespace = destination.argocd_namespace();
  }
  if (!destination.project().empty()) params.tree.project = destination.project();
  if (!destination.image_pull_secret().empty()) {
    params.tree.image_pull_secret = destination.image_pull_secret();
  }
  params.tree.no_image_pull_secret = destination.no_image_pull_secret();

  params.git.url = target.url();
  params.git.branch = target.branch().empty() ? "main" : target.branch();
  params.git.ca_file = options.git_ca_file;
  const v1::GitCredentials& credentials = target.credentials();
  switch (credentials.source_case()) {
    case v1::GitCredentials::kBasic:
      params.git.credentials.username = credentials.basic().username();
      params.git.credentials.password = Secret(credentials.basic().password());
      break;
    case v1::GitCredentials::kSshKey:
      params.git.credentials.username = credentials.ssh_key().username();
      params.git.credentials.ssh_private_key_path = credentials.ssh_key().private_key_path();
      params.git.credentials.ssh_passphrase = Secret(credentials.ssh_key().passphrase());
      break;
    case v1::GitCredentials::kRef:
      return absl::InvalidArgumentError(absl::StrCat(
          "target.credentials.ref \"", credentials.ref(),
          "\": named credentials are not configured; the service's own git.* credentials apply "
          "when a request brings none"));
    default:
      params.git.credentials.username = options.git_username;
      params.git.credentials.password = options.git_password;
      params.git.credentials.ssh_private_key_path = options.git_ssh_key;
      params.git.credentials.ssh_passphrase = options.git_ssh_passphrase;
  }
  params.message = message;
  params.correlation_id = correlation_id;
  return params;
}

v1::FileChangeType ToProto(Change change) {
  switch (change) {
    case Change::kAdded:
      return v1::FILE_CHANGE_TYPE_ADDED;
    case Change::kModified:
      return v1::FILE_CHANGE_TYPE_MODIFIED;
    case Change::kDeleted:
      return v1::FILE_CHANGE_TYPE_DELETED;
    case Change::kUnchanged:
      return v1::FILE_CHANGE_TYPE_UNCHANGED;
  }
  return v1::FILE_CHANGE_TYPE_UNSPECIFIED;
}

void FillApplications(const std::vector<std::pair<std::string, std::string>>& applications,
                      const publisher::TargetInput& tree,
                      google::protobuf::RepeatedPtrField<v1::PublishedApplication>* out) {
  for (const auto& [path, group] : applications) {
    v1::PublishedApplication* app = out->Add();
    app->set_path(path);
    app->set_group(group);
    v1::ApplicationDefinition* def = app->mutable_application();
    def->set_name(absl::StrCat("elf-", group));
    def->set_namespace_(tree.argocd_namespace);
    v1::ApplicationSpec* spec = def->mutable_spec();
    spec->set_project(tree.project);
    spec->set_repo_url(tree.repo_url);
    spec->set_target_revision(tree.target_revision);
    spec->set_path(
        absl::StrCat(tree.path_prefix.empty() ? "" : tree.path_prefix + "/", "manifests/", group));
    spec->set_destination_server(tree.destination_server);
    spec->set_destination_namespace(tree.namespace_);
    spec->set_automated(true);
    spec->set_prune(true);
    spec->set_self_heal(true);
    spec->add_sync_options("CreateNamespace=true");
  }
}

}  // namespace

void BindManifestPublisherConfig(ConfigBinder& binder, ManifestPublisherServiceOptions* options) {
  binder.Bind("publisher.cache_dir", &options->cache_dir);
  binder.Bind("publisher.max_attempts", &options->max_attempts);
  binder.Bind("publisher.author_name", &options->author_name);
  binder.Bind("publisher.author_email", &options->author_email);
  binder.Bind("git.username", &options->git_username);
  binder.Bind("git.password", &options->git_password);
  binder.Bind("git.ssh_key", &options->git_ssh_key);
  binder.Bind("git.ssh_passphrase", &options->git_ssh_passphrase);
  binder.Bind("git.ca_file", &options->git_ca_file);
}

grpc::Status ManifestPublisherServiceImpl::Render(grpc::ServerContext* /*context*/,
                                                  const v1::RenderRequest* request,
                                                  v1::RenderResponse* response) {
  absl::StatusOr<publisher::PublishParams> params =
      ParamsFrom(request->apps(), request->target(), request->destination(), request->message(),
                 request->correlation_id(), options_);
  if (!params.ok()) return ToGrpcStatus(params.status());
  absl::StatusOr<publisher::RenderOutcome> outcome = logic_->Render(*params);
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  for (const publisher::FileResult& file : outcome->files) {
    v1::RenderedFile* out = response->add_files();
    out->set_path(file.path);
    out->set_content(file.content);
    out->set_change(ToProto(file.change));
  }
  response->set_diff(outcome->diff);
  response->set_base_commit(outcome->base_commit);
  response->set_no_op(outcome->no_op);
  FillApplications(outcome->applications, params->tree, response->mutable_applications());
  return grpc::Status::OK;
}

grpc::Status ManifestPublisherServiceImpl::Publish(grpc::ServerContext* /*context*/,
                                                   const v1::PublishRequest* request,
                                                   v1::PublishResponse* response) {
  absl::StatusOr<publisher::PublishParams> params =
      ParamsFrom(request->apps(), request->target(), request->destination(), request->message(),
                 request->correlation_id(), options_);
  if (!params.ok()) return ToGrpcStatus(params.status());
  params->author_name = request->author().name();
  params->author_email = request->author().email();
  absl::StatusOr<publisher::PublishResult> result = logic_->Publish(*params);
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_commit(result->git.commit);
  response->set_no_op(result->git.no_op);
  response->set_branch(params->git.branch);
  response->set_parent_commit(result->git.parent);
  for (const publisher::FileResult& file : result->changed) {
    v1::RenderedFile* out = response->add_changed_files();
    out->set_path(file.path);
    out->set_change(ToProto(file.change));
  }
  FillApplications(result->applications, params->tree, response->mutable_applications());
  response->set_push_attempts(result->git.attempts);
  return grpc::Status::OK;
}

namespace {

class PublisherComponent : public ServiceSet {
 public:
  explicit PublisherComponent(std::shared_ptr<prometheus::Registry> registry)
      : metrics_(*registry), registry_(std::move(registry)) {}
  publisher::PublishMetrics* metrics() { return &metrics_; }

 private:
  publisher::PublishMetrics metrics_;
  std::shared_ptr<prometheus::Registry> registry_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Component>> MakeManifestPublisherComponent(
    const ManifestPublisherServiceOptions& options, const ComponentContext& context) {
  auto component = std::make_unique<PublisherComponent>(context.metrics);
  publisher::ManifestPublisherOptions logic_options;
  logic_options.git.cache_dir = options.cache_dir;
  logic_options.git.max_attempts = options.max_attempts;
  logic_options.author_name = options.author_name;
  logic_options.author_email = options.author_email;
  component->Add(v1::ManifestPublisherService::service_full_name(),
                 std::make_unique<ManifestPublisherServiceImpl>(
                     options, std::make_unique<publisher::ManifestPublisher>(
                                  std::move(logic_options), component->metrics())));
  return std::unique_ptr<Component>(std::move(component));
}

}  // namespace elfdeploy
