#include "services/orchestrator/discovery.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::orchestrator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Names(const std::vector<DiscoveredApp>& apps) {
  std::vector<std::string> names;
  for (const DiscoveredApp& app : apps) names.push_back(absl::StrCat(app.group, "/", app.name));
  return names;
}

TEST(DiscoverAppsTest, FindsTheSeedsTreeInTheExamples) {
  v1::DeployRequest request;
  request.set_source_dir(absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/examples"));
  (*request.mutable_build_args())["BASE"] = "registry.test/base:1";
  absl::StatusOr<std::vector<DiscoveredApp>> apps = DiscoverApps(request);
  ASSERT_TRUE(apps.ok()) << apps.status();
  EXPECT_THAT(Names(*apps), ElementsAre("mcps/calendar-mcp", "teams/engineering-team",
                                        "teams/executive-team", "teams/marketing-team"));
  EXPECT_EQ((*apps)[0].dockerfile, "Dockerfile");
  EXPECT_THAT((*apps)[0].deployment_path, HasSubstr("mcps/calendar-mcp/k8s/deployment.yaml"));
  EXPECT_EQ((*apps)[0].build_args.at("BASE"), "registry.test/base:1");
}

class DiscoverTempTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("discover-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
  }
  void App(const std::string& path, bool manifest = true) {
    ASSERT_TRUE(testing::WriteFile(dir_->Join(path + "/Dockerfile"), "FROM scratch\n").ok());
    if (manifest) {
      ASSERT_TRUE(testing::WriteFile(dir_->Join(path + "/k8s/deployment.yaml"), "kind: x\n").ok());
    }
  }
  std::optional<testing::TempDir> dir_;
};

TEST_F(DiscoverTempTest, ExplicitAppsOverrideBuildArgsAndCheckTheirFiles) {
  ASSERT_NO_FATAL_FAILURE(App("teams/a"));
  ASSERT_NO_FATAL_FAILURE(App("elsewhere/b"));
  ASSERT_TRUE(testing::WriteFile(dir_->Join("teams/a/build/Dockerfile.prod"), "FROM x\n").ok());
  v1::DeployRequest request;
  request.set_source_dir(dir_->path());
  (*request.mutable_build_args())["X"] = "request";
  v1::AppSource* a = request.add_apps();
  a->set_name("a");
  a->set_group("teams");
  a->set_dockerfile("build/Dockerfile.prod");
  (*a->mutable_build_args())["X"] = "app";
  v1::AppSource* b = request.add_apps();
  b->set_name("b");
  b->set_group("mcps");
  b->set_dir(dir_->Join("elsewhere/b"));
  absl::StatusOr<std::vector<DiscoveredApp>> apps = DiscoverApps(request);
  ASSERT_TRUE(apps.ok()) << apps.status();
  EXPECT_THAT(Names(*apps), ElementsAre("mcps/b", "teams/a"));
  EXPECT_EQ((*apps)[1].build_args.at("X"), "app");
  EXPECT_EQ((*apps)[0].build_args.at("X"), "request");
}

TEST_F(DiscoverTempTest, BadInputIsNamed) {
  ASSERT_NO_FATAL_FAILURE(App("teams/no-manifest", /*manifest=*/false));
  v1::DeployRequest request;
  EXPECT_EQ(DiscoverApps(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_source_dir(dir_->Join("missing"));
  EXPECT_EQ(DiscoverApps(request).status().code(), absl::StatusCode::kNotFound);
  request.set_source_dir(dir_->path());
  absl::StatusOr<std::vector<DiscoveredApp>> apps = DiscoverApps(request);
  EXPECT_EQ(apps.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(apps.status().message(), HasSubstr("teams/no-manifest"));

  for (const auto& [name, group, dockerfile] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"Bad_Name", "teams", ""}, {"ok", "../etc", ""}, {"no-manifest", "teams", "../x"}}) {
    v1::DeployRequest bad;
    bad.set_source_dir(dir_->path());
    v1::AppSource* app = bad.add_apps();
    app->set_name(name);
    app->set_group(group);
    app->set_dockerfile(dockerfile);
    EXPECT_EQ(DiscoverApps(bad).status().code(), absl::StatusCode::kInvalidArgument) << name;
  }

  ASSERT_NO_FATAL_FAILURE(App("teams/dup"));
  ASSERT_NO_FATAL_FAILURE(App("mcps/dup"));
  v1::DeployRequest twice;
  twice.set_source_dir(dir_->path());
  for (const char* group : {"teams", "mcps"}) {
    v1::AppSource* app = twice.add_apps();
    app->set_name("dup");
    app->set_group(group);
  }
  EXPECT_THAT(DiscoverApps(twice).status().message(), HasSubstr("appears twice"));

  absl::StatusOr<testing::TempDir> empty = testing::TempDir::Create("discover-empty-");
  ASSERT_TRUE(empty.ok());
  v1::DeployRequest none;
  none.set_source_dir(empty->path());
  EXPECT_EQ(DiscoverApps(none).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace elfdeploy::orchestrator
