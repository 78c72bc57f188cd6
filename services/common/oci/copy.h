#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "services/common/oci/manifest.h"
#include "services/common/oci/reference.h"
#include "services/common/oci/registry_client.h"

namespace elfdeploy::oci {

struct CopyOptions {
  // The platform taken from a multi-platform source, unless all_platforms.
  Platform platform = DefaultPlatform();
  // Copy the whole index and every platform's image.
  bool all_platforms = false;
  // Blob transfers running at once.
  int parallelism = 4;
  // Where blobs are staged between two registries; a temporary directory when empty.
  std::string spool_dir;
};

enum class BlobAction { kSkipped, kMounted, kUploaded, kDownloaded, kCopied };

// One blob handled by a copy. Reported once per blob, from the worker that moved it.
struct BlobEvent {
  Descriptor blob;
  BlobAction action = BlobAction::kSkipped;
  // Bytes moved over the network or disk (0 for skipped and mounted blobs).
  int64_t bytes = 0;
};

// What a copy is about to move, reported once before the first blob.
struct CopyPlan {
  Digest source_digest;
  int total_blobs = 0;
  int64_t total_bytes = 0;
};

// Hooks into a running copy; all optional. Called one at a time (some from worker threads).
struct CopyObserver {
  std::function<void(const CopyPlan&)> on_plan;
  std::function<void(const BlobEvent&)> on_blob;
  // Polled between blobs: true stops the copy with CANCELLED before any manifest is written.
  std::function<bool()> cancelled;
};

struct CopyResult {
  // Digest of the manifest (or index) the destination now names.
  Digest manifest_digest;
  std::string media_type;
  int64_t manifest_size = 0;
  TransportReference destination;
  int blobs_skipped = 0;
  int blobs_mounted = 0;
  int blobs_transferred = 0;
  int64_t bytes_transferred = 0;
};

// Copies an image between an OCI layout and a registry, or between two registries or two
// layouts. Blobs go first, in parallel, each skipped when the destination has it and mounted
// across repositories of one registry when it can be; manifests go last, so the destination tag
// never names missing content. Every blob and manifest read is verified against its digest.
absl::StatusOr<CopyResult> CopyImage(Registry& registry, const TransportReference& source,
                                     const TransportReference& destination,
                                     const CopyOptions& options, const CopyObserver& observer = {});

// What a reference names: the top manifest's descriptor and, for an index, its entries.
struct ResolvedImage {
  Descriptor descriptor;
  std::vector<Descriptor> manifests;  // an index's entries; empty for an image manifest
};
absl::StatusOr<ResolvedImage> ResolveImage(Registry& registry, const TransportReference& ref);

}  // namespace elfdeploy::oci
