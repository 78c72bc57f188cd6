#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness/net.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::testing {
namespace {

namespace fs = std::filesystem;

bool ProcessGone(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok() || stat->empty()) return true;
  size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] == 'Z';
}

bool EventuallyGone(pid_t pid) {
  for (int i = 0; i < 250 && !ProcessGone(pid); ++i) absl::SleepFor(absl::Milliseconds(20));
  return ProcessGone(pid);
}

class ChildProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("harness-test-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = std::make_unique<TempDir>(*std::move(dir));
  }

  std::unique_ptr<ChildProcess> StartShell(const std::string& script) {
    absl::StatusOr<std::unique_ptr<ChildProcess>> child =
        ChildProcess::Start({.argv = {"sh", "-c", script}, .log_path = dir_->Join("child.log")});
    EXPECT_TRUE(child.ok()) << child.status();
    return child.ok() ? *std::move(child) : nullptr;
  }

  pid_t WaitForGrandchild(ChildProcess& child) {
    std::string line;
    absl::Status status = child.WaitForLogLine("grandchild ", absl::Seconds(10), &line);
    EXPECT_TRUE(status.ok()) << status;
    int pid = 0;
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripPrefix(line, "grandchild "), &pid)) << line;
    return pid;
  }

  std::unique_ptr<TempDir> dir_;
};

TEST(TempDirTest, CreatesFreshDirectoryAndRemovesTheTree) {
  std::string path;
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("harness-tmp-");
    ASSERT_TRUE(dir.ok()) << dir.status();
    path = dir->path();
    EXPECT_TRUE(fs::is_directory(path));
    EXPECT_TRUE(absl::StrContains(fs::path(path).filename().string(), "harness-tmp-"));
    EXPECT_TRUE(fs::is_empty(path));
    ASSERT_TRUE(WriteFile(dir->Join("a/b/c.txt"), "deep").ok());
    EXPECT_EQ(ReadFile(dir->Join("a/b/c.txt")).value_or(""), "deep");
    absl::StatusOr<TempDir> other = TempDir::Create("harness-tmp-");
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->path(), path);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(TempDirTest, MoveTransfersOwnership) {
  absl::StatusOr<TempDir> dir = TempDir::Create("harness-tmp-");
  ASSERT_TRUE(dir.ok());
  std::string path = dir->path();
  TempDir moved = *std::move(dir);
  EXPECT_EQ(moved.path(), path);
  EXPECT_TRUE(dir->path().empty());  // NOLINT(bugprone-use-after-move)
  {
    TempDir target = std::move(moved);
    EXPECT_TRUE(fs::is_directory(path));
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(TempDirTest, HonorsTmpdirAndKeepTemp) {
  absl::StatusOr<TempDir> base = TempDir::Create("harness-base-");
  ASSERT_TRUE(base.ok());
  const char* old_tmpdir = getenv("TMPDIR");
  std::string saved = old_tmpdir != nullptr ? old_tmpdir : "";
  setenv("TMPDIR", base->path().c_str(), 1);
  setenv("ELFDEPLOY_KEEP_TEMP", "1", 1);
  std::string path;
  {
    absl::StatusOr<TempDir> dir = TempDir::Create("kept-");
    ASSERT_TRUE(dir.ok());
    path = dir->path();
  }
  unsetenv("ELFDEPLOY_KEEP_TEMP");
  old_tmpdir != nullptr ? setenv("TMPDIR", saved.c_str(), 1) : unsetenv("TMPDIR");
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(base->path()));
  EXPECT_TRUE(fs::is_directory(path));
}

TEST_F(ChildProcessTest, ReportsExitCodes) {
  auto child = StartShell("exit 3");
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(child->WaitForExit(absl::Seconds(10)).value_or(-1), 3);
  EXPECT_FALSE(child->Running());
  child = StartShell("true");
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(child->WaitForExit(absl::Seconds(10)).value_or(-1), 0);
}

TEST_F(ChildProcessTest, PassesEnvAndCwdAndAppendsOutputToLog) {
  ASSERT_TRUE(WriteFile(dir_->Join("child.log"), "before\n").ok());
  ASSERT_TRUE(WriteFile(dir_->Join("work/.keep"), "").ok());
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(
      {.argv = {"sh", "-c", "echo \"foo=$FOO home=$HOME cwd=$(pwd)\"; echo to-stderr >&2"},
       .env = {{"FOO", "bar baz"}, {"HOME", "/nowhere"}},
       .cwd = dir_->Join("work"),
       .log_path = dir_->Join("child.log")});
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_EQ((*child)->WaitForExit(absl::Seconds(10)).value_or(-1), 0);
  EXPECT_EQ(
      (*child)->ReadLog(),
      absl::StrCat("before\nfoo=bar baz home=/nowhere cwd=", dir_->Join("work"), "\nto-stderr\n"));
}

TEST_F(ChildProcessTest, SignalReaches128PlusSignal) {
  auto child = StartShell("exec sleep 60");
  ASSERT_NE(child, nullptr);
  absl::StatusOr<int> early = child->WaitForExit(absl::Milliseconds(50));
  EXPECT_EQ(early.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(child->Running());
  ASSERT_TRUE(child->Signal(SIGUSR1).ok());
  EXPECT_EQ(child->WaitForExit(absl::Seconds(10)).value_or(-1), 128 + SIGUSR1);
  EXPECT_EQ(child->Signal(SIGTERM).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ChildProcessTest, ExecFailureNamesTheBinary) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> missing = ChildProcess::Start(
      {.argv = {"/nonexistent/elfdeploy-no-such-binary"}, .log_path = dir_->Join("log")});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(
      absl::StrContains(missing.status().message(), "/nonexistent/elfdeploy-no-such-binary"))
      << missing.status();

  missing =
      ChildProcess::Start({.argv = {"elfdeploy-no-such-binary"}, .log_path = dir_->Join("log")});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "elfdeploy-no-such-binary"));

  ASSERT_TRUE(WriteFile(dir_->Join("not-executable"), "#!/bin/sh\n").ok());
  absl::StatusOr<std::unique_ptr<ChildProcess>> denied =
      ChildProcess::Start({.argv = {dir_->Join("not-executable")}, .log_path = dir_->Join("log")});
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(denied.status().message(), dir_->Join("not-executable")));

  absl::StatusOr<std::unique_ptr<ChildProcess>> bad_cwd = ChildProcess::Start(
      {.argv = {"true"}, .cwd = dir_->Join("no-such-dir"), .log_path = dir_->Join("log")});
  EXPECT_FALSE(bad_cwd.ok());
  EXPECT_TRUE(absl::StrContains(bad_cwd.status().message(), "no-such-dir"));

  EXPECT_EQ(ChildProcess::Start({.argv = {"true"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ChildProcessTest, StopTerminatesTheWholeGroup) {
  auto child = StartShell("sleep 300 & echo \"grandchild $!\"; wait");
  ASSERT_NE(child, nullptr);
  pid_t grandchild = WaitForGrandchild(*child);
  EXPECT_EQ(getpgid(grandchild), child->pid());
  EXPECT_EQ(child->Stop(absl::Seconds(5)).value_or(-1), 128 + SIGTERM);
  EXPECT_TRUE(EventuallyGone(grandchild));
}

TEST_F(ChildProcessTest, StopEscalatesToSigkillAfterGrace) {
  auto child = StartShell("trap '' TERM; sleep 300 & echo \"grandchild $!\"; wait");
  ASSERT_NE(child, nullptr);
  pid_t grandchild = WaitForGrandchild(*child);
  absl::Time start = absl::Now();
  EXPECT_EQ(child->Stop(absl::Milliseconds(300)).value_or(-1), 128 + SIGKILL);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_TRUE(EventuallyGone(grandchild));
}

TEST_F(ChildProcessTest, DestructorStopsARunningProcess) {
  auto child = StartShell("sleep 300 & echo \"grandchild $!\"; wait");
  ASSERT_NE(child, nullptr);
  pid_t pid = child->pid();
  pid_t grandchild = WaitForGrandchild(*child);
  child.reset();
  EXPECT_TRUE(EventuallyGone(pid));
  EXPECT_TRUE(EventuallyGone(grandchild));
}

TEST_F(ChildProcessTest, ChildDiesWhenItsParentCrashes) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  pid_t parent = fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    auto child =
        ChildProcess::Start({.argv = {"sleep", "300"}, .log_path = dir_->Join("orphan.log")});
    pid_t pid = child.ok() ? (*child)->pid() : -1;
    ssize_t ignored = write(pipe_fds[1], &pid, sizeof(pid));
    (void)ignored;
    _exit(0);
  }
  close(pipe_fds[1]);
  pid_t orphan = -1;
  ASSERT_EQ(read(pipe_fds[0], &orphan, sizeof(orphan)), static_cast<ssize_t>(sizeof(orphan)));
  close(pipe_fds[0]);
  ASSERT_EQ(waitpid(parent, nullptr, 0), parent);
  ASSERT_GT(orphan, 0);
  EXPECT_TRUE(EventuallyGone(orphan));
}

TEST_F(ChildProcessTest, WaitForLogLineFindsTheLine) {
  auto child = StartShell("echo starting; sleep 0.2; echo 'ready on port 4242'; exec sleep 60");
  ASSERT_NE(child, nullptr);
  std::string line;
  ASSERT_TRUE(child->WaitForLogLine("ready on", absl::Seconds(10), &line).ok());
  EXPECT_EQ(line, "ready on port 4242");
  EXPECT_TRUE(child->Running());
}

TEST_F(ChildProcessTest, WaitForLogLineFailsEarlyWhenTheProcessExits) {
  auto child = StartShell("echo 'oops: bad config'; exit 2");
  ASSERT_NE(child, nullptr);
  absl::Time start = absl::Now();
  absl::Status status = child->WaitForLogLine("ready", absl::Seconds(30));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "oops: bad config")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "code 2")) << status;
}

TEST_F(ChildProcessTest, WaitForLogLineTimesOut) {
  auto child = StartShell("echo 'still booting'; exec sleep 60");
  ASSERT_NE(child, nullptr);
  absl::Status status = child->WaitForLogLine("ready", absl::Milliseconds(200));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(status.message(), "still booting")) << status;
}

TEST(RunCommandTest, CapturesOutputAndExitCode) {
  absl::StatusOr<CommandResult> result =
      RunCommand({.argv = {"sh", "-c", "echo out; echo err >&2; exit 5"}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 5);
  EXPECT_EQ(result->output, "out\nerr\n");
}

TEST(RunCommandTest, KillsACommandThatOverrunsItsTimeout) {
  absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> result =
      RunCommand({.argv = {"sh", "-c", "echo hanging; sleep 300"}}, absl::Milliseconds(300));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "hanging")) << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(NetTest, PickFreePortAndWaitForTcpPort) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
  // Below the ephemeral range that outgoing connections and port-0 binds take from.
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int ephemeral_low = 0;
  ASSERT_TRUE(range >> ephemeral_low);
  if (ephemeral_low > 11000) {
    EXPECT_LT(*port, ephemeral_low);
  }
  EXPECT_EQ(WaitForTcpPort("127.0.0.1", *port, absl::Milliseconds(100)).code(),
            absl::StatusCode::kDeadlineExceeded);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(*port));
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  absl::Status status = WaitForTcpPort("localhost", *port, absl::Seconds(10));
  close(fd);
  EXPECT_TRUE(status.ok()) << status;
}

}  // namespace
}  // namespace elfdeploy::testing
