#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/oci/digest.h"
#include "services/common/oci/manifest.h"

namespace elfdeploy::testing {

struct TestImage {
  oci::Digest manifest_digest;
  std::vector<oci::Digest> layers;
  oci::Digest config;
  int64_t total_bytes = 0;  // config + layers
};

// Writes an image into the OCI layout at `layout_dir` (created when missing) named `ref`: each
// layer a gzip-compressed tar holding one file of `layer_sizes[i]` pseudo-random bytes from
// `seed`, a valid linux/amd64 image config, and an OCI manifest. Same inputs, same digests.
absl::StatusOr<TestImage> WriteTestImage(const std::string& layout_dir, const std::string& ref,
                                         const std::vector<int64_t>& layer_sizes, uint64_t seed);

// Copies the image `ref` of the OCI layout at `layout_dir` to `destination` ("host/repo:tag",
// a registry reachable over plain http on localhost), as registry-sync's Copy does.
absl::Status PushLayoutImage(const std::string& layout_dir, const std::string& ref,
                             const std::string& destination);

// Writes a two-platform index (linux/amd64 and linux/arm64, one small layer each) named `ref`.
// Returns the index digest; `amd64` receives the linux/amd64 manifest's digest.
absl::StatusOr<oci::Digest> WriteTestIndex(const std::string& layout_dir, const std::string& ref,
                                           uint64_t seed, oci::Digest* amd64);

}  // namespace elfdeploy::testing
