#include "services/builder/builder_service.h"

#include <google/protobuf/util/time_util.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/builder/scaffold.h"
#include "services/common/grpc_status.h"
#include "services/common/log.h"

namespace elfdeploy {
namespace {

using google::protobuf::util::TimeUtil;

v1::AppKind KindToProto(const std::string& kind) {
  if (kind == "team") return v1::APP_KIND_TEAM;
  if (kind == "mcp") return v1::APP_KIND_MCP;
  return v1::APP_KIND_UNSPECIFIED;
}

void SpecToProto(const builder::AppSpec& spec, v1::AppConfig* app) {
  app->set_name(spec.name);
  app->set_kind(KindToProto(spec.kind));
  app->set_port(spec.port);
  for (const auto& [k, v] : spec.env) (*app->mutable_env())[k] = v;
  for (const std::string& c : spec.command) app->add_command(c);
  if (!spec.cpu_request.empty()) (*app->mutable_requests())["cpu"] = spec.cpu_request;
  if (!spec.memory_request.empty()) (*app->mutable_requests())["memory"] = spec.memory_request;
  if (!spec.cpu_limit.empty()) (*app->mutable_limits())["cpu"] = spec.cpu_limit;
  if (!spec.memory_limit.empty()) (*app->mutable_limits())["memory"] = spec.memory_limit;
  app->set_image(spec.image);
  app->set_replicas(spec.replicas);
  app->set_namespace_(spec.namespace_);
  app->set_image_pull_secret(spec.image_pull_secret);
  app->set_health_path(spec.health_path);
}

absl::StatusOr<builder::AppSpec> SpecFromProto(const v1::AppConfig& app) {
  builder::AppSpec spec;
  spec.name = app.name();
  switch (app.kind()) {
    case v1::APP_KIND_TEAM:
      spec.kind = "team";
      break;
    case v1::APP_KIND_MCP:
      spec.kind = "mcp";
      break;
    default:
      return absl::InvalidArgumentError("app.kind must be APP_KIND_TEAM or APP_KIND_MCP");
  }
  if (app.port() != 0) spec.port = app.port();
  spec.env = {app.env().begin(), app.env().end()};
  spec.command = {app.command().begin(), app.command().end()};
  if (auto it = app.requests().find("cpu"); it != app.requests().end())
    spec.cpu_request = it->second;
  if (auto it = app.requests().find("memory"); it != app.requests().end()) {
    spec.memory_request = it->second;
  }
  if (auto it = app.limits().find("cpu"); it != app.limits().end()) spec.cpu_limit = it->second;
  if (auto it = app.limits().find("memory"); it != app.limits().end())
    spec.memory_limit = it->second;
  spec.image = app.image();
  if (app.replicas() > 0) spec.replicas = app.replicas();
  if (!app.namespace_().empty()) spec.namespace_ = app.namespace_();
  if (!app.image_pull_secret().empty()) spec.image_pull_secret = app.image_pull_secret();
  if (!app.health_path().empty()) spec.health_path = app.health_path();
  return spec;
}

}  // namespace

void BindBuilderConfig(ConfigBinder& binder, BuilderServiceOptions* options) {
  binder.Bind("builder.store_dir", &options->builder.store_dir);
  binder.Bind("builder.source_date_epoch", &options->builder.source_date_epoch);
  binder.Bind("builder.compression_level", &options->builder.compression_level);
  binder.Bind("builder.run_engine", &options->builder.run_engine);
  binder.Bind("builder.run_engine_args", &options->builder.run_engine_args);
  binder.Bind("builder.max_parallel_builds", &options->builder.max_parallel_builds);
  binder.Bind("builder.max_file_size", &options->builder.context.max_file_size);
  binder.Bind("builder.max_context_size", &options->builder.context.max_total_size);
  binder.Bind("registry.auth_file", &options->auth_file);
  binder.Bind("registry.insecure", &options->insecure_registries);
  binder.Bind("registry.ca_file", &options->ca_file);
}

grpc::Status BuilderServiceImpl::Build(grpc::ServerContext* /*context*/,
                                       const v1::BuildRequest* request,
                                       grpc::ServerWriter<v1::BuildResponse>* writer) {
  if (request->has_platform() && !request->platform().os().empty() &&
      (request->platform().os() != "linux" || request->platform().architecture() != "amd64")) {
    return ToGrpcStatus(absl::InvalidArgumentError("only linux/amd64 images can be built"));
  }
  if (!request->registry_credentials().empty()) {
    return ToGrpcStatus(absl::UnimplementedError(
        "registry_credentials is not implemented yet: configure FROM credentials in the "
        "builder's registry.auth_file"));
  }
  builder::BuildParams params;
  params.context_dir = request->context_dir();
  params.dockerfile = request->dockerfile();
  params.tags = {request->tags().begin(), request->tags().end()};
  params.build_args = {request->build_args().begin(), request->build_args().end()};
  params.no_cache = request->no_cache();
  params.target = request->target();
  params.labels = {request->labels().begin(), request->labels().end()};
  if (request->has_source_date_epoch()) params.source_date_epoch = request->source_date_epoch();
  params.correlation_id = request->correlation_id();

  int cached_layers = 0;
  int64_t bytes_written = 0;
  builder::BuildObserver observer;
  observer.queued = [writer](int position) {
    v1::BuildResponse event;
    event.mutable_queued()->set_position(position);
    writer->Write(event);
  };
  observer.started = [writer, &params](const std::string& id, int total, const std::string& file) {
    log::Info("build started", {{"build_id", id},
                                {"context", params.context_dir},
                                {"correlation_id", params.correlation_id}});
    v1::BuildResponse event;
    event.mutable_started()->set_build_id(id);
    event.mutable_started()->set_total_steps(total);
    event.mutable_started()->set_dockerfile_path(file);
    writer->Write(event);
  };
  observer.pull = [writer](const std::string& ref, const oci::Descriptor& blob, bool cached) {
    v1::BuildResponse event;
    v1::BuildPull* pull = event.mutable_pull();
    pull->set_reference(ref);
    pull->set_digest(blob.digest.ToString());
    pull->set_bytes_total(blob.size);
    pull->set_bytes_done(cached ? 0 : blob.size);
    pull->set_cached(cached);
    writer->Write(event);
  };
  observer.step_started = [writer](int step, int total, const std::string& stage, int line,
                                   const std::string& instruction) {
    v1::BuildResponse event;
    v1::BuildStepStarted* s = event.mutable_step_started();
    s->set_step(step);
    s->set_total_steps(total);
    s->set_stage(stage);
    s->set_line(line);
    s->set_instruction(instruction);
    writer->Write(event);
  };
  observer.step_completed = [&](int step, builder::BuildObserver::Cache cache,
                                const std::string& layer, int64_t bytes, absl::Duration elapsed) {
    v1::BuildResponse event;
    v1::BuildStepCompleted* s = event.mutable_step_completed();
    s->set_step(step);
    switch (cache) {
      case builder::BuildObserver::Cache::kHit:
        s->set_cache(v1::CACHE_RESULT_HIT);
        ++cached_layers;
        break;
      case builder::BuildObserver::Cache::kMiss:
        s->set_cache(v1::CACHE_RESULT_MISS);
        break;
      case builder::BuildObserver::Cache::kNotApplicable:
        s->set_cache(v1::CACHE_RESULT_NOT_APPLICABLE);
        break;
    }
    s->set_layer_digest(layer);
    s->set_bytes_written(bytes);
    bytes_written += bytes;
    *s->mutable_duration() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(elapsed));
    writer->Write(event);
  };
  observer.log = [writer](int step, bool stderr_stream, const std::string& line) {
    v1::BuildResponse event;
    event.mutable_log()->set_step(step);
    event.mutable_log()->set_stream(stderr_stream ? v1::LOG_STREAM_STDERR : v1::LOG_STREAM_STDOUT);
    event.mutable_log()->set_line(line);
    writer->Write(event);
  };
  observer.warning = [writer](int line, const std::string& message) {
    v1::BuildResponse event;
    event.mutable_warning()->set_line(line);
    event.mutable_warning()->set_message(message);
    writer->Write(event);
  };

  absl::Time start = absl::Now();
  absl::StatusOr<builder::BuildOutput> output = builder_->Build(params, observer);
  if (!output.ok()) return ToGrpcStatus(output.status());
  v1::BuildResponse event;
  v1::BuildResult* result = event.mutable_result();
  result->set_manifest_digest(output->manifest.digest.ToString());
  result->set_manifest_media_type(output->manifest.media_type);
  result->set_config_digest(output->config.digest.ToString());
  for (const oci::Descriptor& layer : output->layers) {
    v1::ContentDescriptor* d = result->add_layers();
    d->set_media_type(layer.media_type);
    d->set_digest(layer.digest.ToString());
    d->set_size_bytes(layer.size);
  }
  result->set_size_bytes(output->size);
  result->set_layout_reference(output->layout_reference);
  for (const std::string& tag : output->tags) result->add_tags(tag);
  result->mutable_platform()->set_os("linux");
  result->mutable_platform()->set_architecture("amd64");
  result->set_cached_layers(cached_layers);
  result->set_bytes_written(bytes_written);
  result->set_source_revision(output->source_revision);
  result->set_source_url(output->source_url);
  *result->mutable_created_time() = TimeUtil::SecondsToTimestamp(output->created_epoch);
  *result->mutable_duration() =
      TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(absl::Now() - start));
  writer->Write(event);
  return grpc::Status::OK;
}

grpc::Status BuilderServiceImpl::Scaffold(grpc::ServerContext* /*context*/,
                                          const v1::ScaffoldRequest* request,
                                          v1::ScaffoldResponse* response) {
  builder::ScaffoldOptions options;
  options.app_dir = request->app_dir();
  options.overwrite = request->overwrite();
  options.dry_run = request->dry_run();
  if (request->has_app()) {
    absl::StatusOr<builder::AppSpec> spec = SpecFromProto(request->app());
    if (!spec.ok()) return ToGrpcStatus(spec.status());
    options.spec = *std::move(spec);
  }
  absl::StatusOr<builder::AppSpec> resolved =
      options.spec.has_value() ? builder::ResolveAppSpec(options.app_dir, *options.spec)
                               : builder::LoadAppSpec(options.app_dir);
  if (!resolved.ok()) return ToGrpcStatus(resolved.status());
  absl::StatusOr<std::vector<builder::ScaffoldFile>> files = builder::Scaffold(options);
  if (!files.ok()) return ToGrpcStatus(files.status());
  SpecToProto(*resolved, response->mutable_app());
  for (const builder::ScaffoldFile& file : *files) {
    v1::ScaffoldFile* out = response->add_files();
    out->set_path(file.path);
    out->set_content(file.content);
    switch (file.action) {
      case builder::ScaffoldFile::Action::kCreated:
        out->set_action(v1::SCAFFOLD_ACTION_CREATED);
        break;
      case builder::ScaffoldFile::Action::kOverwritten:
        out->set_action(v1::SCAFFOLD_ACTION_OVERWRITTEN);
        break;
      case builder::ScaffoldFile::Action::kKept:
        out->set_action(v1::SCAFFOLD_ACTION_KEPT);
        break;
    }
  }
  return grpc::Status::OK;
}

namespace {

class BuilderComponent : public ServiceSet {
 public:
  std::unique_ptr<oci::Registry> registry;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Component>> MakeBuilderComponent(
    const BuilderServiceOptions& options, const ComponentContext& /*context*/) {
  absl::StatusOr<oci::CredentialStore> credentials = oci::CredentialStore::LoadDefault(
      options.auth_file, [](const char* name) { return std::getenv(name); });
  if (!credentials.ok()) return credentials.status();
  auto component = std::make_unique<BuilderComponent>();
  oci::RegistryClientOptions client;
  client.credentials = *std::move(credentials);
  client.insecure_registries = options.insecure_registries;
  client.ca_file = options.ca_file;
  component->registry = oci::NewRegistryClient(std::move(client));
  builder::BuilderOptions builder_options = options.builder;
  builder_options.registry = component->registry.get();
  absl::StatusOr<std::unique_ptr<builder::Builder>> builder =
      builder::Builder::Create(std::move(builder_options));
  if (!builder.ok()) return builder.status();
  component->Add(v1::BuilderService::service_full_name(),
                 std::make_unique<BuilderServiceImpl>(*std::move(builder)));
  return std::unique_ptr<Component>(std::move(component));
}

}  // namespace elfdeploy
