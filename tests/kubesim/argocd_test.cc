// kubesim's Argo CD against real git repositories (bare repos written with the git CLI): rendering,
// automated sync with prune, ComparisonError, SyncError, Applications read from the repository,
// and the controller's threads following a moved branch head and the refresh annotation.
#include "tests/kubesim/argocd.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/peers.h"
#include "tests/harness/temp_dir.h"
#include "tests/kubesim/source_render.h"

namespace elfdeploy::kubesim {
namespace {

namespace harness = ::elfdeploy::testing;
using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Names(const std::vector<json>& objects) {
  std::vector<std::string> names;
  for (const json& o : objects) {
    names.push_back(absl::StrCat(o.value("kind", ""), "/", o["metadata"].value("namespace", ""),
                                 "/", o["metadata"].value("name", "")));
  }
  return names;
}

TEST(RenderSourceTest, KustomizationsRecurseAndSetNamespaceAndLabels) {
  MapTree tree({
      {"p/manifests/teams/kustomization.yaml",
       "resources:\n  - a\n  - ../shared/cm.yaml\nnamespace: elf\ncommonLabels:\n  team: x\n"},
      {"p/manifests/teams/a/kustomization.yaml", "resources: [deployment.yaml, service.yaml]\n"},
      {"p/manifests/teams/a/deployment.yaml",
       "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\nspec:\n  replicas: 2\n"},
      {"p/manifests/teams/a/service.yaml",
       "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: other}\n"},
      {"p/manifests/shared/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"},
  });
  absl::StatusOr<RenderedSource> rendered = RenderSource(tree, "p/manifests/teams");
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(rendered->source_type, "Kustomize");
  EXPECT_THAT(Names(rendered->objects),
              ElementsAre("Deployment/elf/a", "Service/elf/a", "ConfigMap/elf/c"));
  EXPECT_EQ(rendered->objects[0]["metadata"]["labels"]["team"], "x");
  EXPECT_EQ(rendered->objects[0]["spec"]["replicas"], 2);
}

TEST(RenderSourceTest, DirectoryWithoutKustomizationReadsItsYamlFiles) {
  MapTree tree({{"d/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"},
                {"d/b.json", R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}})"},
                {"d/README.md", "not yaml: ["},
                {"d/sub/c.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"}});
  absl::StatusOr<RenderedSource> rendered = RenderSource(tree, "d");
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(rendered->source_type, "Directory");
  EXPECT_THAT(Names(rendered->objects), ElementsAre("ConfigMap//a", "ConfigMap//b"));
}

TEST(RenderSourceTest, ErrorsReadAsTheRepoServerWritesThem) {
  MapTree tree({{"k/kustomization.yaml", "resources: [missing.yaml]\n"},
                {"u/kustomization.yaml", "resources: []\nimages: []\n"},
                {"o/kustomization.yaml", "resources: [../../../etc/passwd]\n"},
                {"bad/deployment.yaml", "kind: Deployment\nmetadata: [unclosed\n"}});
  absl::StatusOr<RenderedSource> missing = RenderSource(tree, "k");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("`kustomize build k` failed exit status 1: Error: accumulating resources"));
  EXPECT_THAT(RenderSource(tree, "u").status().message(),
              HasSubstr("field 'images' is not supported"));
  EXPECT_THAT(RenderSource(tree, "o").status().message(), HasSubstr("outside the repository"));
  EXPECT_THAT(RenderSource(tree, "bad").status().message(),
              HasSubstr("Failed to unmarshal \"deployment.yaml\""));
  EXPECT_EQ(RenderSource(tree, "nowhere").status().code(), absl::StatusCode::kNotFound);
}

// A bare repository and a working copy to commit into with the git CLI.
class GitRepo {
 public:
  void Init(const harness::TempDir& dir) {
    home_ = dir.Join("home");
    ASSERT_TRUE(harness::WriteFile(dir.Join("home/.keep"), "").ok());
    bare_ = dir.Join("gitops.git");
    work_ = dir.Join("work");
    Git({"init", "--quiet", "--bare", "--initial-branch=main", bare_});
    Git({"init", "--quiet", "--initial-branch=main", work_});
    Git({"-C", work_, "remote", "add", "origin", bare_});
  }

  // Writes (or, with an empty content, removes) files, commits and pushes; returns the commit.
  std::string Commit(const std::vector<std::pair<std::string, std::string>>& files) {
    for (const auto& [path, content] : files) {
      if (content.empty()) {
        Git({"-C", work_, "rm", "-q", "-r", path});
      } else {
        EXPECT_TRUE(harness::WriteFile(absl::StrCat(work_, "/", path), content).ok());
      }
    }
    Git({"-C", work_, "add", "-A"});
    Git({"-C", work_, "commit", "--quiet", "-m", "change"});
    Git({"-C", work_, "push", "--quiet", "origin", "HEAD:main"});
    return Git({"-C", work_, "rev-parse", "HEAD"});
  }

  std::string url() const { return absl::StrCat("file://", bare_); }

 private:
  std::string Git(std::vector<std::string> args) {
    absl::StatusOr<harness::CommandResult> result = harness::RunGit(home_, args);
    EXPECT_TRUE(result.ok() && result->exit_code == 0)
        << (result.ok() ? result->output : result.status().ToString());
    return result.ok() ? std::string(absl::StripAsciiWhitespace(result->output)) : "";
  }

  std::string home_;
  std::string bare_;
  std::string work_;
};

std::string DeploymentYaml(const std::string& name, const std::string& image) {
  return absl::StrCat(
      "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ", name,
      "\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: ", name,
      "}\n  template:\n    metadata:\n      labels: {app: ", name,
      "}\n    spec:\n      containers:\n        - name: main\n          image: ", image, "\n");
}

std::string ServiceYaml(const std::string& name) {
  return absl::StrCat("apiVersion: v1\nkind: Service\nmetadata:\n  name: ", name,
                      "\nspec:\n  selector: {app: ", name, "}\n  ports:\n    - port: 80\n");
}

json Application(const std::string& name, const std::string& url, const std::string& path,
                 const std::string& ns, bool create_namespace = true) {
  json app = {{"apiVersion", "argoproj.io/v1alpha1"},
              {"kind", "Application"},
              {"metadata", {{"name", name}, {"namespace", "argocd"}}},
              {"spec",
               {{"project", "default"},
                {"source", {{"repoURL", url}, {"targetRevision", "HEAD"}, {"path", path}}},
                {"destination", {{"server", "https://kubernetes.default.svc"}, {"namespace", ns}}},
                {"syncPolicy", {{"automated", {{"prune", true}, {"selfHeal", true}}}}}}}};
  if (create_namespace) app["spec"]["syncPolicy"]["syncOptions"] = {"CreateNamespace=true"};
  return app;
}

class ArgoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<harness::TempDir> dir = harness::TempDir::Create("kubesim-argo-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    ASSERT_NO_FATAL_FAILURE(repo_.Init(*dir_));
    ASSERT_TRUE(store_.Create("namespaces", {{"metadata", {{"name", "argocd"}}}}).ok());
  }

  ArgoOptions Options() const {
    ArgoOptions options;
    options.cache_dir = dir_->Join("cache");
    options.repo_poll = absl::Milliseconds(50);
    return options;
  }

  json App(const std::string& name) {
    absl::StatusOr<ObjectPtr> app = store_.Get("applications", "argocd", name);
    EXPECT_TRUE(app.ok()) << app.status();
    return app.ok() ? **app : json();
  }

  std::string At(const json& object, const char* pointer) {
    json::json_pointer p(pointer);
    return object.contains(p) && object[p].is_string() ? object[p].get<std::string>() : "";
  }

  // Waits until `done` holds for the Application, for at most 30 s.
  bool WaitForApp(const std::string& name, const std::function<bool(const json&)>& done) {
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      absl::StatusOr<ObjectPtr> app = store_.Get("applications", "argocd", name);
      if (app.ok() && done(**app)) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  std::optional<harness::TempDir> dir_;
  GitRepo repo_;
  ObjectStore store_;
};

TEST_F(ArgoTest, AutomatedSyncCreatesPrunesAndReportsTheRevision) {
  std::string first = repo_.Commit(
      {{"elf/manifests/teams/kustomization.yaml", "resources: [a, b]\n"},
       {"elf/manifests/teams/a/kustomization.yaml", "resources: [deployment.yaml, service.yaml]\n"},
       {"elf/manifests/teams/a/deployment.yaml", DeploymentYaml("a", "reg/a@sha256:1")},
       {"elf/manifests/teams/a/service.yaml", ServiceYaml("a")},
       {"elf/manifests/teams/b/kustomization.yaml", "resources: [deployment.yaml]\n"},
       {"elf/manifests/teams/b/deployment.yaml", DeploymentYaml("b", "reg/b@sha256:2")}});
  ASSERT_TRUE(store_
                  .Create("applications",
                          Application("elf-teams", repo_.url(), "elf/manifests/teams", "elf"))
                  .ok());
  ArgoController argo(store_, Options());
  ASSERT_TRUE(argo.ReconcileAll().ok());

  json app = App("elf-teams");
  EXPECT_EQ(At(app, "/status/sync/status"), "Synced") << app.dump(2);
  EXPECT_EQ(At(app, "/status/sync/revision"), first);
  EXPECT_EQ(At(app, "/status/operationState/phase"), "Succeeded");
  EXPECT_EQ(At(app, "/status/operationState/syncResult/revision"), first);
  EXPECT_EQ(At(app, "/status/sourceType"), "Kustomize");
  // No kubelet here: the Deployments never report available replicas.
  EXPECT_EQ(At(app, "/status/health/status"), "Progressing");
  EXPECT_TRUE(store_.Get("namespaces", "", "elf").ok());
  absl::StatusOr<ObjectPtr> a = store_.Get("deployments", "elf", "a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((**a)["metadata"]["labels"]["app.kubernetes.io/instance"], "elf-teams");
  EXPECT_EQ((**a)["spec"]["template"]["spec"]["containers"][0]["image"], "reg/a@sha256:1");
  EXPECT_TRUE(store_.Get("services", "elf", "a").ok());
  EXPECT_TRUE(store_.Get("deployments", "elf", "b").ok());

  // b leaves the repository and a gets a new image: b is pruned, a updated.
  std::string second = repo_.Commit(
      {{"elf/manifests/teams/kustomization.yaml", "resources: [a]\n"},
       {"elf/manifests/teams/b", ""},
       {"elf/manifests/teams/a/deployment.yaml", DeploymentYaml("a", "reg/a@sha256:3")}});
  ASSERT_TRUE(argo.ReconcileAll().ok());
  app = App("elf-teams");
  EXPECT_EQ(At(app, "/status/sync/status"), "Synced");
  EXPECT_EQ(At(app, "/status/sync/revision"), second);
  EXPECT_EQ(store_.Get("deployments", "elf", "b").status().code(), absl::StatusCode::kNotFound);
  a = store_.Get("deployments", "elf", "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((**a)["spec"]["template"]["spec"]["containers"][0]["image"], "reg/a@sha256:3");
  EXPECT_EQ(app["status"]["history"].size(), 2u);
  bool pruned = false;
  for (const json& r : app["status"]["operationState"]["syncResult"]["resources"]) {
    if (r["name"] == "b" && r["status"] == "Pruned") pruned = true;
  }
  EXPECT_TRUE(pruned) << app["status"]["operationState"].dump(2);
}

TEST_F(ArgoTest, InvalidManifestsAreAComparisonError) {
  repo_.Commit({{"m/deployment.yaml", "kind: Deployment\nmetadata: [unclosed\n"}});
  ASSERT_TRUE(store_.Create("applications", Application("bad", repo_.url(), "m", "elf")).ok());
  ArgoController argo(store_, Options());
  ASSERT_TRUE(argo.ReconcileAll().ok());
  json app = App("bad");
  EXPECT_EQ(At(app, "/status/sync/status"), "Unknown");
  ASSERT_TRUE(app["status"]["conditions"].is_array()) << app.dump(2);
  EXPECT_EQ(At(app, "/status/conditions/0/type"), "ComparisonError");
  EXPECT_THAT(At(app, "/status/conditions/0/message"),
              HasSubstr("Failed to load target state: failed to generate manifest for source 1 of "
                        "1: rpc error: code = Unknown desc = Failed to unmarshal"));
}

TEST_F(ArgoTest, MissingRepositoryIsAComparisonError) {
  ASSERT_TRUE(
      store_
          .Create("applications",
                  Application("gone", absl::StrCat("file://", dir_->Join("nope.git")), "m", "elf"))
          .ok());
  ArgoController argo(store_, Options());
  ASSERT_TRUE(argo.ReconcileAll().ok());
  json app = App("gone");
  EXPECT_EQ(At(app, "/status/conditions/0/type"), "ComparisonError") << app.dump(2);
  EXPECT_THAT(At(app, "/status/conditions/0/message"), HasSubstr("repository not found"));
}

TEST_F(ArgoTest, MissingNamespaceWithoutCreateNamespaceFailsTheSync) {
  std::string commit = repo_.Commit({{"m/deployment.yaml", DeploymentYaml("a", "reg/a@sha256:1")}});
  ASSERT_TRUE(store_
                  .Create("applications", Application("no-ns", repo_.url(), "m", "absent",
                                                      /*create_namespace=*/false))
                  .ok());
  ArgoController argo(store_, Options());
  ASSERT_TRUE(argo.ReconcileAll().ok());
  json app = App("no-ns");
  EXPECT_EQ(At(app, "/status/sync/status"), "OutOfSync");
  EXPECT_EQ(At(app, "/status/operationState/phase"), "Failed") << app.dump(2);
  EXPECT_EQ(At(app, "/status/operationState/message"),
            "one or more objects failed to apply, reason: namespaces \"absent\" not found");
  EXPECT_EQ(At(app, "/status/conditions/0/type"), "SyncError");
  EXPECT_THAT(At(app, "/status/conditions/0/message"),
              HasSubstr(absl::StrCat("Failed sync attempt to ", commit)));
  EXPECT_EQ(At(app, "/status/health/status"), "Missing");
  // Automated sync does not retry the same revision; a new commit is tried again.
  ASSERT_TRUE(argo.ReconcileAll().ok());
  EXPECT_EQ(App("no-ns")["status"]["operationState"]["startedAt"],
            app["status"]["operationState"]["startedAt"]);
}

TEST_F(ArgoTest, ApplicationsComeFromTheRepositoryAndFollowItsHead) {
  std::string first =
      repo_.Commit({{"elf/applications/teams-app.yaml",
                     Application("elf-teams", repo_.url(), "elf/manifests/teams", "elf").dump()},
                    {"elf/manifests/teams/a.yaml", DeploymentYaml("a", "reg/a@sha256:1")}});
  ArgoOptions options = Options();
  options.gitops_repo = repo_.url();
  options.gitops_prefix = "elf";
  ArgoController argo(store_, options);
  argo.Start();
  ASSERT_TRUE(WaitForApp("elf-teams", [&](const json& app) {
    return At(app, "/status/sync/revision") == first && At(app, "/status/sync/status") == "Synced";
  })) << App("elf-teams").dump(2);

  // A new commit is picked up without any refresh.
  std::string second =
      repo_.Commit({{"elf/manifests/teams/a.yaml", DeploymentYaml("a", "reg/a@sha256:9")}});
  ASSERT_TRUE(WaitForApp("elf-teams", [&](const json& app) {
    return At(app, "/status/sync/revision") == second && At(app, "/status/sync/status") == "Synced";
  })) << App("elf-teams").dump(2);
  absl::StatusOr<ObjectPtr> a = store_.Get("deployments", "elf", "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((**a)["spec"]["template"]["spec"]["containers"][0]["image"], "reg/a@sha256:9");

  // The refresh annotation is handled and removed, as Argo CD does.
  ASSERT_TRUE(
      store_
          .MergePatch("applications", "argocd", "elf-teams",
                      {{"metadata", {{"annotations", {{"argocd.argoproj.io/refresh", "normal"}}}}}})
          .ok());
  ASSERT_TRUE(WaitForApp("elf-teams", [&](const json& app) {
    return !app["metadata"].contains("annotations") ||
           !app["metadata"]["annotations"].contains("argocd.argoproj.io/refresh");
  }));
  argo.Stop();
}

}  // namespace
}  // namespace elfdeploy::kubesim
