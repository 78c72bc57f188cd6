#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace elfdeploy::testing {

// A fresh directory that is removed with everything in it when the object dies. With
// ELFDEPLOY_KEEP_TEMP=1 in the environment the tree is kept and its path printed to stderr.
class TempDir {
 public:
  // Creates `<$TMPDIR or /tmp>/<prefix>XXXXXX`, empty and private to the caller.
  static absl::StatusOr<TempDir> Create(absl::string_view prefix = "elfdeploy-");

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  // The absolute path of the directory; empty for a moved-from object.
  const std::string& path() const { return path_; }

  // `path()/relative`, without touching the file system.
  std::string Join(absl::string_view relative) const;

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  void Release();

  std::string path_;
};

// Replaces the file at `path` with `contents`, creating missing parent directories.
absl::Status WriteFile(const std::string& path, absl::string_view contents);

// The whole content of the file at `path`; NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace elfdeploy::testing
