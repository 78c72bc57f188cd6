#include "services/common/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace elfdeploy {
namespace {

std::string Where(absl::string_view source, const YAML::Mark& mark) {
  return absl::StrCat(source, ":", mark.line + 1, ":", mark.column + 1);
}

std::string Join(absl::string_view prefix, absl::string_view key) {
  return prefix.empty() ? std::string(key) : absl::StrCat(prefix, ".", key);
}

}  // namespace

absl::Status ParseDurationText(absl::string_view text, absl::Duration* out) {
  absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (trimmed == "0") {
    *out = absl::ZeroDuration();
    return absl::OkStatus();
  }
  if (trimmed.empty() || !absl::ParseDuration(trimmed, out) || *out < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a duration (e.g. 250ms, 10s, 1m30s)"));
  }
  return absl::OkStatus();
}

void ConfigBinder::BindScalar(absl::string_view path, std::string type,
                              std::function<absl::Status(absl::string_view)> from_text,
                              std::function<std::string()> to_text) {
  bindings_[std::string(path)] =
      Binding{std::move(type), std::move(from_text), std::move(to_text), nullptr, nullptr};
}

void ConfigBinder::Bind(absl::string_view path, std::string* field) {
  BindScalar(
      path, "string",
      [field](absl::string_view text) {
        *field = std::string(text);
        return absl::OkStatus();
      },
      [field] { return *field; });
}

void ConfigBinder::Bind(absl::string_view path, Secret* field) {
  BindScalar(
      path, "string",
      [field](absl::string_view text) {
        *field = Secret(std::string(text));
        return absl::OkStatus();
      },
      [] { return std::string(kRedacted); });
}

void ConfigBinder::Bind(absl::string_view path, bool* field) {
  BindScalar(
      path, "bool",
      [field](absl::string_view text) {
        std::string lower = absl::AsciiStrToLower(text);
        if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") {
          *field = true;
        } else if (lower == "false" || lower == "no" || lower == "off" || lower == "0") {
          *field = false;
        } else {
          return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a bool"));
        }
        return absl::OkStatus();
      },
      [field] { return std::string(*field ? "true" : "false"); });
}

void ConfigBinder::Bind(absl::string_view path, int64_t* field) {
  BindScalar(
      path, "integer",
      [field](absl::string_view text) {
        if (!absl::SimpleAtoi(text, field)) {
          return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an integer"));
        }
        return absl::OkStatus();
      },
      [field] { return absl::StrCat(*field); });
}

void ConfigBinder::Bind(absl::string_view path, int* field) {
  BindScalar(
      path, "integer",
      [field](absl::string_view text) {
        if (!absl::SimpleAtoi(text, field)) {
          return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an integer"));
        }
        return absl::OkStatus();
      },
      [field] { return absl::StrCat(*field); });
}

void ConfigBinder::Bind(absl::string_view path, absl::Duration* field) {
  BindScalar(
      path, "duration", [field](absl::string_view text) { return ParseDurationText(text, field); },
      [field] { return absl::FormatDuration(*field); });
}

void ConfigBinder::Bind(absl::string_view path, std::vector<std::string>* field) {
  Binding binding;
  binding.type = "list";
  binding.from_text = [field](absl::string_view text) {
    field->clear();
    for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
      field->emplace_back(absl::StripAsciiWhitespace(item));
    }
    return absl::OkStatus();
  };
  binding.to_text = [field] { return absl::StrJoin(*field, ","); };
  binding.clear = [field] { field->clear(); };
  binding.append = [field](absl::string_view item) { field->emplace_back(item); };
  bindings_[std::string(path)] = std::move(binding);
}

void ConfigBinder::EnvAlias(absl::string_view env, absl::string_view path) {
  aliases_.emplace(std::string(path), std::string(env));
}

bool ConfigBinder::IsSection(absl::string_view path) const {
  std::string prefix = absl::StrCat(path, ".");
  auto it = bindings_.lower_bound(prefix);
  return it != bindings_.end() && absl::StartsWith(it->first, prefix);
}

std::vector<std::string> ConfigBinder::Paths() const {
  std::vector<std::string> paths;
  for (const auto& [path, binding] : bindings_) paths.push_back(path);
  return paths;
}

std::vector<std::pair<std::string, std::string>> ConfigBinder::Effective() const {
  std::vector<std::pair<std::string, std::string>> values;
  for (const auto& [path, binding] : bindings_) values.emplace_back(path, binding.to_text());
  return values;
}

std::vector<std::string> ConfigBinder::EnvNames(absl::string_view path) const {
  std::string name = absl::StrCat("ELFDEPLOY_", absl::AsciiStrToUpper(path));
  for (char& c : name) {
    if (c == '.' || c == '-') c = '_';
  }
  std::vector<std::string> names = {name};
  auto [begin, end] = aliases_.equal_range(std::string(path));
  for (auto it = begin; it != end; ++it) names.push_back(it->second);
  return names;
}

absl::Status ConfigBinder::LoadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("config file ", path, ": cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return LoadYaml(text.str(), path);
}

absl::Status ConfigBinder::LoadYaml(absl::string_view yaml, absl::string_view source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(source, e.mark), ": malformed YAML: ", e.msg));
  }
  if (!root || root.IsNull()) return absl::OkStatus();

  // Walks maps depth-first; every key must be a bound field or a section holding some.
  std::function<absl::Status(const YAML::Node&, const std::string&)> walk =
      [&](const YAML::Node& node, const std::string& prefix) -> absl::Status {
    if (!node.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(Where(source, node.Mark()), ": ",
                                                     prefix.empty() ? "the document" : prefix,
                                                     " must be a mapping"));
    }
    for (const auto& entry : node) {
      std::string key = entry.first.Scalar();
      std::string path = Join(prefix, key);
      const YAML::Node& value = entry.second;
      auto binding = bindings_.find(path);
      if (binding != bindings_.end()) {
        const Binding& b = binding->second;
        std::string where = Where(source, value.Mark());
        if (b.append != nullptr) {
          if (value.IsNull()) {
            b.clear();
            continue;
          }
          if (!value.IsSequence()) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": ", path, " must be a list"));
          }
          b.clear();
          for (const auto& item : value) {
            if (!item.IsScalar()) {
              return absl::InvalidArgumentError(absl::StrCat(Where(source, item.Mark()), ": ", path,
                                                             " must be a list of strings"));
            }
            b.append(item.Scalar());
          }
          continue;
        }
        if (!value.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": ", path, " must be a ", b.type));
        }
        if (absl::Status s = b.from_text(value.Scalar()); !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": ", path, ": ", s.message()));
        }
        continue;
      }
      if (IsSection(path)) {
        if (value.IsNull()) continue;
        if (absl::Status s = walk(value, path); !s.ok()) return s;
        continue;
      }
      std::vector<std::string> known;
      std::string section_prefix = prefix.empty() ? "" : absl::StrCat(prefix, ".");
      for (const auto& [p, unused] : bindings_) {
        if (!absl::StartsWith(p, section_prefix)) continue;
        std::string rest = p.substr(section_prefix.size());
        std::string first(rest.substr(0, rest.find('.')));
        if (known.empty() || known.back() != first) known.push_back(first);
      }
      return absl::InvalidArgumentError(
          absl::StrCat(Where(source, entry.first.Mark()), ": unknown key \"", path, "\" (known",
                       prefix.empty() ? "" : absl::StrCat(" in ", prefix), ": ",
                       absl::StrJoin(known, ", "), ")"));
    }
    return absl::OkStatus();
  };
  return walk(root, "");
}

absl::Status ConfigBinder::ApplyEnv(const Getenv& getenv) {
  for (const auto& [path, binding] : bindings_) {
    for (const std::string& name : EnvNames(path)) {
      const char* value = getenv(name.c_str());
      if (value == nullptr) continue;
      if (absl::Status s = binding.from_text(value); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("environment ", name, " (", path, "): ", s.message()));
      }
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace elfdeploy
