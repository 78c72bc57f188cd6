// Diagnose with every part real: kubesim runs the workloads against two docker-registries (one
// with htpasswd) and Argo CD on a git repository, the agent streams them to cluster-watcher, and
// cluster-watcher asks registry-sync about images and the agent for logs. Each troubleshooting case
// of the seed gets its finding: image missing, credentials refused, crash loop with the log tail,
// missing namespace, discovery missing.
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
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
#include "tests/support/service_process.h"

namespace elfdeploy::testing {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kToken[] = "diagnose-token";

class DiagnoseE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("diagnose-e2e-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    absl::StatusOr<std::unique_ptr<RegistryFixture>> open = RegistryFixture::Start({});
    ASSERT_TRUE(open.ok()) << open.status();
    open_ = *std::move(open);
    RegistryFixture::Options auth;
    auth.htpasswd = true;
    absl::StatusOr<std::unique_ptr<RegistryFixture>> closed = RegistryFixture::Start(auth);
    ASSERT_TRUE(closed.ok()) << closed.status();
    closed_ = *std::move(closed);
    ASSERT_TRUE(WriteTestImage(dir_->Join("layout"), "v1", {4096}, 5).ok());
    ASSERT_NO_FATAL_FAILURE(Push(*open_, "team/good:v1"));
    ASSERT_NO_FATAL_FAILURE(Push(*closed_, "team/private:v1"));

    // A GitOps repo whose Application points at a namespace that does not exist.
    std::string home = dir_->Join("home");
    ASSERT_TRUE(WriteFile(dir_->Join("home/.keep"), "").ok());
    std::string bare = dir_->Join("gitops.git");
    std::string work = dir_->Join("work");
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"init", "-q", "--bare", "--initial-branch=main", bare},
          {"clone", "-q", bare, work},
          {"-C", work, "symbolic-ref", "HEAD", "refs/heads/main"}}) {
      absl::StatusOr<CommandResult> git = RunGit(home, args);
      ASSERT_TRUE(git.ok() && git->exit_code == 0) << (git.ok() ? git->output : "");
    }
    ASSERT_TRUE(WriteFile(absl::StrCat(work, "/m/app.yaml"),
                          "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"
                          "data: {a: b}\n")
                    .ok());
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"-C", work, "add", "-A"},
          {"-C", work, "commit", "-q", "-m", "app"},
          {"-C", work, "push", "-q", "origin", "HEAD:main"}}) {
      absl::StatusOr<CommandResult> git = RunGit(home, args);
      ASSERT_TRUE(git.ok() && git->exit_code == 0) << (git.ok() ? git->output : "");
    }
    repo_url_ = absl::StrCat("file://", bare);
  }

  void Push(const RegistryFixture& registry, const std::string& repository) {
    oci::RegistryClientOptions options;
    if (!registry.username().empty()) {
      options.credentials.Set(registry.host(),
                              {registry.username(), Secret(registry.password()), Secret()});
    }
    std::unique_ptr<oci::Registry> client = oci::NewRegistryClient(options);
    absl::StatusOr<oci::TransportReference> from =
        oci::ParseTransportReference(absl::StrCat("oci:", dir_->Join("layout"), ":v1"));
    absl::StatusOr<oci::TransportReference> to =
        oci::ParseTransportReference(absl::StrCat("docker://", registry.host(), "/", repository));
    ASSERT_TRUE(from.ok() && to.ok());
    absl::StatusOr<oci::CopyResult> copied = oci::CopyImage(*client, *from, *to, {});
    ASSERT_TRUE(copied.ok()) << copied.status();
  }

  void StartStack() {
    absl::StatusOr<std::unique_ptr<ChildProcess>> kubesim = ChildProcess::Start(
        {.argv = {BinaryPath("elfdeploy-kubesim"), "--listen_addr=127.0.0.1:0",
                  "--container_start_delay=50ms", "--crash_after=100ms", "--crash_backoff=200ms",
                  "--crash_backoff_max=400ms", "--image_pull_backoff=200ms",
                  "--image_pull_backoff_max=400ms", "--err_image_pull_hold=50ms",
                  "--resolve_cache_ttl=50ms", "--repo_poll=100ms"},
         .log_path = dir_->Join("kubesim.log")});
    ASSERT_TRUE(kubesim.ok()) << kubesim.status();
    kubesim_ = *std::move(kubesim);
    std::string line;
    ASSERT_TRUE(kubesim_->WaitForLogLine("msg=serving", absl::Seconds(30), &line).ok());
    kubesim_url_ = LogfmtValue(line, "url");
    ASSERT_TRUE(WriteKubeconfig(dir_->Join("kubeconfig"), kubesim_url_).ok());
    absl::StatusOr<std::unique_ptr<ServiceProcess>> registry_sync =
        ServiceProcess::Start({.binary = "elfdeploy-registry-sync"});
    ASSERT_TRUE(registry_sync.ok()) << registry_sync.status();
    registry_sync_ = *std::move(registry_sync);
    absl::StatusOr<std::unique_ptr<ServiceProcess>> watcher = ServiceProcess::Start(
        {.binary = "elfdeploy-cluster-watcher",
         .env = {{"ELFDEPLOY_WATCHER_DATA_DIR", dir_->Join("watcher")},
                 {"ELFDEPLOY_WATCHER_AGENT_TOKEN", kToken},
                 {"ELFDEPLOY_WATCHER_REGISTRY_SYNC_ADDR", registry_sync_->grpc_addr()}}});
    ASSERT_TRUE(watcher.ok()) << watcher.status();
    watcher_ = *std::move(watcher);
    absl::StatusOr<std::unique_ptr<ServiceProcess>> agent =
        ServiceProcess::Start({.binary = "elfdeploy-agent",
                               .env = {{"ELFDEPLOY_AGENT_KUBECONFIG", dir_->Join("kubeconfig")},
                                       {"ELFDEPLOY_AGENT_WATCHER_ADDR", watcher_->grpc_addr()},
                                       {"ELFDEPLOY_AGENT_INSECURE", "true"},
                                       {"ELFDEPLOY_AGENT_TOKEN", kToken},
                                       {"ELFDEPLOY_AGENT_CLUSTER_NAME", "sim"}},
                               .grpc = false});
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = *std::move(agent);
    stub_ = v1::ClusterWatcherService::NewStub(
        grpc::CreateChannel(watcher_->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    agent_.reset();
    watcher_.reset();
    registry_sync_.reset();
    if (kubesim_ != nullptr) kubesim_->Stop(absl::Seconds(10)).IgnoreError();
  }

  void Post(const std::string& path, const json& object) {
    HttpClient client;
    HttpRequest request;
    request.method = "POST";
    request.url = kubesim_url_ + path;
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = object.dump();
    absl::StatusOr<HttpResponse> response = client.Do(request);
    ASSERT_TRUE(response.ok() && response->status == 201)
        << path << ": " << (response.ok() ? response->body : response.status().ToString());
  }

  static json Deployment(const std::string& name, const std::string& image,
                         const json& env = json::array(), int port = 8080) {
    return {{"apiVersion", "apps/v1"},
            {"kind", "Deployment"},
            {"metadata", {{"name", name}, {"namespace", "apps"}}},
            {"spec",
             {{"replicas", 1},
              {"selector", {{"matchLabels", {{"app", name}}}}},
              {"template",
               {{"metadata", {{"labels", {{"app", name}}}}},
                {"spec",
                 {{"containers",
                   {{{"name", name},
                     {"image", image},
                     {"env", env},
                     {"ports", {{{"containerPort", port}}}}}}}}}}}}}};
  }

  // Diagnoses `request` until `done` accepts the response (60 s at most); the last response.
  v1::DiagnoseResponse DiagnoseUntil(const v1::DiagnoseRequest& request,
                                     const std::function<bool(const v1::DiagnoseResponse&)>& done) {
    v1::DiagnoseResponse response;
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      response.Clear();
      if (stub_->Diagnose(&context, request, &response).ok() && done(response)) return response;
      absl::SleepFor(absl::Milliseconds(200));
    }
    ADD_FAILURE() << "no such diagnosis for " << request.ShortDebugString() << ":\n"
                  << response.DebugString();
    return response;
  }

  static const v1::Finding* Find(const v1::DiagnoseResponse& response, v1::FindingKind kind) {
    for (const v1::Finding& finding : response.findings()) {
      if (finding.kind() == kind) return &finding;
    }
    return nullptr;
  }

  static v1::DiagnoseRequest ForApp(const std::string& app) {
    v1::DiagnoseRequest request;
    request.set_app(app);
    request.set_namespace_("apps");
    return request;
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<RegistryFixture> open_;
  std::unique_ptr<RegistryFixture> closed_;
  std::string repo_url_;
  std::unique_ptr<ChildProcess> kubesim_;
  std::string kubesim_url_;
  std::unique_ptr<ServiceProcess> registry_sync_;
  std::unique_ptr<ServiceProcess> watcher_;
  std::unique_ptr<ServiceProcess> agent_;
  std::unique_ptr<v1::ClusterWatcherService::Stub> stub_;
};

TEST_F(DiagnoseE2eTest, EachTroubleshootingCaseGetsItsFinding) {
  ASSERT_NO_FATAL_FAILURE(StartStack());
  Post("/api/v1/namespaces", {{"metadata", {{"name", "apps"}}}});
  std::string good = absl::StrCat(open_->host(), "/team/good:v1");
  Post("/apis/apps/v1/namespaces/apps/deployments",
       Deployment("missing", absl::StrCat(open_->host(), "/team/never-pushed:v1")));
  Post("/apis/apps/v1/namespaces/apps/deployments",
       Deployment("private", absl::StrCat(closed_->host(), "/team/private:v1")));
  Post("/apis/apps/v1/namespaces/apps/deployments",
       Deployment("crasher", good, {{{"name", "ELFDEPLOY_SIM_EXIT_CODE"}, {"value", "3"}}}));
  Post("/apis/apps/v1/namespaces/apps/deployments", Deployment("web", good));
  Post("/apis/apps/v1/namespaces/apps/deployments", Deployment("agentgateway", good));
  Post("/apis/argoproj.io/v1alpha1/namespaces/argocd/applications",
       {{"apiVersion", "argoproj.io/v1alpha1"},
        {"kind", "Application"},
        {"metadata", {{"name", "elf-absent"}, {"namespace", "argocd"}}},
        {"spec",
         {{"source", {{"repoURL", repo_url_}, {"targetRevision", "HEAD"}, {"path", "m"}}},
          {"destination", {{"server", "https://kubernetes.default.svc"}, {"namespace", "absent"}}},
          {"syncPolicy", {{"automated", {{"prune", true}}}}}}}});

  // Image missing: registry-sync says the image does not exist. Fatal.
  v1::DiagnoseResponse missing = DiagnoseUntil(ForApp("missing"), [](const auto& r) {
    const v1::Finding* f = Find(r, v1::FINDING_KIND_IMAGE_PULL);
    return f != nullptr && f->reason() == "ImageNotFound";
  });
  EXPECT_TRUE(missing.fatal());
  EXPECT_FALSE(missing.healthy());

  // Credentials refused: the pod has no pull secret for the htpasswd registry. Fatal.
  v1::DiagnoseResponse refused = DiagnoseUntil(ForApp("private"), [](const auto& r) {
    const v1::Finding* f = Find(r, v1::FINDING_KIND_IMAGE_PULL);
    return f != nullptr && f->reason() == "CredentialsRefused";
  });
  EXPECT_TRUE(refused.fatal());

  // Crash loop: the exit code and the last lines of the container's log, read through the agent.
  v1::DiagnoseResponse crash = DiagnoseUntil(ForApp("crasher"), [](const auto& r) {
    const v1::Finding* f = Find(r, v1::FINDING_KIND_CRASH_LOOP);
    return f != nullptr && f->severity() == v1::SEVERITY_ERROR;
  });
  const v1::Finding* crash_loop = Find(crash, v1::FINDING_KIND_CRASH_LOOP);
  ASSERT_NE(crash_loop, nullptr);
  std::string evidence = absl::StrJoin(crash_loop->evidence(), "\n");
  EXPECT_THAT(evidence, HasSubstr("exit code 3"));
  EXPECT_THAT(evidence, HasSubstr("exiting with code 3"));

  // The same pods, counted by reason in the watcher's metrics (refreshed every 5 s).
  double crash_looping = 0;
  double pull_failing = 0;
  for (absl::Time end = absl::Now() + absl::Seconds(30);
       absl::Now() < end && (crash_looping < 1 || pull_failing < 1);
       absl::SleepFor(absl::Milliseconds(500))) {
    absl::StatusOr<std::string> metrics = ScrapeMetrics(watcher_->metrics_addr());
    if (!metrics.ok()) continue;
    crash_looping = 0;
    pull_failing = 0;
    for (const char* reason : {"CrashLoopBackOff", "Error"}) {
      crash_looping += MetricValue(*metrics, "elfdeploy_watcher_pods_not_ready",
                                   {{"namespace", "apps"}, {"reason", reason}})
                           .value_or(0);
    }
    for (const char* reason : {"ImagePullBackOff", "ErrImagePull"}) {
      pull_failing += MetricValue(*metrics, "elfdeploy_watcher_pods_not_ready",
                                  {{"namespace", "apps"}, {"reason", reason}})
                          .value_or(0);
    }
  }
  EXPECT_GE(crash_looping, 1);
  EXPECT_GE(pull_failing, 2);  // "missing" and "private"

  // Missing namespace: Argo CD's sync error on the Application.
  v1::DiagnoseRequest application;
  application.set_application("elf-absent");
  v1::DiagnoseResponse sync = DiagnoseUntil(application, [](const auto& r) {
    const v1::Finding* f = Find(r, v1::FINDING_KIND_SYNC_ERROR);
    return f != nullptr && f->reason() == "NamespaceMissing";
  });
  EXPECT_THAT(absl::StrJoin(Find(sync, v1::FINDING_KIND_SYNC_ERROR)->evidence(), "\n"),
              HasSubstr("namespaces \"absent\" not found"));

  // Discovery: web is ready but has no Service, so agentgateway never discovers it...
  v1::DiagnoseRequest discovery = ForApp("web");
  discovery.set_check_discovery(true);
  v1::DiagnoseResponse undiscovered = DiagnoseUntil(discovery, [](const auto& r) {
    const v1::Finding* f = Find(r, v1::FINDING_KIND_DISCOVERY_MISSING);
    return r.workloads_size() == 1 && r.workloads(0).ready() && f != nullptr &&
           f->severity() == v1::SEVERITY_ERROR;
  });
  EXPECT_FALSE(undiscovered.healthy());
  // ...until it gets one: then the gateway's log has the line and the app is healthy.
  Post("/api/v1/namespaces/apps/services",
       {{"metadata", {{"name", "web"}, {"namespace", "apps"}}},
        {"spec", {{"selector", {{"app", "web"}}}, {"ports", {{{"port", 8080}}}}}}});
  v1::DiagnoseResponse discovered =
      DiagnoseUntil(discovery, [](const auto& r) { return r.healthy(); });
  ASSERT_EQ(discovered.workloads_size(), 1);
  EXPECT_TRUE(discovered.workloads(0).discovered());
  EXPECT_THAT(discovered.workloads(0).discovery_line(),
              HasSubstr("Discovered web at http://web.apps.svc.cluster.local:8080"));
}

}  // namespace
}  // namespace elfdeploy::testing
