#include "services/common/service_main.h"

#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/log.h"
#include "services/common/metrics.h"
#include "services/common/server.h"
#include "services/common/version.h"

ABSL_FLAG(std::string, config, "", "YAML config file; unknown keys are an error");
ABSL_FLAG(std::string, grpc_addr, "", "gRPC listen address host:port (overrides config)");
ABSL_FLAG(std::string, metrics_addr, "", "Prometheus /metrics listen address (overrides config)");

namespace elfdeploy {
namespace {

constexpr int kExitConfig = 2;
constexpr int kExitStart = 1;

// Binaries without a gRPC API have no server.grpc_addr key.
void BindServerConfig(const BinarySpec& spec, ConfigBinder& binder, ServerConfig* config) {
  if (!spec.default_grpc_addr.empty()) binder.Bind("server.grpc_addr", &config->grpc_addr);
  binder.Bind("server.metrics_addr", &config->metrics_addr);
  if (!spec.default_grpc_addr.empty()) {
    binder.Bind("server.tls_cert_file", &config->tls_cert_file);
    binder.Bind("server.tls_key_file", &config->tls_key_file);
    binder.Bind("server.tls_client_ca_file", &config->tls_client_ca_file);
  }
  binder.Bind("server.drain_delay", &config->drain_delay);
  binder.Bind("server.shutdown_grace", &config->shutdown_grace);
  binder.Bind("log.level", &config->log_level);
  binder.Bind("log.format", &config->log_format);
}

std::string Usage(const BinarySpec& spec) {
  ServerConfig defaults;
  std::vector<std::pair<std::string, std::string>> effective;
  ConfigBinder binder;
  defaults.grpc_addr = spec.default_grpc_addr;
  defaults.metrics_addr = spec.default_metrics_addr;
  BindServerConfig(spec, binder, &defaults);
  if (spec.bind_config) spec.bind_config(binder);
  std::string out = absl::StrCat(
      "elfdeploy-", spec.name, " ", kVersion, "\n\nUsage: elfdeploy-", spec.name,
      " [flags]\n\nFlags:\n"
      "  --config FILE           YAML config file; unknown keys are an error (exit 2)\n");
  if (!spec.default_grpc_addr.empty()) {
    out += "  --grpc_addr HOST:PORT   gRPC listen address (port 0 picks a free port)\n";
  }
  out +=
      "  --metrics_addr HOST:PORT  Prometheus /metrics listen address\n"
      "  --version               print the version and exit\n"
      "  --help                  print this help and exit\n\n"
      "Config keys, by precedence: default < --config YAML < environment < flags.\n";
  for (const auto& [path, value] : binder.Effective()) {
    absl::StrAppend(&out, "  ", path, "\n      env ", absl::StrJoin(binder.EnvNames(path), ", "),
                    value.empty() ? "" : absl::StrCat("; default ", value), "\n");
  }
  return out;
}

}  // namespace

absl::Status LoadServerConfig(const BinarySpec& spec, const std::string& config_file,
                              const ConfigBinder::Getenv& getenv, ServerConfig* config,
                              std::vector<std::pair<std::string, std::string>>* effective) {
  config->grpc_addr = spec.default_grpc_addr;
  config->metrics_addr = spec.default_metrics_addr;
  ConfigBinder binder;
  BindServerConfig(spec, binder, config);
  if (spec.bind_config) spec.bind_config(binder);
  if (!config_file.empty()) {
    if (absl::Status s = binder.LoadFile(config_file); !s.ok()) return s;
  }
  if (absl::Status s = binder.ApplyEnv(getenv); !s.ok()) return s;
  if (effective != nullptr) *effective = binder.Effective();
  return absl::OkStatus();
}

int RunBinary(int argc, char** argv, const BinarySpec& spec, const ComponentFactory& factory) {
  // Termination signals are taken with sigwait; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const std::string binary = absl::StrCat("elfdeploy-", spec.name);
  absl::FlagsUsageConfig usage;
  usage.version_string = [binary] { return absl::StrCat(binary, " ", kVersion, "\n"); };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(absl::StrCat(binary,
                                            " [--config FILE] [--grpc_addr HOST:PORT] "
                                            "[--metrics_addr HOST:PORT]; see --help"));
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-help" || arg == "-h") {
      std::cout << Usage(spec);
      return 0;
    }
  }
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::cerr << binary << ": unexpected argument \"" << rest[1] << "\" (see --help)\n";
    return kExitConfig;
  }

  ServerConfig config;
  std::vector<std::pair<std::string, std::string>> effective;
  absl::Status loaded = LoadServerConfig(
      spec, absl::GetFlag(FLAGS_config), [](const char* n) { return std::getenv(n); }, &config,
      &effective);
  if (!absl::GetFlag(FLAGS_grpc_addr).empty()) {
    if (spec.default_grpc_addr.empty()) {
      std::cerr << binary << ": --grpc_addr: this binary serves no gRPC API\n";
      return kExitConfig;
    }
    config.grpc_addr = absl::GetFlag(FLAGS_grpc_addr);
  }
  if (!absl::GetFlag(FLAGS_metrics_addr).empty()) {
    config.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  }
  log::Options log_options;
  log_options.service = spec.name;
  if (loaded.ok()) loaded = log::ParseLevel(config.log_level, &log_options.level);
  if (loaded.ok()) loaded = log::ParseFormat(config.log_format, &log_options.format);
  log::Configure(log_options);
  if (!loaded.ok()) {
    std::cerr << binary << ": invalid configuration: " << loaded.message() << "\n";
    return kExitConfig;
  }

  std::vector<log::Field> config_fields;
  for (const auto& [path, value] : effective) {
    if (path == "server.grpc_addr" || path == "server.metrics_addr") continue;  // flags may win
    config_fields.emplace_back(path, value);
  }
  log::Write(log::Level::kInfo, "config", config_fields);

  auto registry = std::make_shared<prometheus::Registry>();
  ComponentContext context{config, registry};
  absl::StatusOr<std::unique_ptr<Component>> component = factory(context);
  if (!component.ok()) {
    log::Error("cannot start", {{"error", component.status()}});
    return kExitStart;
  }

  std::unique_ptr<Server> server;
  std::unique_ptr<MetricsExposer> metrics_only;
  std::shared_ptr<ProcessCollector> process_collector;
  if (!config.grpc_addr.empty()) {
    ServerOptions options;
    options.grpc_addr = config.grpc_addr;
    options.metrics_addr = config.metrics_addr;
    options.tls_cert_file = config.tls_cert_file;
    options.tls_key_file = config.tls_key_file;
    options.tls_client_ca_file = config.tls_client_ca_file;
    options.services = (*component)->Services();
    options.metrics_registry = registry;
    absl::StatusOr<std::unique_ptr<Server>> started = Server::Start(std::move(options));
    if (!started.ok()) {
      log::Error("cannot start", {{"error", started.status()}});
      return kExitStart;
    }
    server = *std::move(started);
    log::Info("serving", {{"version", kVersion},
                          {"grpc_addr", server->grpc_addr()},
                          {"tls", !config.tls_cert_file.empty()},
                          {"metrics_addr", server->metrics_addr()}});
  } else {
    absl::StatusOr<std::unique_ptr<MetricsExposer>> started =
        MetricsExposer::Start(config.metrics_addr);
    if (!started.ok()) {
      log::Error("cannot start", {{"error", started.status()}});
      return kExitStart;
    }
    metrics_only = *std::move(started);
    process_collector = std::make_shared<ProcessCollector>();
    metrics_only->Register(process_collector);
    metrics_only->Register(registry);
    log::Info("serving", {{"version", kVersion}, {"metrics_addr", metrics_only->address()}});
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  log::Info("draining", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"},
                         {"drain_delay", config.drain_delay},
                         {"shutdown_grace", config.shutdown_grace}});
  if (server != nullptr) server->SetServing(false);
  (*component)->Stop();
  if (server != nullptr) server->Shutdown(config.drain_delay, config.shutdown_grace);
  server.reset();
  component->reset();
  log::Info("stopped");
  return 0;
}

}  // namespace elfdeploy

namespace elfdeploy {

grpc::Status NotImplementedYet(absl::string_view rpc, absl::string_view missing) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      absl::StrCat(rpc, " is not implemented yet: ", missing));
}

}  // namespace elfdeploy
