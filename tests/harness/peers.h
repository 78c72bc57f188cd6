#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/token_server.h"

namespace elfdeploy::testing {

// Starts the server that `make(port)` describes on a port from PickFreePort, with its output in
// `log_path`, and waits for `ready_line` in that log; retries on another port when the log says
// the chosen one was taken meanwhile. Sets *port_out to the port it serves on.
absl::StatusOr<std::unique_ptr<ChildProcess>> StartOnFreePort(
    const std::string& log_path, const std::function<absl::StatusOr<ProcessOptions>(int)>& make,
    absl::string_view ready_line, int* port_out);

// Runs `git <args>` in `cwd` with no system or user config: GIT_CONFIG_NOSYSTEM=1, HOME and
// XDG_CONFIG_HOME set to `home`, no prompts, a fixed identity and `main` as the initial branch.
// A non-zero exit code is a successful result.
absl::StatusOr<CommandResult> RunGit(const std::string& home, const std::vector<std::string>& args,
                                     const std::string& cwd = "",
                                     absl::Duration timeout = absl::Seconds(60));

struct RegistryOptions {
  // Require HTTP basic auth with `username`/`password` (an htpasswd file, bcrypt).
  bool htpasswd = false;
  // Serve https with a fresh self-signed certificate for localhost and 127.0.0.1.
  bool tls = false;
  // Require bearer tokens from a TokenServer that the fixture runs; exclusive with htpasswd. The
  // token server grants `username` pull, push and delete, and `pull_only_username` only pull.
  bool token_auth = false;
  std::string username = "elfdeploy";
  std::string password = "elfdeploy-secret";
  std::string pull_only_username = "elfdeploy-reader";
  std::string pull_only_password = "elfdeploy-reader-secret";
  // With token_auth: token requests without credentials get tokens that may pull.
  bool anonymous_pull = false;
};

// A CNCF distribution registry (docker-registry) on 127.0.0.1 with storage in a temp dir. The
// destructor stops it (SIGTERM, then SIGKILL) and removes the dir.
class RegistryFixture {
 public:
  using Options = RegistryOptions;

  // Starts the registry (and the token server first with token_auth) and waits until GET /v2/
  // answers 200 or 401. INVALID_ARGUMENT for htpasswd with token_auth.
  static absl::StatusOr<std::unique_ptr<RegistryFixture>> Start(Options options);

  // "127.0.0.1:PORT", or "localhost:PORT" with TLS (the name the certificate is for).
  std::string host() const;
  // "http://HOST" or "https://HOST".
  std::string base_url() const;
  // The PEM certificate that verifies the server; "" without TLS.
  std::string ca_file() const;
  // The credentials that the htpasswd file or the token server accepts.
  const std::string& username() const { return options_.username; }
  const std::string& password() const { return options_.password; }
  // The credentials of the token server's pull-only user.
  const std::string& pull_only_username() const { return options_.pull_only_username; }
  const std::string& pull_only_password() const { return options_.pull_only_password; }
  // The token server's "http://127.0.0.1:PORT/token", the realm of the registry's Bearer
  // challenges; "" without token_auth.
  std::string token_realm() const;
  // The token server (service name, counters, requested scopes); nullptr without token_auth.
  const TokenServer* token_server() const { return token_server_.get(); }
  // The filesystem storage root.
  std::string storage_dir() const;
  int port() const { return port_; }
  // The registry process (also its process group).
  pid_t pid() const { return process_->pid(); }
  // The registry's log so far.
  std::string ReadLog() const { return process_->ReadLog(); }
  // Stops the registry (SIGTERM) and starts it again on the same port and storage; returns once
  // it answers. Clients in the middle of a request see their connections fail.
  absl::Status Restart();

 private:
  RegistryFixture(Options options, TempDir dir)
      : options_(std::move(options)), dir_(std::move(dir)) {}
  absl::Status WaitReady();

  Options options_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<TokenServer> token_server_;
  std::unique_ptr<ChildProcess> process_;
};

// `git daemon` on 127.0.0.1 exporting every repository under its base dir, push enabled. The
// destructor stops it and removes its dir, repositories included.
class GitDaemonFixture {
 public:
  // Starts the daemon and waits until it accepts connections.
  static absl::StatusOr<std::unique_ptr<GitDaemonFixture>> Start();

  // Creates the bare repository `<base>/<name>.git` with initial branch main; returns its path.
  absl::StatusOr<std::string> CreateBareRepo(absl::string_view name);
  // "git://127.0.0.1:PORT/<name>.git".
  std::string url(absl::string_view name) const;
  // The bare repository's path for `name`.
  std::string repo_path(absl::string_view name) const;
  int port() const { return port_; }
  // A HOME for RunGit calls against this fixture.
  std::string home() const { return dir_.Join("home"); }
  // RunGit(home(), args, cwd).
  absl::StatusOr<CommandResult> Git(const std::vector<std::string>& args,
                                    const std::string& cwd = "") const;
  // The daemon's log so far.
  std::string ReadLog() const { return process_->ReadLog(); }

 private:
  explicit GitDaemonFixture(TempDir dir) : dir_(std::move(dir)) {}

  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

struct GitHttpOptions {
  std::string username = "elfdeploy";
  std::string password = "elfdeploy-secret";
};

// lighttpd on 127.0.0.1 serving git-http-backend under /git/, basic auth required for all of it.
// The destructor stops it and removes its dir, repositories included.
class GitHttpFixture {
 public:
  using Options = GitHttpOptions;

  // Starts lighttpd and waits until it accepts connections.
  static absl::StatusOr<std::unique_ptr<GitHttpFixture>> Start(Options options);

  // Creates a bare repository with initial branch main that accepts pushes over HTTP; returns its
  // path.
  absl::StatusOr<std::string> CreateBareRepo(absl::string_view name);
  // "http://127.0.0.1:PORT/git/<name>.git", without credentials.
  std::string url(absl::string_view name) const;
  // The bare repository's path for `name`.
  std::string repo_path(absl::string_view name) const;
  // The only credentials the server accepts.
  const std::string& username() const { return options_.username; }
  const std::string& password() const { return options_.password; }
  int port() const { return port_; }
  // A HOME for RunGit calls against this fixture.
  std::string home() const { return dir_.Join("home"); }
  // RunGit(home(), args, cwd).
  absl::StatusOr<CommandResult> Git(const std::vector<std::string>& args,
                                    const std::string& cwd = "") const;
  // lighttpd's error log so far.
  std::string ReadLog() const { return process_->ReadLog(); }

 private:
  GitHttpFixture(Options options, TempDir dir)
      : options_(std::move(options)), dir_(std::move(dir)) {}

  Options options_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

// OpenSSH's sshd on 127.0.0.1 serving git over ssh for the current user, key authentication only
// (the fixture's generated client key). Needs /usr/sbin/sshd (openssh-server); as root it also
// creates sshd's privilege separation dir. The destructor stops sshd and removes its dir.
class GitSshFixture {
 public:
  // Generates the host and client keys, starts sshd and waits until it listens.
  static absl::StatusOr<std::unique_ptr<GitSshFixture>> Start();

  // Creates the bare repository `<base>/<name>.git` with initial branch main; returns its path.
  absl::StatusOr<std::string> CreateBareRepo(absl::string_view name);
  // "ssh://USER@127.0.0.1:PORT/<abs path>/<name>.git".
  std::string url(absl::string_view name) const;
  std::string repo_path(absl::string_view name) const;
  // The login user (the current one).
  const std::string& user() const { return user_; }
  // The private key sshd accepts (ECDSA P-256 in PEM, no passphrase) and its public key.
  std::string private_key() const { return dir_.Join("client_key"); }
  std::string public_key() const { return dir_.Join("client_key.pub"); }
  // Another key pair, which sshd does not accept.
  std::string unknown_private_key() const { return dir_.Join("unknown_key"); }
  int port() const { return port_; }
  std::string home() const { return dir_.Join("home"); }
  std::string ReadLog() const { return process_->ReadLog(); }

 private:
  explicit GitSshFixture(TempDir dir) : dir_(std::move(dir)) {}

  TempDir dir_;
  std::string user_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace elfdeploy::testing
