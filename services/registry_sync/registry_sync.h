#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/config.h"
#include "services/common/oci/copy.h"
#include "services/common/oci/credentials.h"
#include "services/common/oci/registry_client.h"

namespace elfdeploy {

struct RegistrySyncOptions {
  // docker config.json with registry credentials; empty means $REGISTRY_AUTH_FILE, then
  // ~/.docker/config.json.
  std::string auth_file;
  // Credentials from service config, for `login_registry`; they win over the auth file. Requests
  // name them with RegistryCredentials.ref = `login_name`.
  std::string login_name = "default";
  std::string login_registry;
  std::string login_username;
  Secret login_password;
  // Registries reachable over plain http or unverified TLS (localhost and 127.0.0.0/8 always may
  // use plain http).
  std::vector<std::string> insecure_registries;
  std::string ca_file;
  int parallelism = 4;
  int64_t chunk_size = 0;
  int max_attempts = 6;
  // Staging area for registry-to-registry copies; a temporary directory per copy when empty.
  std::string spool_dir;
};

// Binds the `registry.*` config keys.
void BindRegistrySyncConfig(ConfigBinder& binder, RegistrySyncOptions* options);

// Credentials a request brings for one side of a copy.
struct RequestCredential {
  enum class Kind { kNone, kRef, kBasic, kIdentityToken };
  Kind kind = Kind::kNone;
  std::string ref;
  oci::RegistryCredential credential;
};

// The registry metrics of DESIGN.md's naming.
class RegistryMetrics {
 public:
  explicit RegistryMetrics(prometheus::Registry& registry);
  void Blob(const oci::BlobEvent& event);
  void Response(int status);
  void CopyDone(absl::Duration elapsed);

 private:
  prometheus::Counter& bytes_pushed_;
  prometheus::Family<prometheus::Counter>& blobs_;
  prometheus::Histogram& copy_seconds_;
  prometheus::Family<prometheus::Counter>& requests_;
};

struct ResolveOutcome {
  oci::ResolvedImage image;
  // For an index: the entry for the asked (or default) platform, when it has one.
  std::optional<oci::Descriptor> platform_manifest;
  std::string canonical_reference;
};

struct TagOutcome {
  std::string tag;
  std::string digest;
  enum class Action { kCopied, kSkipped, kFailed } action = Action::kCopied;
  int64_t bytes_transferred = 0;
  std::string error;
};

// RegistrySyncService's logic, free of gRPC.
class RegistrySync {
 public:
  // `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<RegistrySync>> Create(RegistrySyncOptions options,
                                                              RegistryMetrics* metrics);

  // Copies `source` to `destination` (oci:/docker:// references).
  absl::StatusOr<oci::CopyResult> Copy(const std::string& source, const std::string& destination,
                                       const RequestCredential& source_credential,
                                       const RequestCredential& destination_credential,
                                       const oci::CopyOptions& copy_options,
                                       const oci::CopyObserver& observer);

  absl::StatusOr<ResolveOutcome> Resolve(const std::string& reference,
                                         const RequestCredential& credential,
                                         const std::optional<oci::Platform>& platform);

  // Copies every tag of `source_repository` that fully matches `tag_filter` (ECMAScript) and
  // whose digest differs at the destination. Per-tag failures are reported, not fatal.
  absl::Status Sync(const std::string& source_repository, const std::string& destination_repository,
                    const std::string& tag_filter, const RequestCredential& source_credential,
                    const RequestCredential& destination_credential,
                    const oci::CopyOptions& copy_options, bool dry_run,
                    const oci::CopyObserver& observer,
                    const std::function<void(const TagOutcome&)>& on_tag);

 private:
  RegistrySync(RegistrySyncOptions options, oci::CredentialStore credentials,
               RegistryMetrics* metrics);

  // The shared client, or one with the request's credentials layered over the configured ones.
  absl::StatusOr<std::shared_ptr<oci::Registry>> ClientFor(
      const std::vector<std::pair<std::string, const RequestCredential*>>& per_host);
  oci::RegistryClientOptions ClientOptions(oci::CredentialStore credentials) const;

  RegistrySyncOptions options_;
  oci::CredentialStore credentials_;
  RegistryMetrics* metrics_;
  std::shared_ptr<oci::Registry> shared_;
};

}  // namespace elfdeploy
