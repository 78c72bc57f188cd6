#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace elfdeploy::builder {

// What Scaffold needs to know about an app: the contents of its app.yaml. Mirrors
// elfdeploy.v1.AppConfig (requests/limits as the four cpu/memory quantities).
struct AppSpec {
  // DNS-1123 label.
  std::string name;
  // "team" or "mcp".
  std::string kind;
  int port = 8080;
  std::map<std::string, std::string> env;
  // Kubernetes quantities; empty ones get the defaults below when the spec is resolved.
  std::string cpu_request;
  std::string memory_request;
  std::string cpu_limit;
  std::string memory_limit;
  // Exec-form CMD of the generated Dockerfile; empty means derived from the app's code.
  std::vector<std::string> command;
  // Empty means "elf-automations/<name>:latest".
  std::string image;
  // "python", "node" or "generic"; empty means detected from the app's files.
  std::string language;
  // Empty means "regcred".
  std::string image_pull_secret = "regcred";
  // Empty means the manifest carries no metadata.namespace.
  std::string namespace_ = "elf-automations";
  // Empty means "/health".
  std::string health_path = "/health";
  // AppConfig.replicas; 0 means 1.
  int replicas = 1;
};

inline constexpr char kDefaultCpuRequest[] = "100m";
inline constexpr char kDefaultMemoryRequest[] = "128Mi";
inline constexpr char kDefaultCpuLimit[] = "500m";
inline constexpr char kDefaultMemoryLimit[] = "512Mi";

// Reads and validates `<app_dir>/app.yaml` (keys: name, kind, port, env, resources
// {requests, limits} {cpu, memory}, command (list or string), image, language, health_path,
// namespace, image_pull_secret, replicas) and returns it resolved as ResolveAppSpec does.
// NOT_FOUND when app_dir or app.yaml is missing; INVALID_ARGUMENT naming the file, line and key
// for malformed YAML, an unknown or duplicate key, or an invalid value.
absl::StatusOr<AppSpec> LoadAppSpec(const std::string& app_dir);

// Validates `spec` and fills its defaults from the app's files in `app_dir`: image, language
// (python when a *.py file or requirements.txt exists, node when package.json does, else
// generic), resources, pull secret, health path, replicas, and `command` when an entry point is
// found. NOT_FOUND when app_dir is missing; INVALID_ARGUMENT naming the first invalid field.
absl::StatusOr<AppSpec> ResolveAppSpec(const std::string& app_dir, AppSpec spec);

// One file Scaffold considered.
struct ScaffoldFile {
  enum class Action { kCreated, kOverwritten, kKept };

  // Relative to app_dir, e.g. "k8s/deployment.yaml".
  std::string path;
  Action action = Action::kCreated;
  // The generated content, or the existing content of a kept file.
  std::string content;
};

struct ScaffoldOptions {
  std::string app_dir;
  // Replace files that exist.
  bool overwrite = false;
  // Write nothing; return what would be written.
  bool dry_run = false;
  // Used instead of app.yaml when set.
  std::optional<AppSpec> spec;
};

// Makes the app in `options.app_dir` deployable: writes its Dockerfile, requirements.txt (Python
// apps only) and k8s/deployment.yaml, in that order, keeping each that exists unless `overwrite`.
// Output is deterministic and nothing is read or written outside app_dir. Nothing is written
// when any file fails to generate. NOT_FOUND when app_dir is missing, or when app.yaml is
// missing and no spec is given; INVALID_ARGUMENT for a bad app.yaml or spec, a path resolving
// outside app_dir, or a Dockerfile to write with no command given or derivable;
// FAILED_PRECONDITION when a target exists and is not a regular file; INTERNAL on I/O errors.
absl::StatusOr<std::vector<ScaffoldFile>> Scaffold(const ScaffoldOptions& options);

}  // namespace elfdeploy::builder
