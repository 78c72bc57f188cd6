// elfdeploy-registry-sync as users drive it: buf curl (grpcurl-like, reflection only) against the
// running binary and a real registry; its metrics afterwards.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/oci_image.h"
#include "tests/support/service_process.h"

namespace elfdeploy::testing {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<CommandResult> BufCurl(const std::string& url, const std::string& body) {
  ProcessOptions options;
  options.argv = {BufPath(), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                  "-d",      body,   url};
  options.env = {{"BUF_CACHE_DIR", absl::StrCat(::testing::TempDir(), "/buf-cache")}};
  return RunCommand(std::move(options), absl::Seconds(120));
}

// buf curl prints each streamed message as a JSON object; split them.
std::vector<nlohmann::json> JsonMessages(const std::string& output) {
  std::vector<nlohmann::json> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < output.size(); ++i) {
    if (output[i] == '{' && depth++ == 0) start = i;
    if (output[i] == '}' && --depth == 0) {
      nlohmann::json json =
          nlohmann::json::parse(output.substr(start, i - start + 1), nullptr, false);
      if (!json.is_discarded()) out.push_back(json);
    }
  }
  return out;
}

TEST(RegistrySyncServiceTest, CopyAndResolveThroughGrpcAndCountInMetrics) {
  absl::StatusOr<TempDir> dir = TempDir::Create("registry-sync-service-");
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<TestImage> image = WriteTestImage(dir->Join("layout"), "v1", {20000, 30000}, 4);
  ASSERT_TRUE(image.ok()) << image.status();
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok()) << registry.status();
  absl::StatusOr<std::unique_ptr<ServiceProcess>> service =
      ServiceProcess::Start({.binary = "elfdeploy-registry-sync"});
  ASSERT_TRUE(service.ok()) << service.status();
  std::string base =
      absl::StrCat("http://", (*service)->grpc_addr(), "/elfdeploy.v1.RegistrySyncService/");
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/elf-automations/app:v1");

  absl::StatusOr<CommandResult> copy =
      BufCurl(absl::StrCat(base, "Copy"), absl::StrCat(R"({"source":"oci:)", dir->Join("layout"),
                                                       R"(:v1","destination":")", dest, R"("})"));
  ASSERT_TRUE(copy.ok()) << copy.status();
  ASSERT_EQ(copy->exit_code, 0) << copy->output;
  std::vector<nlohmann::json> events = JsonMessages(copy->output);
  ASSERT_EQ(events.size(), 1u + 3u + 1u) << copy->output;  // started, 3 blobs, result
  EXPECT_EQ(events.front()["started"]["totalBlobs"], 3);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(events[i]["blob"]["action"], "BLOB_ACTION_UPLOADED") << events[i];
  }
  const nlohmann::json& result = events.back()["result"];
  EXPECT_EQ(result["manifestDigest"], image->manifest_digest.ToString());
  EXPECT_EQ(result["destinationReference"],
            absl::StrCat(dest, "@", image->manifest_digest.ToString()));
  EXPECT_EQ(result["blobsUploaded"], 3);

  absl::StatusOr<CommandResult> resolve =
      BufCurl(absl::StrCat(base, "Resolve"), absl::StrCat(R"({"reference":")", dest, R"("})"));
  ASSERT_TRUE(resolve.ok()) << resolve.status();
  ASSERT_EQ(resolve->exit_code, 0) << resolve->output;
  std::vector<nlohmann::json> resolved = JsonMessages(resolve->output);
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0]["digest"], image->manifest_digest.ToString());
  EXPECT_EQ(resolved[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");

  absl::StatusOr<CommandResult> missing = BufCurl(
      absl::StrCat(base, "Resolve"), absl::StrCat(R"({"reference":"docker://)", (*registry)->host(),
                                                  R"(/elf-automations/app:v9"})"));
  ASSERT_TRUE(missing.ok());
  EXPECT_NE(missing->exit_code, 0);
  EXPECT_THAT(missing->output, HasSubstr("\"code\": \"not_found\""));
  EXPECT_THAT(missing->output, HasSubstr("MANIFEST_UNKNOWN"));

  absl::StatusOr<std::string> metrics = ScrapeMetrics((*service)->metrics_addr());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_registry_blobs_total", {{"result", "uploaded"}})
                .value_or(-1),
            3);
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_registry_bytes_pushed_total").value_or(-1),
            static_cast<double>(image->total_bytes));
  EXPECT_EQ(MetricValue(*metrics, "elfdeploy_registry_copy_seconds_count").value_or(-1), 1);
  EXPECT_GE(
      MetricValue(*metrics, "elfdeploy_registry_requests_total", {{"code", "201"}}).value_or(0),
      4);  // three blobs and the manifest
  EXPECT_GE(
      MetricValue(*metrics, "elfdeploy_registry_requests_total", {{"code", "404"}}).value_or(0), 1);

  ASSERT_TRUE(WriteFile(dir->Join("metrics.txt"), *metrics).ok());
  ProcessOptions promtool;
  promtool.argv = {"/bin/sh", "-c",
                   absl::StrCat(PromtoolPath(), " check metrics < ", dir->Join("metrics.txt"))};
  absl::StatusOr<CommandResult> checked = RunCommand(std::move(promtool));
  ASSERT_TRUE(checked.ok());
  EXPECT_EQ(checked->exit_code, 0) << checked->output;
  EXPECT_EQ(checked->output, "");
}

}  // namespace
}  // namespace elfdeploy::testing
