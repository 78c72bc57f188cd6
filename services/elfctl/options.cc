#include "services/elfctl/options.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"

namespace elfdeploy::elfctl {
namespace {

namespace fs = std::filesystem;

struct CommandSpec {
  Command command;
  const char* name;
  const char* synopsis;
  const char* summary;
  const char* details;
};

const std::vector<CommandSpec>& Commands() {
  static const auto* const kCommands = new std::vector<CommandSpec>{
      {Command::kDeploy, "deploy", "deploy [DIR]",
       "Deploy the apps under DIR (default \".\") and follow the rollout.",
       "Starts a rollout of DIR (made absolute; it must be readable by the orchestrator) and\n"
       "follows it live until it ends, then prints the final status and findings.\n"
       "Exit code 0 when the rollout SUCCEEDED, 1 when it FAILED, TIMED_OUT or was CANCELLED."},
      {Command::kStatus, "status", "status [ROLLOUT]",
       "Show a rollout (default: the newest) with its apps and findings.", ""},
      {Command::kDiagnose, "diagnose", "diagnose APP",
       "Ask cluster-watcher what is wrong with APP.",
       "Exit code 0 when no finding is reported, 1 otherwise."},
      {Command::kRollouts, "rollouts", "rollouts", "List rollouts, newest first.", ""},
      {Command::kCancel, "cancel", "cancel ROLLOUT", "Cancel a running rollout.", ""},
      {Command::kHelp, "help", "help [COMMAND]", "Show help for elfctl or one command.", ""},
  };
  return *kCommands;
}

const CommandSpec* FindCommand(absl::string_view name) {
  for (const CommandSpec& spec : Commands()) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

constexpr unsigned Bit(Command c) { return 1u << static_cast<unsigned>(c); }
constexpr unsigned kAll = ~0u;

using Setter = std::function<absl::Status(Options&, absl::string_view)>;

struct FlagSpec {
  const char* name;
  const char* value_name;  // nullptr: a boolean flag
  unsigned commands;
  const char* help;
  Setter set;
};

absl::StatusOr<absl::Duration> ParseDurationValue(absl::string_view value) {
  absl::Duration d;
  int seconds = 0;
  if (absl::SimpleAtoi(value, &seconds) && seconds >= 0) return absl::Seconds(seconds);
  if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration() ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad duration \"", value, "\" (e.g. 30s, 10m, 1h30m)"));
  }
  return d;
}

absl::StatusOr<bool> ParseBool(absl::string_view value) {
  const std::string v = absl::AsciiStrToLower(value);
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  return absl::InvalidArgumentError(absl::StrCat("bad boolean \"", value, "\""));
}

absl::StatusOr<v1::RolloutState> ParseState(absl::string_view value) {
  const google::protobuf::EnumDescriptor* descriptor = v1::RolloutState_descriptor();
  std::string name = absl::AsciiStrToUpper(absl::StrReplaceAll(value, {{"-", "_"}}));
  if (!absl::StartsWith(name, "ROLLOUT_STATE_")) name = absl::StrCat("ROLLOUT_STATE_", name);
  const google::protobuf::EnumValueDescriptor* found = descriptor->FindValueByName(name);
  if (found == nullptr || found->number() == 0) {
    std::vector<std::string> names;
    for (int i = 0; i < descriptor->value_count(); ++i) {
      if (descriptor->value(i)->number() == 0) continue;
      names.push_back(
          std::string(absl::StripPrefix(descriptor->value(i)->name(), "ROLLOUT_STATE_")));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("bad state \"", value, "\" (one of: ", absl::StrJoin(names, ", "), ")"));
  }
  return static_cast<v1::RolloutState>(found->number());
}

Setter String(std::string Options::*field) {
  return [field](Options& o, absl::string_view v) {
    o.*field = std::string(v);
    return absl::OkStatus();
  };
}

Setter Bool(bool Options::*field) {
  return [field](Options& o, absl::string_view v) {
    absl::StatusOr<bool> b = ParseBool(v);
    if (!b.ok()) return b.status();
    o.*field = *b;
    return absl::OkStatus();
  };
}

Setter DurationField(absl::Duration Options::*field) {
  return [field](Options& o, absl::string_view v) {
    absl::StatusOr<absl::Duration> d = ParseDurationValue(v);
    if (!d.ok()) return d.status();
    o.*field = *d;
    return absl::OkStatus();
  };
}

const std::vector<FlagSpec>& Flags() {
  constexpr unsigned kDeploy = Bit(Command::kDeploy);
  static const auto* const kFlags = new std::vector<FlagSpec>{
      {"orchestrator", "HOST:PORT", kAll,
       "orchestrator address (default $ELFDEPLOY_ORCHESTRATOR or 127.0.0.1:7400)",
       String(&Options::orchestrator)},
      {"cluster_watcher", "HOST:PORT", kAll,
       "cluster-watcher address, used by diagnose (default $ELFDEPLOY_CLUSTER_WATCHER or "
       "127.0.0.1:7404)",
       String(&Options::cluster_watcher)},
      {"output", "text|json", kAll, "output format (default text)",
       [](Options& o, absl::string_view v) {
         if (v == "text") {
           o.output = OutputFormat::kText;
         } else if (v == "json") {
           o.output = OutputFormat::kJson;
         } else {
           return absl::InvalidArgumentError(absl::StrCat("bad output \"", v, "\" (text or json)"));
         }
         return absl::OkStatus();
       }},
      {"tls_ca_file", "PATH", kAll,
       "connect with TLS, verifying the server against this PEM CA; without it the connection "
       "is plaintext, meant for loopback only",
       String(&Options::tls_ca_file)},
      {"tls_cert_file", "PATH", kAll,
       "client certificate (PEM) for a server that requires one; with --tls_key_file and "
       "--tls_ca_file",
       String(&Options::tls_cert_file)},
      {"tls_key_file", "PATH", kAll, "the client certificate's private key (PEM)",
       String(&Options::tls_key_file)},
      {"timeout", "DURATION", kAll, "deadline of each unary call (default 30s)",
       DurationField(&Options::timeout)},
      {"registry", "URL", kDeploy, "registry to push to (default: the orchestrator's)",
       String(&Options::registry)},
      {"gitops_repo", "URL", kDeploy, "GitOps repository (default: the orchestrator's)",
       String(&Options::gitops_repo)},
      {"branch", "NAME", kDeploy, "GitOps branch (default main)", String(&Options::branch)},
      {"path_prefix", "DIR", kDeploy, "folder inside the GitOps repository",
       String(&Options::path_prefix)},
      {"tag", "TAG", kDeploy, "image tag (default: derived from the rollout id)",
       String(&Options::tag)},
      {"namespace", "NS", kDeploy | Bit(Command::kDiagnose),
       "deploy: destination namespace; diagnose: namespace of the app's Deployment",
       String(&Options::namespace_)},
      {"timeout_rollout", "DURATION", kDeploy,
       "deadline of the whole rollout, e.g. 10m (default: the orchestrator's)",
       DurationField(&Options::rollout_timeout)},
      {"app", "NAME", kDeploy | Bit(Command::kRollouts),
       "deploy: only these apps (repeatable or comma-separated; GROUP/NAME picks the group); "
       "rollouts: only rollouts including this app",
       [](Options& o, absl::string_view v) {
         if (o.command == Command::kRollouts) {
           o.app = std::string(v);
           return absl::OkStatus();
         }
         for (absl::string_view name : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
           std::string n(absl::StripAsciiWhitespace(name));
           if (std::find(o.apps.begin(), o.apps.end(), n) == o.apps.end()) o.apps.push_back(n);
         }
         if (o.apps.empty()) return absl::InvalidArgumentError("empty app name");
         return absl::OkStatus();
       }},
      {"build_arg", "KEY=VALUE", kDeploy, "build arg for every app (repeatable), e.g. BASE=...",
       [](Options& o, absl::string_view v) {
         std::pair<std::string, std::string> kv = absl::StrSplit(v, absl::MaxSplits('=', 1));
         if (kv.first.empty() || !absl::StrContains(v, '=')) {
           return absl::InvalidArgumentError(absl::StrCat("bad build arg \"", v, "\" (KEY=VALUE)"));
         }
         o.build_args[kv.first] = kv.second;
         return absl::OkStatus();
       }},
      {"skip_discovery", nullptr, kDeploy, "do not wait for the apps to be discovered",
       Bool(&Options::skip_discovery)},
      {"no_cache", nullptr, kDeploy, "rebuild and push even unchanged apps",
       Bool(&Options::no_cache)},
      {"request_id", "ID", kDeploy, "idempotency key: a repeated id returns the same rollout",
       String(&Options::request_id)},
      {"message", "TEXT", kDeploy, "GitOps commit message", String(&Options::message)},
      {"detach", nullptr, kDeploy, "print the rollout id and exit without following it",
       Bool(&Options::detach)},
      {"reason", "TEXT", Bit(Command::kCancel), "why the rollout is cancelled",
       String(&Options::reason)},
      {"cluster", "NAME", Bit(Command::kDiagnose), "cluster (default: the only one)",
       String(&Options::cluster)},
      {"state", "STATE", Bit(Command::kRollouts),
       "only rollouts in this state (repeatable or comma-separated: pending, running, "
       "succeeded, failed, timed_out, cancelled)",
       [](Options& o, absl::string_view v) {
         for (absl::string_view s : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
           absl::StatusOr<v1::RolloutState> state = ParseState(absl::StripAsciiWhitespace(s));
           if (!state.ok()) return state.status();
           o.states.push_back(*state);
         }
         return absl::OkStatus();
       }},
      {"limit", "N", Bit(Command::kRollouts), "at most N rollouts (default 20)",
       [](Options& o, absl::string_view v) {
         if (!absl::SimpleAtoi(v, &o.limit) || o.limit <= 0) {
           return absl::InvalidArgumentError(absl::StrCat("bad limit \"", v, "\""));
         }
         return absl::OkStatus();
       }},
  };
  return *kFlags;
}

const FlagSpec* FindFlag(absl::string_view name) {
  const std::string normalized = absl::StrReplaceAll(name, {{"-", "_"}});
  for (const FlagSpec& flag : Flags()) {
    if (normalized == flag.name) return &flag;
  }
  return nullptr;
}

constexpr size_t kHelpIndent = 32;
constexpr size_t kHelpWidth = 100;

// The help of each flag `keep` accepts, wrapped to kHelpWidth columns.
std::string FlagLines(const std::function<bool(const FlagSpec&)>& keep) {
  std::string out;
  for (const FlagSpec& flag : Flags()) {
    if (!keep(flag)) continue;
    std::string left = absl::StrCat("  --", flag.name);
    if (flag.value_name != nullptr) absl::StrAppend(&left, " ", flag.value_name);
    if (left.size() + 2 <= kHelpIndent) {
      left.resize(kHelpIndent, ' ');
    } else {
      absl::StrAppend(&left, "\n", std::string(kHelpIndent, ' '));
    }
    std::string line;
    for (absl::string_view word : absl::StrSplit(flag.help, ' ', absl::SkipEmpty())) {
      if (!line.empty() && kHelpIndent + line.size() + 1 + word.size() > kHelpWidth) {
        absl::StrAppend(&left, line, "\n", std::string(kHelpIndent, ' '));
        line.clear();
      }
      absl::StrAppend(&line, line.empty() ? "" : " ", word);
    }
    absl::StrAppend(&out, left, line, "\n");
  }
  return out;
}

std::string GlobalFlagLines() {
  return FlagLines([](const FlagSpec& flag) { return flag.commands == kAll; });
}

std::string OwnFlagLines(Command command) {
  return FlagLines([command](const FlagSpec& flag) {
    return flag.commands != kAll && (flag.commands & Bit(command)) != 0;
  });
}

struct ParsedFlag {
  const FlagSpec* spec;
  std::string written;  // as on the command line, for messages
  std::string value;
};

}  // namespace

std::string Usage() {
  std::string out =
      "elfctl: deploy folders of apps with elfdeploy and follow the rollouts.\n\n"
      "Usage: elfctl [FLAGS] COMMAND [ARGS] [FLAGS]\n\nCommands:\n";
  for (const CommandSpec& spec : Commands()) {
    std::string left = absl::StrCat("  ", spec.synopsis);
    left.resize(std::max<size_t>(left.size() + 2, 22), ' ');
    absl::StrAppend(&out, left, spec.summary, "\n");
  }
  absl::StrAppend(&out, "\nGlobal flags:\n", GlobalFlagLines());
  for (const CommandSpec& spec : Commands()) {
    const std::string own = OwnFlagLines(spec.command);
    if (!own.empty()) absl::StrAppend(&out, "\nFlags of ", spec.name, ":\n", own);
  }
  absl::StrAppend(&out,
                  "\nFlags take --flag=value or --flag value and may come before or after the "
                  "command.\nExit codes: 0 ok, 1 rollout not SUCCEEDED or findings, 2 usage "
                  "error, 3 RPC failed.\nRun 'elfctl help COMMAND' for one command.\n");
  return out;
}

absl::StatusOr<std::string> CommandHelp(absl::string_view command) {
  const CommandSpec* spec = FindCommand(command);
  if (spec == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown command \"", command, "\""));
  }
  std::string out =
      absl::StrCat("Usage: elfctl ", spec->synopsis, " [FLAGS]\n\n", spec->summary, "\n");
  if (*spec->details != '\0') absl::StrAppend(&out, spec->details, "\n");
  if (spec->command != Command::kHelp) {
    const std::string own = OwnFlagLines(spec->command);
    if (!own.empty()) absl::StrAppend(&out, "\nFlags:\n", own);
    absl::StrAppend(&out, "\nGlobal flags:\n", GlobalFlagLines());
  }
  return out;
}

absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args, const Environment& env) {
  Options options;
  if (!env.orchestrator.empty()) options.orchestrator = env.orchestrator;
  if (!env.cluster_watcher.empty()) options.cluster_watcher = env.cluster_watcher;

  std::vector<std::string> positionals;
  std::vector<ParsedFlag> flags;
  bool help = false;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      positionals.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      help = true;
      continue;
    }
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag \"", arg, "\""));
    }
    absl::string_view body = absl::string_view(arg).substr(2);
    std::optional<std::string> value;
    if (size_t eq = body.find('='); eq != absl::string_view::npos) {
      value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    const FlagSpec* spec = FindFlag(body);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag \"--", body, "\""));
    }
    if (!value.has_value()) {
      if (spec->value_name == nullptr) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", spec->name, " needs a value (", spec->value_name, ")"));
      }
    }
    flags.push_back({spec, std::string(body), *std::move(value)});
  }

  const CommandSpec* command = nullptr;
  if (!positionals.empty()) {
    command = FindCommand(positionals.front());
    if (command == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown command \"", positionals.front(), "\""));
    }
    positionals.erase(positionals.begin());
  }
  if (command == nullptr) {
    if (help) return options;
    return absl::InvalidArgumentError("no command given");
  }
  if (help || command->command == Command::kHelp) {
    options.command = Command::kHelp;
    if (command->command != Command::kHelp) {
      options.help_topic = command->name;
    } else if (positionals.size() > 1) {
      return absl::InvalidArgumentError("help takes at most one command");
    } else if (!positionals.empty()) {
      if (FindCommand(positionals.front()) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown command \"", positionals.front(), "\""));
      }
      options.help_topic = positionals.front();
    }
    return options;
  }

  options.command = command->command;
  for (const ParsedFlag& flag : flags) {
    if ((flag.spec->commands & Bit(options.command)) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", flag.written, " does not apply to command ", command->name));
    }
    if (absl::Status status = flag.spec->set(options, flag.value); !status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag.written, ": ", status.message()));
    }
  }

  auto at_most = [&](size_t n) -> absl::Status {
    if (positionals.size() > n) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", positionals[n], "\" for command ", command->name));
    }
    return absl::OkStatus();
  };
  auto exactly_one = [&](const char* what) -> absl::Status {
    if (positionals.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("command ", command->name, " needs ", what));
    }
    return at_most(1);
  };
  absl::Status status;
  switch (options.command) {
    case Command::kDeploy:
      status = at_most(1);
      if (status.ok() && !positionals.empty()) options.dir = positionals.front();
      if (options.dir.empty()) status = absl::InvalidArgumentError("empty DIR");
      break;
    case Command::kStatus:
      status = at_most(1);
      if (status.ok() && !positionals.empty()) options.rollout_id = positionals.front();
      break;
    case Command::kDiagnose:
      status = exactly_one("an APP");
      if (status.ok()) options.app = positionals.front();
      break;
    case Command::kRollouts:
      status = at_most(0);
      break;
    case Command::kCancel:
      status = exactly_one("a ROLLOUT id");
      if (status.ok()) options.rollout_id = positionals.front();
      break;
    case Command::kHelp:
      break;
  }
  if (!status.ok()) return status;
  return options;
}

absl::StatusOr<std::vector<v1::AppSource>> ResolveApps(const std::string& dir,
                                                       const std::vector<std::string>& names) {
  std::error_code ec;
  std::vector<std::string> other_groups;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string group = entry.path().filename().string();
    if (group == "teams" || group == "mcps" || absl::StartsWith(group, ".")) continue;
    if (entry.is_directory(ec)) other_groups.push_back(group);
  }
  std::sort(other_groups.begin(), other_groups.end());
  std::vector<std::string> groups = {"teams", "mcps"};
  groups.insert(groups.end(), other_groups.begin(), other_groups.end());

  std::vector<v1::AppSource> apps;
  for (const std::string& name : names) {
    std::vector<std::string> candidates = groups;
    std::string app = name;
    if (size_t slash = name.find('/'); slash != std::string::npos) {
      candidates = {name.substr(0, slash)};
      app = name.substr(slash + 1);
    }
    if (app.empty() || app.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad app name \"", name, "\""));
    }
    bool found = false;
    for (const std::string& group : candidates) {
      if (fs::is_regular_file(fs::path(dir) / group / app / "Dockerfile", ec)) {
        v1::AppSource source;
        source.set_name(app);
        source.set_group(group);
        apps.push_back(std::move(source));
        found = true;
        break;
      }
    }
    if (!found) {
      return absl::NotFoundError(absl::StrCat("app \"", name, "\": no folder ", dir, "/",
                                              candidates.size() == 1 ? candidates.front() : "*",
                                              "/", app, " with a Dockerfile"));
    }
  }
  return apps;
}

absl::StatusOr<v1::DeployRequest> BuildDeployRequest(const Options& options) {
  std::error_code ec;
  fs::path dir = fs::absolute(options.dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot make ", options.dir, " absolute: ", ec.message()));
  }
  std::string source_dir = dir.lexically_normal().string();
  while (source_dir.size() > 1 && source_dir.back() == '/') source_dir.pop_back();
  if (!fs::is_directory(source_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("folder ", source_dir, " does not exist"));
  }
  v1::DeployRequest request;
  request.set_source_dir(source_dir);
  if (!options.apps.empty()) {
    absl::StatusOr<std::vector<v1::AppSource>> apps = ResolveApps(source_dir, options.apps);
    if (!apps.ok()) return apps.status();
    for (v1::AppSource& app : *apps) *request.add_apps() = std::move(app);
  }
  request.mutable_registry()->set_url(options.registry);
  request.mutable_gitops()->set_url(options.gitops_repo);
  request.mutable_gitops()->set_branch(options.branch);
  request.mutable_gitops()->set_path_prefix(options.path_prefix);
  request.set_tag(options.tag);
  request.mutable_destination()->set_namespace_(options.namespace_);
  if (options.rollout_timeout > absl::ZeroDuration()) {
    const int64_t nanos = absl::ToInt64Nanoseconds(options.rollout_timeout);
    request.mutable_timeout()->set_seconds(nanos / 1000000000);
    request.mutable_timeout()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  }
  request.mutable_verify()->set_skip_discovery(options.skip_discovery);
  request.set_no_cache(options.no_cache);
  for (const auto& [key, value] : options.build_args) (*request.mutable_build_args())[key] = value;
  request.set_request_id(options.request_id);
  request.set_message(options.message);
  return request;
}

}  // namespace elfdeploy::elfctl
