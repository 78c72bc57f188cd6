// The example apps of deploy/local/ (the seed's tree) are real inputs: every Dockerfile parses and
// takes its base image from the BASE build arg, and every k8s/deployment.yaml renders into the
// GitOps tree with its image pinned by digest.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/builder/dockerfile.h"
#include "services/manifest_publisher/render.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy {
namespace {

using ::testing::HasSubstr;

struct Example {
  std::string group;
  std::string name;
  std::string dir;
};

std::vector<Example> Examples() {
  std::vector<Example> examples;
  for (const char* root : {"examples", "broken"}) {
    std::filesystem::path base =
        std::filesystem::path(ELFDEPLOY_SOURCE_DIR) / "deploy/local" / root;
    for (const auto& group : std::filesystem::directory_iterator(base)) {
      for (const auto& app : std::filesystem::directory_iterator(group.path())) {
        examples.push_back({group.path().filename().string(), app.path().filename().string(),
                            app.path().string()});
      }
    }
  }
  return examples;
}

TEST(ExamplesTest, TheSeedsTreeHasTeamsAndMcps) {
  std::map<std::string, int> groups;
  for (const Example& e : Examples()) ++groups[e.group];
  EXPECT_GE(groups["teams"], 3);
  EXPECT_GE(groups["mcps"], 1);
}

TEST(ExamplesTest, DockerfilesParseWithTheirBaseFromTheBuildArg) {
  for (const Example& e : Examples()) {
    absl::StatusOr<std::string> text = testing::ReadFile(e.dir + "/Dockerfile");
    ASSERT_TRUE(text.ok()) << e.dir;
    absl::StatusOr<builder::Dockerfile> parsed = builder::ParseDockerfile(*text);
    ASSERT_TRUE(parsed.ok()) << e.dir << ": " << parsed.status();
    absl::StatusOr<builder::BuildStructure> split =
        builder::SplitStages(*parsed, {{"BASE", "registry.test:5000/elf/python-base:3.11"}});
    ASSERT_TRUE(split.ok()) << e.dir << ": " << split.status();
    ASSERT_EQ(split->stages.size(), 1u) << e.dir;
    EXPECT_EQ(split->stages[0].base, "registry.test:5000/elf/python-base:3.11") << e.dir;
  }
}

TEST(ExamplesTest, DeploymentsRenderPinnedByDigest) {
  std::vector<publisher::AppInput> apps;
  for (const Example& e : Examples()) {
    absl::StatusOr<std::string> yaml = testing::ReadFile(e.dir + "/k8s/deployment.yaml");
    ASSERT_TRUE(yaml.ok()) << e.dir;
    publisher::AppInput app;
    app.name = e.name;
    app.group = e.group;
    app.image = absl::StrCat("registry.test:5000/elf-automations/", e.name,
                             ":v1@sha256:", std::string(64, 'a'));
    app.deployment_yaml = *yaml;
    apps.push_back(app);
  }
  publisher::TargetInput target;
  target.repo_url = "git://gitops.test/gitops.git";
  absl::StatusOr<publisher::RenderResult> rendered = publisher::RenderTree(apps, target, {});
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  int deployments = 0;
  for (const publisher::RenderedFile& file : rendered->files) {
    if (!file.path.ends_with("/deployment.yaml")) continue;
    ++deployments;
    EXPECT_THAT(file.content, HasSubstr("@sha256:")) << file.path;
    EXPECT_THAT(file.content, HasSubstr("# rewritten to <registry>/...@sha256:...")) << file.path;
  }
  EXPECT_EQ(deployments, static_cast<int>(apps.size()));
}

}  // namespace
}  // namespace elfdeploy
