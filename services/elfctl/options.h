#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/orchestrator.pb.h"

// elfctl's command line, free of gRPC: parsing into Options, help texts, and the DeployRequest a
// `deploy` command means.
namespace elfdeploy::elfctl {

enum class Command { kHelp, kDeploy, kStatus, kDiagnose, kRollouts, kCancel };
enum class OutputFormat { kText, kJson };

// Exit codes of elfctl.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // rollout not SUCCEEDED, findings, nothing found
inline constexpr int kExitUsage = 2;
inline constexpr int kExitRpc = 3;

// Defaults taken from the environment (ELFDEPLOY_ORCHESTRATOR, ELFDEPLOY_CLUSTER_WATCHER); empty
// means the built-in ones.
struct Environment {
  std::string orchestrator;
  std::string cluster_watcher;
};

struct Options {
  Command command = Command::kHelp;
  // kHelp: the command asked about; empty for the overview.
  std::string help_topic;

  // Global.
  std::string orchestrator = "127.0.0.1:7400";
  std::string cluster_watcher = "127.0.0.1:7404";
  OutputFormat output = OutputFormat::kText;
  std::string tls_ca_file;  // empty: plaintext
  // A client certificate for servers that require one (server.tls_client_ca_file).
  std::string tls_cert_file;
  std::string tls_key_file;
  absl::Duration timeout = absl::Seconds(30);

  // deploy.
  std::string dir = ".";
  std::string registry;
  std::string gitops_repo;
  std::string branch;
  std::string path_prefix;
  std::string tag;
  std::string namespace_;                                 // also diagnose
  absl::Duration rollout_timeout = absl::ZeroDuration();  // zero: the orchestrator's default
  std::vector<std::string> apps;                          // distinct, in the order given
  std::map<std::string, std::string> build_args;          // every app's
  bool skip_discovery = false;
  bool no_cache = false;
  std::string request_id;
  std::string message;
  bool detach = false;

  // status (may be empty), cancel.
  std::string rollout_id;
  std::string reason;

  // diagnose.
  std::string app;  // also the rollouts filter
  std::string cluster;

  // rollouts.
  std::vector<v1::RolloutState> states;
  int limit = 20;
};

// Parses argv without argv[0]. Flags may come before or after the command, as `--flag=value` or
// `--flag value`; `--` ends flags. `--help`/`-h` anywhere and `help [CMD]` give kHelp.
// INVALID_ARGUMENT naming the unknown command or flag, a flag the command does not take, a
// missing or bad value, or a missing/extra argument.
absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args,
                                  const Environment& env = {});

// The overview: every command and flag.
std::string Usage();
// Help of one command ("deploy", ...); NOT_FOUND for an unknown one.
absl::StatusOr<std::string> CommandHelp(absl::string_view command);

// For each name in `names`, the app folder under `dir` holding a Dockerfile: `dir/teams/NAME`,
// `dir/mcps/NAME`, then any `dir/*/NAME` (sorted); "GROUP/NAME" names the group. `dir` must be
// absolute. NOT_FOUND naming the app when no folder matches.
absl::StatusOr<std::vector<v1::AppSource>> ResolveApps(const std::string& dir,
                                                       const std::vector<std::string>& names);

// The DeployRequest of a `deploy` command: source_dir made absolute (against the current
// directory) and apps resolved as ResolveApps does. NOT_FOUND when DIR or an app is missing.
absl::StatusOr<v1::DeployRequest> BuildDeployRequest(const Options& options);

}  // namespace elfdeploy::elfctl
