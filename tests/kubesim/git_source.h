#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

// What Argo CD's repo-server does with a git repository, for kubesim: a mirror of the remote in a
// cache directory, refreshed on demand, and files read at a commit without a checkout.
namespace elfdeploy::kubesim {

// The files of one commit's tree.
class TreeView {
 public:
  virtual ~TreeView() = default;
  // The file's content; nullopt when there is no file at `path` ("a/b.yaml", no leading '/').
  virtual absl::StatusOr<std::optional<std::string>> ReadFile(const std::string& path) const = 0;
  // Names in the directory, sorted; directories end in '/'. nullopt when `path` ("" for the
  // root) is not a directory.
  virtual absl::StatusOr<std::optional<std::vector<std::string>>> ListDir(
      const std::string& path) const = 0;
};

// A TreeView over an in-memory map of path -> content (tests).
class MapTree final : public TreeView {
 public:
  explicit MapTree(std::map<std::string, std::string> files) : files_(std::move(files)) {}
  absl::StatusOr<std::optional<std::string>> ReadFile(const std::string& path) const override;
  absl::StatusOr<std::optional<std::vector<std::string>>> ListDir(
      const std::string& path) const override;

 private:
  std::map<std::string, std::string> files_;
};

// One remote repository, mirrored with libgit2. Thread-safe.
class GitSource {
 public:
  // Prepares the mirror of `url` (file://, a local path, git://, http(s)://) under `cache_dir`.
  // Nothing is fetched yet.
  static absl::StatusOr<std::unique_ptr<GitSource>> Open(const std::string& url,
                                                         const std::string& cache_dir);
  ~GitSource();

  // Fetches every branch and tag, and the remote's HEAD. Errors read as Argo CD's repo-server
  // reports them: NOT_FOUND "repository not found", UNAVAILABLE for network failures,
  // UNAUTHENTICATED when the server wants credentials (kubesim has none).
  absl::Status Fetch();

  // The commit `revision` names after the last Fetch: "HEAD" or "" (the remote's default branch),
  // a branch, a tag, or a full commit id. NOT_FOUND "unable to resolve '<rev>' to a commit SHA".
  absl::StatusOr<std::string> Resolve(absl::string_view revision);

  // The tree of `commit` (a full id from Resolve).
  absl::StatusOr<std::unique_ptr<TreeView>> Tree(const std::string& commit);

  const std::string& url() const { return url_; }

 private:
  struct Repo;
  GitSource(std::string url, std::unique_ptr<Repo> repo);

  const std::string url_;
  absl::Mutex mu_;
  std::unique_ptr<Repo> repo_ ABSL_GUARDED_BY(mu_);
  std::string default_branch_ ABSL_GUARDED_BY(mu_);
};

}  // namespace elfdeploy::kubesim
