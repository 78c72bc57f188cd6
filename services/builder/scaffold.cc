#include "services/builder/scaffold.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "services/common/k8s_names.h"

namespace elfdeploy::builder {
namespace {

namespace fs = std::filesystem;

constexpr char kAppYaml[] = "app.yaml";
constexpr char kDockerfile[] = "Dockerfile";
constexpr char kRequirements[] = "requirements.txt";
constexpr char kDeployment[] = "k8s/deployment.yaml";
constexpr char kPartOf[] = "elf-automations";
constexpr char kPythonBase[] = "python:3.11-slim";
constexpr char kNodeBase[] = "node:20-slim";
constexpr char kGenericBase[] = "debian:bookworm-slim";
constexpr char kNonRootUser[] = "10001:10001";
constexpr int kMaxScannedFiles = 10000;
constexpr std::uintmax_t kMaxScannedFileBytes = 1 << 20;

// Top-level Python modules whose PyPI distribution is known, sorted by module.
constexpr std::pair<absl::string_view, absl::string_view> kPythonPackages[] = {
    {"PIL", "pillow"},
    {"a2a", "a2a-sdk"},
    {"aiohttp", "aiohttp"},
    {"anthropic", "anthropic"},
    {"boto3", "boto3"},
    {"bs4", "beautifulsoup4"},
    {"crewai", "crewai"},
    {"dotenv", "python-dotenv"},
    {"fastapi", "fastapi"},
    {"fastmcp", "fastmcp"},
    {"httpx", "httpx"},
    {"jinja2", "jinja2"},
    {"jwt", "pyjwt"},
    {"langchain", "langchain"},
    {"langchain_anthropic", "langchain-anthropic"},
    {"langchain_community", "langchain-community"},
    {"langchain_core", "langchain-core"},
    {"langchain_openai", "langchain-openai"},
    {"langgraph", "langgraph"},
    {"mcp", "mcp"},
    {"multipart", "python-multipart"},
    {"numpy", "numpy"},
    {"openai", "openai"},
    {"pandas", "pandas"},
    {"prometheus_client", "prometheus-client"},
    {"psycopg", "psycopg"},
    {"psycopg2", "psycopg2-binary"},
    {"pydantic", "pydantic"},
    {"pydantic_settings", "pydantic-settings"},
    {"qdrant_client", "qdrant-client"},
    {"redis", "redis"},
    {"requests", "requests"},
    {"slack_sdk", "slack-sdk"},
    {"sqlalchemy", "sqlalchemy"},
    {"sse_starlette", "sse-starlette"},
    {"starlette", "starlette"},
    {"structlog", "structlog"},
    {"supabase", "supabase"},
    {"tenacity", "tenacity"},
    {"uvicorn", "uvicorn"},
    {"websockets", "websockets"},
    {"yaml", "pyyaml"},
};
static_assert(std::is_sorted(std::begin(kPythonPackages), std::end(kPythonPackages),
                             [](const auto& a, const auto& b) { return a.first < b.first; }));

constexpr std::array<absl::string_view, 5> kPythonEntryPoints = {"team_server.py", "mcp_server.py",
                                                                 "server.py", "main.py", "app.py"};
constexpr std::array<absl::string_view, 4> kNodeEntryPoints = {"server.js", "index.js", "main.js",
                                                               "app.js"};

// What Scaffold looks at in an app folder. Paths are relative to it, sorted.
struct AppFiles {
  bool has_requirements = false;
  bool has_package_json = false;
  bool has_package_lock = false;
  std::vector<std::string> top_level_files;
  std::vector<std::string> python_files;
  std::set<std::string> local_modules;
};

// A non-negative Kubernetes resource quantity, e.g. "100m", "0.5", "128Mi", "1e3".
bool IsQuantity(absl::string_view q) {
  size_t i = 0;
  size_t digits = 0;
  auto skip_digits = [&] {
    for (; i < q.size() && absl::ascii_isdigit(q[i]); ++i) ++digits;
  };
  skip_digits();
  if (i < q.size() && q[i] == '.') {
    ++i;
    skip_digits();
  }
  if (digits == 0) return false;
  absl::string_view suffix = q.substr(i);
  static constexpr std::array<absl::string_view, 16> kSuffixes = {
      "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  if (std::find(kSuffixes.begin(), kSuffixes.end(), suffix) != kSuffixes.end()) return true;
  if (suffix[0] != 'e' && suffix[0] != 'E') return false;
  suffix.remove_prefix(1);
  if (!suffix.empty() && (suffix[0] == '+' || suffix[0] == '-')) suffix.remove_prefix(1);
  return !suffix.empty() &&
         std::all_of(suffix.begin(), suffix.end(), [](char c) { return absl::ascii_isdigit(c); });
}

bool IsEnvName(absl::string_view s) {
  if (s.empty() || absl::ascii_isdigit(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

bool HasSpaceOrControl(absl::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return absl::ascii_isspace(c) || absl::ascii_iscntrl(c); });
}

absl::Status CheckName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("name is required");
  if (!IsDns1123Label(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "name \"", name,
        "\" is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending "
        "with a letter or digit, at most 63 characters)"));
  }
  return absl::OkStatus();
}

absl::Status CheckKind(absl::string_view kind) {
  if (kind.empty()) return absl::InvalidArgumentError("kind is required (team or mcp)");
  if (kind != "team" && kind != "mcp") {
    return absl::InvalidArgumentError(absl::StrCat("kind \"", kind, "\" must be team or mcp"));
  }
  return absl::OkStatus();
}

absl::Status CheckPort(int64_t port) {
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", port, " is not in 1..65535"));
  }
  return absl::OkStatus();
}

absl::Status CheckReplicas(int64_t replicas) {
  if (replicas < 0 || replicas > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("replicas ", replicas, " is not in 0..1000"));
  }
  return absl::OkStatus();
}

absl::Status CheckQuantity(absl::string_view field, absl::string_view value) {
  if (value.empty() || IsQuantity(value)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      field, " \"", value, "\" is not a Kubernetes quantity (e.g. 250m, 0.5, 128Mi, 1Gi)"));
}

absl::Status CheckEnvName(absl::string_view name) {
  if (IsEnvName(name)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("env name \"", name,
                   "\" must be letters, digits, '_', '-' or '.', not starting with a digit"));
}

absl::Status CheckLanguage(absl::string_view language) {
  if (language.empty() || language == "python" || language == "node" || language == "generic") {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("language \"", language, "\" must be python, node or generic"));
}

absl::Status CheckHealthPath(absl::string_view path) {
  if (path.empty() || (path[0] == '/' && !HasSpaceOrControl(path))) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("health_path \"", path, "\" must start with '/' and hold no spaces"));
}

absl::Status CheckNamespace(absl::string_view ns) {
  if (ns.empty() || IsDns1123Label(ns)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("namespace \"", ns, "\" is not a DNS-1123 label"));
}

absl::Status CheckPullSecret(absl::string_view secret) {
  if (secret.empty() || IsDns1123Subdomain(secret)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("image_pull_secret \"", secret, "\" is not a DNS-1123 subdomain"));
}

absl::Status CheckImage(absl::string_view image) {
  if (!HasSpaceOrControl(image)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("image \"", absl::CEscape(image), "\" must hold no spaces"));
}

absl::Status CheckCommand(const std::vector<std::string>& command) {
  if (!command.empty() && command[0].empty()) {
    return absl::InvalidArgumentError("command: the program (first argument) is empty");
  }
  return absl::OkStatus();
}

absl::Status ValidateSpec(const AppSpec& spec) {
  const std::vector<absl::Status> checks = {
      CheckName(spec.name),
      CheckKind(spec.kind),
      CheckPort(spec.port),
      CheckReplicas(spec.replicas),
      CheckQuantity("resources.requests.cpu", spec.cpu_request),
      CheckQuantity("resources.requests.memory", spec.memory_request),
      CheckQuantity("resources.limits.cpu", spec.cpu_limit),
      CheckQuantity("resources.limits.memory", spec.memory_limit),
      CheckCommand(spec.command),
      CheckImage(spec.image),
      CheckLanguage(spec.language),
      CheckPullSecret(spec.image_pull_secret),
      CheckNamespace(spec.namespace_),
      CheckHealthPath(spec.health_path),
  };
  for (const absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  for (const auto& [name, value] : spec.env) {
    if (absl::Status s = CheckEnvName(name); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Splits a command line as a POSIX shell splits words, honouring quotes and backslashes. A line
// using shell syntax (pipes, redirections, variables, ...) becomes ["/bin/sh", "-c", line].
absl::StatusOr<std::vector<std::string>> SplitCommand(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (line.empty()) return std::vector<std::string>();
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote == '\'') {
      if (c == '\'') {
        quote = 0;
      } else {
        word.push_back(c);
      }
      continue;
    }
    if (quote == '"') {
      if (c == '"') {
        quote = 0;
      } else if (c == '\\' && i + 1 < line.size() &&
                 absl::string_view("\"\\$`").find(line[i + 1]) != absl::string_view::npos) {
        word.push_back(line[++i]);
      } else if (c == '$' || c == '`') {
        return std::vector<std::string>{"/bin/sh", "-c", std::string(line)};
      } else {
        word.push_back(c);
      }
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\') {
      if (i + 1 == line.size()) {
        return absl::InvalidArgumentError("command ends with a lone backslash");
      }
      word.push_back(line[++i]);
      in_word = true;
    } else if (absl::ascii_isspace(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else if (absl::string_view("|&;<>()$`*?[#~").find(c) != absl::string_view::npos) {
      return std::vector<std::string>{"/bin/sh", "-c", std::string(line)};
    } else {
      word.push_back(c);
      in_word = true;
    }
  }
  if (quote != 0) return absl::InvalidArgumentError("command has an unterminated quote");
  if (in_word) words.push_back(std::move(word));
  return words;
}

std::string Where(absl::string_view source, const YAML::Mark& mark) {
  if (mark.is_null()) return std::string(source);
  return absl::StrCat(source, ":", mark.line + 1, ":", mark.column + 1);
}

absl::Status ErrorAt(absl::string_view source, const YAML::Mark& mark, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(Where(source, mark), ": ", message));
}

// Prefixes a validation error with where the value was written.
absl::Status At(absl::string_view source, const YAML::Mark& mark, absl::Status status) {
  if (status.ok()) return status;
  return ErrorAt(source, mark, status.message());
}

// The mark of `value`, or of its key when the value (e.g. null) carries none.
YAML::Mark MarkOf(const YAML::Node& value, const YAML::Node& key) {
  YAML::Mark mark = value.Mark();
  return mark.is_null() ? key.Mark() : mark;
}

using EntryFn = std::function<absl::Status(const std::string& key, const YAML::Node& key_node,
                                           const YAML::Node& value)>;

// Calls `fn` for each entry of the mapping `node` (a null node has none). Keys not in `known` and
// repeated keys are errors; `section` ("" or e.g. "resources") names the mapping in them.
absl::Status ForEachEntry(const YAML::Node& node, const YAML::Mark& mark, absl::string_view source,
                          absl::string_view section, const std::vector<absl::string_view>& known,
                          const EntryFn& fn) {
  if (!node.IsDefined() || node.IsNull()) return absl::OkStatus();
  if (!node.IsMap()) {
    return ErrorAt(source, mark,
                   absl::StrCat(section.empty() ? "the document" : section, " must be a mapping"));
  }
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const YAML::Node& key_node = entry.first;
    std::string key = key_node.IsScalar() ? key_node.Scalar() : std::string();
    std::string path = section.empty() ? key : absl::StrCat(section, ".", key);
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return ErrorAt(source, key_node.Mark(),
                     absl::StrCat("unknown key \"", path, "\" (known",
                                  section.empty() ? "" : absl::StrCat(" in ", section), ": ",
                                  absl::StrJoin(known, ", "), ")"));
    }
    if (!seen.insert(key).second) {
      return ErrorAt(source, key_node.Mark(), absl::StrCat("duplicate key \"", path, "\""));
    }
    if (absl::Status s = fn(key, key_node, entry.second); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Scalar(const YAML::Node& value, const YAML::Node& key,
                                   absl::string_view source, absl::string_view path) {
  if (value.IsNull()) return std::string();
  if (!value.IsScalar()) {
    return ErrorAt(source, MarkOf(value, key), absl::StrCat(path, " must be a string"));
  }
  return value.Scalar();
}

absl::StatusOr<int64_t> Integer(const YAML::Node& value, const YAML::Node& key,
                                absl::string_view source, absl::string_view path) {
  int64_t n = 0;
  if (!value.IsScalar() || !absl::SimpleAtoi(value.Scalar(), &n)) {
    return ErrorAt(
        source, MarkOf(value, key),
        absl::StrCat(path, " must be an integer",
                     value.IsScalar() ? absl::StrCat(", not \"", value.Scalar(), "\"") : ""));
  }
  return n;
}

absl::Status ParseResources(const YAML::Node& resources, const YAML::Node& key,
                            absl::string_view source, AppSpec& spec) {
  return ForEachEntry(
      resources, MarkOf(resources, key), source, "resources", {"requests", "limits"},
      [&](const std::string& group, const YAML::Node& group_key, const YAML::Node& values) {
        std::string section = absl::StrCat("resources.", group);
        return ForEachEntry(
            values, MarkOf(values, group_key), source, section, {"cpu", "memory"},
            [&](const std::string& name, const YAML::Node& name_key, const YAML::Node& value) {
              std::string path = absl::StrCat(section, ".", name);
              absl::StatusOr<std::string> q = Scalar(value, name_key, source, path);
              if (!q.ok()) return q.status();
              if (absl::Status s = CheckQuantity(path, *q); !s.ok()) {
                return At(source, MarkOf(value, name_key), s);
              }
              bool requests = group == "requests";
              std::string& field = name == "cpu"
                                       ? (requests ? spec.cpu_request : spec.cpu_limit)
                                       : (requests ? spec.memory_request : spec.memory_limit);
              field = *std::move(q);
              return absl::OkStatus();
            });
      });
}

absl::Status ParseEnv(const YAML::Node& env, const YAML::Node& key, absl::string_view source,
                      AppSpec& spec) {
  if (!env.IsDefined() || env.IsNull()) return absl::OkStatus();
  if (!env.IsMap()) return ErrorAt(source, MarkOf(env, key), "env must be a mapping");
  for (const auto& entry : env) {
    const YAML::Node& name_node = entry.first;
    std::string name = name_node.IsScalar() ? name_node.Scalar() : std::string();
    if (absl::Status s = CheckEnvName(name); !s.ok()) return At(source, name_node.Mark(), s);
    absl::StatusOr<std::string> value =
        Scalar(entry.second, name_node, source, absl::StrCat("env.", name));
    if (!value.ok()) return value.status();
    if (!spec.env.emplace(name, *std::move(value)).second) {
      return ErrorAt(source, name_node.Mark(), absl::StrCat("duplicate key \"env.", name, "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseCommand(const YAML::Node& command, const YAML::Node& key,
                          absl::string_view source, AppSpec& spec) {
  YAML::Mark mark = MarkOf(command, key);
  if (command.IsNull()) return absl::OkStatus();
  if (command.IsScalar()) {
    absl::StatusOr<std::vector<std::string>> words = SplitCommand(command.Scalar());
    if (!words.ok()) return At(source, mark, words.status());
    spec.command = *std::move(words);
  } else if (command.IsSequence()) {
    for (const YAML::Node& item : command) {
      if (!item.IsScalar()) {
        return ErrorAt(source, MarkOf(item, key), "command must be a list of strings");
      }
      spec.command.push_back(item.Scalar());
    }
  } else {
    return ErrorAt(source, mark, "command must be a list of strings or a string");
  }
  return At(source, mark, CheckCommand(spec.command));
}

absl::Status ParseTopLevelEntry(const std::string& key, const YAML::Node& key_node,
                                const YAML::Node& value, absl::string_view source, AppSpec& spec) {
  if (key == "env") return ParseEnv(value, key_node, source, spec);
  if (key == "resources") return ParseResources(value, key_node, source, spec);
  if (key == "command") return ParseCommand(value, key_node, source, spec);
  YAML::Mark mark = MarkOf(value, key_node);
  if (key == "port" || key == "replicas") {
    absl::StatusOr<int64_t> n = Integer(value, key_node, source, key);
    if (!n.ok()) return n.status();
    absl::Status check = key == "port" ? CheckPort(*n) : CheckReplicas(*n);
    if (!check.ok()) return At(source, mark, check);
    (key == "port" ? spec.port : spec.replicas) = static_cast<int>(*n);
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> text = Scalar(value, key_node, source, key);
  if (!text.ok()) return text.status();
  const std::map<std::string, std::pair<std::string*, absl::Status (*)(absl::string_view)>> fields =
      {
          {"name", {&spec.name, &CheckName}},
          {"kind", {&spec.kind, &CheckKind}},
          {"image", {&spec.image, &CheckImage}},
          {"language", {&spec.language, &CheckLanguage}},
          {"health_path", {&spec.health_path, &CheckHealthPath}},
          {"namespace", {&spec.namespace_, &CheckNamespace}},
          {"image_pull_secret", {&spec.image_pull_secret, &CheckPullSecret}},
      };
  auto it = fields.find(key);
  if (it == fields.end())
    return absl::InternalError(absl::StrCat("app.yaml key ", key, " unhandled"));
  const auto& [field, check] = it->second;
  *field = *std::move(text);
  return At(source, mark, check(*field));
}

absl::StatusOr<AppSpec> ParseAppYamlNode(const YAML::Node& root, absl::string_view source) {
  AppSpec spec;
  absl::Status status = ForEachEntry(
      root, root.Mark(), source, "",
      {"name", "kind", "port", "env", "resources", "command", "image", "language", "health_path",
       "namespace", "image_pull_secret", "replicas"},
      [&](const std::string& key, const YAML::Node& key_node, const YAML::Node& value) {
        return ParseTopLevelEntry(key, key_node, value, source, spec);
      });
  if (!status.ok()) return status;
  for (const absl::Status& s : {CheckName(spec.name), CheckKind(spec.kind)}) {
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  }
  return spec;
}

absl::StatusOr<AppSpec> ParseAppYaml(const std::string& text, absl::string_view source) {
  try {
    YAML::Node root = YAML::Load(text);
    return ParseAppYamlNode(root, source);
  } catch (const YAML::Exception& e) {
    return ErrorAt(source, e.mark, absl::StrCat("malformed YAML: ", e.msg));
  }
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

absl::StatusOr<std::string> ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat(path.string(), ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat(path.string(), ": read failed"));
  return text.str();
}

// `root/relative` once its real location is known to lie inside `root` (canonical).
absl::StatusOr<fs::path> InsideRoot(const fs::path& root, absl::string_view relative) {
  fs::path path = root / fs::path(std::string(relative));
  std::error_code ec;
  fs::path real = fs::weakly_canonical(path, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(path.string(), ": cannot resolve: ", ec.message()));
  }
  fs::path rel = real.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..") {
    return absl::InvalidArgumentError(absl::StrCat(relative, " resolves to ", real.string(),
                                                   ", outside the app folder ", root.string()));
  }
  return path;
}

absl::StatusOr<fs::path> CanonicalAppDir(const std::string& app_dir) {
  if (app_dir.empty()) return absl::InvalidArgumentError("app_dir is required");
  std::error_code ec;
  fs::file_status status = fs::status(app_dir, ec);
  if (!fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat("app_dir ", app_dir, " does not exist"));
  }
  if (!fs::is_directory(status)) {
    return absl::NotFoundError(absl::StrCat("app_dir ", app_dir, " is not a directory"));
  }
  fs::path root = fs::canonical(app_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("app_dir ", app_dir, ": cannot resolve: ", ec.message()));
  }
  return root;
}

bool SkippedDirectory(const std::string& name) {
  return name.empty() || name[0] == '.' || name == "__pycache__" || name == "node_modules" ||
         name == "venv" || name == "env" || name == "site-packages";
}

AppFiles ScanApp(const fs::path& root) {
  AppFiles files;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  int visited = 0;
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (++visited > kMaxScannedFiles) break;
    const fs::directory_entry& entry = *it;
    std::string name = entry.path().filename().string();
    std::error_code entry_ec;
    fs::file_status status = entry.symlink_status(entry_ec);
    if (entry_ec || fs::is_symlink(status)) continue;
    bool top = it.depth() == 0;
    if (fs::is_directory(status)) {
      if (SkippedDirectory(name)) {
        it.disable_recursion_pending();
      } else if (top) {
        files.local_modules.insert(name);
      }
      continue;
    }
    if (!fs::is_regular_file(status)) continue;
    if (top) {
      files.top_level_files.push_back(name);
      if (name == kRequirements) files.has_requirements = true;
      if (name == "package.json") files.has_package_json = true;
      if (name == "package-lock.json") files.has_package_lock = true;
    }
    if (absl::EndsWith(name, ".py")) {
      files.python_files.push_back(entry.path().lexically_relative(root).generic_string());
      if (top) files.local_modules.insert(name.substr(0, name.size() - 3));
    }
  }
  std::sort(files.top_level_files.begin(), files.top_level_files.end());
  std::sort(files.python_files.begin(), files.python_files.end());
  return files;
}

bool HasTopLevelFile(const AppFiles& files, absl::string_view name) {
  return std::binary_search(files.top_level_files.begin(), files.top_level_files.end(), name);
}

std::vector<std::string> DefaultCommand(const AppSpec& spec, const AppFiles& files) {
  if (spec.language == "python") {
    for (absl::string_view entry : kPythonEntryPoints) {
      if (HasTopLevelFile(files, entry)) return {"python", std::string(entry)};
    }
    std::vector<std::string> top_py;
    for (const std::string& f : files.top_level_files) {
      if (absl::EndsWith(f, ".py")) top_py.push_back(f);
    }
    if (top_py.size() == 1) return {"python", top_py[0]};
  } else if (spec.language == "node") {
    for (absl::string_view entry : kNodeEntryPoints) {
      if (HasTopLevelFile(files, entry)) return {"node", std::string(entry)};
    }
    if (files.has_package_json) return {"npm", "start"};
  }
  return {};
}

absl::StatusOr<AppSpec> Resolve(AppSpec spec, const AppFiles& files) {
  if (absl::Status s = ValidateSpec(spec); !s.ok()) return s;
  if (spec.image.empty()) spec.image = absl::StrCat("elf-automations/", spec.name, ":latest");
  if (spec.language.empty()) {
    if (files.has_requirements || !files.python_files.empty()) {
      spec.language = "python";
    } else if (files.has_package_json) {
      spec.language = "node";
    } else {
      spec.language = "generic";
    }
  }
  if (spec.cpu_request.empty()) spec.cpu_request = kDefaultCpuRequest;
  if (spec.memory_request.empty()) spec.memory_request = kDefaultMemoryRequest;
  if (spec.cpu_limit.empty()) spec.cpu_limit = kDefaultCpuLimit;
  if (spec.memory_limit.empty()) spec.memory_limit = kDefaultMemoryLimit;
  if (spec.image_pull_secret.empty()) spec.image_pull_secret = "regcred";
  if (spec.health_path.empty()) spec.health_path = "/health";
  if (spec.replicas == 0) spec.replicas = 1;
  if (spec.command.empty()) spec.command = DefaultCommand(spec, files);
  return spec;
}

absl::StatusOr<AppSpec> LoadFromRoot(const fs::path& root, const AppFiles& files) {
  absl::StatusOr<fs::path> path = InsideRoot(root, kAppYaml);
  if (!path.ok()) return path.status();
  std::error_code ec;
  if (!fs::is_regular_file(*path, ec)) {
    return absl::NotFoundError(absl::StrCat(path->string(), " does not exist"));
  }
  absl::StatusOr<std::string> text = ReadWholeFile(*path);
  if (!text.ok()) return text.status();
  absl::StatusOr<AppSpec> spec = ParseAppYaml(*text, path->string());
  if (!spec.ok()) return spec.status();
  absl::StatusOr<AppSpec> resolved = Resolve(*std::move(spec), files);
  if (!resolved.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path->string(), ": ", resolved.status().message()));
  }
  return resolved;
}

// Replaces `path` with `content` through a temporary file in the same directory.
absl::Status WriteFileAtomically(const fs::path& path, absl::string_view content) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(path.parent_path().string(), ": cannot create: ", ec.message()));
  }
  std::string tmp = absl::StrCat(path.string(), ".elfdeploy-XXXXXX");
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", ErrnoText(errno)));
  }
  auto fail = [&](absl::string_view what) {
    std::string message = absl::StrCat(tmp, ": ", what, ": ", ErrnoText(errno));
    ::close(fd);
    ::unlink(tmp.c_str());
    return absl::InternalError(message);
  };
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write failed");
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) return fail("chmod failed");
  if (::close(fd) != 0) {
    std::string message = absl::StrCat(tmp, ": close failed: ", ErrnoText(errno));
    ::unlink(tmp.c_str());
    return absl::InternalError(message);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string message = absl::StrCat(path.string(), ": cannot replace: ", ErrnoText(errno));
    ::unlink(tmp.c_str());
    return absl::InternalError(message);
  }
  return absl::OkStatus();
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\r':
        out.append("\\r");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out.append(absl::StrFormat("\\u%04x", static_cast<unsigned char>(c)));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

std::string ExecForm(const std::vector<std::string>& args) {
  std::vector<std::string> quoted;
  quoted.reserve(args.size());
  for (const std::string& a : args) quoted.push_back(JsonQuote(a));
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

absl::StatusOr<std::string> GenerateDockerfile(const AppSpec& spec, const AppFiles& files) {
  if (spec.command.empty()) {
    std::string looked_for;
    if (spec.language == "python") {
      looked_for = absl::StrCat(" (looked for ", absl::StrJoin(kPythonEntryPoints, ", "),
                                " or a single top-level .py file)");
    } else if (spec.language == "node") {
      looked_for =
          absl::StrCat(" (looked for ", absl::StrJoin(kNodeEntryPoints, ", "), " or package.json)");
    }
    return absl::InvalidArgumentError(absl::StrCat("command is not set and no entry point of a ",
                                                   spec.language, " app was found", looked_for,
                                                   "; set command in app.yaml"));
  }
  std::string out;
  if (spec.language == "python") {
    absl::StrAppend(&out, "FROM ", kPythonBase, "\n\n",
                    "ENV PYTHONDONTWRITEBYTECODE=1 \\\n    PYTHONUNBUFFERED=1\n\n",
                    "WORKDIR /app\n\n", "COPY requirements.txt .\n",
                    "RUN pip install --no-cache-dir -r requirements.txt\n\n", "COPY . .\n\n",
                    "USER ", kNonRootUser, "\n");
  } else if (spec.language == "node") {
    absl::StrAppend(&out, "FROM ", kNodeBase, "\n\n", "ENV NODE_ENV=production\n\n",
                    "WORKDIR /app\n\n");
    if (files.has_package_json) {
      absl::StrAppend(&out, "COPY package*.json ./\n", "RUN ",
                      files.has_package_lock ? "npm ci --omit=dev" : "npm install --omit=dev",
                      "\n\n");
    }
    absl::StrAppend(&out, "COPY . .\n\n", "USER node\n");
  } else {
    absl::StrAppend(&out, "FROM ", kGenericBase, "\n\n", "WORKDIR /app\n\n", "COPY . .\n\n",
                    "USER ", kNonRootUser, "\n");
  }
  absl::StrAppend(&out, "EXPOSE ", spec.port, "\n\n", "CMD ", ExecForm(spec.command), "\n");
  return out;
}

// Top-level modules imported by Python source, ignoring relative imports and docstrings.
void CollectImports(absl::string_view source, std::set<std::string>& modules) {
  absl::string_view doc_delimiter;
  for (absl::string_view line : absl::StrSplit(source, '\n')) {
    if (!doc_delimiter.empty()) {
      if (absl::StrContains(line, doc_delimiter)) doc_delimiter = {};
      continue;
    }
    absl::string_view code = line.substr(0, line.find('#'));
    for (absl::string_view statement : absl::StrSplit(code, ';')) {
      statement = absl::StripAsciiWhitespace(statement);
      std::vector<absl::string_view> names;
      if (absl::ConsumePrefix(&statement, "import ")) {
        for (absl::string_view item : absl::StrSplit(statement, ',')) {
          names.push_back(absl::StripAsciiWhitespace(item));
        }
      } else if (absl::ConsumePrefix(&statement, "from ")) {
        statement = absl::StripLeadingAsciiWhitespace(statement);
        absl::string_view module = statement.substr(0, statement.find_first_of(" \t"));
        absl::string_view rest = absl::StripLeadingAsciiWhitespace(statement.substr(module.size()));
        if (absl::StartsWith(rest, "import")) names.push_back(module);
      }
      for (absl::string_view name : names) {
        name = name.substr(0, name.find_first_of(" \t.()\\"));
        if (name.empty() || absl::ascii_isdigit(name[0])) continue;
        if (std::all_of(name.begin(), name.end(),
                        [](char c) { return absl::ascii_isalnum(c) || c == '_'; })) {
          modules.emplace(name.data(), name.size());
        }
      }
    }
    for (absl::string_view delimiter : {absl::string_view("\"\"\""), absl::string_view("'''")}) {
      size_t count = 0;
      for (size_t pos = line.find(delimiter); pos != absl::string_view::npos;
           pos = line.find(delimiter, pos + delimiter.size())) {
        ++count;
      }
      if (count % 2 == 1) {
        doc_delimiter = delimiter;
        break;
      }
    }
  }
}

absl::StatusOr<std::string> GenerateRequirements(const fs::path& root, const AppSpec& spec,
                                                 const AppFiles& files) {
  std::set<std::string> modules;
  for (const std::string& relative : files.python_files) {
    fs::path path = root / relative;
    std::error_code ec;
    std::uintmax_t size = fs::file_size(path, ec);
    if (ec || size > kMaxScannedFileBytes) continue;
    absl::StatusOr<std::string> text = ReadWholeFile(path);
    if (!text.ok()) return text.status();
    CollectImports(*text, modules);
  }
  std::set<std::string> packages;
  if (spec.kind == "team") {
    packages.insert("fastapi");
    packages.insert("uvicorn");
  }
  for (const std::string& module : modules) {
    if (files.local_modules.contains(module)) continue;
    auto it = std::lower_bound(
        std::begin(kPythonPackages), std::end(kPythonPackages), module,
        [](const auto& entry, const std::string& m) { return entry.first < absl::string_view(m); });
    if (it != std::end(kPythonPackages) && it->first == module) {
      packages.emplace(it->second.data(), it->second.size());
    }
  }
  std::string out;
  for (const std::string& p : packages) absl::StrAppend(&out, p, "\n");
  return out;
}

absl::StatusOr<std::string> GenerateDeployment(const AppSpec& spec) {
  const std::vector<std::pair<std::string, std::string>> labels = {
      {"app.kubernetes.io/name", spec.name},
      {"app.kubernetes.io/component", spec.kind},
      {"app.kubernetes.io/part-of", kPartOf},
  };
  auto emit_labels = [&labels](YAML::Emitter& out) {
    out << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : labels) out << YAML::Key << k << YAML::Value << v;
    out << YAML::EndMap;
  };
  auto emit_probe = [&spec](YAML::Emitter& out, absl::string_view name, int delay, int period) {
    out << YAML::Key << std::string(name) << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "httpGet" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "path" << YAML::Value << spec.health_path;
    out << YAML::Key << "port" << YAML::Value << spec.port;
    out << YAML::EndMap;
    out << YAML::Key << "initialDelaySeconds" << YAML::Value << delay;
    out << YAML::Key << "periodSeconds" << YAML::Value << period;
    out << YAML::Key << "timeoutSeconds" << YAML::Value << 3;
    out << YAML::Key << "failureThreshold" << YAML::Value << 3;
    out << YAML::EndMap;
  };
  auto emit_quantities = [](YAML::Emitter& out, absl::string_view name, const std::string& cpu,
                            const std::string& memory) {
    out << YAML::Key << std::string(name) << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "cpu" << YAML::Value << YAML::DoubleQuoted << cpu;
    out << YAML::Key << "memory" << YAML::Value << YAML::DoubleQuoted << memory;
    out << YAML::EndMap;
  };

  YAML::Emitter out;
  out.SetIndent(2);
  out << YAML::BeginMap;
  out << YAML::Key << "apiVersion" << YAML::Value << "apps/v1";
  out << YAML::Key << "kind" << YAML::Value << "Deployment";
  out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << spec.name;
  if (!spec.namespace_.empty()) {
    out << YAML::Key << "namespace" << YAML::Value << spec.namespace_;
  }
  emit_labels(out);
  out << YAML::EndMap;

  out << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "replicas" << YAML::Value << spec.replicas;
  out << YAML::Key << "selector" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "matchLabels" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "app.kubernetes.io/name" << YAML::Value << spec.name;
  out << YAML::EndMap << YAML::EndMap;

  out << YAML::Key << "template" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  emit_labels(out);
  out << YAML::EndMap;
  out << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "imagePullSecrets" << YAML::Value << YAML::BeginSeq;
  out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << spec.image_pull_secret
      << YAML::EndMap;
  out << YAML::EndSeq;
  out << YAML::Key << "containers" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << spec.name;
  out << YAML::Key << "image" << YAML::Value << spec.image;
  out << YAML::Key << "ports" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << "http";
  out << YAML::Key << "containerPort" << YAML::Value << spec.port;
  out << YAML::Key << "protocol" << YAML::Value << "TCP";
  out << YAML::EndMap << YAML::EndSeq;
  if (!spec.env.empty()) {
    out << YAML::Key << "env" << YAML::Value << YAML::BeginSeq;
    for (const auto& [name, value] : spec.env) {
      out << YAML::BeginMap;
      out << YAML::Key << "name" << YAML::Value << name;
      out << YAML::Key << "value" << YAML::Value << YAML::DoubleQuoted << value;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::Key << "resources" << YAML::Value << YAML::BeginMap;
  emit_quantities(out, "requests", spec.cpu_request, spec.memory_request);
  emit_quantities(out, "limits", spec.cpu_limit, spec.memory_limit);
  out << YAML::EndMap;
  emit_probe(out, "readinessProbe", 5, 10);
  emit_probe(out, "livenessProbe", 15, 20);
  out << YAML::EndMap << YAML::EndSeq;
  out << YAML::EndMap;
  out << YAML::EndMap;
  out << YAML::EndMap;
  out << YAML::EndMap;

  if (!out.good()) {
    return absl::InternalError(
        absl::StrCat("emitting the deployment failed: ", out.GetLastError()));
  }
  return absl::StrCat(out.c_str(), "\n");
}

}  // namespace

absl::StatusOr<AppSpec> LoadAppSpec(const std::string& app_dir) {
  absl::StatusOr<fs::path> root = CanonicalAppDir(app_dir);
  if (!root.ok()) return root.status();
  return LoadFromRoot(*root, ScanApp(*root));
}

absl::StatusOr<AppSpec> ResolveAppSpec(const std::string& app_dir, AppSpec spec) {
  absl::StatusOr<fs::path> root = CanonicalAppDir(app_dir);
  if (!root.ok()) return root.status();
  return Resolve(std::move(spec), ScanApp(*root));
}

absl::StatusOr<std::vector<ScaffoldFile>> Scaffold(const ScaffoldOptions& options) {
  absl::StatusOr<fs::path> root = CanonicalAppDir(options.app_dir);
  if (!root.ok()) return root.status();
  AppFiles files = ScanApp(*root);
  absl::StatusOr<AppSpec> spec =
      options.spec.has_value() ? Resolve(*options.spec, files) : LoadFromRoot(*root, files);
  if (!spec.ok()) return spec.status();

  std::vector<absl::string_view> targets = {kDockerfile};
  if (spec->language == "python") targets.push_back(kRequirements);
  targets.push_back(kDeployment);

  std::vector<ScaffoldFile> result;
  std::vector<fs::path> paths;
  for (absl::string_view target : targets) {
    absl::StatusOr<fs::path> path = InsideRoot(*root, target);
    if (!path.ok()) return path.status();
    std::error_code ec;
    fs::file_status status = fs::status(*path, ec);
    bool exists = fs::exists(status);
    if (exists && !fs::is_regular_file(status)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path->string(), " exists and is not a regular file"));
    }
    ScaffoldFile file;
    file.path = std::string(target);
    if (exists && !options.overwrite) {
      absl::StatusOr<std::string> existing = ReadWholeFile(*path);
      if (!existing.ok()) return existing.status();
      file.action = ScaffoldFile::Action::kKept;
      file.content = *std::move(existing);
    } else {
      absl::StatusOr<std::string> content;
      if (target == kDockerfile) {
        content = GenerateDockerfile(*spec, files);
      } else if (target == kRequirements) {
        content = GenerateRequirements(*root, *spec, files);
      } else {
        content = GenerateDeployment(*spec);
      }
      if (!content.ok()) return content.status();
      file.action = exists ? ScaffoldFile::Action::kOverwritten : ScaffoldFile::Action::kCreated;
      file.content = *std::move(content);
    }
    result.push_back(std::move(file));
    paths.push_back(*std::move(path));
  }

  if (!options.dry_run) {
    for (size_t i = 0; i < result.size(); ++i) {
      if (result[i].action == ScaffoldFile::Action::kKept) continue;
      if (absl::Status s = WriteFileAtomically(paths[i], result[i].content); !s.ok()) return s;
    }
  }
  return result;
}

}  // namespace elfdeploy::builder
