// The builder against real files, a real registry, umoci, skopeo and (when it works here) buildah.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/builder/build.h"
#include "services/common/oci/copy.h"
#include "services/common/oci/registry_client.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/oci_image.h"

namespace elfdeploy::builder {
namespace {

using ::elfdeploy::testing::CommandResult;
using ::elfdeploy::testing::ProcessOptions;
using ::elfdeploy::testing::RunCommand;
using ::elfdeploy::testing::TempDir;
using ::elfdeploy::testing::WriteFile;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

absl::StatusOr<CommandResult> Exec(std::vector<std::string> argv, const std::string& cwd = "") {
  ProcessOptions options;
  options.argv = std::move(argv);
  options.cwd = cwd;
  return RunCommand(std::move(options), absl::Seconds(300));
}

struct Steps {
  std::vector<BuildObserver::Cache> cache;
  int64_t bytes = 0;
  std::vector<std::string> logs;
  std::vector<std::string> warnings;
  int pulled = 0;
  int pull_cached = 0;
};

class BuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("builder-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    registry_client_ = oci::NewRegistryClient({});
  }

  std::string Ctx(const std::string& rel = "") const {
    return rel.empty() ? dir_->Join("ctx") : dir_->Join("ctx/" + rel);
  }

  void Put(const std::string& rel, const std::string& content) {
    ASSERT_TRUE(WriteFile(Ctx(rel), content).ok());
  }

  std::unique_ptr<Builder> Make(const std::string& store, BuilderOptions options = {}) {
    options.store_dir = store;
    options.registry = registry_client_.get();
    absl::StatusOr<std::unique_ptr<Builder>> builder = Builder::Create(std::move(options));
    EXPECT_TRUE(builder.ok()) << builder.status();
    return builder.ok() ? *std::move(builder) : nullptr;
  }

  absl::StatusOr<BuildOutput> Build(Builder& builder, Steps* steps = nullptr,
                                    BuildParams params = {}) {
    if (params.context_dir.empty()) params.context_dir = Ctx();
    if (params.tags.empty()) params.tags = {"elf-automations/app:v1"};
    BuildObserver observer;
    observer.step_completed = [steps](int, BuildObserver::Cache cache, const std::string&,
                                      int64_t bytes, absl::Duration) {
      if (steps == nullptr) return;
      steps->cache.push_back(cache);
      steps->bytes += bytes;
    };
    observer.log = [steps](int, bool, const std::string& line) {
      if (steps != nullptr) steps->logs.push_back(line);
    };
    observer.warning = [steps](int, const std::string& message) {
      if (steps != nullptr) steps->warnings.push_back(message);
    };
    observer.pull = [steps](const std::string&, const oci::Descriptor&, bool cached) {
      if (steps == nullptr) return;
      ++steps->pulled;
      steps->pull_cached += cached;
    };
    return builder.Build(params, observer);
  }

  // The image config of a build.
  nlohmann::json Config(const BuildOutput& output, const std::string& store) {
    absl::StatusOr<oci::OciLayout> layout = oci::OciLayout::Open(store);
    EXPECT_TRUE(layout.ok());
    absl::StatusOr<std::string> bytes = layout->ReadBlob(output.config.digest);
    EXPECT_TRUE(bytes.ok());
    return nlohmann::json::parse(bytes.value_or("{}"));
  }

  void WriteApp() {
    Put("Dockerfile",
        "# syntax=docker/dockerfile:1\n"
        "ARG PY=3.11\n"
        "FROM scratch AS base\n"
        "ARG PY\n"
        "ENV APP_HOME=/app \\\n"
        "    PYTHON_VERSION=${PY}\n"
        "WORKDIR $APP_HOME\n"
        "COPY requirements.txt ./\n"
        "COPY src/ ./src/\n"
        "COPY --chmod=755 run.sh /usr/local/bin/run\n"
        "LABEL team=executive description=\"the executive team\"\n"
        "EXPOSE 8080 9090/udp\n"
        "USER 1000:1000\n"
        "ENTRYPOINT [\"/usr/local/bin/run\"]\n"
        "CMD [\"--port\", \"8080\"]\n");
    Put("requirements.txt", "fastapi==0.110\nuvicorn==0.29\n");
    Put("src/team_server.py", "print('team')\n");
    Put("src/pkg/util.py", "X = 1\n");
    Put("src/notes.log", "ignored\n");
    Put("run.sh", "#!/bin/sh\nexec python src/team_server.py \"$@\"\n");
    Put(".dockerignore", "**/*.log\n");
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<oci::Registry> registry_client_;
};

TEST_F(BuilderTest, BuildsTheConfigAsDockerWould) {
  WriteApp();
  auto builder = Make(dir_->Join("store"));
  Steps steps;
  absl::StatusOr<BuildOutput> output = Build(*builder, &steps);
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_EQ(output->layers.size(), 3u);
  EXPECT_EQ(output->layout_reference,
            absl::StrCat("oci:", dir_->Join("store"), ":elf-automations/app:v1"));
  nlohmann::json config = Config(*output, dir_->Join("store"));
  const nlohmann::json& c = config["config"];
  EXPECT_THAT(c["Env"], ::testing::ElementsAre("APP_HOME=/app", "PYTHON_VERSION=3.11"));
  EXPECT_EQ(c["WorkingDir"], "/app");
  EXPECT_EQ(c["User"], "1000:1000");
  EXPECT_EQ(c["Entrypoint"], nlohmann::json({"/usr/local/bin/run"}));
  EXPECT_EQ(c["Cmd"], nlohmann::json({"--port", "8080"}));
  EXPECT_TRUE(c["ExposedPorts"].contains("8080/tcp"));
  EXPECT_TRUE(c["ExposedPorts"].contains("9090/udp"));
  EXPECT_EQ(c["Labels"]["team"], "executive");
  EXPECT_EQ(c["Labels"]["description"], "the executive team");
  EXPECT_EQ(config["created"], "1970-01-01T00:00:00Z");
  EXPECT_EQ(config["rootfs"]["diff_ids"].size(), 3u);
  EXPECT_EQ(config["history"].size(), 11u);  // one per instruction after FROM

  // Outside checks: skopeo reads the layout, umoci unpacks it to the files we expect.
  absl::StatusOr<CommandResult> inspect = Exec(
      {"skopeo", "inspect", absl::StrCat("oci:", dir_->Join("store"), ":elf-automations/app:v1")});
  ASSERT_TRUE(inspect.ok());
  ASSERT_EQ(inspect->exit_code, 0) << inspect->output;
  EXPECT_THAT(inspect->output, HasSubstr(output->manifest.digest.ToString()));
  std::string bundle = dir_->Join("bundle");
  absl::StatusOr<CommandResult> unpack =
      Exec({"umoci", "unpack", "--rootless", "--image",
            absl::StrCat(dir_->Join("store"), ":elf-automations/app:v1"), bundle});
  ASSERT_TRUE(unpack.ok());
  ASSERT_EQ(unpack->exit_code, 0) << unpack->output;
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/app/requirements.txt"));
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/app/src/team_server.py"));
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/app/src/pkg/util.py"));
  EXPECT_FALSE(fs::exists(bundle + "/rootfs/app/src/notes.log"));  // .dockerignore
  struct stat st {};
  ASSERT_EQ(stat((bundle + "/rootfs/usr/local/bin/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
}

TEST_F(BuilderTest, SameInputsSameDigestAcrossStoresAndTimes) {
  WriteApp();
  absl::StatusOr<BuildOutput> first = Build(*Make(dir_->Join("store-a")));
  ASSERT_TRUE(first.ok()) << first.status();
  // Same content, new mtimes and inodes, another store: the same image.
  std::string copy = dir_->Join("copy");
  fs::copy(Ctx(), copy, fs::copy_options::recursive);
  fs::remove_all(Ctx());
  fs::rename(copy, Ctx());
  absl::StatusOr<BuildOutput> second = Build(*Make(dir_->Join("store-b")));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->manifest.digest, second->manifest.digest);

  BuildParams later;
  later.source_date_epoch = 1700000000;
  absl::StatusOr<BuildOutput> dated = Build(*Make(dir_->Join("store-c")), nullptr, later);
  ASSERT_TRUE(dated.ok());
  EXPECT_NE(dated->manifest.digest, first->manifest.digest);
}

TEST_F(BuilderTest, UnchangedRebuildIsAllCacheHitsAndWritesNothing) {
  WriteApp();
  auto builder = Make(dir_->Join("store"));
  Steps cold;
  absl::StatusOr<BuildOutput> first = Build(*builder, &cold);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_GT(cold.bytes, 0);
  Steps warm;
  absl::StatusOr<BuildOutput> second = Build(*builder, &warm);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->manifest.digest, first->manifest.digest);
  EXPECT_EQ(warm.bytes, 0);
  EXPECT_GT(first->source_bytes_read, 0);
  EXPECT_EQ(second->source_bytes_read, 0);  // sizes, mtimes and inodes unchanged: nothing read
  EXPECT_EQ(std::count(warm.cache.begin(), warm.cache.end(), BuildObserver::Cache::kHit), 3);
  EXPECT_EQ(std::count(warm.cache.begin(), warm.cache.end(), BuildObserver::Cache::kMiss), 0);

  // A new builder (a restarted service) still hits: the cache lives in the store.
  Steps restarted;
  absl::StatusOr<BuildOutput> after_restart = Build(*Make(dir_->Join("store")), &restarted);
  ASSERT_TRUE(after_restart.ok());
  EXPECT_EQ(restarted.bytes, 0);
  EXPECT_EQ(after_restart->source_bytes_read, 0);

  // One changed file: its layer and the ones after it are rebuilt, the first is reused.
  Put("src/team_server.py", "print('team v2')\n");
  Steps changed;
  absl::StatusOr<BuildOutput> third = Build(*builder, &changed);
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->manifest.digest, first->manifest.digest);
  std::vector<BuildObserver::Cache> layers;
  for (BuildObserver::Cache c : changed.cache) {
    if (c != BuildObserver::Cache::kNotApplicable) layers.push_back(c);
  }
  EXPECT_THAT(layers,
              ::testing::ElementsAre(BuildObserver::Cache::kHit, BuildObserver::Cache::kMiss,
                                     BuildObserver::Cache::kMiss));

  BuildParams no_cache;
  no_cache.no_cache = true;
  Steps forced;
  ASSERT_TRUE(Build(*builder, &forced, no_cache).ok());
  EXPECT_EQ(std::count(forced.cache.begin(), forced.cache.end(), BuildObserver::Cache::kHit), 0);
}

TEST_F(BuilderTest, TheContextIsABoundary) {
  auto builder = Make(dir_->Join("store"));
  Put("inside.txt", "ok\n");
  ASSERT_TRUE(WriteFile(dir_->Join("outside.txt"), "secret\n").ok());
  struct Case {
    std::string dockerfile;
    absl::StatusCode code;
    std::string message;
  };
  fs::create_symlink(dir_->Join("outside.txt"), Ctx("escape-link"));
  fs::create_directories(Ctx("tree"));
  fs::create_symlink("/etc", Ctx("tree/etc-link"));
  ASSERT_EQ(mkfifo(Ctx("fifo").c_str(), 0644), 0);
  Put("big.bin", std::string(2048, 'x'));
  for (const Case& c : std::vector<Case>{
           {"FROM scratch\nCOPY ../outside.txt /x\n", absl::StatusCode::kPermissionDenied,
            "outside the build context"},
           {"FROM scratch\nCOPY /etc/passwd /x\n", absl::StatusCode::kInvalidArgument,
            "absolute path"},
           {"FROM scratch\nCOPY escape-link /x\n", absl::StatusCode::kPermissionDenied,
            "outside the build context"},
           {"FROM scratch\nCOPY tree /x/\n", absl::StatusCode::kPermissionDenied,
            "outside the build context"},
           {"FROM scratch\nCOPY fifo /x\n", absl::StatusCode::kInvalidArgument, "FIFOs"},
           {"FROM scratch\nCOPY big.bin /x\n", absl::StatusCode::kInvalidArgument,
            "over the source size limit"},
           {"FROM scratch\nCOPY missing.txt /x\n", absl::StatusCode::kNotFound, "not found"},
       }) {
    Put("Dockerfile", c.dockerfile);
    BuilderOptions limited;
    limited.context.max_file_size = 1024;
    absl::StatusOr<BuildOutput> output = Build(*Make(dir_->Join("store"), limited));
    EXPECT_EQ(output.status().code(), c.code) << c.dockerfile << output.status();
    EXPECT_THAT(output.status().message(), HasSubstr(c.message)) << c.dockerfile;
    EXPECT_THAT(output.status().message(), HasSubstr("Dockerfile:2:")) << c.dockerfile;
  }
  BuildParams outside;
  outside.dockerfile = "../outside.txt";
  EXPECT_EQ(Build(*builder, nullptr, outside).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(BuilderTest, InstructionsItCannotHonourFailWithTheirLine) {
  auto builder = Make(dir_->Join("store"));
  BuilderOptions no_engine;
  no_engine.run_engine = "no-such-engine";
  for (const auto& [dockerfile, message] : std::vector<std::pair<std::string, std::string>>{
           {"FROM scratch\nHEALTHCHECK CMD true\n", "Dockerfile:2: HEALTHCHECK"},
           {"FROM scratch\nADD https://example.com/x.tar /x\n", "remote source"},
           {"FROM scratch\nCOPY --chown=app:app a /x\n", "numeric uid:gid"},
           {"FROM scratch\nEXPOSE eighty\n", "not a port"},
           {"FROM scratch\nRUN echo hi\n", "RUN needs a build engine and \"no-such-engine\""}}) {
    Put("Dockerfile", dockerfile);
    Put("a", "a");
    absl::StatusOr<BuildOutput> output = Build(*Make(dir_->Join("store"), no_engine));
    EXPECT_FALSE(output.ok()) << dockerfile;
    EXPECT_THAT(output.status().message(), HasSubstr(message)) << output.status();
  }
  Put("Dockerfile", "FROM scratch\nRUN echo hi\n");
  EXPECT_EQ(Build(*Make(dir_->Join("store"), no_engine)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(BuilderTest, MultiStageCopyFromAndAddOfALocalTar) {
  Put("payload/a.txt", "A\n");
  Put("payload/sub/b.txt", "B\n");
  ASSERT_EQ(Exec({"tar", "-czf", Ctx("payload.tar.gz"), "-C", Ctx("payload"), "."})->exit_code, 0);
  Put("Dockerfile",
      "FROM scratch AS build\n"
      "COPY payload/ /out/\n"
      "FROM scratch\n"
      "COPY --from=build /out/sub/b.txt /final/b.txt\n"
      "ADD payload.tar.gz /extracted/\n");
  auto builder = Make(dir_->Join("store"));
  absl::StatusOr<BuildOutput> output = Build(*builder);
  ASSERT_TRUE(output.ok()) << output.status();
  std::string bundle = dir_->Join("bundle");
  absl::StatusOr<CommandResult> unpack =
      Exec({"umoci", "unpack", "--rootless", "--image",
            absl::StrCat(dir_->Join("store"), ":elf-automations/app:v1"), bundle});
  ASSERT_EQ(unpack->exit_code, 0) << unpack->output;
  std::ifstream b(bundle + "/rootfs/final/b.txt");
  std::string content((std::istreambuf_iterator<char>(b)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "B\n");
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/extracted/a.txt"));
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/extracted/sub/b.txt"));
  EXPECT_FALSE(fs::exists(bundle + "/rootfs/out"));  // only the last stage is the image
}

TEST_F(BuilderTest, GitRepositoryLabelsTheImageWithoutCredentials) {
  WriteApp();
  ASSERT_EQ(Exec({"git", "init", "-q", Ctx()})->exit_code, 0);
  ASSERT_EQ(Exec({"git", "-C", Ctx(), "remote", "add", "origin",
                  "https://bot:tok3n@git.example.com/org/apps.git"})
                ->exit_code,
            0);
  ASSERT_EQ(Exec({"git", "-C", Ctx(), "-c", "user.name=t", "-c", "user.email=t@e", "add", "."})
                ->exit_code,
            0);
  ASSERT_EQ(Exec({"git", "-C", Ctx(), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm",
                  "init"})
                ->exit_code,
            0);
  absl::StatusOr<CommandResult> head = Exec({"git", "-C", Ctx(), "rev-parse", "HEAD"});
  std::string revision = head->output.substr(0, 40);
  absl::StatusOr<BuildOutput> output = Build(*Make(dir_->Join("store")));
  ASSERT_TRUE(output.ok()) << output.status();
  nlohmann::json labels = Config(*output, dir_->Join("store"))["config"]["Labels"];
  EXPECT_EQ(labels["org.opencontainers.image.revision"], revision);
  EXPECT_EQ(labels["org.opencontainers.image.source"], "https://git.example.com/org/apps.git");
}

TEST_F(BuilderTest, FromPullsTheBaseOnceAndBuildsOnIt) {
  absl::StatusOr<std::unique_ptr<testing::RegistryFixture>> registry =
      testing::RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok()) << registry.status();
  absl::StatusOr<testing::TestImage> base =
      testing::WriteTestImage(dir_->Join("base"), "v1", {5000, 6000}, 3);
  ASSERT_TRUE(base.ok());
  std::string base_ref = absl::StrCat((*registry)->host(), "/library/base:v1");
  oci::TransportReference from{
      oci::TransportReference::Kind::kOciLayout, {}, dir_->Join("base"), "v1"};
  absl::StatusOr<oci::TransportReference> to = oci::ParseTransportReference("docker://" + base_ref);
  ASSERT_TRUE(to.ok());
  ASSERT_TRUE(oci::CopyImage(*registry_client_, from, *to, {}).ok());

  Put("Dockerfile",
      absl::StrCat("FROM ", base_ref, "\nENV PATH=/usr/bin:$PATH\nCOPY app.py /app/\n"));
  Put("app.py", "print(1)\n");
  auto builder = Make(dir_->Join("store"));
  Steps first;
  absl::StatusOr<BuildOutput> output = Build(*builder, &first);
  ASSERT_TRUE(output.ok()) << output.status();
  ASSERT_EQ(output->layers.size(), 3u);
  EXPECT_EQ(output->layers[0].digest, base->layers[0]);
  EXPECT_EQ(output->layers[1].digest, base->layers[1]);
  EXPECT_EQ(first.pulled, 3);
  EXPECT_EQ(first.pull_cached, 0);
  Steps second;
  ASSERT_TRUE(Build(*builder, &second).ok());
  EXPECT_EQ(second.pull_cached, 3);  // base blobs are not fetched again
}

TEST_F(BuilderTest, RunStepsGoToBuildah) {
  absl::StatusOr<CommandResult> version = Exec({"buildah", "--version"});
  if (!version.ok() || version->exit_code != 0) {
    GTEST_SKIP() << "buildah is not usable on this machine: "
                 << (version.ok() ? version->output : version.status().ToString());
  }
  // A tiny base with a shell: static busybox, built by the builder itself.
  ASSERT_TRUE(fs::exists("/bin/busybox")) << "busybox-static is installed by install-deps.sh";
  std::string base_ctx = dir_->Join("busybox");
  fs::create_directories(base_ctx + "/bin");
  fs::copy_file("/bin/busybox", base_ctx + "/bin/busybox");
  fs::create_symlink("busybox", base_ctx + "/bin/sh");
  ASSERT_TRUE(WriteFile(base_ctx + "/Dockerfile", "FROM scratch\nCOPY bin/ /bin/\n").ok());
  auto builder = Make(dir_->Join("store"));
  BuildParams base_params;
  base_params.context_dir = base_ctx;
  base_params.tags = {"busybox:v1"};
  ASSERT_TRUE(Build(*builder, nullptr, base_params).ok());
  absl::StatusOr<std::unique_ptr<testing::RegistryFixture>> registry =
      testing::RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok());
  oci::TransportReference from{
      oci::TransportReference::Kind::kOciLayout, {}, dir_->Join("store"), "busybox:v1"};
  std::string base_ref = absl::StrCat((*registry)->host(), "/library/busybox:v1");
  ASSERT_TRUE(oci::CopyImage(*registry_client_, from,
                             *oci::ParseTransportReference("docker://" + base_ref), {})
                  .ok());

  Put("Dockerfile",
      absl::StrCat("FROM ", base_ref,
                   "\nARG GREETING=hello\nWORKDIR /work\n"
                   "RUN echo \"$GREETING from RUN\" > /work/greeting.txt && echo done\n"
                   "COPY app.txt /work/\n"));
  Put("app.txt", "app\n");
  Steps steps;
  absl::StatusOr<BuildOutput> output = Build(*builder, &steps);
  ASSERT_TRUE(output.ok()) << output.status();
  EXPECT_THAT(steps.logs, ::testing::Contains("done"));
  ASSERT_EQ(output->layers.size(), 3u);  // busybox, RUN, COPY
  std::string bundle = dir_->Join("bundle");
  absl::StatusOr<CommandResult> unpack =
      Exec({"umoci", "unpack", "--rootless", "--image",
            absl::StrCat(dir_->Join("store"), ":elf-automations/app:v1"), bundle});
  ASSERT_EQ(unpack->exit_code, 0) << unpack->output;
  std::ifstream greeting(bundle + "/rootfs/work/greeting.txt");
  std::string content((std::istreambuf_iterator<char>(greeting)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "hello from RUN\n");
  EXPECT_TRUE(fs::exists(bundle + "/rootfs/work/app.txt"));

  // The RUN layer is cached like any other.
  Steps again;
  ASSERT_TRUE(Build(*builder, &again).ok());
  EXPECT_EQ(again.bytes, 0);
  EXPECT_TRUE(again.logs.empty());
}

TEST_F(BuilderTest, BuildsBeyondTheParallelLimitWaitInAQueue) {
  WriteApp();
  BuilderOptions one;
  one.max_parallel_builds = 1;
  auto builder = Make(dir_->Join("store"), one);
  absl::Notification first_started;
  absl::Notification release;
  BuildParams params;
  params.context_dir = Ctx();
  params.tags = {"queued:v1"};
  BuildObserver blocking;
  blocking.started = [&](const std::string&, int, const std::string&) {
    first_started.Notify();
    release.WaitForNotification();
  };
  absl::StatusOr<BuildOutput> first;
  std::thread thread([&] { first = builder->Build(params, blocking); });
  ASSERT_TRUE(first_started.WaitForNotificationWithTimeout(absl::Seconds(30)));
  int position = -1;
  BuildObserver queued;
  queued.queued = [&](int p) {
    position = p;
    release.Notify();
  };
  absl::StatusOr<BuildOutput> second = builder->Build(params, queued);
  thread.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(position, 0);
  EXPECT_EQ(first->manifest.digest, second->manifest.digest);
}

}  // namespace
}  // namespace elfdeploy::builder
