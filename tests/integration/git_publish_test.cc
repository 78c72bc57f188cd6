// The publisher's git layer against real bare repositories over file://, git daemon and
// git-http-backend (basic auth, and https through a TLS-terminating proxy); the git CLI reads the
// results back.
#include "services/manifest_publisher/git_publish.h"

#include <arpa/inet.h>
#include <git2.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/manifest_publisher/git_stream.h"
#include "services/manifest_publisher/git_transport.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::publisher {
namespace {

namespace harness = ::elfdeploy::testing;

using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Optional;

FileChange Put(std::string path, std::string content) {
  return FileChange{.path = std::move(path), .content = std::move(content)};
}

FileChange Delete(std::string path) {
  return FileChange{.path = std::move(path), .content = std::nullopt};
}

RenderFn Render(std::vector<FileChange> changes) {
  return [changes = std::move(changes)](
             const TreeReader&) -> absl::StatusOr<std::vector<FileChange>> { return changes; };
}

CommitSpec Spec(std::string message) {
  CommitSpec spec;
  spec.message = std::move(message);
  return spec;
}

std::vector<std::string> Lines(absl::string_view text) {
  return absl::StrSplit(text, '\n', absl::SkipWhitespace());
}

// `payload` as a pkt-line.
std::string Pkt(absl::string_view payload) {
  return absl::StrCat(absl::Hex(payload.size() + 4, absl::kZeroPad4), payload);
}

// A side-band packet of `channel`.
std::string Band(char channel, absl::string_view payload) {
  return Pkt(absl::StrCat(std::string(1, channel), payload));
}

const std::string kReport = absl::StrCat(Pkt("unpack ok\n"), Pkt("ok refs/heads/main\n"), "0000");

TEST(PushReportScannerTest, StopsAfterThePacketThatEndsTheReport) {
  const std::string answer = absl::StrCat(Band(1, kReport), Band(2, "hook output\n"), "0000");
  PushReportScanner scanner;
  EXPECT_EQ(scanner.Feed(answer), Band(1, kReport).size());
  EXPECT_TRUE(scanner.complete());
  EXPECT_TRUE(scanner.ended());  // the closing flush came in the same read
  EXPECT_FALSE(scanner.passthrough());
}

TEST(PushReportScannerTest, FindsTheEndAcrossAnySplit) {
  // The report split over two bands with progress between them, fed a byte at a time.
  const std::string first = Band(1, kReport.substr(0, 9));
  const std::string answer =
      absl::StrCat(Band(2, "Resolving deltas\n"), first, Band(2, "more\n"),
                   Band(1, kReport.substr(9)), Band(2, "hook output\n"), "0000");
  const size_t report_end = answer.size() - Band(2, "hook output\n").size() - 4;
  PushReportScanner scanner;
  size_t passed = 0;
  for (size_t i = 0; i < answer.size() && !scanner.complete(); ++i) {
    passed += scanner.Feed(answer.substr(i, 1));
    EXPECT_EQ(scanner.complete(), i + 1 == report_end) << "at byte " << i;
  }
  EXPECT_TRUE(scanner.complete());
  EXPECT_EQ(passed, report_end);
  // The tail reader goes on to the closing flush.
  for (size_t i = report_end; i < answer.size(); ++i) {
    EXPECT_FALSE(scanner.ended()) << "at byte " << i;
    scanner.Feed(answer.substr(i, 1));
  }
  EXPECT_TRUE(scanner.ended());
  EXPECT_FALSE(scanner.passthrough());
}

TEST(PushReportScannerTest, FindsTheEndWhereverTheAnswerIsCutInTwo) {
  const std::string tail = Band(2, "hook output\n");
  const std::string answer = absl::StrCat(Band(2, "progress\n"), Band(1, kReport), tail, "0000");
  const size_t report_end = answer.size() - tail.size() - 4;
  for (size_t cut = 0; cut <= answer.size(); ++cut) {
    PushReportScanner scanner;
    size_t passed = scanner.Feed(absl::string_view(answer).substr(0, cut));
    if (!scanner.complete()) passed += scanner.Feed(absl::string_view(answer).substr(cut));
    EXPECT_EQ(passed, report_end) << "cut at " << cut;
    EXPECT_TRUE(scanner.complete()) << "cut at " << cut;
    if (!scanner.ended()) scanner.Feed(absl::string_view(answer).substr(cut));
    EXPECT_TRUE(scanner.ended()) << "cut at " << cut;
  }
}

TEST(PushReportScannerTest, AnythingButABandAfterTheReportEndsTheTail) {
  for (const std::string& after :
       {std::string("0000"), std::string("0003"), std::string("zzzz"), Pkt("not a band")}) {
    PushReportScanner scanner;
    scanner.Feed(absl::StrCat(Band(1, kReport), Band(3, "error: disk full\n")));
    EXPECT_TRUE(scanner.complete());
    EXPECT_FALSE(scanner.ended()) << "a band-3 message is part of the tail";
    scanner.Feed(after);
    EXPECT_TRUE(scanner.ended()) << after;
  }
}

TEST(PushReportScannerTest, LeavesAnswersWithoutSideBandAlone) {
  PushReportScanner plain;
  EXPECT_EQ(plain.Feed(kReport), kReport.size());
  EXPECT_TRUE(plain.passthrough());
  EXPECT_FALSE(plain.complete());

  PushReportScanner ended;  // the closing flush came before the report ended: nothing to cut
  const std::string answer = absl::StrCat(Band(3, "fatal: out of space\n"), "0000");
  EXPECT_EQ(ended.Feed(answer), answer.size());
  EXPECT_TRUE(ended.passthrough());
  EXPECT_FALSE(ended.complete());

  PushReportScanner garbage;
  EXPECT_EQ(garbage.Feed("zz12\x01"), 5u);
  EXPECT_TRUE(garbage.passthrough());
  EXPECT_FALSE(garbage.ended());
}

// A listener that completes connections and never says anything.
TEST(SocketReadDeadlineTest, ReadsGiveUpAfterTheSilence) {
  int major = 0, minor = 0, patch = 0;
  git_libgit2_version(&major, &minor, &patch);
  if (major != 1 || minor != 5) GTEST_SKIP() << "the socket stream is registered for libgit2 1.5";
  git_libgit2_init();
  UseNoDelaySockets();
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  git_remote* remote = nullptr;
  ASSERT_EQ(
      git_remote_create_detached(
          &remote, absl::StrCat("git://127.0.0.1:", ntohs(address.sin_port), "/x.git").c_str()),
      0);
  {
    SocketReadDeadline silence(absl::Milliseconds(200));
    EXPECT_LT(git_remote_connect(remote, GIT_DIRECTION_FETCH, nullptr, nullptr, nullptr), 0);
    ASSERT_NE(git_error_last(), nullptr);
    EXPECT_THAT(git_error_last()->message, HasSubstr("nothing to read from socket for 200ms"));
  }
  git_remote_free(remote);
  close(listener);
  git_libgit2_shutdown();
}

// A bare repository behind one transport, and what the git CLI needs to reach it.
struct Remote {
  std::unique_ptr<harness::GitDaemonFixture> daemon;
  std::unique_ptr<harness::GitHttpFixture> http;
  std::unique_ptr<harness::GitSshFixture> ssh;
  GitTarget target;
  std::string git_dir;
  // The URL the git CLI clones and pushes (with credentials for http).
  std::string cli_url;
  std::string home;
};

class GitPublishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<harness::TempDir> dir = harness::TempDir::Create("git-publish-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    ASSERT_TRUE(harness::WriteFile(dir_->Join("home/.keep"), "").ok());
  }

  PublisherOptions Options(absl::string_view cache) const {
    PublisherOptions options;
    options.cache_dir = dir_->Join(cache);
    options.initial_backoff = absl::Milliseconds(10);
    options.max_backoff = absl::Milliseconds(400);
    return options;
  }

  void MakeRemote(const std::string& transport, Remote* remote) {
    if (transport == "file") {
      remote->home = dir_->Join("home");
      remote->git_dir = dir_->Join("remote.git");
      absl::StatusOr<harness::CommandResult> init = harness::RunGit(
          remote->home, {"init", "--quiet", "--bare", "--initial-branch=main", remote->git_dir});
      ASSERT_TRUE(init.ok() && init->exit_code == 0) << init.status();
      remote->target.url = absl::StrCat("file://", remote->git_dir);
      remote->cli_url = remote->git_dir;
    } else if (transport == "daemon") {
      absl::StatusOr<std::unique_ptr<harness::GitDaemonFixture>> daemon =
          harness::GitDaemonFixture::Start();
      ASSERT_TRUE(daemon.ok()) << daemon.status();
      remote->daemon = *std::move(daemon);
      absl::StatusOr<std::string> path = remote->daemon->CreateBareRepo("gitops");
      ASSERT_TRUE(path.ok()) << path.status();
      remote->git_dir = *path;
      remote->home = remote->daemon->home();
      remote->target.url = remote->daemon->url("gitops");
      remote->cli_url = remote->target.url;
    } else if (transport == "ssh") {
      absl::StatusOr<std::unique_ptr<harness::GitSshFixture>> ssh = harness::GitSshFixture::Start();
      ASSERT_TRUE(ssh.ok()) << ssh.status();
      remote->ssh = *std::move(ssh);
      absl::StatusOr<std::string> path = remote->ssh->CreateBareRepo("gitops");
      ASSERT_TRUE(path.ok()) << path.status();
      remote->git_dir = *path;
      remote->home = remote->ssh->home();
      remote->target.url = remote->ssh->url("gitops");
      remote->target.credentials.ssh_private_key_path = remote->ssh->private_key();
      remote->target.credentials.ssh_public_key_path = remote->ssh->public_key();
      // The git CLI writes to the same repository through its path.
      remote->cli_url = remote->git_dir;
    } else {
      absl::StatusOr<std::unique_ptr<harness::GitHttpFixture>> http =
          harness::GitHttpFixture::Start({});
      ASSERT_TRUE(http.ok()) << http.status();
      remote->http = *std::move(http);
      absl::StatusOr<std::string> path = remote->http->CreateBareRepo("gitops");
      ASSERT_TRUE(path.ok()) << path.status();
      remote->git_dir = *path;
      remote->home = remote->http->home();
      remote->target.url = remote->http->url("gitops");
      remote->target.credentials.username = remote->http->username();
      remote->target.credentials.password = Secret(remote->http->password());
      remote->cli_url =
          absl::StrCat("http://", remote->http->username(), ":", remote->http->password(),
                       "@127.0.0.1:", remote->http->port(), "/git/gitops.git");
    }
  }

  // `git <args>` on the remote's bare repository; its trimmed output, or "<exit N>: output".
  static std::string Git(const Remote& remote, std::vector<std::string> args) {
    args.insert(args.begin(), {"--git-dir", remote.git_dir});
    absl::StatusOr<harness::CommandResult> result = harness::RunGit(remote.home, args);
    if (!result.ok()) return std::string(result.status().message());
    std::string output(absl::StripTrailingAsciiWhitespace(result->output));
    if (result->exit_code != 0) return absl::StrCat("<exit ", result->exit_code, ">: ", output);
    return output;
  }

  static int CommitCount(const Remote& remote) {
    int count = 0;
    std::string output = Git(remote, {"rev-list", "--count", "main"});
    return absl::SimpleAtoi(output, &count) ? count : -1;
  }

  // Another writer: clones with the git CLI, writes `path` and pushes to main.
  void CliCommit(const Remote& remote, const std::string& path, const std::string& content) {
    std::string work = dir_->Join(absl::StrCat("cli-", cli_commits_++));
    auto run = [&](std::vector<std::string> args, const std::string& cwd) {
      absl::StatusOr<harness::CommandResult> result = harness::RunGit(remote.home, args, cwd);
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_EQ(result->exit_code, 0) << result->output;
    };
    ASSERT_NO_FATAL_FAILURE(run({"clone", "--quiet", remote.cli_url, work}, ""));
    ASSERT_TRUE(harness::WriteFile(absl::StrCat(work, "/", path), content).ok());
    ASSERT_NO_FATAL_FAILURE(run({"add", "-A"}, work));
    ASSERT_NO_FATAL_FAILURE(run({"commit", "--quiet", "-m", "cli writer"}, work));
    ASSERT_NO_FATAL_FAILURE(run({"push", "--quiet", "origin", "HEAD:main"}, work));
  }

  // Every commit on main changes at least one file.
  static void ExpectNoEmptyCommit(const Remote& remote) {
    for (const std::string& commit : Lines(Git(remote, {"log", "--format=%H", "main"}))) {
      EXPECT_THAT(
          Git(remote, {"diff-tree", "--root", "--no-commit-id", "--name-only", "-r", commit}),
          Not(IsEmpty()))
          << "empty commit " << commit;
    }
  }

  std::optional<harness::TempDir> dir_;
  int cli_commits_ = 0;
};

TEST_F(GitPublishTest, FileRepoFirstPublishNoOpChangeAndDelete) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));

  bool rendered_empty = false;
  absl::StatusOr<PublishOutcome> first = publisher.Publish(
      remote.target,
      [&](const TreeReader& tree) -> absl::StatusOr<std::vector<FileChange>> {
        absl::StatusOr<std::vector<std::string>> root = tree.ListDir("");
        rendered_empty = tree.head().empty() && root.ok() && root->empty();
        return std::vector<FileChange>{Put("apps/a/deployment.yaml", "image: a:1\n"),
                                       Put("apps/b/deployment.yaml", "image: b:1\n"),
                                       Put("README.md", "# gitops\n")};
      },
      Spec("first"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(rendered_empty);
  EXPECT_FALSE(first->no_op);
  EXPECT_EQ(first->attempts, 1);
  EXPECT_EQ(first->parent, "");
  EXPECT_EQ(first->commit, Git(remote, {"rev-parse", "main"}));
  EXPECT_THAT(first->changed_paths,
              ElementsAre("README.md", "apps/a/deployment.yaml", "apps/b/deployment.yaml"));
  EXPECT_EQ(CommitCount(remote), 1);
  EXPECT_EQ(Git(remote, {"show", "main:apps/a/deployment.yaml"}), "image: a:1");

  std::optional<std::string> seen_a;
  std::vector<std::string> seen_apps;
  std::string seen_head;
  absl::StatusOr<PublishOutcome> same = publisher.Publish(
      remote.target,
      [&](const TreeReader& tree) -> absl::StatusOr<std::vector<FileChange>> {
        seen_head = tree.head();
        absl::StatusOr<std::optional<std::string>> a = tree.ReadFile("apps/a/deployment.yaml");
        if (!a.ok()) return a.status();
        seen_a = *a;
        absl::StatusOr<std::vector<std::string>> apps = tree.ListDir("apps");
        if (!apps.ok()) return apps.status();
        seen_apps = *apps;
        absl::StatusOr<std::optional<std::string>> missing = tree.ReadFile("apps/c/x.yaml");
        EXPECT_TRUE(missing.ok() && !missing->has_value());
        absl::StatusOr<std::vector<std::string>> none = tree.ListDir("nowhere");
        EXPECT_TRUE(none.ok() && none->empty());
        EXPECT_EQ(tree.ReadFile("apps").status().code(), absl::StatusCode::kFailedPrecondition);
        EXPECT_EQ(tree.ReadFile("../etc/passwd").status().code(),
                  absl::StatusCode::kInvalidArgument);
        return std::vector<FileChange>{Put("apps/a/deployment.yaml", "image: a:1\n"),
                                       Put("apps/b/deployment.yaml", "image: b:1\n"),
                                       Put("README.md", "# gitops\n")};
      },
      Spec("same again"));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->no_op);
  EXPECT_EQ(same->commit, first->commit);
  EXPECT_EQ(seen_head, first->commit);
  EXPECT_THAT(seen_a, Optional(std::string("image: a:1\n")));
  EXPECT_THAT(seen_apps, ElementsAre("a", "b"));
  EXPECT_EQ(CommitCount(remote), 1);

  CommitSpec spec = Spec("Roll out r-2\n");
  spec.trailers = {{"Elfdeploy-Rollout", "r-2"}, {"Image", "a=sha256:0123abcd"}};
  spec.author_name = "elfdeploy bot";
  spec.author_email = "bot@elfdeploy.invalid";
  spec.time = 1700000000;
  absl::StatusOr<PublishOutcome> changed =
      publisher.Publish(remote.target,
                        Render({Put("apps/a/deployment.yaml", "image: a:2\n"),
                                Put("apps/b/deployment.yaml", "image: b:1\n")}),
                        spec);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_FALSE(changed->no_op);
  EXPECT_EQ(changed->parent, first->commit);
  EXPECT_THAT(changed->changed_paths, ElementsAre("apps/a/deployment.yaml"));
  EXPECT_EQ(CommitCount(remote), 2);
  EXPECT_EQ(Git(remote, {"log", "-1", "--format=%(trailers)", "main"}),
            "Elfdeploy-Rollout: r-2\nImage: a=sha256:0123abcd");
  EXPECT_EQ(Git(remote, {"log", "-1", "--format=%B", "main"}),
            "Roll out r-2\n\nElfdeploy-Rollout: r-2\nImage: a=sha256:0123abcd");
  EXPECT_EQ(Git(remote, {"log", "-1", "--format=%an|%ae|%at|%cn|%ce|%ct", "main"}),
            "elfdeploy bot|bot@elfdeploy.invalid|1700000000|elfdeploy bot|"
            "bot@elfdeploy.invalid|1700000000");
  EXPECT_EQ(Git(remote, {"diff-tree", "--no-commit-id", "--name-only", "-r", "main"}),
            "apps/a/deployment.yaml");
  EXPECT_EQ(Git(remote, {"show", "main:README.md"}), "# gitops");

  absl::StatusOr<PublishOutcome> deleted =
      publisher.Publish(remote.target, Render({Delete("apps/b/deployment.yaml")}), Spec("drop b"));
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_FALSE(deleted->no_op);
  EXPECT_THAT(deleted->changed_paths, ElementsAre("apps/b/deployment.yaml"));
  EXPECT_EQ(CommitCount(remote), 3);
  EXPECT_EQ(Git(remote, {"ls-tree", "-r", "--name-only", "main"}),
            "README.md\napps/a/deployment.yaml");

  absl::StatusOr<PublishOutcome> gone =
      publisher.Publish(remote.target, Render({Delete("apps/b/deployment.yaml")}), Spec("again"));
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_TRUE(gone->no_op);
  EXPECT_EQ(gone->commit, deleted->commit);

  absl::StatusOr<PublishOutcome> dir_deleted =
      publisher.Publish(remote.target, Render({Delete("apps")}), Spec("drop apps"));
  ASSERT_TRUE(dir_deleted.ok()) << dir_deleted.status();
  EXPECT_THAT(dir_deleted->changed_paths, ElementsAre("apps/a/deployment.yaml"));
  EXPECT_EQ(Git(remote, {"ls-tree", "-r", "--name-only", "main"}), "README.md");
  EXPECT_EQ(CommitCount(remote), 4);
  ExpectNoEmptyCommit(remote);
}

TEST_F(GitPublishTest, EmptyRenderOnEmptyRepoIsNoOp) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));
  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(remote.target, Render({Delete("missing.yaml")}), Spec("nothing"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->no_op);
  EXPECT_EQ(outcome->commit, "");
  EXPECT_THAT(Git(remote, {"rev-parse", "--verify", "-q", "main"}), HasSubstr("<exit"));
}

TEST_F(GitPublishTest, BadChangesAndRenderErrorsCommitNothing) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));
  ASSERT_TRUE(
      publisher.Publish(remote.target, Render({Put("a/b.yaml", "x\n")}), Spec("base")).ok());

  for (const std::vector<FileChange>& changes :
       std::vector<std::vector<FileChange>>{{Put("../escape", "x")},
                                            {Put("/abs", "x")},
                                            {Put("a//b", "x")},
                                            {Put(".git/config", "x")},
                                            {Put("x", "1"), Put("x", "2")},
                                            {Put("x", "1"), Put("x/y", "2")},
                                            {Put("a", "file over a directory")},
                                            {Put("a/b.yaml/c", "under a file")}}) {
    absl::StatusOr<PublishOutcome> outcome =
        publisher.Publish(remote.target, Render(changes), Spec("bad"));
    EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument)
        << changes.front().path << ": " << outcome.status();
  }

  absl::StatusOr<PublishOutcome> failed = publisher.Publish(
      remote.target,
      [](const TreeReader&) -> absl::StatusOr<std::vector<FileChange>> {
        return absl::InvalidArgumentError("app \"x\": no container uses the image");
      },
      Spec("render fails"));
  EXPECT_EQ(failed.status(), absl::InvalidArgumentError("app \"x\": no container uses the image"));

  CommitSpec bad_trailer = Spec("bad trailer");
  bad_trailer.trailers = {{"Not A Key", "v"}};
  EXPECT_EQ(
      publisher.Publish(remote.target, Render({Put("n.yaml", "1")}), bad_trailer).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      publisher.Publish(remote.target, Render({Put("n.yaml", "1")}), Spec("  ")).status().code(),
      absl::StatusCode::kInvalidArgument);
  GitTarget bad_branch = remote.target;
  bad_branch.branch = "bad..branch";
  EXPECT_EQ(publisher.Publish(bad_branch, Render({Put("n.yaml", "1")}), Spec("x")).status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(CommitCount(remote), 1);
}

TEST_F(GitPublishTest, MissingRepositoryIsNotFound) {
  GitPublisher publisher(Options("cache"));
  GitTarget target;
  target.url = absl::StrCat("file://", dir_->Join("no-such.git"));
  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(target, Render({Put("a", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kNotFound) << outcome.status();

  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("http", &remote));
  target = remote.target;
  target.url = remote.http->url("no-such");
  outcome = publisher.Publish(target, Render({Put("a", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kNotFound) << outcome.status();
}

TEST_F(GitPublishTest, OtherBranchAndCacheReuse) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitTarget env = remote.target;
  env.branch = "env/prod";
  {
    GitPublisher publisher(Options("cache"));
    ASSERT_TRUE(publisher.Publish(env, Render({Put("p.yaml", "1\n")}), Spec("prod 1")).ok());
  }
  GitPublisher publisher(Options("cache"));
  absl::StatusOr<PublishOutcome> second =
      publisher.Publish(env, Render({Put("p.yaml", "2\n")}), Spec("prod 2"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(Git(remote, {"rev-list", "--count", "env/prod"}), "2");
  EXPECT_EQ(Git(remote, {"show", "env/prod:p.yaml"}), "2");
  EXPECT_THAT(Git(remote, {"rev-parse", "--verify", "-q", "main"}), HasSubstr("<exit"));
}

TEST_F(GitPublishTest, PlainPathIsALocalRepository) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitTarget target = remote.target;
  target.url = remote.git_dir;
  GitPublisher publisher(Options("cache"));
  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(target, Render({Put("a.yaml", "1\n")}), Spec("plain path"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->commit, Git(remote, {"rev-parse", "main"}));
}

TEST_F(GitPublishTest, DiffShowsUnifiedDiffWithoutCommitting) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));

  absl::StatusOr<std::pair<std::string, std::string>> initial =
      publisher.Diff(remote.target, Render({Put("apps/a.yaml", "name: a\nimage: a:1\n")}));
  ASSERT_TRUE(initial.ok()) << initial.status();
  EXPECT_EQ(initial->second, "");
  EXPECT_THAT(initial->first, HasSubstr("new file mode 100644"));
  EXPECT_THAT(initial->first, HasSubstr("+image: a:1\n"));

  absl::StatusOr<PublishOutcome> base = publisher.Publish(
      remote.target, Render({Put("apps/a.yaml", "name: a\nimage: a:1\n")}), Spec("base"));
  ASSERT_TRUE(base.ok()) << base.status();

  absl::StatusOr<std::pair<std::string, std::string>> diff = publisher.Diff(
      remote.target, Render({Put("apps/a.yaml", "name: a\nimage: a:2\n"), Delete("nope")}));
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ(diff->second, base->commit);
  EXPECT_THAT(diff->first, HasSubstr("diff --git a/apps/a.yaml b/apps/a.yaml\n"));
  EXPECT_THAT(diff->first, HasSubstr("--- a/apps/a.yaml\n+++ b/apps/a.yaml\n"));
  EXPECT_THAT(diff->first, HasSubstr(" name: a\n-image: a:1\n+image: a:2\n"));
  EXPECT_EQ(CommitCount(remote), 1);
  EXPECT_EQ(Git(remote, {"show", "main:apps/a.yaml"}), "name: a\nimage: a:1");

  absl::StatusOr<std::pair<std::string, std::string>> same =
      publisher.Diff(remote.target, Render({Put("apps/a.yaml", "name: a\nimage: a:1\n")}));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->first, "");
}

TEST_F(GitPublishTest, SamePublisherSameTargetSerializes) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));
  std::vector<absl::StatusOr<PublishOutcome>> outcomes(4, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      outcomes[i] =
          publisher.Publish(remote.target, Render({Put(absl::StrCat("same/", i, ".yaml"), "x\n")}),
                            Spec(absl::StrCat("writer ", i)));
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::StatusOr<PublishOutcome>& outcome : outcomes) {
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(outcome->attempts, 1);
  }
  EXPECT_EQ(CommitCount(remote), 4);
  EXPECT_EQ(Git(remote, {"ls-tree", "--name-only", "main", "same/"}),
            "same/0.yaml\nsame/1.yaml\nsame/2.yaml\nsame/3.yaml");
}

class GitPublishTransportTest : public GitPublishTest,
                                public ::testing::WithParamInterface<std::string> {};

TEST_P(GitPublishTransportTest, PublishesAndReadsBack) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote(GetParam(), &remote));
  GitPublisher publisher(Options("cache"));
  CommitSpec spec = Spec("first");
  spec.trailers = {{"Elfdeploy-Rollout", "r-1"}};
  absl::StatusOr<PublishOutcome> first = publisher.Publish(
      remote.target, Render({Put("manifests/teams/a/deployment.yaml", "image: a:1\n")}), spec);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->commit, Git(remote, {"rev-parse", "main"}));
  absl::StatusOr<PublishOutcome> second = publisher.Publish(
      remote.target, Render({Put("manifests/teams/a/deployment.yaml", "image: a:2\n")}),
      Spec("second"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->parent, first->commit);
  absl::StatusOr<PublishOutcome> again = publisher.Publish(
      remote.target, Render({Put("manifests/teams/a/deployment.yaml", "image: a:2\n")}),
      Spec("third"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->no_op);
  EXPECT_EQ(CommitCount(remote), 2);
  EXPECT_EQ(Git(remote, {"show", "main:manifests/teams/a/deployment.yaml"}), "image: a:2");
  EXPECT_EQ(Git(remote, {"log", "-1", "--format=%(trailers)", "main~1"}), "Elfdeploy-Rollout: r-1");
}

TEST_P(GitPublishTransportTest, FourConcurrentWritersAllLand) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote(GetParam(), &remote));
  constexpr int kWriters = 4;
  constexpr int kRounds = 3;
  std::vector<std::unique_ptr<GitPublisher>> publishers;
  for (int i = 0; i < kWriters; ++i) {
    PublisherOptions options;
    options.cache_dir = dir_->Join(absl::StrCat("cache-", i));
    // A rejection means another writer's push landed during the attempt, so one publish is
    // rejected at most once per publish of the other writers.
    options.max_attempts = (kWriters - 1) * kRounds + 1;
    publishers.push_back(std::make_unique<GitPublisher>(options));
  }
  std::vector<std::vector<absl::Status>> errors(kWriters);
  std::atomic<int> attempts{0};
  std::atomic<int> most_attempts{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 1; round <= kRounds; ++round) {
        absl::StatusOr<PublishOutcome> outcome = publishers[i]->Publish(
            remote.target,
            Render({Put(absl::StrCat("writers/w", i, ".txt"),
                        absl::StrCat("writer ", i, " round ", round, "\n"))}),
            Spec(absl::StrCat("writer ", i, " round ", round)));
        if (!outcome.ok()) {
          errors[i].push_back(outcome.status());
        } else {
          attempts += outcome->attempts;
          int most = most_attempts.load();
          while (outcome->attempts > most &&
                 !most_attempts.compare_exchange_weak(most, outcome->attempts)) {
          }
          if (outcome->no_op) errors[i].push_back(absl::InternalError("unexpected no-op"));
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_THAT(errors[i], IsEmpty()) << "writer " << i << ": " << errors[i].front();
  }
  EXPECT_EQ(CommitCount(remote), kWriters * kRounds);
  EXPECT_EQ(Git(remote, {"rev-list", "--merges", "--count", "main"}), "0");
  ExpectNoEmptyCommit(remote);
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_EQ(Git(remote, {"show", absl::StrCat("main:writers/w", i, ".txt")}),
              absl::StrCat("writer ", i, " round ", kRounds));
  }
  std::cout << GetParam() << ": " << kWriters * kRounds << " publishes took " << attempts.load()
            << " attempts, at most " << most_attempts.load() << " for one\n";
}

TEST_P(GitPublishTransportTest, StaleCacheRendersOnTheMovedHead) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote(GetParam(), &remote));
  GitPublisher publisher(Options("cache"));
  ASSERT_TRUE(
      publisher.Publish(remote.target, Render({Put("apps/a.yaml", "a: 1\n")}), Spec("a1")).ok());
  ASSERT_NO_FATAL_FAILURE(CliCommit(remote, "other/x.yaml", "x: 1\n"));
  std::string moved = Git(remote, {"rev-parse", "main"});

  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(remote.target, Render({Put("apps/a.yaml", "a: 2\n")}), Spec("a2"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->parent, moved);
  EXPECT_EQ(outcome->attempts, 1);
  EXPECT_EQ(Git(remote, {"show", "main:other/x.yaml"}), "x: 1");
  EXPECT_EQ(Git(remote, {"show", "main:apps/a.yaml"}), "a: 2");
  EXPECT_EQ(CommitCount(remote), 3);
}

TEST_P(GitPublishTransportTest, RemoteMovedDuringRenderRetriesOnNewHead) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote(GetParam(), &remote));
  GitPublisher publisher(Options("cache"));
  ASSERT_TRUE(
      publisher.Publish(remote.target, Render({Put("apps/a.yaml", "a: 1\n")}), Spec("a1")).ok());

  int renders = 0;
  std::vector<std::optional<std::string>> seen_other;
  absl::StatusOr<PublishOutcome> outcome = publisher.Publish(
      remote.target,
      [&](const TreeReader& tree) -> absl::StatusOr<std::vector<FileChange>> {
        ++renders;
        absl::StatusOr<std::optional<std::string>> other = tree.ReadFile("other/y.yaml");
        if (!other.ok()) return other.status();
        seen_other.push_back(*other);
        if (renders == 1) CliCommit(remote, "other/y.yaml", "y: 1\n");
        return std::vector<FileChange>{Put("apps/a.yaml", "a: 2\n")};
      },
      Spec("a2"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(renders, 2);
  // The move shows as a rejected push (2 attempts), or, when the connection made beside the first
  // render reads the advertisement after the move, before any push (1 attempt).
  EXPECT_THAT(outcome->attempts, AnyOf(1, 2));
  if (GetParam() == "file") {
    EXPECT_EQ(outcome->attempts, 2);  // no overlap: a local destination is opened after render
  }
  EXPECT_THAT(seen_other, ElementsAre(std::nullopt, Optional(std::string("y: 1\n"))));
  EXPECT_EQ(Git(remote, {"show", "main:other/y.yaml"}), "y: 1");
  EXPECT_EQ(Git(remote, {"show", "main:apps/a.yaml"}), "a: 2");
  EXPECT_EQ(CommitCount(remote), 3);
  ExpectNoEmptyCommit(remote);
}

// Waits for the file $GO (at most 30 s), writes to the side band (stdout and stderr) in steps,
// then creates $DONE.
constexpr char kWaitingHook[] = R"(#!/bin/sh
cat >/dev/null
i=0
while [ ! -e '$GO' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
for n in 1 2 3 4 5; do
  echo "post-receive: step $n"
  echo "post-receive: step $n" >&2
  sleep 0.05
done
touch '$DONE'
)";

// A post-receive hook that waits for the test's go-ahead, then writes to the side band (its
// stdout and stderr) and leaves a mark. Publish must return while it waits (the push is landed
// once the report is in), and the hook must still finish: the rest of the server's answer is
// read, not cut off.
TEST_P(GitPublishTransportTest, ReturnsAtTheReportWhileAPostReceiveHookRuns) {
  if (GetParam() == "file") GTEST_SKIP() << "libgit2 pushes to a local repository in-process";
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote(GetParam(), &remote));
  const std::string go = remote.git_dir + "/hook-go";
  const std::string done = remote.git_dir + "/hook-done";
  const std::string hook = remote.git_dir + "/hooks/post-receive";
  ASSERT_TRUE(
      harness::WriteFile(hook, absl::StrReplaceAll(kWaitingHook, {{"$GO", go}, {"$DONE", done}}))
          .ok());
  std::filesystem::permissions(
      hook, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                std::filesystem::perms::others_exec);
  GitPublisher publisher(Options("cache"));
  absl::StatusOr<PublishOutcome> first =
      publisher.Publish(remote.target, Render({Put("a.yaml", "1\n")}), Spec("first"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->commit, Git(remote, {"rev-parse", "main"}));
  // The hook cannot finish before the go-ahead (or its 30 s limit).
  EXPECT_FALSE(std::filesystem::exists(done)) << "Publish waited for the post-receive hook";
  ASSERT_TRUE(harness::WriteFile(go, "").ok());
  for (int i = 0; i < 3000 && !std::filesystem::exists(done); ++i)
    absl::SleepFor(absl::Milliseconds(20));
  EXPECT_TRUE(std::filesystem::exists(done)) << "the hook did not finish after the go-ahead";

  absl::StatusOr<PublishOutcome> second =
      publisher.Publish(remote.target, Render({Put("a.yaml", "2\n")}), Spec("second"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->parent, first->commit);
  EXPECT_EQ(Git(remote, {"show", "main:a.yaml"}), "2");
  EXPECT_TRUE(AwaitPushTails(absl::Seconds(30)));
}

INSTANTIATE_TEST_SUITE_P(Transports, GitPublishTransportTest,
                         ::testing::Values("file", "daemon", "http", "ssh"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST_F(GitPublishTest, HttpWrongPasswordFailsOnceWithoutLeakingIt) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("http", &remote));
  absl::StatusOr<std::unique_ptr<harness::FaultProxy>> proxy =
      harness::FaultProxy::Start("127.0.0.1", remote.http->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  std::string url = absl::StrCat("http://", (*proxy)->host(), "/git/gitops.git");
  GitPublisher publisher(Options("cache"));

  GitTarget wrong = remote.target;
  wrong.url = url;
  const std::string kWrongPassword = "Wr0ng-pa55word-7f3a";
  wrong.credentials.password = Secret(kWrongPassword);
  absl::Time start = absl::Now();
  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(wrong, Render({Put("a.yaml", "1")}), Spec("x"));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnauthenticated) << outcome.status();
  EXPECT_THAT(outcome.status().message(), HasSubstr(url));
  EXPECT_THAT(outcome.status().ToString(), Not(HasSubstr(kWrongPassword)));
  // One request without credentials, one with the wrong ones, and no replays.
  EXPECT_LE((*proxy)->requests_seen(), 2);
  EXPECT_LT(took, absl::Seconds(10));

  GitTarget anonymous = wrong;
  anonymous.credentials = {};
  outcome = publisher.Publish(anonymous, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnauthenticated) << outcome.status();
  EXPECT_THAT(outcome.status().message(), HasSubstr("no credentials"));

  GitTarget in_url = anonymous;
  in_url.url =
      absl::StrCat("http://elfdeploy:", kWrongPassword, "@", (*proxy)->host(), "/git/gitops.git");
  outcome = publisher.Publish(in_url, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnauthenticated) << outcome.status();
  EXPECT_THAT(outcome.status().ToString(), Not(HasSubstr(kWrongPassword)));
  EXPECT_THAT(outcome.status().message(), HasSubstr("[REDACTED]"));

  GitTarget right = remote.target;
  right.url = url;
  outcome = publisher.Publish(right, Render({Put("a.yaml", "1")}), Spec("x"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(Git(remote, {"show", "main:a.yaml"}), "1");
}

TEST_F(GitPublishTest, CacheFetchesOnlyWhenTheRemoteMoved) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("http", &remote));
  absl::StatusOr<std::unique_ptr<harness::FaultProxy>> proxy =
      harness::FaultProxy::Start("127.0.0.1", remote.http->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  GitTarget target = remote.target;
  target.url = absl::StrCat("http://", (*proxy)->host(), "/git/gitops.git");
  GitPublisher publisher(Options("cache"));
  auto fetches_since = [&](size_t from) {
    std::vector<harness::ProxyLogEntry> log = (*proxy)->Log();
    int fetches = 0;
    for (size_t i = from; i < log.size(); ++i) {
      if (log[i].method == "POST" && absl::StrContains(log[i].path, "git-upload-pack")) ++fetches;
    }
    return fetches;
  };

  ASSERT_TRUE(publisher.Publish(target, Render({Put("a.yaml", "1")}), Spec("1")).ok());
  size_t mark = (*proxy)->Log().size();
  ASSERT_TRUE(publisher.Publish(target, Render({Put("a.yaml", "2")}), Spec("2")).ok());
  absl::StatusOr<PublishOutcome> same =
      publisher.Publish(target, Render({Put("a.yaml", "2")}), Spec("2 again"));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->no_op);
  EXPECT_EQ(fetches_since(mark), 0);

  ASSERT_NO_FATAL_FAILURE(CliCommit(remote, "b.yaml", "b\n"));
  mark = (*proxy)->Log().size();
  // The first render runs on the head the cache knew while the connection is made; the
  // advertisement shows the move, so that render is dropped and the next one sees b.yaml.
  std::vector<std::optional<std::string>> seen_b;
  absl::StatusOr<PublishOutcome> moved = publisher.Publish(
      target,
      [&](const TreeReader& tree) -> absl::StatusOr<std::vector<FileChange>> {
        absl::StatusOr<std::optional<std::string>> b = tree.ReadFile("b.yaml");
        if (!b.ok()) return b.status();
        seen_b.push_back(*b);
        return std::vector<FileChange>{Put("a.yaml", "3")};
      },
      Spec("3"));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->attempts, 1);
  EXPECT_THAT(seen_b, ElementsAre(std::nullopt, Optional(std::string("b\n"))));
  EXPECT_EQ(fetches_since(mark), 1);
  EXPECT_EQ(Git(remote, {"show", "main:b.yaml"}), "b");
  EXPECT_EQ(Git(remote, {"show", "main:a.yaml"}), "3");
}

// The publisher keeps its cache repository open between publishes; another process repacking that
// cache meanwhile (deleting the packs the open repository knew) must not break the next publish.
TEST_F(GitPublishTest, CacheRepackedByAnotherProcessIsReadAfresh) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("daemon", &remote));
  GitPublisher publisher(Options("cache"));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(publisher
                    .Publish(remote.target,
                             Render({Put(absl::StrCat("apps/", i, ".yaml"), absl::StrCat(i))}),
                             Spec(absl::StrCat("publish ", i)))
                    .ok());
  }
  // A dry run waits for the cache lock, so the last publish's objects are in the cache now.
  ASSERT_TRUE(publisher.Diff(remote.target, Render({Put("apps/0.yaml", "0")})).ok());
  std::vector<std::string> caches;
  for (const auto& entry : std::filesystem::directory_iterator(dir_->Join("cache"))) {
    if (entry.is_directory()) caches.push_back(entry.path());
  }
  ASSERT_EQ(caches.size(), 1u);
  absl::StatusOr<harness::CommandResult> repacked =
      harness::RunGit(remote.home, {"--git-dir", caches[0], "repack", "-a", "-d", "-q"}, "");
  ASSERT_TRUE(repacked.ok()) << repacked.status();
  ASSERT_EQ(repacked->exit_code, 0) << repacked->output;

  absl::StatusOr<PublishOutcome> after =
      publisher.Publish(remote.target, Render({Put("apps/0.yaml", "changed")}), Spec("after"));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->attempts, 1);
  EXPECT_THAT(after->changed_paths, ElementsAre("apps/0.yaml"));
  EXPECT_EQ(Git(remote, {"show", "main:apps/0.yaml"}), "changed");
  EXPECT_EQ(Git(remote, {"show", "main:apps/2.yaml"}), "2");
  EXPECT_EQ(CommitCount(remote), 4);
  EXPECT_EQ(Git(remote, {"fsck", "--no-progress", "--strict"}), "");
  ExpectNoEmptyCommit(remote);
}

TEST_F(GitPublishTest, CacheStaysCompactAcrossManyPublishes) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));
  constexpr int kPublishes = 45;
  for (int i = 0; i < kPublishes; ++i) {
    absl::StatusOr<PublishOutcome> outcome = publisher.Publish(
        remote.target,
        Render({Put(absl::StrCat("apps/", i % 5, ".yaml"), absl::StrCat("v", i, "\n"))}),
        Spec(absl::StrCat("publish ", i)));
    ASSERT_TRUE(outcome.ok()) << i << ": " << outcome.status();
    ASSERT_EQ(outcome->attempts, 1);
  }
  // The dry run waits for the cache lock, so the last publish's objects are kept by now.
  absl::StatusOr<std::pair<std::string, std::string>> diff =
      publisher.Diff(remote.target, Render({Put("apps/0.yaml", "v40\n")}));
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ(diff->first, "");
  int packs = 0;
  for (const auto& repo : std::filesystem::directory_iterator(dir_->Join("cache"))) {
    if (!repo.is_directory()) continue;
    for (const auto& file : std::filesystem::directory_iterator(repo.path() / "objects/pack")) {
      if (file.path().extension() == ".pack") ++packs;
    }
  }
  EXPECT_GT(packs, 0);
  EXPECT_LE(packs, 33);
  EXPECT_EQ(CommitCount(remote), kPublishes);
  EXPECT_EQ(Git(remote, {"fsck", "--no-progress", "--strict"}), "");
}

// The cache's base pack (marked by a .keep naming its commit) is rewritten only once the packs
// beside it weigh as much: until then compaction merges just those.
TEST_F(GitPublishTest, CacheCompactionMergesSmallPacksAndKeepsTheBase) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  GitPublisher publisher(Options("cache"));
  // Incompressible enough that the base outweighs dozens of one-file publishes.
  std::string large;
  uint64_t state = 88172645463325252ull;
  for (int i = 0; i < 64 * 1024; ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    large.push_back("0123456789abcdef"[state & 15]);
  }
  auto publish = [&](int i) {
    std::vector<FileChange> changes = {
        Put(absl::StrCat("apps/", i % 5, ".yaml"), absl::StrCat("v", i, "\n"))};
    if (i == 0) changes.push_back(Put("blob.txt", large));
    absl::StatusOr<PublishOutcome> outcome =
        publisher.Publish(remote.target, Render(changes), Spec(absl::StrCat("publish ", i)));
    ASSERT_TRUE(outcome.ok()) << i << ": " << outcome.status();
  };
  // Waits for the keeper (a dry run takes the cache lock) and lists the cache's packs.
  auto packs = [&](std::vector<std::string>* names, std::vector<std::string>* keeps) {
    absl::StatusOr<std::pair<std::string, std::string>> diff =
        publisher.Diff(remote.target, Render({}));
    ASSERT_TRUE(diff.ok()) << diff.status();
    names->clear();
    keeps->clear();
    for (const auto& repo : std::filesystem::directory_iterator(dir_->Join("cache"))) {
      if (!repo.is_directory()) continue;
      for (const auto& file : std::filesystem::directory_iterator(repo.path() / "objects/pack")) {
        std::string stem = file.path().stem().string();
        if (file.path().extension() == ".pack") names->push_back(stem);
        if (file.path().extension() == ".keep") {
          absl::StatusOr<std::string> content = harness::ReadFile(file.path().string());
          ASSERT_TRUE(content.ok()) << content.status();
          keeps->push_back(absl::StrCat(stem, " ", absl::StripTrailingAsciiWhitespace(*content)));
        }
      }
    }
  };
  std::vector<std::string> names;
  std::vector<std::string> keeps;
  // The first compaction (33 packs, no base yet) writes a base holding everything.
  for (int i = 0; i < 40; ++i) ASSERT_NO_FATAL_FAILURE(publish(i));
  ASSERT_NO_FATAL_FAILURE(packs(&names, &keeps));
  ASSERT_EQ(keeps.size(), 1u) << absl::StrJoin(names, " ");
  const std::string base = keeps[0];
  std::vector<std::string> base_fields = absl::StrSplit(base, ' ');
  ASSERT_EQ(base_fields.size(), 2u) << base;
  EXPECT_EQ(Git(remote, {"cat-file", "-t", base_fields[1]}), "commit");
  EXPECT_EQ(names.size(), 8u) << absl::StrJoin(names, " ");  // the base and 7 publishes since
  // The second one (at 33 packs again) merges the 32 small ones and leaves the base as it was.
  for (int i = 40; i < 75; ++i) ASSERT_NO_FATAL_FAILURE(publish(i));
  ASSERT_NO_FATAL_FAILURE(packs(&names, &keeps));
  EXPECT_THAT(keeps, ElementsAre(base));
  EXPECT_EQ(names.size(), 12u) << absl::StrJoin(names, " ");  // base, merged, 10 since
  // The merged pack left out what the base holds (the large file above all).
  for (const auto& repo : std::filesystem::directory_iterator(dir_->Join("cache"))) {
    if (!repo.is_directory()) continue;
    std::filesystem::path pack_dir = repo.path() / "objects/pack";
    uintmax_t base_size = std::filesystem::file_size(pack_dir / (base_fields[0] + ".pack"));
    for (const auto& file : std::filesystem::directory_iterator(pack_dir)) {
      if (file.path().extension() != ".pack" || file.path().stem() == base_fields[0]) continue;
      EXPECT_LT(file.file_size(), base_size / 2) << file.path();
    }
  }
  EXPECT_EQ(CommitCount(remote), 75);
  for (const auto& repo : std::filesystem::directory_iterator(dir_->Join("cache"))) {
    if (!repo.is_directory()) continue;
    absl::StatusOr<harness::CommandResult> fsck = harness::RunGit(
        remote.home, {"--git-dir", repo.path().string(), "fsck", "--no-progress", "--strict"});
    ASSERT_TRUE(fsck.ok()) << fsck.status();
    EXPECT_EQ(fsck->exit_code, 0) << fsck->output;
  }
  absl::StatusOr<std::pair<std::string, std::string>> diff =
      publisher.Diff(remote.target, Render({Put("apps/4.yaml", "v74\n"), Put("blob.txt", large)}));
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_EQ(diff->first, "");
}

TEST_F(GitPublishTest, SshUnknownKeyFailsOnceAsUnauthenticated) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("ssh", &remote));
  GitPublisher publisher(Options("cache"));
  GitTarget wrong = remote.target;
  wrong.credentials.ssh_private_key_path = remote.ssh->unknown_private_key();
  wrong.credentials.ssh_public_key_path = "";
  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(wrong, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnauthenticated) << outcome.status();
  EXPECT_THAT(outcome.status().message(), HasSubstr(remote.target.url));
  // One offer of the key per connection: sshd saw a single failed public key attempt.
  EXPECT_THAT(remote.ssh->ReadLog(), HasSubstr("Failed publickey"));
  EXPECT_EQ(CommitCount(remote), -1);  // no branch

  GitTarget none = remote.target;
  none.credentials = {};
  outcome = publisher.Publish(none, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnauthenticated) << outcome.status();

  outcome = publisher.Publish(remote.target, Render({Put("a.yaml", "1")}), Spec("x"));
  ASSERT_TRUE(outcome.ok()) << outcome.status() << "\nsshd:\n" << remote.ssh->ReadLog();
  EXPECT_EQ(Git(remote, {"show", "main:a.yaml"}), "1");
}

// Trees are serialized by the publisher itself: git's entry order (a directory sorts as if its
// name ended in '/') and the modes of files it does not own must come out as git writes them.
TEST_F(GitPublishTest, TreesKeepGitOrderAndFileModes) {
  Remote remote;
  ASSERT_NO_FATAL_FAILURE(MakeRemote("file", &remote));
  std::string work = dir_->Join("cli-modes");
  auto run = [&](std::vector<std::string> args, const std::string& cwd) {
    absl::StatusOr<harness::CommandResult> result = harness::RunGit(remote.home, args, cwd);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->exit_code, 0) << result->output;
  };
  ASSERT_NO_FATAL_FAILURE(run({"clone", "--quiet", remote.cli_url, work}, ""));
  ASSERT_TRUE(harness::WriteFile(absl::StrCat(work, "/tools/run.sh"), "#!/bin/sh\n").ok());
  std::filesystem::permissions(absl::StrCat(work, "/tools/run.sh"),
                               std::filesystem::perms::owner_exec,
                               std::filesystem::perm_options::add);
  ASSERT_NO_FATAL_FAILURE(run({"add", "-A"}, work));
  ASSERT_NO_FATAL_FAILURE(run({"commit", "--quiet", "-m", "cli writer"}, work));
  ASSERT_NO_FATAL_FAILURE(run({"push", "--quiet", "origin", "HEAD:main"}, work));

  GitPublisher publisher(Options("cache"));
  absl::StatusOr<PublishOutcome> outcome = publisher.Publish(
      remote.target,
      Render({Put("a/x.yaml", "x\n"), Put("a.yaml", "a\n"), Put("a-b/y.yaml", "y\n"),
              Put("a0", "0\n"), Put("tools/run.sh", "#!/bin/sh\nexit 0\n")}),
      Spec("order"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(Git(remote, {"fsck", "--no-progress", "--strict"}), "");
  EXPECT_EQ(Git(remote, {"ls-tree", "--name-only", "main"}), "a-b\na.yaml\na\na0\ntools");
  EXPECT_THAT(Git(remote, {"ls-tree", "main", "tools/run.sh"}), ::testing::StartsWith("100755 "));
  EXPECT_EQ(Git(remote, {"show", "main:tools/run.sh"}), "#!/bin/sh\nexit 0");
}

// https through a Python TLS-terminating proxy in front of the git-http-backend fixture.
class GitPublishHttpsTest : public GitPublishTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(GitPublishTest::SetUp());
    absl::StatusOr<harness::CommandResult> python =
        harness::RunCommand({.argv = {"python3", "-c", "import ssl"}});
    if (!python.ok() || python->exit_code != 0) GTEST_SKIP() << "python3 with ssl is missing";
    ASSERT_NO_FATAL_FAILURE(MakeRemote("http", &remote_));
    ASSERT_NO_FATAL_FAILURE(MakeCert("server"));
    ASSERT_NO_FATAL_FAILURE(MakeCert("other"));
    std::string script = dir_->Join("tls_proxy.py");
    ASSERT_TRUE(harness::WriteFile(script, kProxyScript).ok());
    absl::StatusOr<std::unique_ptr<harness::ChildProcess>> proxy = harness::ChildProcess::Start(
        {.argv = {"python3", script, dir_->Join("server.pem"), dir_->Join("server.key"),
                  absl::StrCat(remote_.http->port())},
         .log_path = dir_->Join("tls_proxy.log")});
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = *std::move(proxy);
    std::string line;
    ASSERT_TRUE(proxy_->WaitForLogLine("listening on ", absl::Seconds(20), &line).ok());
    ASSERT_TRUE(absl::SimpleAtoi(line.substr(line.rfind(' ') + 1), &port_)) << line;
  }

  void MakeCert(const std::string& name) {
    absl::StatusOr<harness::CommandResult> result = harness::RunCommand(
        {.argv = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                  "-addext", "subjectAltName=DNS:localhost", "-keyout", dir_->Join(name + ".key"),
                  "-out", dir_->Join(name + ".pem")}});
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->exit_code, 0) << result->output;
  }

  GitTarget Target(const std::string& host) const {
    GitTarget target = remote_.target;
    target.url = absl::StrCat("https://", host, ":", port_, "/git/gitops.git");
    return target;
  }

  static constexpr char kProxyScript[] = R"(import socket, ssl, sys, threading
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
upstream = int(sys.argv[3])
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
print("listening on", server.getsockname()[1], flush=True)

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def handle(client):
    try:
        tls = context.wrap_socket(client, server_side=True)
    except (OSError, ssl.SSLError):
        client.close()
        return
    backend = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pipe, args=(tls, backend), daemon=True).start()
    pipe(backend, tls)

while True:
    client, _ = server.accept()
    threading.Thread(target=handle, args=(client,), daemon=True).start()
)";

  Remote remote_;
  std::unique_ptr<harness::ChildProcess> proxy_;
  int port_ = 0;
};

TEST_F(GitPublishHttpsTest, VerifiesAgainstCaFile) {
  GitPublisher publisher(Options("cache"));

  GitTarget untrusted = Target("localhost");
  absl::StatusOr<PublishOutcome> outcome =
      publisher.Publish(untrusted, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition) << outcome.status();
  EXPECT_THAT(outcome.status().message(), HasSubstr("not trusted"));

  GitTarget other_ca = Target("localhost");
  other_ca.ca_file = dir_->Join("other.pem");
  outcome = publisher.Publish(other_ca, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition) << outcome.status();

  GitTarget wrong_name = Target("127.0.0.1");
  wrong_name.ca_file = dir_->Join("server.pem");
  outcome = publisher.Publish(wrong_name, Render({Put("a.yaml", "1")}), Spec("x"));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition) << outcome.status();
  EXPECT_EQ(CommitCount(remote_), -1);

  GitTarget trusted = Target("localhost");
  trusted.ca_file = dir_->Join("server.pem");
  outcome = publisher.Publish(trusted, Render({Put("a.yaml", "1")}), Spec("x"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(Git(remote_, {"show", "main:a.yaml"}), "1");

  GitTarget insecure = Target("localhost");
  insecure.insecure_skip_tls_verify = true;
  outcome = publisher.Publish(insecure, Render({Put("a.yaml", "2")}), Spec("y"));
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(Git(remote_, {"show", "main:a.yaml"}), "2");
}

}  // namespace
}  // namespace elfdeploy::publisher
