#include "tests/kubesim/git_source.h"

#include <git2.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace elfdeploy::kubesim {
namespace {

template <auto Free>
struct GitFree {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};

using ObjectPtr = std::unique_ptr<git_object, GitFree<git_object_free>>;
using RemotePtr = std::unique_ptr<git_remote, GitFree<git_remote_free>>;
using RepositoryPtr = std::unique_ptr<git_repository, GitFree<git_repository_free>>;
using TreeEntryPtr = std::unique_ptr<git_tree_entry, GitFree<git_tree_entry_free>>;
using TreePtr = std::unique_ptr<git_tree, GitFree<git_tree_free>>;
using BlobPtr = std::unique_ptr<git_blob, GitFree<git_blob_free>>;

std::string LastError() {
  const git_error* error = git_error_last();
  return error != nullptr && error->message != nullptr ? error->message : "unknown libgit2 error";
}

std::string OidHex(const git_oid& oid) {
  char hex[GIT_OID_HEXSZ + 1];
  git_oid_tostr(hex, sizeof(hex), &oid);
  return hex;
}

// "" and "." are the root; no leading or trailing '/'.
std::string CleanPath(absl::string_view path) {
  while (absl::ConsumePrefix(&path, "./") || absl::ConsumePrefix(&path, "/")) {
  }
  while (absl::ConsumeSuffix(&path, "/")) {
  }
  return path == "." ? "" : std::string(path);
}

class GitTree final : public TreeView {
 public:
  GitTree(git_repository* repo, TreePtr tree) : repo_(repo), tree_(std::move(tree)) {}

  absl::StatusOr<std::optional<std::string>> ReadFile(const std::string& path) const override {
    std::string clean = CleanPath(path);
    if (clean.empty()) return std::nullopt;
    git_tree_entry* raw = nullptr;
    int rc = git_tree_entry_bypath(&raw, tree_.get(), clean.c_str());
    if (rc == GIT_ENOTFOUND) return std::nullopt;
    if (rc < 0) return absl::InternalError(absl::StrCat("reading ", clean, ": ", LastError()));
    TreeEntryPtr entry(raw);
    if (git_tree_entry_type(entry.get()) != GIT_OBJECT_BLOB) return std::nullopt;
    git_blob* blob = nullptr;
    if (git_blob_lookup(&blob, repo_, git_tree_entry_id(entry.get())) < 0) {
      return absl::InternalError(absl::StrCat("reading ", clean, ": ", LastError()));
    }
    BlobPtr owned(blob);
    return std::string(static_cast<const char*>(git_blob_rawcontent(blob)),
                       static_cast<size_t>(git_blob_rawsize(blob)));
  }

  absl::StatusOr<std::optional<std::vector<std::string>>> ListDir(
      const std::string& path) const override {
    std::string clean = CleanPath(path);
    const git_tree* tree = tree_.get();
    TreePtr subtree;
    if (!clean.empty()) {
      git_tree_entry* raw = nullptr;
      int rc = git_tree_entry_bypath(&raw, tree_.get(), clean.c_str());
      if (rc == GIT_ENOTFOUND) return std::nullopt;
      if (rc < 0) return absl::InternalError(absl::StrCat("listing ", clean, ": ", LastError()));
      TreeEntryPtr entry(raw);
      if (git_tree_entry_type(entry.get()) != GIT_OBJECT_TREE) return std::nullopt;
      git_tree* raw_tree = nullptr;
      if (git_tree_lookup(&raw_tree, repo_, git_tree_entry_id(entry.get())) < 0) {
        return absl::InternalError(absl::StrCat("listing ", clean, ": ", LastError()));
      }
      subtree.reset(raw_tree);
      tree = raw_tree;
    }
    std::vector<std::string> names;
    for (size_t i = 0, n = git_tree_entrycount(tree); i < n; ++i) {
      const git_tree_entry* entry = git_tree_entry_byindex(tree, i);
      std::string name = git_tree_entry_name(entry);
      if (git_tree_entry_type(entry) == GIT_OBJECT_TREE) name += '/';
      names.push_back(std::move(name));
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  git_repository* repo_;
  TreePtr tree_;
};

// Reads the way Argo CD's repo-server words a failed ls-remote/fetch.
absl::Status FetchError(const std::string& url, int rc) {
  std::string detail = LastError();
  std::string lower = absl::AsciiStrToLower(detail);
  std::string message = absl::StrCat("failed to list refs: ", detail);
  if (rc == GIT_EAUTH || absl::StrContains(lower, "authentication") ||
      absl::StrContains(lower, "status code: 401")) {
    return absl::UnauthenticatedError(
        absl::StrCat("failed to list refs: authentication required (", url, ")"));
  }
  if (rc == GIT_ENOTFOUND || absl::StrContains(lower, "not found") ||
      absl::StrContains(lower, "does not appear to be a git repository") ||
      absl::StrContains(lower, "could not find repository") ||
      absl::StrContains(lower, "no such file") || absl::StrContains(lower, "status code: 404")) {
    return absl::NotFoundError(
        absl::StrCat("failed to list refs: repository not found: ", url, " (", detail, ")"));
  }
  return absl::UnavailableError(message);
}

}  // namespace

absl::StatusOr<std::optional<std::string>> MapTree::ReadFile(const std::string& path) const {
  auto it = files_.find(CleanPath(path));
  if (it == files_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::optional<std::vector<std::string>>> MapTree::ListDir(
    const std::string& path) const {
  std::string prefix = CleanPath(path);
  if (!prefix.empty()) prefix += '/';
  std::set<std::string> names;
  for (const auto& [file, content] : files_) {
    if (!absl::StartsWith(file, prefix)) continue;
    absl::string_view rest = absl::string_view(file).substr(prefix.size());
    size_t slash = rest.find('/');
    names.insert(slash == absl::string_view::npos ? std::string(rest)
                                                  : std::string(rest.substr(0, slash + 1)));
  }
  if (names.empty() && !prefix.empty()) return std::nullopt;
  return std::vector<std::string>(names.begin(), names.end());
}

struct GitSource::Repo {
  RepositoryPtr repo;
};

GitSource::GitSource(std::string url, std::unique_ptr<Repo> repo)
    : url_(std::move(url)), repo_(std::move(repo)) {}

GitSource::~GitSource() {
  {
    absl::MutexLock lock(&mu_);
    repo_.reset();
  }
  git_libgit2_shutdown();
}

absl::StatusOr<std::unique_ptr<GitSource>> GitSource::Open(const std::string& url,
                                                           const std::string& cache_dir) {
  git_libgit2_init();
  auto repo = std::make_unique<Repo>();
  std::string key = url;
  git_oid hash;
  git_odb_hash(&hash, key.data(), key.size(), GIT_OBJECT_BLOB);
  std::string path = absl::StrCat(cache_dir, "/", OidHex(hash).substr(0, 16), ".git");
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  git_repository* raw = nullptr;
  if (git_repository_open_bare(&raw, path.c_str()) < 0 &&
      git_repository_init(&raw, path.c_str(), 1) < 0) {
    std::string error = LastError();
    git_libgit2_shutdown();
    return absl::InternalError(absl::StrCat("cannot create the mirror of ", url, ": ", error));
  }
  repo->repo.reset(raw);
  return std::unique_ptr<GitSource>(new GitSource(url, std::move(repo)));
}

absl::Status GitSource::Fetch() {
  absl::MutexLock lock(&mu_);
  git_remote_create_options options;
  git_remote_create_options_init(&options, GIT_REMOTE_CREATE_OPTIONS_VERSION);
  options.repository = repo_->repo.get();
  options.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
  git_remote* raw_remote = nullptr;
  if (git_remote_create_with_opts(&raw_remote, url_.c_str(), &options) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid repository URL ", url_, ": ", LastError()));
  }
  RemotePtr remote(raw_remote);
  git_remote_callbacks callbacks;
  git_remote_init_callbacks(&callbacks, GIT_REMOTE_CALLBACKS_VERSION);
  int rc = git_remote_connect(remote.get(), GIT_DIRECTION_FETCH, &callbacks, nullptr, nullptr);
  if (rc < 0) return FetchError(url_, rc);
  git_buf head = GIT_BUF_INIT;
  if (git_remote_default_branch(&head, remote.get()) == 0) {
    default_branch_.assign(head.ptr, head.size);
  } else {
    default_branch_.clear();  // an empty repository, or a server that does not say
    git_error_clear();
  }
  git_buf_dispose(&head);
  char heads[] = "+refs/heads/*:refs/heads/*";
  char tags[] = "+refs/tags/*:refs/tags/*";
  char* specs[] = {heads, tags};
  git_strarray refspecs = {specs, 2};
  git_fetch_options fetch;
  git_fetch_options_init(&fetch, GIT_FETCH_OPTIONS_VERSION);
  fetch.callbacks = callbacks;
  fetch.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
  fetch.update_fetchhead = 0;
  rc = git_remote_download(remote.get(), &refspecs, &fetch);
  if (rc == 0)
    rc =
        git_remote_update_tips(remote.get(), &callbacks, 0, GIT_REMOTE_DOWNLOAD_TAGS_NONE, nullptr);
  git_remote_disconnect(remote.get());
  if (rc < 0) return FetchError(url_, rc);
  return absl::OkStatus();
}

absl::StatusOr<std::string> GitSource::Resolve(absl::string_view revision) {
  absl::MutexLock lock(&mu_);
  git_repository* repo = repo_->repo.get();
  std::vector<std::string> candidates;
  std::string rev(revision);
  if (rev.empty() || rev == "HEAD") {
    if (default_branch_.empty()) {
      return absl::NotFoundError(
          "unable to resolve 'HEAD' to a commit SHA: the repository is empty");
    }
    candidates.push_back(default_branch_);
  } else {
    candidates = {absl::StrCat("refs/heads/", rev), absl::StrCat("refs/tags/", rev), rev};
  }
  for (const std::string& candidate : candidates) {
    git_object* raw = nullptr;
    if (candidate.size() == GIT_OID_HEXSZ &&
        candidate.find_first_not_of("0123456789abcdef") == std::string::npos) {
      git_oid oid;
      if (git_oid_fromstr(&oid, candidate.c_str()) == 0 &&
          git_object_lookup(&raw, repo, &oid, GIT_OBJECT_COMMIT) == 0) {
        ObjectPtr commit(raw);
        return OidHex(*git_object_id(commit.get()));
      }
      continue;
    }
    if (git_revparse_single(&raw, repo, candidate.c_str()) == 0) {
      ObjectPtr object(raw);
      git_object* peeled = nullptr;
      if (git_object_peel(&peeled, object.get(), GIT_OBJECT_COMMIT) == 0) {
        ObjectPtr commit(peeled);
        return OidHex(*git_object_id(commit.get()));
      }
    }
  }
  git_error_clear();
  return absl::NotFoundError(absl::StrCat("unable to resolve '", rev, "' to a commit SHA"));
}

absl::StatusOr<std::unique_ptr<TreeView>> GitSource::Tree(const std::string& commit) {
  absl::MutexLock lock(&mu_);
  git_repository* repo = repo_->repo.get();
  git_oid oid;
  git_commit* raw_commit = nullptr;
  if (git_oid_fromstr(&oid, commit.c_str()) < 0 || git_commit_lookup(&raw_commit, repo, &oid) < 0) {
    return absl::NotFoundError(absl::StrCat("commit ", commit, " is not in ", url_));
  }
  git_tree* raw_tree = nullptr;
  int rc = git_commit_tree(&raw_tree, raw_commit);
  git_commit_free(raw_commit);
  if (rc < 0) return absl::InternalError(absl::StrCat("reading ", commit, ": ", LastError()));
  return std::unique_ptr<TreeView>(new GitTree(repo, TreePtr(raw_tree)));
}

}  // namespace elfdeploy::kubesim
