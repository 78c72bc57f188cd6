// ManifestPublisher (render + git) against a git daemon: renders again on a branch that moved keep
// every group listing complete.
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/manifest_publisher/publisher.h"
#include "tests/harness/peers.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::publisher {
namespace {

namespace harness = ::elfdeploy::testing;

constexpr char kDeployment[] = R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: $NAME
spec:
  selector:
    matchLabels:
      app: $NAME
  template:
    metadata:
      labels:
        app: $NAME
    spec:
      containers:
        - name: $NAME
          image: elf-automations/$NAME:latest
          ports:
            - containerPort: 8090
)";

// The teams group's kustomization once alpha-team and beta-team are on the branch.
constexpr char kTeamsOfBoth[] =
    "apiVersion: kustomize.config.k8s.io/v1beta1\n"
    "kind: Kustomization\n"
    "resources:\n"
    "  - alpha-team\n"
    "  - beta-team";

AppInput Team(const std::string& name, int generation) {
  AppInput app;
  app.name = name;
  app.group = "teams";
  app.image = absl::StrCat("127.0.0.1:5000/elf-automations/", name, ":v", generation,
                           "@sha256:", std::string(63, 'a'), generation);
  app.deployment_yaml = absl::StrReplaceAll(kDeployment, {{"$NAME", name}});
  return app;
}

class ManifestPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<harness::TempDir> dir = harness::TempDir::Create("manifest-publisher-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    absl::StatusOr<std::unique_ptr<harness::GitDaemonFixture>> daemon =
        harness::GitDaemonFixture::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    ASSERT_TRUE(daemon_->CreateBareRepo("gitops").ok());
  }

  // A publisher with a cache of its own, as another process would have.
  std::unique_ptr<ManifestPublisher> NewPublisher(const std::string& cache) {
    ManifestPublisherOptions options;
    options.git.cache_dir = dir_->Join(cache);
    return std::make_unique<ManifestPublisher>(options, nullptr);
  }

  PublishParams Params(AppInput app) const {
    PublishParams params;
    params.apps = {std::move(app)};
    params.tree.repo_url = daemon_->url("gitops");
    params.tree.path_prefix = "elf-automations";
    params.tree.namespace_ = "elf-automations";
    params.git.url = daemon_->url("gitops");
    return params;
  }

  std::string Show(const std::string& path) const {
    absl::StatusOr<harness::CommandResult> result = daemon_->Git(
        {"--git-dir", daemon_->repo_path("gitops"), "show", absl::StrCat("main:", path)});
    if (!result.ok()) return std::string(result.status().message());
    return std::string(absl::StripTrailingAsciiWhitespace(result->output));
  }

  std::optional<harness::TempDir> dir_;
  std::unique_ptr<harness::GitDaemonFixture> daemon_;
};

// A renders on the head its cache saw last while another writer has moved the branch: the render
// is made again on the new head, and the group's kustomization lists the other writer's app too.
TEST_F(ManifestPublisherTest, RenderAgainOnAMovedBranchListsEveryApp) {
  std::unique_ptr<ManifestPublisher> a = NewPublisher("cache-a");
  std::unique_ptr<ManifestPublisher> b = NewPublisher("cache-b");
  absl::StatusOr<PublishResult> first = a->Publish(Params(Team("alpha-team", 1)));
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<PublishResult> other = b->Publish(Params(Team("beta-team", 1)));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->git.parent, first->git.commit);

  absl::StatusOr<PublishResult> again = a->Publish(Params(Team("alpha-team", 2)));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->git.parent, other->git.commit);
  EXPECT_EQ(Show("elf-automations/manifests/teams/kustomization.yaml"), kTeamsOfBoth);
  EXPECT_THAT(Show("elf-automations/manifests/teams/alpha-team/deployment.yaml"),
              ::testing::HasSubstr(absl::StrCat(std::string(63, 'a'), 2)));
  EXPECT_THAT(Show("elf-automations/manifests/teams/beta-team/deployment.yaml"),
              ::testing::HasSubstr(absl::StrCat(std::string(63, 'a'), 1)));
}

// The prefix is taken as validated ("elf-automations/" is "elf-automations") when the branch's
// app folders are listed, too.
TEST_F(ManifestPublisherTest, PrefixWithATrailingSlashListsTheAppsThere) {
  std::unique_ptr<ManifestPublisher> publisher = NewPublisher("cache");
  for (const char* name : {"alpha-team", "beta-team"}) {
    PublishParams params = Params(Team(name, 1));
    params.tree.path_prefix = "elf-automations/";
    absl::StatusOr<PublishResult> result = publisher->Publish(params);
    ASSERT_TRUE(result.ok()) << result.status();
  }
  EXPECT_EQ(Show("elf-automations/manifests/teams/kustomization.yaml"), kTeamsOfBoth);
}

}  // namespace
}  // namespace elfdeploy::publisher
