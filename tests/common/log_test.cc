#include "services/common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace elfdeploy {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kTime = absl::FromUnixMillis(1764133200123);  // 2025-11-26T05:00:00.123Z

TEST(LogTest, LogfmtLineQuotesOnlyWhatNeedsIt) {
  log::Options options;
  options.service = "builder";
  std::string line = log::FormatLine(options, kTime, log::Level::kInfo, "serving",
                                     {{"addr", "127.0.0.1:7401"},
                                      {"note", "two words"},
                                      {"quote", "say \"hi\"\n"},
                                      {"empty", ""},
                                      {"count", 3},
                                      {"ok", true}});
  EXPECT_EQ(line,
            "ts=2025-11-26T05:00:00.123Z level=info service=builder msg=serving "
            "addr=127.0.0.1:7401 note=\"two words\" quote=\"say \\\"hi\\\"\\n\" empty=\"\" "
            "count=3 ok=true");
}

TEST(LogTest, JsonLineIsOneObjectWithTypedValues) {
  log::Options options;
  options.format = log::Format::kJson;
  std::string line = log::FormatLine(options, kTime, log::Level::kWarning, "slow",
                                     {{"millis", int64_t{1500}}, {"path", "a\"b"}});
  nlohmann::json parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["level"], "warning");
  EXPECT_EQ(parsed["msg"], "slow");
  EXPECT_EQ(parsed["millis"], 1500);
  EXPECT_EQ(parsed["path"], "a\"b");
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(LogTest, SecretsAreRedactedByConstruction) {
  log::Options options;
  std::string line = log::FormatLine(
      options, kTime, log::Level::kInfo, "login to https://bob:pw1@registry.example/v2/",
      {{"credential", Secret("pw2")},
       {"registry_password", "pw3"},
       {"Authorization", "Bearer pw4"},
       {"header", "Basic cHc1"},
       {"repo", "https://alice:pw6@git.example/org/repo.git"},
       {"token_count", 7},
       {"error", absl::UnauthenticatedError("GET https://u:pw8@h/ failed")}});
  for (const char* secret : {"pw1", "pw2", "pw3", "pw4", "cHc1", "pw6", "7", "pw8"}) {
    EXPECT_THAT(line, Not(HasSubstr(secret))) << line;
  }
  EXPECT_THAT(line, HasSubstr("https://bob:[REDACTED]@registry.example/v2/"));
  EXPECT_THAT(line, HasSubstr("repo=https://alice:[REDACTED]@git.example/org/repo.git"));
  EXPECT_THAT(line, HasSubstr("header=\"Basic [REDACTED]\""));
}

TEST(LogTest, RedactValueLeavesOrdinaryTextAlone) {
  EXPECT_EQ(RedactValue("docker://127.0.0.1:5000/app:v1"), "docker://127.0.0.1:5000/app:v1");
  EXPECT_EQ(RedactValue("git@github.com:org/repo.git"), "git@github.com:org/repo.git");
  EXPECT_EQ(RedactValue("ssh://git@host:22/repo"), "ssh://git@host:22/repo");
  EXPECT_TRUE(IsSensitiveKey("api_key"));
  EXPECT_FALSE(IsSensitiveKey("registry"));
}

TEST(LogTest, WriteHonoursLevelAndWritesWholeLines) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  log::Options options;
  options.level = log::Level::kWarning;
  options.fd = fds[1];
  log::Configure(options);
  log::Info("dropped");
  log::Error("kept", {{"k", "v"}});
  log::Configure(log::Options{});
  close(fds[1]);
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  close(fds[0]);
  EXPECT_THAT(out, Not(HasSubstr("dropped")));
  EXPECT_THAT(out, HasSubstr("level=error msg=kept k=v\n"));
}

TEST(LogTest, ParsesLevelsAndFormats) {
  log::Level level;
  EXPECT_TRUE(log::ParseLevel("DEBUG", &level).ok());
  EXPECT_EQ(level, log::Level::kDebug);
  EXPECT_FALSE(log::ParseLevel("loud", &level).ok());
  log::Format format;
  EXPECT_TRUE(log::ParseFormat("json", &format).ok());
  EXPECT_EQ(format, log::Format::kJson);
  EXPECT_FALSE(log::ParseFormat("xml", &format).ok());
}

}  // namespace
}  // namespace elfdeploy
