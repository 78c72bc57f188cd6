#include "tests/harness/peers.h"

#include <pwd.h>
#include <unistd.h>

#include <filesystem>

#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/common/http_client.h"
#include "tests/harness/net.h"

namespace elfdeploy::testing {
namespace {

constexpr int kStartAttempts = 5;
constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kStopGrace = absl::Seconds(5);

absl::Status RunChecked(ProcessOptions options) {
  std::string command = options.argv[0];
  absl::StatusOr<CommandResult> result = RunCommand(std::move(options));
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat(command, " exited with code ", result->exit_code, ":\n",
                                            Tail(result->output)));
  }
  return absl::OkStatus();
}

absl::Status GitChecked(const std::string& home, const std::vector<std::string>& args) {
  absl::StatusOr<CommandResult> result = RunGit(home, args);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("git ", absl::StrJoin(args, " "), " exited with code ",
                                            result->exit_code, ":\n", Tail(result->output)));
  }
  return absl::OkStatus();
}

absl::Status WriteHtpasswd(const std::string& path, const std::string& username,
                           const std::string& password) {
  absl::StatusOr<CommandResult> result =
      RunCommand({.argv = {"htpasswd", "-Bbn", username, password}});
  if (!result.ok()) return result.status();
  for (absl::string_view line : absl::StrSplit(result->output, '\n')) {
    if (result->exit_code == 0 && absl::StartsWith(line, absl::StrCat(username, ":"))) {
      return WriteFile(path, absl::StrCat(line, "\n"));
    }
  }
  return absl::InternalError(absl::StrCat("htpasswd -Bbn failed:\n", Tail(result->output)));
}

absl::Status WriteSelfSignedCert(const std::string& cert, const std::string& key) {
  return RunChecked({.argv = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out",
                              cert, "-days", "7", "-subj", "/CN=localhost", "-addext",
                              "subjectAltName=DNS:localhost,IP:127.0.0.1"}});
}

std::vector<std::pair<std::string, std::string>> GitEnv(const std::string& home) {
  return {{"GIT_CONFIG_NOSYSTEM", "1"},  {"HOME", home},
          {"XDG_CONFIG_HOME", home},     {"GIT_CONFIG_COUNT", "0"},
          {"GIT_CONFIG_PARAMETERS", ""}, {"GIT_TERMINAL_PROMPT", "0"},
          {"GIT_ASKPASS", ""},           {"SSH_ASKPASS", ""}};
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> StartOnFreePort(
    const std::string& log_path, const std::function<absl::StatusOr<ProcessOptions>(int)>& make,
    absl::string_view ready_line, int* port_out) {
  absl::Status status;
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    absl::StatusOr<ProcessOptions> options = make(*port);
    if (!options.ok()) return options.status();
    options->log_path = log_path;
    unlink(log_path.c_str());
    absl::StatusOr<std::unique_ptr<ChildProcess>> process =
        ChildProcess::Start(*std::move(options));
    if (!process.ok()) return process.status();
    status = (*process)->WaitForLogLine(ready_line, kStartTimeout);
    if (status.ok()) {
      *port_out = *port;
      return process;
    }
    (*process)->Stop(kStopGrace).IgnoreError();
    if (!absl::StrContains(absl::AsciiStrToLower((*process)->ReadLog()),
                           "address already in use")) {
      break;
    }
  }
  return status;
}

absl::StatusOr<CommandResult> RunGit(const std::string& home, const std::vector<std::string>& args,
                                     const std::string& cwd, absl::Duration timeout) {
  ProcessOptions options{
      .argv = {"git", "-c", "user.name=elfdeploy test", "-c", "user.email=test@elfdeploy.invalid",
               "-c", "init.defaultBranch=main"},
      .env = GitEnv(home),
      .cwd = cwd};
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  return RunCommand(std::move(options), timeout);
}

absl::StatusOr<std::unique_ptr<RegistryFixture>> RegistryFixture::Start(Options options) {
  if (options.htpasswd && options.token_auth) {
    return absl::InvalidArgumentError("htpasswd and token_auth exclude each other");
  }
  absl::StatusOr<TempDir> dir = TempDir::Create("elfdeploy-registry-");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<RegistryFixture> fixture(
      new RegistryFixture(std::move(options), *std::move(dir)));
  std::string tls;
  std::string auth;
  if (fixture->options_.tls) {
    std::string key = fixture->dir_.Join("key.pem");
    absl::Status status = WriteSelfSignedCert(fixture->ca_file(), key);
    if (!status.ok()) return status;
    tls = absl::StrFormat("  tls:\n    certificate: %s\n    key: %s\n", fixture->ca_file(), key);
  }
  if (fixture->options_.htpasswd) {
    std::string path = fixture->dir_.Join("htpasswd");
    absl::Status status =
        WriteHtpasswd(path, fixture->options_.username, fixture->options_.password);
    if (!status.ok()) return status;
    auth = absl::StrFormat("auth:\n  htpasswd:\n    realm: elfdeploy-test\n    path: %s\n", path);
  }
  if (fixture->options_.token_auth) {
    const Options& o = fixture->options_;
    absl::StatusOr<std::unique_ptr<TokenServer>> token_server =
        TokenServer::Start({.users = {{o.username, o.password},
                                      {o.pull_only_username, o.pull_only_password, {"pull"}}},
                            .allow_anonymous_pull = o.anonymous_pull});
    if (!token_server.ok()) return token_server.status();
    fixture->token_server_ = *std::move(token_server);
    const TokenServer& t = *fixture->token_server_;
    auth = absl::StrFormat(
        "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
        t.realm(), t.options().service, t.options().issuer, t.cert_file());
  }
  std::string config_path = fixture->dir_.Join("config.yml");
  auto make = [&](int port) -> absl::StatusOr<ProcessOptions> {
    std::string config = absl::StrFormat(
        "version: 0.1\n"
        "log:\n  level: info\n"
        "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
        "http:\n  addr: 127.0.0.1:%d\n  secret: elfdeploy-test-secret\n%s%s",
        fixture->storage_dir(), port, tls, auth);
    absl::Status status = WriteFile(config_path, config);
    if (!status.ok()) return status;
    return ProcessOptions{.argv = {"docker-registry", "serve", config_path}};
  };
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      StartOnFreePort(fixture->dir_.Join("registry.log"), make, "listening on", &fixture->port_);
  if (!process.ok()) return process.status();
  fixture->process_ = *std::move(process);

  if (absl::Status ready = fixture->WaitReady(); !ready.ok()) return ready;
  return fixture;
}

absl::Status RegistryFixture::WaitReady() {
  HttpClientOptions http_options;
  http_options.ca_file = ca_file();
  http_options.timeout = absl::Seconds(5);
  HttpClient client(http_options);
  absl::Time deadline = absl::Now() + kStartTimeout;
  while (true) {
    absl::StatusOr<HttpResponse> response = client.Get(base_url() + "/v2/");
    if (response.ok() && (response->status == 200 || response->status == 401)) {
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline || !process_->Running()) {
      return absl::UnavailableError(absl::StrCat(
          "registry at ", base_url(), " is not ready: ",
          response.ok() ? absl::StrCat("HTTP ", response->status) : response.status().ToString(),
          "; log tail:\n", Tail(ReadLog())));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::Status RegistryFixture::Restart() {
  ProcessOptions options = process_->options();
  if (absl::StatusOr<int> stopped = process_->Stop(absl::Seconds(5)); !stopped.ok()) {
    return stopped.status();
  }
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Start(std::move(options));
  if (!process.ok()) return process.status();
  process_ = *std::move(process);
  return WaitReady();
}

std::string RegistryFixture::host() const {
  return absl::StrCat(options_.tls ? "localhost" : "127.0.0.1", ":", port_);
}

std::string RegistryFixture::base_url() const {
  return absl::StrCat(options_.tls ? "https://" : "http://", host());
}

std::string RegistryFixture::token_realm() const {
  return token_server_ == nullptr ? "" : token_server_->realm();
}

std::string RegistryFixture::ca_file() const { return options_.tls ? dir_.Join("cert.pem") : ""; }

std::string RegistryFixture::storage_dir() const { return dir_.Join("storage"); }

absl::StatusOr<std::unique_ptr<GitDaemonFixture>> GitDaemonFixture::Start() {
  absl::StatusOr<TempDir> dir = TempDir::Create("elfdeploy-gitd-");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<GitDaemonFixture> fixture(new GitDaemonFixture(*std::move(dir)));
  for (const char* sub : {"repos/.keep", "home/.keep"}) {
    absl::Status status = WriteFile(fixture->dir_.Join(sub), "");
    if (!status.ok()) return status;
  }
  auto make = [&](int port) -> absl::StatusOr<ProcessOptions> {
    return ProcessOptions{
        .argv = {"git", "daemon", "--listen=127.0.0.1", absl::StrCat("--port=", port),
                 absl::StrCat("--base-path=", fixture->dir_.Join("repos")), "--export-all",
                 "--enable=receive-pack", "--reuseaddr", "--verbose"},
        .env = GitEnv(fixture->home())};
  };
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = StartOnFreePort(
      fixture->dir_.Join("git-daemon.log"), make, "Ready to rumble", &fixture->port_);
  if (!process.ok()) return process.status();
  fixture->process_ = *std::move(process);
  absl::Status status = WaitForTcpPort("127.0.0.1", fixture->port_, kStartTimeout);
  if (!status.ok()) return status;
  return fixture;
}

absl::StatusOr<std::string> GitDaemonFixture::CreateBareRepo(absl::string_view name) {
  std::string path = repo_path(name);
  absl::Status status =
      GitChecked(home(), {"init", "--quiet", "--bare", "--initial-branch=main", path});
  if (!status.ok()) return status;
  return path;
}

std::string GitDaemonFixture::url(absl::string_view name) const {
  return absl::StrCat("git://127.0.0.1:", port_, "/", name, ".git");
}

std::string GitDaemonFixture::repo_path(absl::string_view name) const {
  return dir_.Join(absl::StrCat("repos/", name, ".git"));
}

absl::StatusOr<CommandResult> GitDaemonFixture::Git(const std::vector<std::string>& args,
                                                    const std::string& cwd) const {
  return RunGit(home(), args, cwd);
}

absl::StatusOr<std::unique_ptr<GitHttpFixture>> GitHttpFixture::Start(Options options) {
  absl::StatusOr<TempDir> dir = TempDir::Create("elfdeploy-githttp-");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<GitHttpFixture> fixture(new GitHttpFixture(std::move(options), *std::move(dir)));
  const TempDir& d = fixture->dir_;
  for (const char* sub : {"repos/.keep", "home/.keep", "www/.keep"}) {
    absl::Status status = WriteFile(d.Join(sub), "");
    if (!status.ok()) return status;
  }
  absl::Status status =
      WriteHtpasswd(d.Join("htpasswd"), fixture->options_.username, fixture->options_.password);
  if (!status.ok()) return status;
  std::string config_path = d.Join("lighttpd.conf");
  auto make = [&](int port) -> absl::StatusOr<ProcessOptions> {
    std::string config = absl::StrFormat(
        R"(server.document-root = "%s"
server.bind = "127.0.0.1"
server.port = %d
server.modules = ("mod_alias", "mod_auth", "mod_authn_file", "mod_setenv", "mod_cgi")
# CGI output reaches the client as it comes, as with Apache's mod_cgi.
server.stream-response-body = 1
alias.url = ("/git/" => "/usr/lib/git-core/git-http-backend/")
$HTTP["url"] =~ "^/git/" {
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "%s", "GIT_HTTP_EXPORT_ALL" => "1",
                            "GIT_CONFIG_NOSYSTEM" => "1", "HOME" => "%s")
  auth.backend = "htpasswd"
  auth.backend.htpasswd.userfile = "%s"
  auth.require = ("" => ("method" => "basic", "realm" => "elfdeploy-git",
                         "require" => "valid-user"))
}
)",
        d.Join("www"), port, d.Join("repos"), fixture->home(), d.Join("htpasswd"));
    absl::Status status = WriteFile(config_path, config);
    if (!status.ok()) return status;
    return ProcessOptions{.argv = {"lighttpd", "-D", "-f", config_path}};
  };
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      StartOnFreePort(d.Join("lighttpd.log"), make, "server started", &fixture->port_);
  if (!process.ok()) return process.status();
  fixture->process_ = *std::move(process);
  status = WaitForTcpPort("127.0.0.1", fixture->port_, kStartTimeout);
  if (!status.ok()) return status;
  return fixture;
}

absl::StatusOr<std::string> GitHttpFixture::CreateBareRepo(absl::string_view name) {
  std::string path = repo_path(name);
  absl::Status status =
      GitChecked(home(), {"init", "--quiet", "--bare", "--initial-branch=main", path});
  if (status.ok()) {
    status = GitChecked(home(), {"--git-dir", path, "config", "http.receivepack", "true"});
  }
  if (!status.ok()) return status;
  return path;
}

std::string GitHttpFixture::url(absl::string_view name) const {
  return absl::StrCat("http://127.0.0.1:", port_, "/git/", name, ".git");
}

std::string GitHttpFixture::repo_path(absl::string_view name) const {
  return dir_.Join(absl::StrCat("repos/", name, ".git"));
}

absl::StatusOr<CommandResult> GitHttpFixture::Git(const std::vector<std::string>& args,
                                                  const std::string& cwd) const {
  return RunGit(home(), args, cwd);
}

absl::StatusOr<std::unique_ptr<GitSshFixture>> GitSshFixture::Start() {
  constexpr char kSshd[] = "/usr/sbin/sshd";
  if (access(kSshd, X_OK) != 0) {
    return absl::FailedPreconditionError("/usr/sbin/sshd is missing (install openssh-server)");
  }
  absl::StatusOr<TempDir> dir = TempDir::Create("elfdeploy-gitssh-");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<GitSshFixture> fixture(new GitSshFixture(*std::move(dir)));
  const TempDir& d = fixture->dir_;
  for (const char* sub : {"repos/.keep", "home/.keep"}) {
    if (absl::Status status = WriteFile(d.Join(sub), ""); !status.ok()) return status;
  }
  const passwd* user = getpwuid(geteuid());
  if (user == nullptr) return absl::InternalError("no passwd entry for the current user");
  fixture->user_ = user->pw_name;
  if (geteuid() == 0) {
    std::error_code ec;
    std::filesystem::create_directories("/run/sshd", ec);
  }
  // ECDSA keys in PEM: libssh2 1.10 signs with RSA keys only as ssh-rsa (SHA-1), which OpenSSH 9
  // refuses, and reads PEM everywhere.
  for (const char* key : {"host_key", "client_key", "unknown_key"}) {
    absl::Status status = RunChecked({.argv = {"ssh-keygen", "-q", "-t", "ecdsa", "-b", "256", "-m",
                                               "PEM", "-N", "", "-C", key, "-f", d.Join(key)}});
    if (!status.ok()) return status;
  }
  absl::StatusOr<std::string> authorized = ReadFile(d.Join("client_key.pub"));
  if (!authorized.ok()) return authorized.status();
  if (absl::Status status = WriteFile(d.Join("authorized_keys"), *authorized); !status.ok()) {
    return status;
  }
  std::string config_path = d.Join("sshd_config");
  auto make = [&](int port) -> absl::StatusOr<ProcessOptions> {
    std::string config = absl::StrFormat(
        R"(ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers %s
PidFile none
LogLevel VERBOSE
SetEnv GIT_CONFIG_NOSYSTEM=1 HOME=%s
)",
        port, d.Join("host_key"), d.Join("authorized_keys"), fixture->user_, fixture->home());
    if (absl::Status status = WriteFile(config_path, config); !status.ok()) return status;
    return ProcessOptions{.argv = {kSshd, "-D", "-e", "-f", config_path}};
  };
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      StartOnFreePort(d.Join("sshd.log"), make, "Server listening", &fixture->port_);
  if (!process.ok()) return process.status();
  fixture->process_ = *std::move(process);
  if (absl::Status status = WaitForTcpPort("127.0.0.1", fixture->port_, kStartTimeout);
      !status.ok()) {
    return status;
  }
  return fixture;
}

absl::StatusOr<std::string> GitSshFixture::CreateBareRepo(absl::string_view name) {
  std::string path = repo_path(name);
  absl::Status status =
      GitChecked(home(), {"init", "--quiet", "--bare", "--initial-branch=main", path});
  if (!status.ok()) return status;
  return path;
}

std::string GitSshFixture::url(absl::string_view name) const {
  return absl::StrCat("ssh://", user_, "@127.0.0.1:", port_, repo_path(name));
}

std::string GitSshFixture::repo_path(absl::string_view name) const {
  return dir_.Join(absl::StrCat("repos/", name, ".git"));
}

}  // namespace elfdeploy::testing
