#include "tests/harness/peers.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::testing {
namespace {

namespace fs = std::filesystem;

std::string Sha256Digest(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), md, &length, EVP_sha256(), nullptr);
  return absl::StrCat(
      "sha256:", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), length)));
}

std::string MakeBlob() {
  std::string blob = absl::StrCat("elfdeploy test blob ", absl::ToUnixNanos(absl::Now()), "\n");
  for (int i = 0; i < 4096; ++i) blob.push_back(static_cast<char>(i * 131 % 256));
  return blob;
}

HttpRequest MakeRequest(const std::string& method, const std::string& url,
                        const std::string& username = "", const std::string& password = "") {
  HttpRequest request;
  request.method = method;
  request.url = url;
  request.username = username;
  request.password = password;
  return request;
}

HttpRequest Request(const std::string& method, const std::string& url,
                    const RegistryFixture& registry, bool with_credentials) {
  return with_credentials ? MakeRequest(method, url, registry.username(), registry.password())
                          : MakeRequest(method, url);
}

HttpClientOptions CaOptions(const std::string& ca_file) {
  HttpClientOptions options;
  options.ca_file = ca_file;
  return options;
}

// Pushes a fresh blob with a monolithic upload, then reads it back with HEAD and GET.
void PushAndReadBack(const RegistryFixture& registry, HttpClient& client, bool with_credentials) {
  const std::string blob = MakeBlob();
  const std::string digest = Sha256Digest(blob);
  const std::string repo_url = absl::StrCat(registry.base_url(), "/v2/elfdeploy/test");

  absl::StatusOr<HttpResponse> started =
      client.Do(Request("POST", repo_url + "/blobs/uploads/", registry, with_credentials));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(started->status, 202) << started->body;
  std::string location = started->Header("location");
  ASSERT_FALSE(location.empty());
  if (absl::StartsWith(location, "/")) location = registry.base_url() + location;

  HttpRequest put = Request(
      "PUT",
      absl::StrCat(location, absl::StrContains(location, '?') ? "&" : "?", "digest=", digest),
      registry, with_credentials);
  put.headers = {{"Content-Type", "application/octet-stream"}};
  put.body = blob;
  absl::StatusOr<HttpResponse> finished = client.Do(put);
  ASSERT_TRUE(finished.ok()) << finished.status();
  ASSERT_EQ(finished->status, 201) << finished->body;
  EXPECT_EQ(finished->Header("docker-content-digest"), digest);

  std::string blob_url = absl::StrCat(repo_url, "/blobs/", digest);
  absl::StatusOr<HttpResponse> head =
      client.Do(Request("HEAD", blob_url, registry, with_credentials));
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("content-length"), std::to_string(blob.size()));
  EXPECT_EQ(head->Header("docker-content-digest"), digest);

  absl::StatusOr<HttpResponse> get =
      client.Do(Request("GET", blob_url, registry, with_credentials));
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->status, 200);
  EXPECT_TRUE(get->body == blob) << "read back " << get->body.size() << " bytes";

  std::string hex = digest.substr(7);
  std::string stored = absl::StrCat(registry.storage_dir(), "/docker/registry/v2/blobs/sha256/",
                                    hex.substr(0, 2), "/", hex, "/data");
  EXPECT_TRUE(ReadFile(stored).value_or("") == blob) << stored;
}

TEST(RegistryFixtureTest, PlainPushesAndReadsBackABlob) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_TRUE(absl::StartsWith((*registry)->host(), "127.0.0.1:"));
  EXPECT_EQ((*registry)->base_url(), "http://" + (*registry)->host());
  EXPECT_EQ((*registry)->ca_file(), "");
  HttpClient client;
  absl::StatusOr<HttpResponse> base = client.Get((*registry)->base_url() + "/v2/");
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->status, 200);
  PushAndReadBack(**registry, client, /*with_credentials=*/false);

  std::string url = (*registry)->base_url() + "/v2/";
  registry->reset();
  HttpClient fresh;
  EXPECT_FALSE(fresh.Get(url).ok()) << "registry still answers after the fixture died";
}

TEST(RegistryFixtureTest, HtpasswdRequiresTheRightCredentials) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry =
      RegistryFixture::Start({.htpasswd = true, .username = "alice", .password = "wonderland"});
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_EQ((*registry)->username(), "alice");
  EXPECT_EQ((*registry)->password(), "wonderland");
  HttpClient client;
  std::string url = (*registry)->base_url() + "/v2/";

  absl::StatusOr<HttpResponse> anonymous = client.Get(url);
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_TRUE(absl::StartsWith(anonymous->Header("www-authenticate"), "Basic "))
      << anonymous->Header("www-authenticate");

  absl::StatusOr<HttpResponse> wrong = client.Do(MakeRequest("GET", url, "alice", "looking-glass"));
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ(wrong->status, 401);
  absl::StatusOr<HttpResponse> wrong_upload = client.Do(
      MakeRequest("POST", url + "elfdeploy/test/blobs/uploads/", "mallory", "wonderland"));
  ASSERT_TRUE(wrong_upload.ok()) << wrong_upload.status();
  EXPECT_EQ(wrong_upload->status, 401);

  absl::StatusOr<HttpResponse> right = client.Do(MakeRequest("GET", url, "alice", "wonderland"));
  ASSERT_TRUE(right.ok()) << right.status();
  EXPECT_EQ(right->status, 200);
  PushAndReadBack(**registry, client, /*with_credentials=*/true);
}

TEST(RegistryFixtureTest, TlsIsVerifiedWithTheFixtureCaOnly) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({.tls = true});
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_TRUE(absl::StartsWith((*registry)->host(), "localhost:"));
  EXPECT_EQ((*registry)->base_url(), "https://" + (*registry)->host());
  ASSERT_TRUE(fs::exists((*registry)->ca_file()));

  HttpClient verified(CaOptions((*registry)->ca_file()));
  absl::StatusOr<HttpResponse> base = verified.Get((*registry)->base_url() + "/v2/");
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->status, 200);
  PushAndReadBack(**registry, verified, /*with_credentials=*/false);

  HttpClient system_store;
  absl::StatusOr<HttpResponse> unverified = system_store.Get((*registry)->base_url() + "/v2/");
  ASSERT_FALSE(unverified.ok());
  EXPECT_EQ(unverified.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(
      absl::StrContains(absl::AsciiStrToLower(unverified.status().message()), "certificate"))
      << unverified.status();
}

// A configured CA replaces the system store unless the options say it extends it (a registry's
// certs.d CA); the store is parsed once per process and a CA file that changes is read again.
TEST(RegistryFixtureTest, ConfiguredCaReplacesOrExtendsTheSystemStore) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({.tls = true});
  ASSERT_TRUE(registry.ok()) << registry.status();
  absl::StatusOr<TempDir> dir = TempDir::Create("peers-test-ca-");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::string other = dir->Join("other.pem");
  absl::StatusOr<CommandResult> made = RunCommand(
      {.argv = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", dir->Join("other.key"), "-out",
                other, "-days", "2", "-subj", "/CN=other-ca"}});
  ASSERT_TRUE(made.ok() && made->exit_code == 0);
  std::string url = (*registry)->base_url() + "/v2/";
  auto status_with = [&](HttpClientOptions options) {
    absl::StatusOr<HttpResponse> response = HttpClient(std::move(options)).Get(url);
    return response.ok() ? absl::OkStatus() : response.status();
  };

  // The fixture's CA stands in for the system store (OpenSSL's SSL_CERT_FILE).
  ASSERT_EQ(setenv("SSL_CERT_FILE", (*registry)->ca_file().c_str(), 1), 0);
  HttpClientOptions replaces = CaOptions(other);
  EXPECT_EQ(status_with(replaces).code(), absl::StatusCode::kUnavailable);
  HttpClientOptions extends = CaOptions(other);
  extends.ca_extends_system_store = true;
  EXPECT_TRUE(status_with(extends).ok()) << status_with(extends);
  unsetenv("SSL_CERT_FILE");

  // A CA file rewritten in place (a rotated certificate) is picked up by the same client.
  std::string rotating = dir->Join("rotating.pem");
  ASSERT_TRUE(WriteFile(rotating, *ReadFile(other)).ok());
  HttpClient client(CaOptions(rotating));
  EXPECT_EQ(client.Get(url).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(WriteFile(rotating, *ReadFile((*registry)->ca_file())).ok());
  timespec times[2] = {{0, UTIME_NOW}, {absl::ToUnixSeconds(absl::Now()) + 5, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, rotating.c_str(), times, 0), 0);
  absl::StatusOr<HttpResponse> rotated = client.Get(url);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->status, 200);

  // A CA that is not PEM, or a missing file, is a configuration error, not a network one.
  HttpClientOptions not_pem;
  not_pem.ca_pem = "PEM-CA";
  EXPECT_EQ(status_with(not_pem).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status_with(CaOptions(dir->Join("missing.pem"))).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RegistryFixtureTest, TlsWithHtpasswd) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry =
      RegistryFixture::Start({.htpasswd = true, .tls = true});
  ASSERT_TRUE(registry.ok()) << registry.status();
  HttpClient client(CaOptions((*registry)->ca_file()));
  absl::StatusOr<HttpResponse> anonymous = client.Get((*registry)->base_url() + "/v2/");
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->status, 401);
  PushAndReadBack(**registry, client, /*with_credentials=*/true);
}

class GitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> work = TempDir::Create("peers-test-work-");
    ASSERT_TRUE(work.ok()) << work.status();
    work_ = std::make_unique<TempDir>(*std::move(work));
  }

  // Runs git with the fixture's hermetic environment and returns its exit code and output.
  CommandResult Git(const std::string& home, const std::vector<std::string>& args,
                    const std::string& cwd = "") {
    absl::StatusOr<CommandResult> result = RunGit(home, args, cwd);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.value_or(CommandResult{});
  }

  // Like Git, but the command must succeed; returns its output.
  std::string MustGit(const std::string& home, const std::vector<std::string>& args,
                      const std::string& cwd = "") {
    CommandResult result = Git(home, args, cwd);
    EXPECT_EQ(result.exit_code, 0) << "git " << absl::StrJoin(args, " ") << ":\n" << result.output;
    return result.output;
  }

  std::unique_ptr<TempDir> work_;
};

TEST_F(GitTest, DaemonClonePushAndFreshClone) {
  absl::StatusOr<std::unique_ptr<GitDaemonFixture>> daemon = GitDaemonFixture::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  absl::StatusOr<std::string> bare = (*daemon)->CreateBareRepo("app");
  ASSERT_TRUE(bare.ok()) << bare.status();
  const std::string url = (*daemon)->url("app");
  EXPECT_EQ(url, absl::StrCat("git://127.0.0.1:", (*daemon)->port(), "/app.git"));
  const std::string home = (*daemon)->home();
  const std::string clone = work_->Join("clone");

  MustGit(home, {"clone", url, clone});
  ASSERT_TRUE(WriteFile(clone + "/README.md", "hello over git://\n").ok());
  MustGit(home, {"add", "README.md"}, clone);
  MustGit(home, {"commit", "-m", "Add README"}, clone);
  MustGit(home, {"push", "origin", "HEAD:main"}, clone);
  std::string head =
      std::string(absl::StripAsciiWhitespace(MustGit(home, {"rev-parse", "HEAD"}, clone)));

  EXPECT_EQ(MustGit(home, {"--git-dir", *bare, "log", "--format=%H %s", "main"}),
            absl::StrCat(head, " Add README\n"));
  MustGit(home, {"clone", url, work_->Join("fresh")});
  EXPECT_EQ(ReadFile(work_->Join("fresh/README.md")).value_or(""), "hello over git://\n");
}

TEST_F(GitTest, HttpNeedsCredentialsToCloneAndPush) {
  absl::StatusOr<std::unique_ptr<GitHttpFixture>> server =
      GitHttpFixture::Start({.username = "bob", .password = "builder"});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::string> bare = (*server)->CreateBareRepo("gitops");
  ASSERT_TRUE(bare.ok()) << bare.status();
  const std::string url = (*server)->url("gitops");
  EXPECT_EQ(url, absl::StrCat("http://127.0.0.1:", (*server)->port(), "/git/gitops.git"));
  const std::string home = (*server)->home();
  const std::string auth =
      absl::StrCat("http.extraHeader=Authorization: Basic ", absl::Base64Escape("bob:builder"));
  const std::string wrong_auth =
      absl::StrCat("http.extraHeader=Authorization: Basic ", absl::Base64Escape("bob:wrong"));

  HttpClient http;
  std::string refs_url = url + "/info/refs?service=git-upload-pack";
  absl::StatusOr<HttpResponse> anonymous = http.Get(refs_url);
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_TRUE(absl::StartsWith(anonymous->Header("www-authenticate"), "Basic "));
  absl::StatusOr<HttpResponse> authorized = http.Do(MakeRequest("GET", refs_url, "bob", "builder"));
  ASSERT_TRUE(authorized.ok()) << authorized.status();
  EXPECT_EQ(authorized->status, 200);
  EXPECT_TRUE(absl::StrContains(authorized->body, "# service=git-upload-pack"));

  EXPECT_NE(Git(home, {"clone", url, work_->Join("anonymous")}).exit_code, 0);
  EXPECT_NE(Git(home, {"-c", wrong_auth, "clone", url, work_->Join("wrong")}).exit_code, 0);

  const std::string clone = work_->Join("clone");
  MustGit(home, {"-c", auth, "clone", url, clone});
  ASSERT_TRUE(WriteFile(clone + "/app.yaml", "replicas: 2\n").ok());
  MustGit(home, {"add", "app.yaml"}, clone);
  MustGit(home, {"commit", "-m", "Add app"}, clone);
  MustGit(home, {"-c", auth, "push", "origin", "HEAD:main"}, clone);
  std::string head =
      std::string(absl::StripAsciiWhitespace(MustGit(home, {"rev-parse", "HEAD"}, clone)));
  EXPECT_EQ(MustGit(home, {"--git-dir", *bare, "rev-parse", "main"}), head + "\n");

  ASSERT_TRUE(WriteFile(clone + "/app.yaml", "replicas: 3\n").ok());
  MustGit(home, {"commit", "-am", "Scale up"}, clone);
  CommandResult anonymous_push = Git(home, {"push", "origin", "HEAD:main"}, clone);
  EXPECT_NE(anonymous_push.exit_code, 0) << anonymous_push.output;
  EXPECT_EQ(MustGit(home, {"--git-dir", *bare, "rev-parse", "main"}), head + "\n");

  MustGit(home, {"-c", auth, "clone", url, work_->Join("fresh")});
  EXPECT_EQ(ReadFile(work_->Join("fresh/app.yaml")).value_or(""), "replicas: 2\n");
}

}  // namespace
}  // namespace elfdeploy::testing
