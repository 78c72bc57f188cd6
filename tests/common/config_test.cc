#include "services/common/config.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace elfdeploy {
namespace {

using ::testing::HasSubstr;

struct Sample {
  std::string grpc_addr = "0.0.0.0:7401";
  bool verbose = false;
  int workers = 4;
  absl::Duration grace = absl::Seconds(10);
  std::vector<std::string> insecure = {"a"};
  std::string registry;
  Secret password;
};

class ConfigBinderTest : public ::testing::Test {
 protected:
  ConfigBinderTest() {
    binder_.Bind("server.grpc_addr", &sample_.grpc_addr);
    binder_.Bind("server.verbose", &sample_.verbose);
    binder_.Bind("server.workers", &sample_.workers);
    binder_.Bind("server.grace", &sample_.grace);
    binder_.Bind("registry.insecure", &sample_.insecure);
    binder_.Bind("registry.default", &sample_.registry);
    binder_.Bind("registry.password", &sample_.password);
    binder_.EnvAlias("DOCKER_REGISTRY", "registry.default");
  }

  absl::Status ApplyEnv(std::map<std::string, std::string> env) {
    return binder_.ApplyEnv([env = std::move(env)](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    });
  }

  Sample sample_;
  ConfigBinder binder_;
};

TEST_F(ConfigBinderTest, DefaultsStayWhenNothingIsLoaded) {
  ASSERT_TRUE(binder_.LoadYaml("", "empty.yaml").ok());
  ASSERT_TRUE(ApplyEnv({}).ok());
  EXPECT_EQ(sample_.grpc_addr, "0.0.0.0:7401");
  EXPECT_EQ(sample_.workers, 4);
  EXPECT_EQ(sample_.insecure, std::vector<std::string>{"a"});
}

TEST_F(ConfigBinderTest, YamlSetsEveryType) {
  absl::Status s = binder_.LoadYaml(R"(
server:
  grpc_addr: 127.0.0.1:9000
  verbose: true
  workers: 8
  grace: 1m30s
registry:
  insecure: [reg.local:5000, other:5000]
  default: registry.example.com
)",
                                    "c.yaml");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(sample_.grpc_addr, "127.0.0.1:9000");
  EXPECT_TRUE(sample_.verbose);
  EXPECT_EQ(sample_.workers, 8);
  EXPECT_EQ(sample_.grace, absl::Seconds(90));
  EXPECT_EQ(sample_.insecure, (std::vector<std::string>{"reg.local:5000", "other:5000"}));
  EXPECT_EQ(sample_.registry, "registry.example.com");
}

TEST_F(ConfigBinderTest, UnknownTopLevelKeyNamesKeyAndLine) {
  absl::Status s = binder_.LoadYaml("server:\n  workers: 2\nservre:\n  x: 1\n", "c.yaml");
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("c.yaml:3:1: unknown key \"servre\""));
  EXPECT_THAT(s.message(), HasSubstr("known: registry, server"));
}

TEST_F(ConfigBinderTest, UnknownNestedKeyNamesPathAndLine) {
  absl::Status s = binder_.LoadYaml("server:\n  grcp_addr: x\n", "c.yaml");
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("c.yaml:2:3: unknown key \"server.grcp_addr\""));
  EXPECT_THAT(s.message(), HasSubstr("grpc_addr"));
}

TEST_F(ConfigBinderTest, WrongTypesAreErrorsWithLine) {
  absl::Status list_for_scalar = binder_.LoadYaml("server:\n  grpc_addr: [a, b]\n", "c.yaml");
  EXPECT_THAT(list_for_scalar.message(),
              HasSubstr("c.yaml:2:14: server.grpc_addr must be a string"));
  absl::Status bad_int = binder_.LoadYaml("server:\n  workers: many\n", "c.yaml");
  EXPECT_THAT(bad_int.message(), HasSubstr("server.workers: \"many\" is not an integer"));
  absl::Status bad_duration = binder_.LoadYaml("server:\n  grace: soon\n", "c.yaml");
  EXPECT_THAT(bad_duration.message(), HasSubstr("server.grace: \"soon\" is not a duration"));
  absl::Status scalar_for_list = binder_.LoadYaml("registry:\n  insecure: one\n", "c.yaml");
  EXPECT_THAT(scalar_for_list.message(), HasSubstr("registry.insecure must be a list"));
  absl::Status scalar_for_section = binder_.LoadYaml("server: 3\n", "c.yaml");
  EXPECT_THAT(scalar_for_section.message(), HasSubstr("server must be a mapping"));
}

TEST_F(ConfigBinderTest, MalformedYamlNamesLine) {
  absl::Status s = binder_.LoadYaml("server:\n  workers: [1, 2\n", "bad.yaml");
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("bad.yaml:"));
  EXPECT_THAT(s.message(), HasSubstr("malformed YAML"));
}

TEST_F(ConfigBinderTest, MissingFileIsNotFound) {
  EXPECT_EQ(binder_.LoadFile("/nonexistent/elfdeploy.yaml").code(), absl::StatusCode::kNotFound);
}

TEST_F(ConfigBinderTest, EnvironmentOverridesYamlAndAliasesYieldToOwnName) {
  ASSERT_TRUE(binder_.LoadYaml("server:\n  grpc_addr: from-yaml:1\n", "c.yaml").ok());
  ASSERT_TRUE(ApplyEnv({{"ELFDEPLOY_SERVER_GRPC_ADDR", "from-env:2"},
                        {"DOCKER_REGISTRY", "alias.example"},
                        {"ELFDEPLOY_REGISTRY_INSECURE", "x:1, y:2"},
                        {"ELFDEPLOY_SERVER_GRACE", "250ms"}})
                  .ok());
  EXPECT_EQ(sample_.grpc_addr, "from-env:2");
  EXPECT_EQ(sample_.registry, "alias.example");
  EXPECT_EQ(sample_.insecure, (std::vector<std::string>{"x:1", "y:2"}));
  EXPECT_EQ(sample_.grace, absl::Milliseconds(250));

  ASSERT_TRUE(ApplyEnv({{"DOCKER_REGISTRY", "alias.example"},
                        {"ELFDEPLOY_REGISTRY_DEFAULT", "own.example"}})
                  .ok());
  EXPECT_EQ(sample_.registry, "own.example");
}

TEST_F(ConfigBinderTest, BadEnvironmentValueNamesVariable) {
  absl::Status s = ApplyEnv({{"ELFDEPLOY_SERVER_WORKERS", "lots"}});
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("ELFDEPLOY_SERVER_WORKERS"));
}

TEST_F(ConfigBinderTest, EffectiveValuesRedactSecrets) {
  ASSERT_TRUE(binder_.LoadYaml("registry:\n  password: hunter2\n", "c.yaml").ok());
  EXPECT_EQ(sample_.password.Reveal(), "hunter2");
  bool seen = false;
  for (const auto& [path, value] : binder_.Effective()) {
    EXPECT_THAT(value, ::testing::Not(HasSubstr("hunter2")));
    if (path == "registry.password") {
      seen = true;
      EXPECT_EQ(value, "[REDACTED]");
    }
  }
  EXPECT_TRUE(seen);
}

TEST(ParseDurationTextTest, AcceptsGoDurationsRejectsOthers) {
  absl::Duration d;
  ASSERT_TRUE(ParseDurationText("1m30s", &d).ok());
  EXPECT_EQ(d, absl::Seconds(90));
  ASSERT_TRUE(ParseDurationText("0", &d).ok());
  EXPECT_EQ(d, absl::ZeroDuration());
  EXPECT_FALSE(ParseDurationText("10", &d).ok());
  EXPECT_FALSE(ParseDurationText("-1s", &d).ok());
  EXPECT_FALSE(ParseDurationText("", &d).ok());
}

}  // namespace
}  // namespace elfdeploy
