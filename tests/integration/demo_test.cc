// README's first command, deploy/local/demo.sh, driven through a terminal as a user runs it:
// everything comes up healthy, and Ctrl-C stops every process it started.
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/net.h"
#include "tests/support/service_process.h"

namespace elfdeploy::testing {
namespace {

using ::testing::HasSubstr;

// Reads from `fd` until `needle` appears in `*out`, EOF, or the timeout; true when found.
bool ReadUntil(int fd, absl::string_view needle, absl::Duration timeout, std::string* out) {
  absl::Time deadline = absl::Now() + timeout;
  while (!absl::StrContains(*out, needle)) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return absl::StrContains(*out, needle);  // EIO once the terminal closes
    out->append(buffer, static_cast<size_t>(n));
  }
  return true;
}

TEST(DemoTest, CtrlCStopsEveryProcessCleanly) {
  int terminal = -1;
  pid_t pid = forkpty(&terminal, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("ELFDEPLOY_BUILD_DIR", ELFDEPLOY_BUILD_DIR, 1);
    setenv("ELFDEPLOY_DEMO_SKIP_BUILD", "1", 1);
    setenv("ELFDEPLOY_DEMO_ANY_PORTS", "1", 1);
    setenv("ELFDEPLOY_DEMO_SKIP_DEPLOY", "1", 1);  // the flow itself: LocalDemo (--once)
    std::string script = absl::StrCat(ELFDEPLOY_SOURCE_DIR, "/deploy/local/demo.sh");
    execl(script.c_str(), script.c_str(), nullptr);
    _exit(127);
  }
  std::string out;
  bool up = ReadUntil(terminal, "press Ctrl-C to stop", absl::Seconds(120), &out);
  if (!up) kill(pid, SIGKILL);
  ASSERT_TRUE(up) << out;
  EXPECT_THAT(out, HasSubstr("all 5 services SERVING, agent linked"));

  // The addresses the services logged, to check afterwards that nothing listens any more.
  std::vector<std::string> addresses;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    size_t grpc = line.find(" grpc ");
    if (absl::StrContains(line, "SERVING") && grpc != absl::string_view::npos) {
      absl::string_view rest = line.substr(grpc + 6);
      rest = absl::StripLeadingAsciiWhitespace(rest);
      addresses.emplace_back(rest.substr(0, rest.find(' ')));
    }
  }
  EXPECT_EQ(addresses.size(), 5u) << out;

  ASSERT_EQ(write(terminal, "\x03", 1), 1);  // Ctrl-C, through the terminal's line discipline
  ReadUntil(terminal, "\n<eof>", absl::Seconds(60), &out);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(terminal);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  for (const char* name :
       {"elfdeploy-orchestrator", "elfdeploy-builder", "elfdeploy-registry-sync",
        "elfdeploy-manifest-publisher", "elfdeploy-cluster-watcher", "elfdeploy-agent"}) {
    EXPECT_THAT(out, ::testing::ContainsRegex(absl::StrCat(name, " +stopped \\(exit 0\\)")));
  }
  EXPECT_THAT(out, ::testing::ContainsRegex("registry +stopped"));
  EXPECT_THAT(out, ::testing::ContainsRegex("git-daemon +stopped"));
  EXPECT_THAT(out, ::testing::ContainsRegex("kubesim +stopped \\(exit 0\\)"));
  for (const std::string& address : addresses) {
    EXPECT_FALSE(CheckHealth(address).ok()) << address << " still answers";
  }
}

}  // namespace
}  // namespace elfdeploy::testing
