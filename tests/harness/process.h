#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace elfdeploy::testing {

struct ProcessOptions {
  // argv[0] is looked up in PATH (the child's PATH when `env` sets one) unless it has a '/'.
  std::vector<std::string> argv = {};
  // Added to, or replacing entries of, the parent's environment.
  std::vector<std::pair<std::string, std::string>> env = {};
  // Working directory; empty keeps the parent's.
  std::string cwd = {};
  // stdout and stderr are appended to this file; stdin is /dev/null. Required.
  std::string log_path = {};
};

// A child process in its own process group. The child gets SIGKILL when the thread that started
// it dies, so a crashed test leaves nothing behind. Not thread-safe.
class ChildProcess {
 public:
  // Forks and execs `options.argv`. Fails with the binary's name and errno's message when it cannot
  // be executed (not found, not executable, ...).
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(ProcessOptions options);

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Stop(absl::Seconds(5)) when the process has not been reaped yet.
  ~ChildProcess();

  // The child's pid, which is also its process group id.
  pid_t pid() const { return pid_; }
  const ProcessOptions& options() const { return options_; }

  // Sends `sig` to the process only (not its group). FAILED_PRECONDITION once it has been reaped.
  absl::Status Signal(int sig);

  // Waits until the process exits and returns its exit code, or 128 + the signal number when a
  // signal killed it. DEADLINE_EXCEEDED when it is still running after `timeout`.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);

  // False once the process has exited (it is reaped on the way).
  bool Running();

  // Everything in the log file so far; "" when it cannot be read.
  std::string ReadLog() const;

  // Sends SIGTERM to the process group, waits up to `grace` for the process to exit, then sends
  // SIGKILL to the group and reaps the process. Whatever is left of the group afterwards is killed
  // too. Returns the exit code as WaitForExit does.
  absl::StatusOr<int> Stop(absl::Duration grace);

  // Polls the log until a line containing `needle` appears and stores that line (without its
  // newline) in `*line_out` when not null. FAILED_PRECONDITION with the log's tail when the process
  // exits first, DEADLINE_EXCEEDED with the tail after `timeout`.
  absl::Status WaitForLogLine(absl::string_view needle, absl::Duration timeout,
                              std::string* line_out = nullptr);

 private:
  ChildProcess(ProcessOptions options, pid_t pid) : options_(std::move(options)), pid_(pid) {}
  bool TryReap();

  ProcessOptions options_;
  pid_t pid_;
  bool reaped_ = false;
  int exit_code_ = -1;
};

struct CommandResult {
  int exit_code = -1;
  // stdout and stderr, interleaved as written.
  std::string output = {};
};

// Runs a command to completion. `options.log_path` may be empty: a temporary file is used then.
// A non-zero exit code is a successful result; start failures are errors, and a command still
// running after `timeout` is killed and reported as DEADLINE_EXCEEDED with its output.
absl::StatusOr<CommandResult> RunCommand(ProcessOptions options,
                                         absl::Duration timeout = absl::Seconds(60));

// The last `max_lines` lines of `text`.
std::string Tail(absl::string_view text, int max_lines = 20);

}  // namespace elfdeploy::testing
