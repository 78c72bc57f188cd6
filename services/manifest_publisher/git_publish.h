#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/common/log.h"

namespace elfdeploy::publisher {

struct GitCredentials {
  // HTTP basic or token auth (a token goes in `password`); the user name also serves ssh. Empty:
  // the URL's user name, else "git".
  std::string username;
  Secret password;
  // ssh key auth: the private key file, its passphrase and, optionally, the public key file.
  std::string ssh_private_key_path;
  Secret ssh_passphrase;
  std::string ssh_public_key_path;
};

struct GitTarget {
  // file://, git://, http(s)://, ssh://, scp-like user@host:path, or a local path. A local
  // repository must be bare.
  std::string url;
  std::string branch = "main";
  GitCredentials credentials;
  // PEM certificates that https servers may chain to, besides the system's.
  std::string ca_file;
  bool insecure_skip_tls_verify = false;
};

struct FileChange {
  // Relative, '/'-separated, no "", ".", ".." or ".git" component.
  std::string path;
  // nullopt deletes the path (a whole directory when it is one); a missing path is no error.
  std::optional<std::string> content;
};

// Reads the tree of the branch head a render is based on. Valid only during the render call.
class TreeReader {
 public:
  virtual ~TreeReader() = default;
  // The file's content; nullopt when missing. FAILED_PRECONDITION for a directory.
  virtual absl::StatusOr<std::optional<std::string>> ReadFile(const std::string& path) const = 0;
  // Entry names, sorted; empty when missing or not a directory. "" is the root.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) const = 0;
  // The head commit's id; "" for an empty repository.
  virtual std::string head() const = 0;
};

using RenderFn = std::function<absl::StatusOr<std::vector<FileChange>>(const TreeReader&)>;

struct CommitSpec {
  std::string message;
  // Appended as "Key: value" lines after a blank line, e.g. {"Elfdeploy-Rollout", id},
  // {"Image", "app=sha256:..."}. Keys are [A-Za-z0-9-]+; values are single lines.
  std::vector<std::pair<std::string, std::string>> trailers;
  std::string author_name = "elfdeploy";
  std::string author_email = "elfdeploy@localhost";
  // Seconds since the epoch, UTC; 0 = now.
  int64_t time = 0;
};

struct PublishOutcome {
  // The new head, or the current head on a no-op ("" when the branch does not exist).
  std::string commit;
  // The head the final render was based on ("" for the first commit of the branch).
  std::string parent;
  bool no_op = false;
  // Renders made, one per fetch-render-push round.
  int attempts = 0;
  // Paths whose content changed, sorted.
  std::vector<std::string> changed_paths;
};

struct PublisherOptions {
  // Bare clones live here, one per URL+branch hash.
  std::string cache_dir;
  int max_attempts = 8;
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
};

class RepositoryPool;

// Publishes rendered files to a git branch with libgit2. Thread-safe: publishes to different
// targets run in parallel; those sharing a cache repository (same cache_dir, URL and branch)
// serialize, across processes too. A landed commit's objects are written into the cache after
// Publish has returned, on a background thread that holds the cache's lock meanwhile; the
// destructor waits for it.
class GitPublisher {
 public:
  explicit GitPublisher(PublisherOptions options);
  ~GitPublisher();
  GitPublisher(const GitPublisher&) = delete;
  GitPublisher& operator=(const GitPublisher&) = delete;

  // Asks the remote for the branch head and fetches it into the cache (a bare repository per
  // URL and branch, created the first time) unless the cache already has it, calls `render` with
  // the head's tree, builds the new tree in memory from the returned changes and commits only when
  // the tree differs (else no_op with the current head). Pushes without force, expecting the head
  // it rendered on; when the remote moved meanwhile, renders again on the new head after a
  // jittered exponential backoff, at most max_attempts renders (then ABORTED). Works on an empty
  // remote. Errors: render's own errors unchanged; INVALID_ARGUMENT for bad changes, branches or
  // commit specs; UNAUTHENTICATED naming the URL when the server refuses the credentials (offered
  // once per connection, never in a loop); FAILED_PRECONDITION for an untrusted TLS certificate or
  // a push refused for other reasons (hooks, protection); NOT_FOUND for a missing repository;
  // UNAVAILABLE for network failures. No error contains a password or passphrase. ssh host keys
  // are not verified (libgit2 1.5 has no known_hosts support).
  absl::StatusOr<PublishOutcome> Publish(const GitTarget& target, const RenderFn& render,
                                         const CommitSpec& commit);

  // Fetches, renders on the branch head and returns the unified diff (git's patch format) from the
  // head's tree to the tree with the changes applied ("" when equal), and the head ("" for an
  // empty remote). Commits and pushes nothing; needs only read access.
  absl::StatusOr<std::pair<std::string, std::string>> Diff(const GitTarget& target,
                                                           const RenderFn& render);

 private:
  class Keeper;

  PublisherOptions options_;
  std::unique_ptr<RepositoryPool> pool_;
  std::unique_ptr<Keeper> keeper_;  // declared last: drained before the pool closes
};

}  // namespace elfdeploy::publisher
