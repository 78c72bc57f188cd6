#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/common/oci/credentials.h"
#include "services/common/oci/digest.h"
#include "services/common/oci/layout.h"
#include "services/common/oci/manifest.h"
#include "services/common/oci/reference.h"

namespace elfdeploy::oci {

struct RegistryClientOptions {
  CredentialStore credentials;
  // Registries ("host[:port]") that may be reached over plain http or TLS without verification.
  // localhost and 127.0.0.0/8 may always use plain http (as with Docker); TLS to them is verified.
  std::vector<std::string> insecure_registries;
  // PEM bundle that verifies registries' certificates; empty means the system store.
  std::string ca_file;
  // Attempts per request (and per blob upload) on connection errors, 5xx and 429.
  // Backoff doubles from initial_backoff (with jitter), so the defaults ride out about 8-15 s of
  // outage, e.g. a registry restart.
  int max_attempts = 6;
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(10);
  // Uploads in PATCH chunks of this many bytes; 0 uploads each blob in one PUT.
  int64_t chunk_size = 0;
  // Called with the HTTP status of every registry response (metrics).
  std::function<void(int status)> on_response;
  // Sleeps between attempts; tests replace it.
  std::function<void(absl::Duration)> sleep = [](absl::Duration d) { absl::SleepFor(d); };
};

// A manifest or index as stored: the exact bytes (their sha256 is the digest) and media type.
struct ManifestData {
  std::string bytes;
  std::string media_type;
  Digest digest;
};

// The OCI distribution API of registries. Implementations are thread-safe. Errors:
// UNAUTHENTICATED (credentials missing or refused), PERMISSION_DENIED (authenticated, not
// allowed), NOT_FOUND (repository, manifest or blob unknown), DATA_LOSS (content does not match
// its digest), UNAVAILABLE (unreachable, or still failing after the retries).
class Registry {
 public:
  virtual ~Registry() = default;

  // The manifest `ref` names (by tag, or by digest, verified).
  virtual absl::StatusOr<ManifestData> GetManifest(const ImageReference& ref) = 0;
  // The digest, media type and size of the manifest `ref` names, without its body; NOT_FOUND
  // when it does not exist.
  virtual absl::StatusOr<Descriptor> HeadManifest(const ImageReference& ref) = 0;
  // Stores a manifest under `ref`'s tag (or digest). Its blobs must already be there.
  virtual absl::Status PutManifest(const ImageReference& ref, const ManifestData& manifest) = 0;
  // True when the repository of `repo` holds the blob.
  virtual absl::StatusOr<bool> BlobExists(const ImageReference& repo, const Digest& digest) = 0;
  // Mounts a blob from another repository of the same registry; false when the registry
  // declined (the caller uploads instead).
  virtual absl::StatusOr<bool> MountBlob(const ImageReference& repo, const Digest& digest,
                                         const std::string& from_path) = 0;
  // Uploads the `blob` bytes from `file`, restarting the upload on retryable failures.
  virtual absl::Status PushBlob(const ImageReference& repo, const Descriptor& blob,
                                const std::string& file) = 0;
  // One upload of `blob.size` bytes pulled from `reader` (see HttpRequest::body_reader), without
  // retries: a stream cannot be replayed.
  virtual absl::Status UploadBlob(const ImageReference& repo, const Descriptor& blob,
                                  const std::function<int64_t(char*, size_t)>& reader) = 0;
  // One download of a blob's bytes into `sink` (false aborts), without retries or verification.
  virtual absl::Status ReadBlob(const ImageReference& repo, const Descriptor& blob,
                                const std::function<bool(absl::string_view)>& sink) = 0;
  // Downloads a blob into `layout`, verified against the descriptor's digest and size.
  virtual absl::Status FetchBlob(const ImageReference& repo, const Descriptor& blob,
                                 OciLayout& layout) = 0;
  // Every tag of the repository, following pagination.
  virtual absl::StatusOr<std::vector<std::string>> ListTags(const ImageReference& repo) = 0;
};

// The real client: OCI distribution over libcurl, connections reused, anonymous, basic and
// bearer-token auth (WWW-Authenticate realm/service/scope), retries with backoff on connection
// errors, 5xx and 429 (honouring Retry-After). The first request to a registry pings /v2/ to
// choose https or, where allowed, plain http.
std::unique_ptr<Registry> NewRegistryClient(RegistryClientOptions options);

// True for localhost, 127.0.0.0/8 and ::1 (with or without a port).
bool IsLoopbackRegistry(absl::string_view domain);

// Parses a WWW-Authenticate header: scheme ("Bearer", "Basic") and its parameters.
struct AuthChallenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};
AuthChallenge ParseAuthChallenge(absl::string_view header);

}  // namespace elfdeploy::oci
