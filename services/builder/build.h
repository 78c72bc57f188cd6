#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/builder/context.h"
#include "services/common/oci/layout.h"
#include "services/common/oci/registry_client.h"

namespace elfdeploy::builder {

struct BuilderOptions {
  // The content store: an OCI image layout holding every built and pulled image, plus the cache.
  std::string store_dir = "/var/lib/elfdeploy/builder";
  // Default SOURCE_DATE_EPOCH.
  int64_t source_date_epoch = 0;
  // libdeflate level of new layers (LayerOptions); changing it changes digests.
  int compression_level = 2;
  ContextOptions context;
  // The engine RUN instructions are handed to; empty disables RUN.
  std::string run_engine = "buildah";
  // Extra global flags for the engine, e.g. {"--storage-driver", "vfs"}.
  std::vector<std::string> run_engine_args = {"--storage-driver", "vfs"};
  // Builds running at once; more wait in a queue.
  int max_parallel_builds = 2;
  // Registry client for FROM images; not owned, must outlive the builder.
  oci::Registry* registry = nullptr;
};

struct BuildParams {
  std::string context_dir;
  std::string dockerfile;  // relative to the context; "" = "Dockerfile"
  std::vector<std::string> tags;
  std::map<std::string, std::string> build_args;
  bool no_cache = false;
  std::string target;
  std::map<std::string, std::string> labels;
  std::optional<int64_t> source_date_epoch;
  std::string correlation_id;
};

// What a build reports while it runs; every callback optional, called from the build's thread.
struct BuildObserver {
  std::function<void(int position)> queued;
  std::function<void(const std::string& build_id, int total_steps, const std::string& dockerfile)>
      started;
  std::function<void(const std::string& reference, const oci::Descriptor& blob, bool cached)> pull;
  std::function<void(int step, int total, const std::string& stage, int line,
                     const std::string& instruction)>
      step_started;
  enum class Cache { kHit, kMiss, kNotApplicable };
  std::function<void(int step, Cache cache, const std::string& layer_digest, int64_t bytes,
                     absl::Duration elapsed)>
      step_completed;
  std::function<void(int step, bool stderr_stream, const std::string& line)> log;
  std::function<void(int line, const std::string& message)> warning;
};

struct BuildOutput {
  oci::Descriptor manifest;
  oci::Descriptor config;
  std::vector<oci::Descriptor> layers;
  int64_t size = 0;
  std::string layout_reference;
  std::vector<std::string> tags;
  // The git repository the context is in, if any (credentials removed from the URL).
  std::string source_url;
  std::string source_revision;
  int64_t created_epoch = 0;
  // Bytes of source files read (for digests and layers); 0 when every file was known unchanged.
  int64_t source_bytes_read = 0;
};

// Builds OCI images from Dockerfiles without a daemon: FROM pulls through the shared OCI client
// into the content store, COPY/ADD write reproducible layers, config instructions edit the OCI
// config, RUN goes to the configured engine (buildah). Thread-safe; at most
// `max_parallel_builds` builds run at once.
class Builder {
 public:
  static absl::StatusOr<std::unique_ptr<Builder>> Create(BuilderOptions options);
  ~Builder();

  // Errors: INVALID_ARGUMENT (bad request or Dockerfile, with "Dockerfile:<line>:"), NOT_FOUND
  // (context, Dockerfile or a COPY source), PERMISSION_DENIED (a path leaving the context),
  // FAILED_PRECONDITION (RUN without an engine), and the registry's errors for FROM.
  absl::StatusOr<BuildOutput> Build(const BuildParams& params, const BuildObserver& observer);

  const std::string& store_dir() const { return options_.store_dir; }

 private:
  class Run;
  friend class Run;
  explicit Builder(BuilderOptions options, oci::OciLayout store);

  // sha256 of the file `entry` names, reusing the last value while its size, mtime and inode are
  // those listed in `entry`. When the file has to be read, its bytes are moved into
  // `entry.content` so that the layer does not read it again.
  absl::StatusOr<oci::Digest> FileDigest(LayerEntry& entry);
  void SaveFileDigests();
  std::optional<std::string> CacheGet(const std::string& key);
  void CachePut(const std::string& key, const std::string& value);

  BuilderOptions options_;
  oci::OciLayout store_;
  absl::Mutex mu_;
  struct FileStamp {
    int64_t size;
    int64_t mtime_ns;
    uint64_t inode;
    std::string digest;
  };
  std::map<std::string, FileStamp> file_digests_ ABSL_GUARDED_BY(mu_);
  bool file_digests_dirty_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_build_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace elfdeploy::builder
