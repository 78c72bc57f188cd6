#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/common/log.h"

namespace elfdeploy {

// Binds typed config fields to dotted YAML paths ("server.grpc_addr") and fills them, in order of
// precedence, from the defaults already in the fields, a YAML file, then the environment.
//
// Every key of the file must be bound: an unknown key, a wrong type or malformed YAML is an
// InvalidArgument naming the file, line and key. Each field can also be set from the environment
// as ELFDEPLOY_<PATH> (upper case, '.' -> '_'), and from the aliases given with EnvAlias
// (e.g. DOCKER_REGISTRY). Bound pointers must outlive the binder.
class ConfigBinder {
 public:
  using Getenv = std::function<const char*(const char*)>;

  void Bind(absl::string_view path, std::string* field);
  void Bind(absl::string_view path, Secret* field);
  void Bind(absl::string_view path, bool* field);
  void Bind(absl::string_view path, int64_t* field);
  void Bind(absl::string_view path, int* field);
  void Bind(absl::string_view path, absl::Duration* field);
  // Lists come from YAML sequences, or from comma-separated environment values.
  void Bind(absl::string_view path, std::vector<std::string>* field);

  // `env` (e.g. "DOCKER_REGISTRY") also sets the field at `path`; ELFDEPLOY_<PATH> wins over it.
  void EnvAlias(absl::string_view env, absl::string_view path);

  // Loads a YAML document; `source` names it in errors. An empty document sets nothing.
  absl::Status LoadYaml(absl::string_view yaml, absl::string_view source);
  absl::Status LoadFile(const std::string& path);

  // Applies environment overrides.
  absl::Status ApplyEnv(const Getenv& getenv);

  // The environment variable names that set `path`, strongest first.
  std::vector<std::string> EnvNames(absl::string_view path) const;

  // Bound paths, sorted.
  std::vector<std::string> Paths() const;

  // The current value of every field as text, by path; secrets read "[REDACTED]".
  std::vector<std::pair<std::string, std::string>> Effective() const;

 private:
  struct Binding {
    std::string type;  // for error messages: "string", "bool", ...
    // Parses a scalar (from YAML or the environment).
    std::function<absl::Status(absl::string_view)> from_text;
    std::function<std::string()> to_text;
    // Set for lists only: appends one element after the first call clears.
    std::function<void()> clear;
    std::function<void(absl::string_view)> append;
  };

  void BindScalar(absl::string_view path, std::string type,
                  std::function<absl::Status(absl::string_view)> from_text,
                  std::function<std::string()> to_text);
  bool IsSection(absl::string_view path) const;

  std::map<std::string, Binding> bindings_;
  std::multimap<std::string, std::string> aliases_;  // path -> env
};

// Parses durations as Go and Prometheus write them ("250ms", "10s", "1m30s").
absl::Status ParseDurationText(absl::string_view text, absl::Duration* out);

}  // namespace elfdeploy
