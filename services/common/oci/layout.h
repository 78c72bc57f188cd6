#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/oci/digest.h"
#include "services/common/oci/manifest.h"

namespace elfdeploy::oci {

// Streams one blob into a layout: bytes go to a temporary file beside the blobs and are hashed as
// they come; Commit moves the file into place only when digest (and size) match. A writer
// destroyed without a successful Commit leaves nothing behind.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  absl::Status Write(absl::string_view data);
  // DATA_LOSS when the content does not match `expected` (or `expected_size` >= 0 differs).
  absl::Status Commit(const Digest& expected, int64_t expected_size = -1);
  int64_t bytes_written() const { return size_; }

 private:
  friend class OciLayout;
  BlobWriter(std::string blobs_dir, std::string temp_path, std::FILE* file)
      : blobs_dir_(std::move(blobs_dir)), temp_path_(std::move(temp_path)), file_(file) {}

  std::string blobs_dir_;
  std::string temp_path_;
  std::FILE* file_;
  Sha256 hasher_;
  int64_t size_ = 0;
  bool committed_ = false;
};

// An OCI image layout directory (image-spec image-layout.md): `oci-layout`, `index.json` and
// content-addressed `blobs/<alg>/<hex>`. Images are named in index.json by the
// org.opencontainers.image.ref.name annotation.
class OciLayout {
 public:
  // Opens an existing layout; NOT_FOUND when `dir` has no oci-layout file, INVALID_ARGUMENT when
  // it is not version 1.0.0.
  static absl::StatusOr<OciLayout> Open(const std::string& dir);
  // Opens `dir`, creating an empty layout (and the directory) when it has none.
  static absl::StatusOr<OciLayout> OpenOrCreate(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::string BlobPath(const Digest& digest) const;
  // True when the blob file exists (with `size` bytes when size >= 0).
  bool HasBlob(const Digest& digest, int64_t size = -1) const;
  // Reads and verifies a blob: NOT_FOUND when missing, DATA_LOSS when its content does not match.
  absl::StatusOr<std::string> ReadBlob(const Digest& digest) const;
  // Stores `data` under its digest, verified against `expected` when given.
  absl::StatusOr<Digest> WriteBlob(absl::string_view data, const Digest& expected = Digest());
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewBlobWriter();

  absl::StatusOr<Index> ReadIndex() const;
  // The index.json entry named `ref`; with an empty `ref`, the only entry (INVALID_ARGUMENT when
  // there are several). NOT_FOUND names the refs the layout has.
  absl::StatusOr<Descriptor> Resolve(absl::string_view ref) const;
  // Names `descriptor` as `ref` in index.json (replacing an entry of that name), atomically.
  // The blob must already be in the layout (FAILED_PRECONDITION otherwise).
  absl::Status Tag(absl::string_view ref, Descriptor descriptor);
  // Removes the index.json entry named `ref` (its blobs stay); OK when there is none.
  absl::Status Untag(absl::string_view ref);

 private:
  explicit OciLayout(std::string dir) : dir_(std::move(dir)) {}

  std::string dir_;
};

}  // namespace elfdeploy::oci
