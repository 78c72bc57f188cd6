// The agent's Kubernetes client against kubesim's API server over real HTTP(S): config loading,
// errors from Status objects, bearer tokens (rotated files too), TLS with a pinned CA, and the
// informer's list-then-watch, pagination, resume, and relist after 410 Gone.
#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "agent/kube/client.h"
#include "agent/kube/config.h"
#include "agent/kube/informer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/kubesim/api_server.h"
#include "tests/kubesim/store.h"

namespace elfdeploy::agent {
namespace {

namespace harness = ::elfdeploy::testing;
using json = nlohmann::json;
using ::testing::HasSubstr;

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<harness::TempDir> dir = harness::TempDir::Create("agent-kube-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
  }
  std::optional<harness::TempDir> dir_;
};

using ConfigTest = TempDirTest;

TEST_F(ConfigTest, KubeconfigCurrentContextWithTokenFileAndCaData) {
  ASSERT_TRUE(harness::WriteFile(dir_->Join("token"), "abc\n").ok());
  std::string config = absl::StrCat(R"(apiVersion: v1
kind: Config
current-context: prod
clusters:
  - name: c1
    cluster:
      server: https://10.0.0.1:6443
      certificate-authority-data: )",
                                    absl::Base64Escape("PEM-CA"), R"(
  - name: c2
    cluster: {server: https://other:443, insecure-skip-tls-verify: true}
users:
  - name: u1
    user: {tokenFile: token}
  - name: u2
    user:
      client-certificate-data: )",
                                    absl::Base64Escape("CERT"), R"(
      client-key-data: )",
                                    absl::Base64Escape("KEY"), R"(
  - name: u3
    user: {exec: {command: aws}}
contexts:
  - name: prod
    context: {cluster: c1, user: u1}
  - name: dev
    context: {cluster: c2, user: u2}
  - name: plugin
    context: {cluster: c1, user: u3}
)");
  std::string path = dir_->Join("kubeconfig");
  ASSERT_TRUE(harness::WriteFile(path, config).ok());

  absl::StatusOr<KubeConfig> prod = LoadKubeconfig(path, "");
  ASSERT_TRUE(prod.ok()) << prod.status();
  EXPECT_EQ(prod->server, "https://10.0.0.1:6443");
  EXPECT_EQ(prod->ca_pem, "PEM-CA");
  EXPECT_EQ(prod->token_file, dir_->Join("token"));
  EXPECT_FALSE(prod->insecure_skip_tls_verify);

  absl::StatusOr<KubeConfig> dev = LoadKubeconfig(path, "dev");
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_TRUE(dev->insecure_skip_tls_verify);
  EXPECT_EQ(dev->client_cert_pem, "CERT");
  EXPECT_EQ(dev->client_key_pem.Reveal(), "KEY");

  absl::StatusOr<KubeConfig> plugin = LoadKubeconfig(path, "plugin");
  EXPECT_EQ(plugin.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plugin.status().message(), HasSubstr("exec and auth-provider"));
  EXPECT_THAT(LoadKubeconfig(path, "nope").status().message(), HasSubstr("no such context"));
}

TEST_F(ConfigTest, InClusterNeedsTheEnvironmentAndTheToken) {
  std::map<std::string, std::string> env = {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                            {"KUBERNETES_SERVICE_PORT", "443"}};
  GetEnv getenv = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  EXPECT_EQ(InClusterConfig(getenv, dir_->Join("sa")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(harness::WriteFile(dir_->Join("sa/token"), "t").ok());
  ASSERT_TRUE(harness::WriteFile(dir_->Join("sa/ca.crt"), "ca").ok());
  absl::StatusOr<KubeConfig> config = InClusterConfig(getenv, dir_->Join("sa"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server, "https://10.96.0.1:443");
  EXPECT_EQ(config->ca_file, dir_->Join("sa/ca.crt"));
  EXPECT_EQ(config->token_file, dir_->Join("sa/token"));
  env.clear();
  EXPECT_EQ(InClusterConfig(getenv, dir_->Join("sa")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// kubesim's API server in this process, over a store the test writes to directly.
class KubeTest : public TempDirTest {
 protected:
  void StartServer(bool tls, size_t history_window = 10000) {
    kubesim::ObjectStoreOptions store_options;
    store_options.history_window = history_window;
    store_ = std::make_unique<kubesim::ObjectStore>(store_options);
    kubesim::ApiServerOptions options;
    options.token = Secret("s3cret-token");
    options.bookmark_interval = absl::Milliseconds(200);
    if (tls) {
      options.tls_cert_file = dir_->Join("cert.pem");
      options.tls_key_file = dir_->Join("key.pem");
      absl::StatusOr<harness::CommandResult> made = harness::RunCommand(
          {.argv = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", options.tls_key_file,
                    "-out", options.tls_cert_file, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"}});
      ASSERT_TRUE(made.ok() && made->exit_code == 0);
    }
    absl::StatusOr<std::unique_ptr<kubesim::ApiServer>> server =
        kubesim::ApiServer::Start(store_.get(), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    config_.server = server_->base_url();
    config_.token = Secret("s3cret-token");
    if (tls) config_.ca_file = dir_->Join("cert.pem");
    ASSERT_TRUE(store_->Create("namespaces", {{"metadata", {{"name", "apps"}}}}).ok());
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Stop();
  }

  json Pod(const std::string& name, const std::string& payload = "") {
    json pod = {{"metadata", {{"name", name}, {"namespace", "apps"}}},
                {"spec", {{"containers", {{{"name", "main"}, {"image", "reg/app:1"}}}}}}};
    if (!payload.empty()) pod["metadata"]["annotations"]["payload"] = payload;
    return pod;
  }

  std::unique_ptr<kubesim::ObjectStore> store_;
  std::unique_ptr<kubesim::ApiServer> server_;
  KubeConfig config_;
};

TEST_F(KubeTest, TlsWithPinnedCaTokenAndStatusErrors) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*tls=*/true));
  KubeClient client(config_);
  absl::StatusOr<std::string> version = client.ServerVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_THAT(*version, HasSubstr("kubesim"));

  absl::StatusOr<json> created = client.Create("/api/v1/namespaces/apps/pods", Pod("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(client.Create("/api/v1/namespaces/apps/pods", Pod("a")).status().code(),
            absl::StatusCode::kAlreadyExists);
  absl::StatusOr<json> missing = client.Get("/api/v1/namespaces/apps/pods/zzz");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("pods \"zzz\" not found"));
  absl::StatusOr<json> patched = client.MergePatch("/api/v1/namespaces/apps/pods/a",
                                                   {{"metadata", {{"labels", {{"x", "1"}}}}}});
  ASSERT_TRUE(patched.ok()) << patched.status();
  EXPECT_EQ((*patched)["metadata"]["labels"]["x"], "1");

  KubeConfig wrong = config_;
  wrong.token = Secret("nope");
  EXPECT_EQ(KubeClient(wrong).Get("/api/v1/pods").status().code(),
            absl::StatusCode::kUnauthenticated);
  KubeConfig unpinned = config_;
  unpinned.ca_file.clear();
  EXPECT_EQ(KubeClient(unpinned).Get("/api/v1/pods").status().code(),
            absl::StatusCode::kUnavailable);

  // The CA as PEM text (a kubeconfig's certificate-authority-data) pins it the same way.
  absl::StatusOr<std::string> pem = harness::ReadFile(dir_->Join("cert.pem"));
  ASSERT_TRUE(pem.ok());
  KubeConfig inline_ca = unpinned;
  inline_ca.ca_pem = *pem;
  EXPECT_TRUE(KubeClient(inline_ca).Get("/api/v1/pods").ok());
  absl::StatusOr<harness::CommandResult> other = harness::RunCommand(
      {.argv = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", dir_->Join("other.key"),
                "-out", dir_->Join("other.pem"), "-days", "2", "-subj", "/CN=localhost"}});
  ASSERT_TRUE(other.ok() && other->exit_code == 0);
  KubeConfig other_ca = unpinned;
  other_ca.ca_pem = *harness::ReadFile(dir_->Join("other.pem"));
  EXPECT_EQ(KubeClient(other_ca).Get("/api/v1/pods").status().code(),
            absl::StatusCode::kUnavailable);
  KubeConfig not_pem = unpinned;
  not_pem.ca_pem = "PEM-CA";
  EXPECT_EQ(KubeClient(not_pem).Get("/api/v1/pods").status().code(),
            absl::StatusCode::kInvalidArgument);
  // insecure-skip-tls-verify: no CA needed.
  KubeConfig insecure = unpinned;
  insecure.insecure_skip_tls_verify = true;
  EXPECT_TRUE(KubeClient(insecure).Get("/api/v1/pods").ok());
}

TEST_F(KubeTest, TokenFileIsReadAgainWhenItRotates) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*tls=*/false));
  std::string token_file = dir_->Join("token");
  ASSERT_TRUE(harness::WriteFile(token_file, "old-token\n").ok());
  KubeConfig config = config_;
  config.token = Secret();
  config.token_file = token_file;
  KubeClient client(config);
  EXPECT_EQ(client.Get("/api/v1/pods").status().code(), absl::StatusCode::kUnauthenticated);
  // A new file (a projected token is replaced through a symlink swap; its mtime changes).
  ASSERT_TRUE(harness::WriteFile(token_file + ".new", "s3cret-token\n").ok());
  ASSERT_EQ(std::rename((token_file + ".new").c_str(), token_file.c_str()), 0);
  timespec times[2] = {{0, UTIME_NOW}, {absl::ToUnixSeconds(absl::Now()) + 5, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, token_file.c_str(), times, 0), 0);
  EXPECT_TRUE(client.Get("/api/v1/pods").ok());
}

// Collects what an informer reports, thread-safely.
struct Recorder {
  absl::Mutex mu;
  std::vector<std::pair<Change, std::string>> changes ABSL_GUARDED_BY(mu);
  std::map<std::string, std::string> state ABSL_GUARDED_BY(mu);  // name -> resourceVersion
  int synced ABSL_GUARDED_BY(mu) = 0;
  int expired ABSL_GUARDED_BY(mu) = 0;

  InformerHandler Handler() {
    InformerHandler handler;
    handler.on_change = [this](Change change, simdjson::dom::element object) {
      absl::MutexLock lock(&mu);
      std::string name(object["metadata"]["name"].get_string().value());
      changes.emplace_back(change, name);
      if (change == Change::kDeleted) {
        state.erase(name);
      } else {
        state[name] = std::string(object["metadata"]["resourceVersion"].get_string().value());
      }
    };
    handler.on_synced = [this](const std::string&) {
      absl::MutexLock lock(&mu);
      ++synced;
    };
    handler.on_restart = [this](Restart restart, const absl::Status&) {
      absl::MutexLock lock(&mu);
      if (restart == Restart::kExpired) ++expired;
    };
    return handler;
  }

  bool WaitFor(const std::function<bool()>& done) {
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      {
        absl::MutexLock lock(&mu);
        if (done()) return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
};

std::map<std::string, std::string> StoreState(kubesim::ObjectStore& store) {
  std::map<std::string, std::string> state;
  kubesim::ListOptions options;
  options.namespace_name = "apps";
  absl::StatusOr<kubesim::ListResult> list = store.List("pods", options);
  if (!list.ok()) return state;
  for (const kubesim::ObjectPtr& pod : list->items) {
    state[(*pod)["metadata"]["name"]] = (*pod)["metadata"]["resourceVersion"];
  }
  return state;
}

TEST_F(KubeTest, InformerListsInPagesThenWatchesEveryChange) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*tls=*/false));
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(store_->Create("pods", Pod(absl::StrCat("p", i))).ok());
  KubeClient client(config_);
  Recorder recorder;
  InformerOptions options;
  options.path = "/api/v1/namespaces/apps/pods";
  options.page_size = 7;
  options.watch_timeout = absl::Seconds(1);  // resumed from the last version each second
  Informer informer(client, options, recorder.Handler());
  std::atomic<bool> stop{false};
  std::thread thread([&] { informer.Run([&] { return stop.load(); }); });
  ASSERT_TRUE(recorder.WaitFor([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return recorder.synced == 1 && recorder.changes.size() == 25;
  }));
  // Changes while the watch times out and resumes: none lost, none twice.
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(store_->Create("pods", Pod(absl::StrCat("q", i))).ok());
    if (i % 10 == 0) absl::SleepFor(absl::Milliseconds(400));
  }
  ASSERT_TRUE(store_->Delete("pods", "apps", "p0").ok());
  ASSERT_TRUE(
      store_->MergePatch("pods", "apps", "p1", {{"metadata", {{"labels", {{"changed", "yes"}}}}}})
          .ok());
  std::map<std::string, std::string> expected = StoreState(*store_);
  ASSERT_TRUE(recorder.WaitFor(
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return recorder.state == expected; }));
  stop = true;
  thread.join();
  absl::MutexLock lock(&recorder.mu);
  EXPECT_EQ(recorder.changes.size(), 25u + 40u + 2u);
  std::set<std::pair<int, std::string>> unique;
  for (const auto& [change, name] : recorder.changes) {
    unique.insert({static_cast<int>(change), name});
  }
  EXPECT_EQ(unique.size(), recorder.changes.size()) << "a change reported twice";
  EXPECT_EQ(recorder.synced, 1);
}

TEST_F(KubeTest, RelistAfter410ReportsOnlyTheRealDifferences) {
  // A small history window: a watcher that stops reading falls out of it.
  ASSERT_NO_FATAL_FAILURE(StartServer(/*tls=*/false, /*history_window=*/20));
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(store_->Create("pods", Pod(absl::StrCat("p", i))).ok());
  KubeClient client(config_);
  Recorder recorder;
  absl::Notification blocked;
  absl::Notification release;
  std::atomic<bool> block_next{false};
  InformerHandler inner = recorder.Handler();
  InformerHandler handler = inner;
  handler.on_change = [&](Change change, simdjson::dom::element object) {
    inner.on_change(change, object);
    if (block_next.exchange(false)) {
      blocked.Notify();
      release.WaitForNotification();
    }
  };
  InformerOptions options;
  options.path = "/api/v1/namespaces/apps/pods";
  Informer informer(client, options, handler);
  std::atomic<bool> stop{false};
  std::thread thread([&] { informer.Run([&] { return stop.load(); }); });
  ASSERT_TRUE(recorder.WaitFor([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return recorder.synced == 1 && recorder.changes.size() == 30;
  }));

  // The informer stalls inside a watch event while far more than the window changes, with
  // payloads large enough to fill the socket buffers so the server cannot run ahead.
  block_next = true;
  ASSERT_TRUE(
      store_->MergePatch("pods", "apps", "p0", {{"metadata", {{"labels", {{"a", "1"}}}}}}).ok());
  blocked.WaitForNotification();
  std::string payload(64 << 10, 'x');
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(store_->Create("pods", Pod(absl::StrCat("big", i), payload)).ok());
  }
  for (int i = 0; i < 200; i += 2)
    ASSERT_TRUE(store_->Delete("pods", "apps", absl::StrCat("big", i)).ok());
  ASSERT_TRUE(store_->Delete("pods", "apps", "p1").ok());
  ASSERT_TRUE(
      store_->MergePatch("pods", "apps", "p2", {{"metadata", {{"labels", {{"b", "2"}}}}}}).ok());
  size_t before_release;
  {
    absl::MutexLock lock(&recorder.mu);
    before_release = recorder.changes.size();
  }
  release.Notify();
  std::map<std::string, std::string> expected = StoreState(*store_);
  ASSERT_TRUE(recorder.WaitFor([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return recorder.state == expected && recorder.expired >= 1;
  })) << "expired="
      << recorder.expired;
  stop = true;
  thread.join();

  absl::MutexLock lock(&recorder.mu);
  // Pods untouched while the informer stalled were not reported again: no phantom changes.
  for (size_t i = before_release; i < recorder.changes.size(); ++i) {
    const std::string& name = recorder.changes[i].second;
    EXPECT_TRUE(name == "p1" || name == "p2" || name.rfind("big", 0) == 0)
        << "phantom change of " << name;
  }
  EXPECT_GE(recorder.synced, 2);
}

// A watch stream whose event lacks its object, from a server that is not kubesim.
TEST(KubeWatchTest, AnEventWithoutAnObjectEndsTheWatchAsDataLoss) {
  httplib::Server server;
  server.Get("/api/v1/pods", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n"
        "{\"type\":\"MODIFIED\"}\n",
        "application/json");
  });
  int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread serving([&] { server.listen_after_bind(); });  // bound and listening already
  KubeConfig config;
  config.server = absl::StrCat("http://127.0.0.1:", port);
  KubeClient client(config);
  std::vector<std::string> seen;
  absl::Status watched = client.Watch(
      "/api/v1/pods",
      [&](std::string_view type, simdjson::dom::element object) {
        seen.push_back(absl::StrCat(absl::string_view(type.data(), type.size()), " ",
                                    std::string(object["metadata"]["name"].get_string().value())));
        return true;
      },
      nullptr);
  server.stop();
  serving.join();
  EXPECT_EQ(watched.code(), absl::StatusCode::kDataLoss) << watched;
  EXPECT_THAT(seen, ::testing::ElementsAre("ADDED a"));
}

}  // namespace
}  // namespace elfdeploy::agent
