// The elfdeploy-kubesim binary as the local demo runs it: Argo CD follows a real git daemon, the
// kubelet asks a real registry. An Application whose image is missing shows ImagePullBackOff;
// once the image is pushed the same pod runs with the pushed digest and the Application turns
// Synced and Healthy; a commit that removes the app prunes it.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/common/http_client.h"
#include "services/common/oci/copy.h"
#include "services/common/oci/registry_client.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/oci_image.h"

namespace elfdeploy::kubesim {
namespace {

namespace harness = ::elfdeploy::testing;
using json = nlohmann::json;

class KubesimE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<harness::TempDir> dir = harness::TempDir::Create("kubesim-e2e-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    absl::StatusOr<std::unique_ptr<harness::RegistryFixture>> registry =
        harness::RegistryFixture::Start({});
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
    absl::StatusOr<std::unique_ptr<harness::GitDaemonFixture>> git =
        harness::GitDaemonFixture::Start();
    ASSERT_TRUE(git.ok()) << git.status();
    git_ = *std::move(git);
    ASSERT_TRUE(git_->CreateBareRepo("gitops").ok());
    work_ = dir_->Join("work");
    Git({"clone", "-q", git_->url("gitops"), work_});
    Git({"-C", work_, "symbolic-ref", "HEAD", "refs/heads/main"});
    ASSERT_TRUE(harness::WriteTestImage(dir_->Join("layout"), "v1", {4096}, 3).ok());
  }

  void TearDown() override {
    if (kubesim_ != nullptr) kubesim_->Stop(absl::Seconds(10)).IgnoreError();
  }

  std::string Git(const std::vector<std::string>& args) {
    absl::StatusOr<harness::CommandResult> result = git_->Git(args);
    EXPECT_TRUE(result.ok() && result->exit_code == 0)
        << (result.ok() ? result->output : result.status().ToString());
    return result.ok() ? std::string(absl::StripAsciiWhitespace(result->output)) : "";
  }

  std::string Commit(const std::vector<std::pair<std::string, std::string>>& files) {
    for (const auto& [path, content] : files) {
      if (content.empty()) {
        Git({"-C", work_, "rm", "-q", "-r", path});
      } else {
        EXPECT_TRUE(harness::WriteFile(absl::StrCat(work_, "/", path), content).ok());
      }
    }
    Git({"-C", work_, "add", "-A"});
    Git({"-C", work_, "commit", "-q", "-m", "deploy"});
    Git({"-C", work_, "push", "-q", "origin", "HEAD:main"});
    return Git({"-C", work_, "rev-parse", "HEAD"});
  }

  std::string Push(const std::string& repository) {
    std::unique_ptr<oci::Registry> client = oci::NewRegistryClient({});
    absl::StatusOr<oci::TransportReference> from =
        oci::ParseTransportReference(absl::StrCat("oci:", dir_->Join("layout"), ":v1"));
    absl::StatusOr<oci::TransportReference> to =
        oci::ParseTransportReference(absl::StrCat("docker://", registry_->host(), "/", repository));
    EXPECT_TRUE(from.ok() && to.ok());
    absl::StatusOr<oci::CopyResult> copied = oci::CopyImage(*client, *from, *to, {});
    EXPECT_TRUE(copied.ok()) << copied.status();
    return copied.ok() ? copied->manifest_digest.ToString() : "";
  }

  void StartKubesim() {
    absl::StatusOr<std::unique_ptr<harness::ChildProcess>> process = harness::ChildProcess::Start(
        {.argv = {KUBESIM_BINARY, "--listen_addr=127.0.0.1:0",
                  "--gitops_repo=" + git_->url("gitops"), "--gitops_prefix=elf",
                  "--repo_poll=100ms", "--container_start_delay=50ms", "--image_pull_backoff=200ms",
                  "--image_pull_backoff_max=400ms", "--err_image_pull_hold=50ms",
                  "--resolve_cache_ttl=50ms"},
         .log_path = dir_->Join("kubesim.log")});
    ASSERT_TRUE(process.ok()) << process.status();
    kubesim_ = *std::move(process);
    std::string line;
    ASSERT_TRUE(kubesim_->WaitForLogLine("msg=serving", absl::Seconds(30), &line).ok())
        << kubesim_->ReadLog();
    for (absl::string_view field : absl::StrSplit(line, ' ')) {
      if (absl::ConsumePrefix(&field, "url=")) url_ = std::string(field);
    }
    ASSERT_FALSE(url_.empty()) << line;
  }

  json Get(const std::string& path) {
    absl::StatusOr<HttpResponse> response = http_.Get(url_ + path);
    if (!response.ok() || response->status != 200) return json();
    return json::parse(response->body, nullptr, false);
  }

  // Polls `path` until `done` holds (30 s at most); the last object seen.
  json WaitFor(const std::string& path, const std::function<bool(const json&)>& done) {
    json last;
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      last = Get(path);
      if (!last.is_discarded() && !last.is_null() && done(last)) return last;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "timed out waiting on " << path << ": " << last.dump(2) << "\n"
                  << kubesim_->ReadLog();
    return last;
  }

  static std::string Waiting(const json& pods) {
    if (!pods.contains("items") || pods["items"].empty()) return "";
    const json& status = pods["items"][0]["status"];
    if (!status.contains("containerStatuses")) return "";
    const json& state = status["containerStatuses"][0]["state"];
    return state.contains("waiting") ? state["waiting"].value("reason", "") : "";
  }

  std::optional<harness::TempDir> dir_;
  std::unique_ptr<harness::RegistryFixture> registry_;
  std::unique_ptr<harness::GitDaemonFixture> git_;
  std::unique_ptr<harness::ChildProcess> kubesim_;
  std::string work_;
  std::string url_;
  HttpClient http_;
};

TEST_F(KubesimE2eTest, MissingImageThenPushedThenPrunedThroughTheRealRepoAndRegistry) {
  std::string image = absl::StrCat(registry_->host(), "/elf/web:v1");
  std::string app =
      json({{"apiVersion", "argoproj.io/v1alpha1"},
            {"kind", "Application"},
            {"metadata", {{"name", "elf-teams"}}},
            {"spec",
             {{"source",
               {{"repoURL", git_->url("gitops")},
                {"targetRevision", "HEAD"},
                {"path", "elf/manifests/teams"}}},
              {"destination", {{"server", "https://kubernetes.default.svc"}, {"namespace", "elf"}}},
              {"syncPolicy",
               {{"automated", {{"prune", true}, {"selfHeal", true}}},
                {"syncOptions", {"CreateNamespace=true"}}}}}}})
          .dump();
  std::string deployment = absl::StrCat(
      "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n"
      "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
      "    spec:\n      containers:\n        - name: web\n          image: ",
      image, "\n");
  std::string first = Commit({{"elf/applications/teams-app.yaml", app},
                              {"elf/manifests/teams/kustomization.yaml", "resources: [web.yaml]\n"},
                              {"elf/manifests/teams/web.yaml", deployment}});
  ASSERT_NO_FATAL_FAILURE(StartKubesim());

  // Synced to the commit, but the image is not in the registry yet.
  const std::string app_path =
      "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/elf-teams";
  json synced = WaitFor(app_path, [&](const json& a) {
    return a.contains("status") && a["status"]["sync"].value("revision", "") == first &&
           a["status"]["sync"].value("status", "") == "Synced";
  });
  EXPECT_NE(synced["status"]["health"].value("status", ""), "Healthy");
  const std::string pods_path = "/api/v1/namespaces/elf/pods?labelSelector=app%3Dweb";
  WaitFor(pods_path, [](const json& pods) { return Waiting(pods) == "ImagePullBackOff"; });
  json events = Get("/api/v1/namespaces/elf/events");
  bool failed_event = false;
  for (const json& event : events["items"]) {
    if (event.value("reason", "") == "Failed" &&
        absl::StrContains(event.value("message", ""), "Failed to pull image")) {
      failed_event = true;
    }
  }
  EXPECT_TRUE(failed_event) << events.dump(2);

  // Pushed: the pod runs with the pushed digest and the Application turns Healthy.
  std::string digest = Push("elf/web:v1");
  json pods = WaitFor(pods_path, [](const json& p) {
    return !p["items"].empty() && p["items"][0]["status"].value("phase", "") == "Running";
  });
  EXPECT_EQ(pods["items"][0]["status"]["containerStatuses"][0].value("imageID", ""),
            absl::StrCat(registry_->host(), "/elf/web@", digest));
  WaitFor(app_path, [](const json& a) {
    return a.contains("status") && a["status"]["health"].value("status", "") == "Healthy";
  });

  // The app leaves the repository: pruned.
  std::string second = Commit({{"elf/manifests/teams/kustomization.yaml", "resources: []\n"},
                               {"elf/manifests/teams/web.yaml", ""}});
  WaitFor(app_path, [&](const json& a) {
    return a["status"]["sync"].value("revision", "") == second &&
           a["status"]["sync"].value("status", "") == "Synced";
  });
  WaitFor("/apis/apps/v1/namespaces/elf/deployments",
          [](const json& list) { return list.contains("items") && list["items"].empty(); });
  WaitFor(pods_path, [](const json& p) { return p.contains("items") && p["items"].empty(); });
}

}  // namespace
}  // namespace elfdeploy::kubesim
