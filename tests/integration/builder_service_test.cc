// elfdeploy-builder and elfdeploy-registry-sync as users drive them (buf curl, reflection only):
// Scaffold an app, Build it, Copy it to a real registry, and skopeo accepts it there.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy::testing {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<CommandResult> BufCurl(const std::string& url, const std::string& body) {
  ProcessOptions options;
  options.argv = {BufPath(), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                  "-d",      body,   url};
  options.env = {{"BUF_CACHE_DIR", absl::StrCat(::testing::TempDir(), "/buf-cache")}};
  return RunCommand(std::move(options), absl::Seconds(300));
}

std::vector<nlohmann::json> JsonMessages(const std::string& output) {
  std::vector<nlohmann::json> out;
  int depth = 0;
  size_t start = 0;
  bool in_string = false;
  for (size_t i = 0; i < output.size(); ++i) {
    char c = output[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '{' && depth++ == 0) start = i;
    if (c == '}' && --depth == 0) {
      nlohmann::json json =
          nlohmann::json::parse(output.substr(start, i - start + 1), nullptr, false);
      if (!json.is_discarded()) out.push_back(json);
    }
  }
  return out;
}

TEST(BuilderServiceTest, ScaffoldBuildCopyAndSkopeoAcceptsIt) {
  absl::StatusOr<TempDir> dir = TempDir::Create("builder-service-");
  ASSERT_TRUE(dir.ok());
  std::string app = dir->Join("teams/executive-team");
  ASSERT_TRUE(WriteFile(app + "/team_server.py",
                        "import fastapi\nimport uvicorn\napp = fastapi.FastAPI()\n")
                  .ok());
  ASSERT_TRUE(WriteFile(app + "/app.yaml", "name: executive-team\nkind: team\nport: 8090\n").ok());

  absl::StatusOr<std::unique_ptr<ServiceProcess>> builder =
      ServiceProcess::Start({.binary = "elfdeploy-builder",
                             .env = {{"ELFDEPLOY_BUILDER_STORE_DIR", dir->Join("store")}}});
  ASSERT_TRUE(builder.ok()) << builder.status();
  std::string base =
      absl::StrCat("http://", (*builder)->grpc_addr(), "/elfdeploy.v1.BuilderService/");

  absl::StatusOr<CommandResult> scaffold =
      BufCurl(base + "Scaffold", absl::StrCat(R"({"appDir":")", app, R"("})"));
  ASSERT_TRUE(scaffold.ok());
  ASSERT_EQ(scaffold->exit_code, 0) << scaffold->output;
  nlohmann::json scaffolded = JsonMessages(scaffold->output).at(0);
  EXPECT_EQ(scaffolded["app"]["name"], "executive-team");
  EXPECT_EQ(scaffolded["app"]["port"], 8090);
  std::vector<std::string> paths;
  for (const auto& file : scaffolded["files"]) paths.push_back(file["path"]);
  EXPECT_THAT(paths, ::testing::UnorderedElementsAre("Dockerfile", "requirements.txt",
                                                     "k8s/deployment.yaml"));

  // The scaffolded Dockerfile starts FROM python:3.11-slim, which needs the internet: build the
  // app from scratch instead, with the scaffolded files in the image.
  ASSERT_TRUE(WriteFile(app + "/Dockerfile",
                        "FROM scratch\nWORKDIR /app\nCOPY . .\nEXPOSE 8090\n"
                        "CMD [\"python\", \"team_server.py\"]\n")
                  .ok());
  std::string request =
      absl::StrCat(R"({"contextDir":")", app, R"(","tags":["elf-automations/executive-team:v1"]})");
  absl::StatusOr<CommandResult> build = BufCurl(base + "Build", request);
  ASSERT_TRUE(build.ok());
  ASSERT_EQ(build->exit_code, 0) << build->output;
  std::vector<nlohmann::json> events = JsonMessages(build->output);
  ASSERT_GE(events.size(), 3u) << build->output;
  EXPECT_EQ(events.front()["started"]["totalSteps"], 5);
  const nlohmann::json& result = events.back()["result"];
  std::string digest = result["manifestDigest"];
  EXPECT_THAT(digest, ::testing::StartsWith("sha256:"));
  std::string layout_reference = result["layoutReference"];
  EXPECT_EQ(layout_reference,
            absl::StrCat("oci:", dir->Join("store"), ":elf-automations/executive-team:v1"));

  // Unchanged rebuild: every layer from the cache, nothing written, same digest.
  absl::StatusOr<CommandResult> again = BufCurl(base + "Build", request);
  ASSERT_EQ(again->exit_code, 0) << again->output;
  nlohmann::json second = JsonMessages(again->output).back()["result"];
  EXPECT_EQ(second["manifestDigest"], digest);
  EXPECT_EQ(second.value("bytesWritten", "0"), "0");
  EXPECT_EQ(second["cachedLayers"], 1);

  // registry-sync takes the layout reference as it is.
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok());
  absl::StatusOr<std::unique_ptr<ServiceProcess>> sync =
      ServiceProcess::Start({.binary = "elfdeploy-registry-sync"});
  ASSERT_TRUE(sync.ok()) << sync.status();
  std::string dest =
      absl::StrCat("docker://", (*registry)->host(), "/elf-automations/executive-team:v1");
  absl::StatusOr<CommandResult> copy = BufCurl(
      absl::StrCat("http://", (*sync)->grpc_addr(), "/elfdeploy.v1.RegistrySyncService/Copy"),
      absl::StrCat(R"({"source":")", layout_reference, R"(","destination":")", dest, R"("})"));
  ASSERT_EQ(copy->exit_code, 0) << copy->output;
  EXPECT_EQ(JsonMessages(copy->output).back()["result"]["manifestDigest"], digest);

  ProcessOptions inspect;
  inspect.argv = {"skopeo", "inspect", "--tls-verify=false", dest};
  absl::StatusOr<CommandResult> inspected = RunCommand(std::move(inspect));
  ASSERT_TRUE(inspected.ok());
  ASSERT_EQ(inspected->exit_code, 0) << inspected->output;
  nlohmann::json seen = JsonMessages(inspected->output).at(0);
  EXPECT_EQ(seen["Digest"], digest);
  EXPECT_EQ(seen["Architecture"], "amd64");

  absl::StatusOr<CommandResult> bad =
      BufCurl(base + "Build", R"({"contextDir":"relative","tags":["x"]})");
  EXPECT_THAT(bad->output, HasSubstr("invalid_argument"));
}

}  // namespace
}  // namespace elfdeploy::testing
