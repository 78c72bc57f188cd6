#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/builder/dockerignore.h"
#include "services/builder/layer.h"
#include "services/builder/path_util.h"

namespace elfdeploy::builder {

struct ContextOptions {
  // Largest single source file, and largest total a build may read, in bytes.
  int64_t max_file_size = int64_t{1} << 30;
  int64_t max_total_size = int64_t{8} << 30;
  // For an extracted image file system: symlinks are copied as links, never followed or resolved
  // (their absolute targets name paths inside the image, not on this host).
  bool symlinks_as_links = false;
};

// A file system entry found in the context.
struct SourceFile {
  std::string rel_path;  // relative to the context root, '/'-separated
  std::string abs_path;
  LayerEntry::Type type = LayerEntry::Type::kFile;
  uint32_t mode = 0;  // permission bits
  int64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t inode = 0;
  std::string link_target;  // symlinks
};

// The build context: a directory whose files COPY and ADD may read, and nothing else. Paths that
// are absolute, that `..` or a symlink lead out of, device files, FIFOs, sockets and files over
// the size limit are refused with INVALID_ARGUMENT / PERMISSION_DENIED naming the path; files
// excluded by .dockerignore are invisible.
class BuildContext {
 public:
  // Opens `dir`, reading its .dockerignore when present.
  static absl::StatusOr<BuildContext> Open(const std::string& dir, ContextOptions options = {});

  const std::string& root() const { return root_; }

  // The context entries a COPY/ADD source names, after wildcard expansion (Go filepath.Match
  // syntax per path component). A source that is itself a symlink is followed (inside the
  // context). NOT_FOUND when nothing matches.
  absl::StatusOr<std::vector<SourceFile>> Match(const std::string& source) const;

  // Every entry under `dir` (a directory entry from Match), recursively, sorted by path, without
  // ignored ones; symlinks are listed, not followed. `rel_path`s stay relative to the root.
  absl::StatusOr<std::vector<SourceFile>> Walk(const SourceFile& dir) const;

  // Counts `bytes` against the total read limit; RESOURCE_EXHAUSTED past it.
  absl::Status Charge(int64_t bytes) const;

 private:
  BuildContext(std::string root, ContextOptions options, std::optional<DockerIgnore> ignore)
      : root_(std::move(root)), options_(options), ignore_(std::move(ignore)) {}

  // `parent_verified`: the entry was listed in a directory already known to be inside the
  // context, so only the entry itself (a symlink) can lead out.
  absl::StatusOr<SourceFile> Stat(const std::string& rel_path, bool follow,
                                  bool parent_verified = false) const;

  std::string root_;  // canonical
  ContextOptions options_;
  std::optional<DockerIgnore> ignore_;
  mutable int64_t charged_ = 0;
};

}  // namespace elfdeploy::builder
