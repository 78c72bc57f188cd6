#include "services/registry_sync/registry_sync.h"

#include <cstdlib>
#include <regex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace elfdeploy {

void BindRegistrySyncConfig(ConfigBinder& binder, RegistrySyncOptions* options) {
  binder.Bind("registry.auth_file", &options->auth_file);
  binder.Bind("registry.login.name", &options->login_name);
  binder.Bind("registry.login.registry", &options->login_registry);
  binder.Bind("registry.login.username", &options->login_username);
  binder.Bind("registry.login.password", &options->login_password);
  binder.Bind("registry.insecure", &options->insecure_registries);
  binder.Bind("registry.ca_file", &options->ca_file);
  binder.Bind("registry.parallelism", &options->parallelism);
  binder.Bind("registry.chunk_size", &options->chunk_size);
  binder.Bind("registry.max_attempts", &options->max_attempts);
  binder.Bind("registry.spool_dir", &options->spool_dir);
}

RegistryMetrics::RegistryMetrics(prometheus::Registry& registry)
    : bytes_pushed_(prometheus::BuildCounter()
                        .Name("elfdeploy_registry_bytes_pushed_total")
                        .Help("Blob bytes uploaded to registries.")
                        .Register(registry)
                        .Add({})),
      blobs_(prometheus::BuildCounter()
                 .Name("elfdeploy_registry_blobs_total")
                 .Help("Blobs handled by copies, by result (uploaded, skipped, mounted).")
                 .Register(registry)),
      copy_seconds_(
          prometheus::BuildHistogram()
              .Name("elfdeploy_registry_copy_seconds")
              .Help("Duration of successful image copies.")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                                               30, 60, 120, 300})),
      requests_(prometheus::BuildCounter()
                    .Name("elfdeploy_registry_requests_total")
                    .Help("HTTP requests to registries and token servers, by status code.")
                    .Register(registry)) {
  for (const char* result : {"uploaded", "skipped", "mounted"}) blobs_.Add({{"result", result}});
}

void RegistryMetrics::Blob(const oci::BlobEvent& event) {
  switch (event.action) {
    case oci::BlobAction::kUploaded:
      blobs_.Add({{"result", "uploaded"}}).Increment();
      bytes_pushed_.Increment(static_cast<double>(event.bytes));
      break;
    case oci::BlobAction::kSkipped:
      blobs_.Add({{"result", "skipped"}}).Increment();
      break;
    case oci::BlobAction::kMounted:
      blobs_.Add({{"result", "mounted"}}).Increment();
      break;
    default:
      break;  // downloads into layouts are not pushes
  }
}

void RegistryMetrics::Response(int status) {
  requests_.Add({{"code", absl::StrCat(status)}}).Increment();
}

void RegistryMetrics::CopyDone(absl::Duration elapsed) {
  copy_seconds_.Observe(absl::ToDoubleSeconds(elapsed));
}

absl::StatusOr<std::unique_ptr<RegistrySync>> RegistrySync::Create(RegistrySyncOptions options,
                                                                   RegistryMetrics* metrics) {
  absl::StatusOr<oci::CredentialStore> file = oci::CredentialStore::LoadDefault(
      options.auth_file, [](const char* name) { return std::getenv(name); });
  if (!file.ok()) return file.status();
  oci::CredentialStore credentials;
  if (!options.login_registry.empty()) {
    credentials.Set(options.login_registry,
                    oci::RegistryCredential{options.login_username, options.login_password, {}});
  }
  credentials.Merge(*file);
  return std::unique_ptr<RegistrySync>(
      new RegistrySync(std::move(options), std::move(credentials), metrics));
}

RegistrySync::RegistrySync(RegistrySyncOptions options, oci::CredentialStore credentials,
                           RegistryMetrics* metrics)
    : options_(std::move(options)), credentials_(std::move(credentials)), metrics_(metrics) {
  shared_ = oci::NewRegistryClient(ClientOptions(credentials_));
}

oci::RegistryClientOptions RegistrySync::ClientOptions(oci::CredentialStore credentials) const {
  oci::RegistryClientOptions client;
  client.credentials = std::move(credentials);
  client.insecure_registries = options_.insecure_registries;
  client.ca_file = options_.ca_file;
  client.max_attempts = options_.max_attempts;
  client.chunk_size = options_.chunk_size;
  if (metrics_ != nullptr) {
    RegistryMetrics* metrics = metrics_;
    client.on_response = [metrics](int status) { metrics->Response(status); };
  }
  return client;
}

absl::StatusOr<std::shared_ptr<oci::Registry>> RegistrySync::ClientFor(
    const std::vector<std::pair<std::string, const RequestCredential*>>& per_host) {
  oci::CredentialStore store;
  bool custom = false;
  for (const auto& [host, credential] : per_host) {
    switch (credential->kind) {
      case RequestCredential::Kind::kNone:
        break;
      case RequestCredential::Kind::kRef:
        if (credential->ref != options_.login_name || options_.login_registry.empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("credentials ref \"", credential->ref, "\" is not configured"));
        }
        store.Set(host,
                  oci::RegistryCredential{options_.login_username, options_.login_password, {}});
        custom = true;
        break;
      case RequestCredential::Kind::kBasic:
      case RequestCredential::Kind::kIdentityToken:
        store.Set(host, credential->credential);
        custom = true;
        break;
    }
  }
  if (!custom) return shared_;
  store.Merge(credentials_);
  return std::shared_ptr<oci::Registry>(oci::NewRegistryClient(ClientOptions(std::move(store))));
}

namespace {

std::string HostOf(const oci::TransportReference& ref) {
  return ref.kind == oci::TransportReference::Kind::kDocker ? ref.image.domain : "";
}

}  // namespace

absl::StatusOr<oci::CopyResult> RegistrySync::Copy(const std::string& source,
                                                   const std::string& destination,
                                                   const RequestCredential& source_credential,
                                                   const RequestCredential& destination_credential,
                                                   const oci::CopyOptions& copy_options,
                                                   const oci::CopyObserver& observer) {
  absl::StatusOr<oci::TransportReference> src = oci::ParseTransportReference(source);
  if (!src.ok())
    return absl::InvalidArgumentError(absl::StrCat("source: ", src.status().message()));
  absl::StatusOr<oci::TransportReference> dst = oci::ParseTransportReference(destination);
  if (!dst.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("destination: ", dst.status().message()));
  }
  absl::StatusOr<std::shared_ptr<oci::Registry>> client =
      ClientFor({{HostOf(*src), &source_credential}, {HostOf(*dst), &destination_credential}});
  if (!client.ok()) return client.status();
  oci::CopyOptions effective = copy_options;
  if (effective.parallelism <= 0) effective.parallelism = options_.parallelism;
  if (effective.spool_dir.empty()) effective.spool_dir = options_.spool_dir;
  oci::CopyObserver counted = observer;
  if (metrics_ != nullptr) {
    RegistryMetrics* metrics = metrics_;
    counted.on_blob = [metrics, &observer](const oci::BlobEvent& event) {
      metrics->Blob(event);
      if (observer.on_blob) observer.on_blob(event);
    };
  }
  absl::Time start = absl::Now();
  absl::StatusOr<oci::CopyResult> result = oci::CopyImage(**client, *src, *dst, effective, counted);
  if (result.ok() && metrics_ != nullptr) metrics_->CopyDone(absl::Now() - start);
  return result;
}

absl::StatusOr<ResolveOutcome> RegistrySync::Resolve(const std::string& reference,
                                                     const RequestCredential& credential,
                                                     const std::optional<oci::Platform>& platform) {
  absl::StatusOr<oci::TransportReference> ref = oci::ParseTransportReference(reference);
  if (!ref.ok()) return ref.status();
  absl::StatusOr<std::shared_ptr<oci::Registry>> client = ClientFor({{HostOf(*ref), &credential}});
  if (!client.ok()) return client.status();
  absl::StatusOr<oci::ResolvedImage> image = oci::ResolveImage(**client, *ref);
  if (!image.ok()) return image.status();
  ResolveOutcome outcome;
  outcome.image = *std::move(image);
  if (!outcome.image.manifests.empty()) {
    oci::Index index;
    index.manifests = outcome.image.manifests;
    absl::StatusOr<oci::Descriptor> chosen =
        oci::SelectPlatform(index, platform.value_or(oci::DefaultPlatform()));
    if (chosen.ok()) {
      outcome.platform_manifest = *chosen;
    } else if (platform.has_value()) {
      return chosen.status();
    }
  }
  if (ref->kind == oci::TransportReference::Kind::kDocker) {
    oci::ImageReference canonical = ref->image;
    canonical.digest = outcome.image.descriptor.digest.ToString();
    outcome.canonical_reference = absl::StrCat("docker://", canonical.ToString());
  } else {
    outcome.canonical_reference = ref->ToString();
  }
  return outcome;
}

absl::Status RegistrySync::Sync(const std::string& source_repository,
                                const std::string& destination_repository,
                                const std::string& tag_filter,
                                const RequestCredential& source_credential,
                                const RequestCredential& destination_credential,
                                const oci::CopyOptions& copy_options, bool dry_run,
                                const oci::CopyObserver& observer,
                                const std::function<void(const TagOutcome&)>& on_tag) {
  absl::StatusOr<oci::ImageReference> src = oci::ParseImageReference(source_repository);
  if (!src.ok())
    return absl::InvalidArgumentError(absl::StrCat("source: ", src.status().message()));
  absl::StatusOr<oci::ImageReference> dst = oci::ParseImageReference(destination_repository);
  if (!dst.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("destination: ", dst.status().message()));
  }
  if (!src->tag.empty() || !src->digest.empty() || !dst->tag.empty() || !dst->digest.empty()) {
    return absl::InvalidArgumentError("Sync takes repositories without a tag or digest");
  }
  std::optional<std::regex> filter;
  if (!tag_filter.empty()) {
    try {
      filter.emplace(tag_filter);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tag_filter \"", tag_filter, "\" is not a valid regular expression: ", e.what()));
    }
  }
  absl::StatusOr<std::shared_ptr<oci::Registry>> client =
      ClientFor({{src->domain, &source_credential}, {dst->domain, &destination_credential}});
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<std::string>> tags = (*client)->ListTags(*src);
  if (!tags.ok()) return tags.status();

  for (const std::string& tag : *tags) {
    if (filter.has_value() && !std::regex_match(tag, *filter)) continue;
    if (observer.cancelled && observer.cancelled()) return absl::CancelledError("sync cancelled");
    TagOutcome outcome;
    outcome.tag = tag;
    oci::ImageReference from = *src;
    from.tag = tag;
    oci::ImageReference to = *dst;
    to.tag = tag;
    // The digest the destination tag should name: the source's, or its platform entry's.
    absl::StatusOr<oci::ResolvedImage> resolved = oci::ResolveImage(
        **client, oci::TransportReference{oci::TransportReference::Kind::kDocker, from, "", ""});
    absl::StatusOr<oci::Descriptor> existing = (*client)->HeadManifest(to);
    if (!resolved.ok()) {
      outcome.action = TagOutcome::Action::kFailed;
      outcome.error = resolved.status().ToString();
      on_tag(outcome);
      continue;
    }
    oci::Digest wanted = resolved->descriptor.digest;
    if (!resolved->manifests.empty() && !copy_options.all_platforms) {
      oci::Index index;
      index.manifests = resolved->manifests;
      absl::StatusOr<oci::Descriptor> chosen = oci::SelectPlatform(index, copy_options.platform);
      if (chosen.ok()) wanted = chosen->digest;
    }
    outcome.digest = wanted.ToString();
    if (existing.ok() && existing->digest == wanted) {
      outcome.action = TagOutcome::Action::kSkipped;
      on_tag(outcome);
      continue;
    }
    if (!existing.ok() && existing.status().code() != absl::StatusCode::kNotFound) {
      outcome.action = TagOutcome::Action::kFailed;
      outcome.error = existing.status().ToString();
      on_tag(outcome);
      continue;
    }
    if (dry_run) {
      on_tag(outcome);
      continue;
    }
    absl::StatusOr<oci::CopyResult> copied =
        Copy(absl::StrCat("docker://", from.ToString()), absl::StrCat("docker://", to.ToString()),
             source_credential, destination_credential, copy_options, observer);
    if (copied.ok()) {
      outcome.digest = copied->manifest_digest.ToString();
      outcome.bytes_transferred = copied->bytes_transferred;
    } else {
      outcome.action = TagOutcome::Action::kFailed;
      outcome.error = copied.status().ToString();
    }
    on_tag(outcome);
  }
  return absl::OkStatus();
}

}  // namespace elfdeploy
