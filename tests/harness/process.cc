#include "tests/harness/process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/harness/temp_dir.h"

extern char** environ;

namespace elfdeploy::testing {
namespace {

struct ChildFailure {
  int stage;  // 0: exec, 1: chdir, 2: redirect
  int error;
};

std::vector<std::string> BuildEnv(const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<std::string> result;
  for (char** entry = environ; *entry != nullptr; ++entry) result.emplace_back(*entry);
  for (const auto& [name, value] : env) {
    std::string prefix = absl::StrCat(name, "=");
    auto it = std::find_if(result.begin(), result.end(),
                           [&](const std::string& e) { return absl::StartsWith(e, prefix); });
    if (it != result.end()) {
      *it = absl::StrCat(prefix, value);
    } else {
      result.push_back(absl::StrCat(prefix, value));
    }
  }
  return result;
}

absl::StatusOr<std::string> ResolveBinary(const std::string& name,
                                          const std::vector<std::string>& env) {
  if (absl::StrContains(name, '/')) return name;
  std::string path = "/usr/local/bin:/usr/bin:/bin";
  for (const std::string& entry : env) {
    if (absl::StartsWith(entry, "PATH=")) path = entry.substr(5);
  }
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::NotFoundError(absl::StrCat("exec ", name, ": not found in PATH ", path));
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (std::string& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

[[noreturn]] void FailInChild(int fd, int stage) {
  ChildFailure failure{stage, errno};
  ssize_t ignored = write(fd, &failure, sizeof(failure));
  (void)ignored;
  _exit(127);
}

bool FindLine(absl::string_view log, absl::string_view needle, bool include_partial,
              std::string* line_out) {
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == absl::string_view::npos) {
      if (!include_partial) return false;
      end = log.size();
    }
    absl::string_view line = log.substr(start, end - start);
    if (absl::StrContains(line, needle)) {
      if (line_out != nullptr) *line_out = std::string(line);
      return true;
    }
    start = end + 1;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(ProcessOptions options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("ProcessOptions.argv is empty");
  if (options.log_path.empty()) {
    return absl::InvalidArgumentError("ProcessOptions.log_path is required");
  }
  std::vector<std::string> env = BuildEnv(options.env);
  absl::StatusOr<std::string> binary = ResolveBinary(options.argv[0], env);
  if (!binary.ok()) return binary.status();
  std::vector<std::string> argv = options.argv;
  std::vector<char*> argv_c = CStrings(argv);
  std::vector<char*> env_c = CStrings(env);

  int log_fd = open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", options.log_path, ": ", strerror(errno)));
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int report[2];
  if (null_fd < 0 || pipe2(report, O_CLOEXEC) != 0) {
    std::string error = strerror(errno);
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    return absl::InternalError(absl::StrCat("cannot set up child: ", error));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
      FailInChild(report[1], 2);
    }
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) FailInChild(report[1], 1);
    execve(binary->c_str(), argv_c.data(), env_c.data());
    FailInChild(report[1], 0);
  }
  int fork_errno = errno;
  close(report[1]);
  close(log_fd);
  close(null_fd);
  if (pid < 0) {
    close(report[0]);
    return absl::InternalError(absl::StrCat("fork: ", strerror(fork_errno)));
  }
  setpgid(pid, pid);
  ChildFailure failure;
  ssize_t n;
  do {
    n = read(report[0], &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == sizeof(failure)) {
    waitpid(pid, nullptr, 0);
    const char* what[] = {"exec", "chdir", "redirect output of"};
    std::string subject = failure.stage == 1 ? options.cwd : *binary;
    std::string message =
        absl::StrCat(what[failure.stage], " ", subject, ": ", strerror(failure.error));
    if (failure.error == ENOENT && failure.stage == 0) return absl::NotFoundError(message);
    if (failure.error == EACCES) return absl::PermissionDeniedError(message);
    return absl::InternalError(message);
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(std::move(options), pid));
}

ChildProcess::~ChildProcess() {
  if (!reaped_) Stop(absl::Seconds(5)).IgnoreError();
}

absl::Status ChildProcess::Signal(int sig) {
  if (TryReap()) {
    return absl::FailedPreconditionError(absl::StrCat("pid ", pid_, " has already exited"));
  }
  if (kill(pid_, sig) != 0) {
    return absl::InternalError(absl::StrCat("kill ", pid_, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

bool ChildProcess::TryReap() {
  if (reaped_) return true;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  reaped_ = true;
  if (r > 0 && WIFEXITED(status)) exit_code_ = WEXITSTATUS(status);
  if (r > 0 && WIFSIGNALED(status)) exit_code_ = 128 + WTERMSIG(status);
  return true;
}

absl::StatusOr<int> ChildProcess::WaitForExit(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Duration nap = absl::Milliseconds(1);
  while (!TryReap()) {
    absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(options_.argv[0], " (pid ", pid_,
                                                      ") still running after ",
                                                      absl::FormatDuration(timeout)));
    }
    absl::SleepFor(std::min(nap, deadline - now));
    nap = std::min(nap * 2, absl::Milliseconds(20));
  }
  if (exit_code_ < 0) {
    return absl::InternalError(absl::StrCat("exit status of pid ", pid_, " was lost"));
  }
  return exit_code_;
}

bool ChildProcess::Running() { return !TryReap(); }

std::string ChildProcess::ReadLog() const { return ReadFile(options_.log_path).value_or(""); }

absl::StatusOr<int> ChildProcess::Stop(absl::Duration grace) {
  if (!reaped_) {
    killpg(pid_, SIGTERM);
    if (!WaitForExit(grace).ok()) killpg(pid_, SIGKILL);
    absl::StatusOr<int> code = WaitForExit(absl::InfiniteDuration());
    killpg(pid_, SIGKILL);
    return code;
  }
  return WaitForExit(absl::ZeroDuration());
}

absl::Status ChildProcess::WaitForLogLine(absl::string_view needle, absl::Duration timeout,
                                          std::string* line_out) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    bool running = Running();
    std::string log = ReadLog();
    if (FindLine(log, needle, !running, line_out)) return absl::OkStatus();
    if (!running) {
      return absl::FailedPreconditionError(absl::StrCat(options_.argv[0], " exited with code ",
                                                        exit_code_, " before logging \"", needle,
                                                        "\"; log tail:\n", Tail(log)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(options_.argv[0], " logged no \"", needle,
                                                      "\" within ", absl::FormatDuration(timeout),
                                                      "; log tail:\n", Tail(log)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

absl::StatusOr<CommandResult> RunCommand(ProcessOptions options, absl::Duration timeout) {
  std::string temp_log;
  if (options.log_path.empty()) {
    const char* tmpdir = getenv("TMPDIR");
    temp_log = absl::StrCat((tmpdir != nullptr && *tmpdir != '\0') ? tmpdir : "/tmp",
                            "/elfdeploy-cmd-XXXXXX");
    int fd = mkstemp(temp_log.data());
    if (fd < 0) return absl::InternalError(absl::StrCat("mkstemp: ", strerror(errno)));
    close(fd);
    options.log_path = temp_log;
  }
  struct stat st;
  size_t offset = stat(options.log_path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
  std::string command = absl::StrJoin(options.argv, " ");
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(std::move(options));
  if (!child.ok()) {
    if (!temp_log.empty()) unlink(temp_log.c_str());
    return child.status();
  }
  absl::StatusOr<int> code = (*child)->WaitForExit(timeout);
  if (!code.ok()) (*child)->Stop(absl::Seconds(1)).IgnoreError();
  std::string log = (*child)->ReadLog();
  CommandResult result{code.value_or(-1), log.substr(std::min(offset, log.size()))};
  if (!temp_log.empty()) unlink(temp_log.c_str());
  if (!code.ok()) {
    return absl::DeadlineExceededError(absl::StrCat(command, ": still running after ",
                                                    absl::FormatDuration(timeout),
                                                    "; output tail:\n", Tail(result.output)));
  }
  return result;
}

std::string Tail(absl::string_view text, int max_lines) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  size_t start = text.size();
  for (int i = 0; i < max_lines; ++i) {
    size_t newline = start == 0 ? absl::string_view::npos : text.rfind('\n', start - 1);
    if (newline == absl::string_view::npos) return std::string(text);
    start = newline;
  }
  return std::string(text.substr(start + 1));
}

}  // namespace elfdeploy::testing
