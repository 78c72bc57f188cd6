#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

// Helpers shared by the benchmarks in tests/bench.
namespace elfdeploy::testing {

using Clock = std::chrono::steady_clock;
using Env = std::vector<std::pair<std::string, std::string>>;

double SecondsSince(Clock::time_point start);
double Median(std::vector<double> values);

// The file system of `dir` by name ("tmpfs", "ext4", ...).
std::string FileSystem(const std::string& dir);
// /dev/shm when it is a writable tmpfs, else $TMPDIR or /tmp.
std::string DefaultWorkDir();

struct Exit {
  int code = -1;
  double seconds = 0;
};

// Runs `argv` with `env` over the inherited environment, stdout and stderr to `log_path`, timed
// from spawn to exit (waitpid blocks, so the time has no polling slack).
absl::StatusOr<Exit> RunTimed(const std::vector<std::string>& argv, const Env& env,
                              const std::string& log_path);

// Sets `bench` up, runs it and prints its table and how to reproduce it; the process's exit code
// (1 with the error on stderr when a step failed).
template <typename Bench>
int RunAndReport(Bench& bench, const std::string& command) {
  absl::Status status = bench.Setup();
  if (status.ok()) status = bench.Run();
  if (!status.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "FAILED: %s\n", status.ToString().c_str());
    return 1;
  }
  bench.PrintTable();
  std::printf("reproduce: %s\n", command.c_str());
  return 0;
}

}  // namespace elfdeploy::testing
