// deploy/docker/*.Dockerfile: elfdeploy's own builder accepts them. They are checked with the
// builder's real front end (services/builder/dockerfile.h, .dockerignore matcher) and the rules
// its build executor applies per instruction (services/builder/build.cc: no HEALTHCHECK or
// ONBUILD, COPY/ADD flags, numeric --chown, no remote ADD, no RUN flags). A real build is not
// possible here: debian:bookworm-slim cannot be pulled offline and apt-get needs the network.

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/builder/dockerfile.h"
#include "services/builder/dockerignore.h"

namespace elfdeploy::builder {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

const std::filesystem::path& SourceDir() {
  static const auto* dir = new std::filesystem::path(ELFDEPLOY_SOURCE_DIR);
  return *dir;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::vector<std::string>& Binaries() {
  static const auto* binaries = new std::vector<std::string>{
      "elfdeploy-orchestrator",       "elfdeploy-builder",         "elfdeploy-registry-sync",
      "elfdeploy-manifest-publisher", "elfdeploy-cluster-watcher", "elfdeploy-agent",
  };
  return *binaries;
}

// The instructions build.cc's executor carries out (anything else is "unsupported instruction").
const std::set<std::string>& ExecutedInstructions() {
  static const auto* keywords = new std::set<std::string>{
      "COPY",       "ADD",        "RUN",    "ARG",    "ENV", "LABEL",      "WORKDIR", "USER",
      "STOPSIGNAL", "MAINTAINER", "EXPOSE", "VOLUME", "CMD", "ENTRYPOINT", "SHELL",
  };
  return *keywords;
}

Lookup NoEnv() {
  return [](absl::string_view) { return std::optional<std::string>(); };
}

class DockerfileTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    path_ = SourceDir() / "deploy" / "docker" / (GetParam() + ".Dockerfile");
    ASSERT_TRUE(std::filesystem::is_regular_file(path_)) << path_;
    absl::StatusOr<Dockerfile> parsed = ParseDockerfile(ReadFile(path_));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    dockerfile_ = *parsed;
    absl::StatusOr<BuildStructure> structure = SplitStages(dockerfile_, {});
    ASSERT_TRUE(structure.ok()) << structure.status();
    structure_ = *structure;
    ASSERT_GE(structure_.stages.size(), 2u) << "multi-stage: build, then runtime";
  }

  const Stage& Final() const { return structure_.stages.back(); }

  std::filesystem::path path_;
  Dockerfile dockerfile_;
  BuildStructure structure_;
};

TEST_P(DockerfileTest, EveryInstructionIsOneTheBuilderExecutes) {
  for (const Stage& stage : structure_.stages) {
    for (const Instruction& in : stage.instructions) {
      const std::string where = absl::StrCat(GetParam(), ".Dockerfile:", in.line);
      EXPECT_TRUE(ExecutedInstructions().count(in.keyword)) << where << " " << in.keyword;
      if (in.keyword == "RUN") {
        absl::StatusOr<std::map<std::string, std::string>> flags = ParseFlags(in, {});
        EXPECT_TRUE(flags.ok()) << where << ": " << flags.status();
      }
      if (in.keyword == "COPY" || in.keyword == "ADD") {
        const bool add = in.keyword == "ADD";
        absl::StatusOr<std::map<std::string, std::string>> flags =
            ParseFlags(in, add ? std::vector<std::string>{"chown", "chmod", "link"}
                               : std::vector<std::string>{"from", "chown", "chmod", "link"});
        ASSERT_TRUE(flags.ok()) << where << ": " << flags.status();
        if (auto chown = flags->find("chown"); chown != flags->end()) {
          for (absl::string_view part : absl::StrSplit(chown->second, ':')) {
            EXPECT_TRUE(!part.empty() && part.find_first_not_of("0123456789") == part.npos)
                << where << ": --chown must be numeric uid:gid, is " << chown->second;
          }
        }
        absl::StatusOr<std::vector<std::string>> words = ProcessWords(in.args, NoEnv());
        ASSERT_TRUE(words.ok()) << where << ": " << words.status();
        ASSERT_GE(words->size(), 2u) << where;
        for (size_t i = 0; i + 1 < words->size(); ++i) {
          EXPECT_FALSE(absl::StartsWith((*words)[i], "http://") ||
                       absl::StartsWith((*words)[i], "https://") ||
                       absl::StartsWith((*words)[i], "git@"))
              << where << ": remote source";
        }
      }
      if (in.keyword == "ARG" || in.keyword == "ENV" || in.keyword == "LABEL") {
        auto pairs = ParseKeyValues(in, NoEnv());
        EXPECT_TRUE(pairs.ok()) << where << ": " << pairs.status();
      }
      if (in.keyword == "CMD" || in.keyword == "ENTRYPOINT" || in.keyword == "SHELL") {
        EXPECT_TRUE(in.json) << where << ": exec form, so no shell is needed at run time";
      }
    }
  }
}

TEST_P(DockerfileTest, BuildsOnBookwormAndRunsAs65532) {
  for (const Stage& stage : structure_.stages) {
    bool earlier_stage = false;
    for (const Stage& other : structure_.stages) {
      if (other.index < stage.index && other.name == stage.base) earlier_stage = true;
    }
    EXPECT_TRUE(stage.base == "debian:bookworm-slim" || earlier_stage)
        << "stage " << stage.index << " FROM " << stage.base;
  }
  EXPECT_EQ(Final().base, "debian:bookworm-slim");
  std::optional<std::string> user;
  for (const Instruction& in : Final().instructions) {
    if (in.keyword == "USER") {
      absl::StatusOr<std::string> word = ProcessWord(in.args, NoEnv());
      ASSERT_TRUE(word.ok()) << word.status();
      user = *word;
    }
  }
  ASSERT_TRUE(user.has_value()) << "the final stage sets no USER";
  std::vector<std::string> ids = absl::StrSplit(*user, ':');
  EXPECT_EQ(ids[0], "65532");
  if (ids.size() > 1) {
    EXPECT_EQ(ids[1], "65532");
  }
}

TEST_P(DockerfileTest, BuildsOneTargetAndCopiesOnlyItsBinary) {
  const std::string binary = GetParam();
  std::string build_commands;
  for (const Stage& stage : structure_.stages) {
    if (&stage == &Final()) continue;
    for (const Instruction& in : stage.instructions) {
      if (in.keyword == "RUN") absl::StrAppend(&build_commands, in.args, "\n");
    }
  }
  EXPECT_THAT(build_commands, HasSubstr("-DELFDEPLOY_BUILD_TESTS=OFF"));
  EXPECT_THAT(build_commands, HasSubstr("-G Ninja"));
  EXPECT_THAT(build_commands, HasSubstr("--target " + binary + " "));
  std::vector<std::string> copied_from_stages;
  std::string runtime_commands;
  std::vector<std::string> entrypoint;
  for (const Instruction& in : Final().instructions) {
    if (in.keyword == "COPY") {
      absl::StatusOr<std::map<std::string, std::string>> flags =
          ParseFlags(in, {"from", "chown", "chmod", "link"});
      ASSERT_TRUE(flags.ok());
      EXPECT_TRUE(flags->count("from")) << "the runtime stage copies only from the build stage";
      absl::StatusOr<std::vector<std::string>> words = ProcessWords(in.args, NoEnv());
      ASSERT_TRUE(words.ok());
      copied_from_stages.insert(copied_from_stages.end(), words->begin(), words->end() - 1);
    }
    if (in.keyword == "RUN") absl::StrAppend(&runtime_commands, in.args, "\n");
    if (in.keyword == "ENTRYPOINT") entrypoint = in.json_args;
  }
  EXPECT_EQ(copied_from_stages, std::vector<std::string>{"/build/bin/" + binary});
  EXPECT_EQ(entrypoint, std::vector<std::string>{"/usr/local/bin/" + binary});
  // Runtime libraries only; buildah only where RUN steps are executed.
  EXPECT_THAT(runtime_commands, Not(HasSubstr("-dev ")));
  EXPECT_THAT(runtime_commands, Not(HasSubstr("cmake")));
  EXPECT_THAT(runtime_commands, HasSubstr("ca-certificates"));
  EXPECT_EQ(absl::StrContains(runtime_commands, "buildah"), binary == "elfdeploy-builder");
}

TEST_P(DockerfileTest, ContextSourcesExistAndAreNotIgnored) {
  absl::StatusOr<DockerIgnore> ignore =
      DockerIgnore::Parse(ReadFile(SourceDir() / ".dockerignore"));
  ASSERT_TRUE(ignore.ok()) << ignore.status();
  // The builder reads the Dockerfile from inside the context.
  EXPECT_FALSE(ignore->Excluded("deploy/docker/" + GetParam() + ".Dockerfile"));
  int sources = 0;
  for (const Stage& stage : structure_.stages) {
    for (const Instruction& in : stage.instructions) {
      if (in.keyword != "COPY" && in.keyword != "ADD") continue;
      absl::StatusOr<std::map<std::string, std::string>> flags =
          ParseFlags(in, {"from", "chown", "chmod", "link"});
      ASSERT_TRUE(flags.ok());
      if (flags->count("from")) continue;
      absl::StatusOr<std::vector<std::string>> words = ProcessWords(in.args, NoEnv());
      ASSERT_TRUE(words.ok());
      for (size_t i = 0; i + 1 < words->size(); ++i) {
        std::string source = (*words)[i];
        while (absl::EndsWith(source, "/")) source.pop_back();
        ++sources;
        EXPECT_TRUE(std::filesystem::exists(SourceDir() / source)) << source;
        EXPECT_FALSE(ignore->Excluded(source)) << source << " is in .dockerignore";
      }
    }
  }
  EXPECT_GT(sources, 0);
}

INSTANTIATE_TEST_SUITE_P(Binaries, DockerfileTest, ::testing::ValuesIn(Binaries()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name;
                           for (char c : info.param) {
                             if (c != '-') name += c;
                           }
                           return name;
                         });

TEST(DockerIgnoreTest, KeepsBuildOutputAndToolsOutOfTheContext) {
  absl::StatusOr<DockerIgnore> ignore =
      DockerIgnore::Parse(ReadFile(SourceDir() / ".dockerignore"));
  ASSERT_TRUE(ignore.ok()) << ignore.status();
  for (const char* path :
       {"build/bin/elfdeploy-builder", "build-asan/CMakeCache.txt", ".git/HEAD",
        ".tools/node_modules/.bin/buf", ".cache/clangd/index", "compile_commands.json",
        "tests/CMakeLists.txt", "deploy/local/demo.sh", "deploy/k8s/base/kustomization.yaml"}) {
    EXPECT_TRUE(ignore->Excluded(path)) << path;
  }
  for (const char* path :
       {"CMakeLists.txt", "proto/CMakeLists.txt", "services/builder/build.cc", "agent/main.cc",
        "third_party/grpc/health/v1/health.proto", "deploy/docker/elfdeploy-agent.Dockerfile"}) {
    EXPECT_FALSE(ignore->Excluded(path)) << path;
  }
}

}  // namespace
}  // namespace elfdeploy::builder
