#include "services/manifest_publisher/render.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "services/common/k8s_names.h"
#include "services/manifest_publisher/yaml_tree.h"

namespace elfdeploy::publisher {
namespace {

constexpr std::size_t kMaxManifestBytes = std::size_t{1} << 20;
constexpr std::uint64_t kMaxExpandedNodes = 100000;
constexpr int kMaxDepth = 256;
constexpr char kNameLabel[] = "app.kubernetes.io/name";
constexpr char kPartOfLabel[] = "app.kubernetes.io/part-of";
constexpr char kManagedByLabel[] = "app.kubernetes.io/managed-by";
constexpr char kManagedBy[] = "elfdeploy";
constexpr char kKustomizeApiVersion[] = "kustomize.config.k8s.io/v1beta1";
constexpr char kNoCredential[] =
    "no credential enters the GitOps repo: keep it in a Secret in the cluster and reference "
    "that Secret by name";

#define RENDER_RETURN_IF_ERROR(expr)   \
  do {                                 \
    absl::Status _status = (expr);     \
    if (!_status.ok()) return _status; \
  } while (false)

// ---------------------------------------------------------------------------------------------
// Names, scalars and image references
// ---------------------------------------------------------------------------------------------

bool HasControlOrSpace(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool IsYamlReservedWord(absl::string_view s) {
  static constexpr absl::string_view kWords[] = {"y",     "n",  "yes", "no",   "true",
                                                 "false", "on", "off", "null", "~"};
  const std::string lower = absl::AsciiStrToLower(s);
  for (absl::string_view word : kWords) {
    if (lower == word) return true;
  }
  return false;
}

// True when `s` written as a plain scalar would not read back as the same string.
bool NeedsQuotes(absl::string_view s, bool flow) {
  if (s.empty() || IsYamlReservedWord(s)) return true;
  const char first = s.front();
  if (!absl::ascii_isalpha(first) && first != '_' && first != '/') return true;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/' || c == '@' ||
        c == '+' || c == '=') {
      continue;
    }
    if (c == ':' && !flow && i + 1 < s.size()) continue;
    return true;
  }
  return false;
}

std::string Str(absl::string_view s) { return std::string(s.data(), s.size()); }

std::string DoubleQuote(absl::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"";
  return out;
}

std::string SingleQuote(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return DoubleQuote(s);
  }
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += "'";
  return out;
}

enum class QuoteStyle { kPlain, kSingle, kDouble };

std::string FormatScalar(absl::string_view value, QuoteStyle style, bool flow) {
  switch (style) {
    case QuoteStyle::kDouble:
      return DoubleQuote(value);
    case QuoteStyle::kSingle:
      return SingleQuote(value);
    case QuoteStyle::kPlain:
      break;
  }
  return NeedsQuotes(value, flow) ? DoubleQuote(value) : Str(value);
}

// Repository path of an image reference: registry host, tag and digest removed; Docker Hub
// official images get their implicit "library/".
std::string RepoPath(absl::string_view ref) {
  const std::size_t at = ref.find('@');
  if (at != absl::string_view::npos) ref = ref.substr(0, at);
  const std::size_t slash = ref.rfind('/');
  const std::size_t colon = ref.rfind(':');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    ref = ref.substr(0, colon);
  }
  const std::size_t first = ref.find('/');
  if (first != absl::string_view::npos) {
    const absl::string_view host = ref.substr(0, first);
    if (absl::StrContains(host, '.') || absl::StrContains(host, ':') || host == "localhost") {
      ref = ref.substr(first + 1);
    }
  }
  if (!absl::StrContains(ref, '/')) return absl::StrCat("library/", ref);
  return Str(ref);
}

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return !s.empty();
}

// Empty when `image` is a reference pinned by digest, else the problem.
std::string ImageProblem(absl::string_view image) {
  if (image.empty()) return "image is required";
  if (HasControlOrSpace(image)) return absl::StrCat("image \"", image, "\" contains whitespace");
  const std::size_t at = image.find('@');
  if (at == absl::string_view::npos) {
    return absl::StrCat("image \"", image,
                        "\" has no digest; pin it as <registry>/<repo>:<tag>@sha256:<hex>");
  }
  const absl::string_view name = image.substr(0, at);
  const absl::string_view digest = image.substr(at + 1);
  const bool sha256 = absl::StartsWith(digest, "sha256:") && digest.size() == 7 + 64 &&
                      IsLowerHex(digest.substr(7));
  const bool sha512 = absl::StartsWith(digest, "sha512:") && digest.size() == 7 + 128 &&
                      IsLowerHex(digest.substr(7));
  if (!sha256 && !sha512) {
    return absl::StrCat("image \"", image, "\" has an invalid digest \"", digest, "\"");
  }
  if (name.empty() || name.front() == '/' || name.back() == '/' || name.back() == ':' ||
      absl::StrContains(name, "//")) {
    return absl::StrCat("image \"", image, "\" has an invalid repository");
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != '/' && c != ':') {
      return absl::StrCat("image \"", image, "\" has an invalid repository");
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

std::vector<std::string> KeyWords(absl::string_view key) {
  std::vector<std::string> words;
  std::string cur;
  for (std::size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    if (!absl::ascii_isalnum(c)) {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (absl::ascii_isupper(c) && i > 0 && absl::ascii_islower(key[i - 1]) && !cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
    cur.push_back(absl::ascii_tolower(c));
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

bool LooksLikeCredentialKey(absl::string_view key) {
  const std::vector<std::string> words = KeyWords(key);
  if (words.empty()) return false;
  const std::string joined = absl::StrJoin(words, "");
  if (absl::StrContains(joined, "dockerconfigjson") || absl::StrContains(joined, "dockercfg")) {
    return true;
  }
  static const std::set<std::string> kQualifiers = {"file",  "path", "name", "ref", "dir",
                                                    "mount", "id",   "url",  "uri", "endpoint"};
  if (kQualifiers.contains(words.back())) return false;
  static const std::set<std::string> kAnywhere = {"password", "passwd",     "passphrase",
                                                  "secret",   "credential", "credentials",
                                                  "apikey",   "privatekey", "accesskey"};
  for (const std::string& w : words) {
    if (kAnywhere.contains(w)) return true;
  }
  const std::string& last = words.back();
  if (last == "token" || last == "pat") return true;
  if (last == "key" && words.size() >= 2) {
    static const std::set<std::string> kKeyKinds = {"api",     "access",     "private", "signing",
                                                    "ssh",     "encryption", "master",  "client",
                                                    "account", "service"};
    if (kKeyKinds.contains(words[words.size() - 2])) return true;
  }
  return false;
}

bool LooksLikeCredentialValue(absl::string_view value) {
  if (absl::StrContains(value, "-----BEGIN") && absl::StrContains(value, "PRIVATE KEY")) {
    return true;
  }
  if (absl::StrContains(value, "\"auths\"")) return true;
  static constexpr absl::string_view kPrefixes[] = {
      "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xoxb-", "xoxp-", "sk-ant-"};
  for (absl::string_view prefix : kPrefixes) {
    if (absl::StartsWith(value, prefix) && value.size() > prefix.size() + 8) return true;
  }
  if (absl::StartsWith(value, "sk-") && value.size() >= 23 && !HasControlOrSpace(value)) {
    return true;
  }
  if (value.size() == 20 && absl::StartsWith(value, "AKIA")) {
    bool all = true;
    for (char c : value) all = all && (absl::ascii_isupper(c) || absl::ascii_isdigit(c));
    if (all) return true;
  }
  const std::size_t scheme = value.find("://");
  if (scheme != absl::string_view::npos) {
    absl::string_view rest = value.substr(scheme + 3);
    rest = rest.substr(0, std::min(rest.find('/'), rest.size()));
    const std::size_t at = rest.rfind('@');
    if (at != absl::string_view::npos && absl::StrContains(rest.substr(0, at), ':')) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

using yaml::Where;

// A YAML stream: its text (marks index into it) and its non-empty documents.
struct Manifest {
  std::string bom;
  std::string text;
  std::unique_ptr<yaml::Stream> stream;  // owns the nodes of `docs`
  std::vector<yaml::Node> docs;
};

// Parses an app manifest; `own_output` skips the input limits for text this file produced.
absl::StatusOr<Manifest> ParseManifest(absl::string_view input, bool own_output = false) {
  if (!own_output && input.size() > kMaxManifestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("larger than ", kMaxManifestBytes, " bytes"));
  }
  if (absl::StrContains(input, '\0')) {
    return absl::InvalidArgumentError("not UTF-8 text (contains NUL bytes)");
  }
  Manifest manifest;
  if (absl::StartsWith(input, "\xEF\xBB\xBF")) {
    manifest.bom = "\xEF\xBB\xBF";
    input.remove_prefix(3);
  }
  manifest.text = Str(input);
  absl::StatusOr<std::unique_ptr<yaml::Stream>> stream = yaml::Stream::Parse(
      manifest.text,
      yaml::ParseOptions{.max_depth = kMaxDepth, .max_expanded_nodes = kMaxExpandedNodes});
  if (!stream.ok()) return stream.status();
  manifest.stream = *std::move(stream);
  for (const yaml::Node& doc : manifest.stream->documents()) {
    if (doc.IsNull()) continue;
    if (!doc.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat("document at ", Where(doc.mark()), " is not a mapping"));
    }
    manifest.docs.push_back(doc);
  }
  return manifest;
}

struct Entry {
  yaml::Node key;
  yaml::Node value;
};

std::optional<Entry> Find(const yaml::Node& map, absl::string_view key) {
  for (std::size_t i = 0; i < map.size(); ++i) {
    const yaml::Node k = map.Key(i);
    if (k.IsScalar() && k.Scalar() == key) return Entry{k, map.Value(i)};
  }
  return std::nullopt;
}

yaml::Node FindPath(const yaml::Node& node, std::initializer_list<absl::string_view> path) {
  yaml::Node cur = node;
  for (absl::string_view key : path) {
    std::optional<Entry> e = Find(cur, key);
    if (!e) return yaml::Node();
    cur = e->value;
  }
  return cur;
}

std::string ScalarAt(const yaml::Node& map, absl::string_view key) {
  std::optional<Entry> e = Find(map, key);
  return e && e->value.IsScalar() ? e->value.Scalar() : std::string();
}

std::vector<yaml::Node> Items(const yaml::Node& seq) {
  std::vector<yaml::Node> items;
  items.reserve(seq.size());
  for (std::size_t i = 0; i < seq.size(); ++i) items.push_back(seq.Item(i));
  return items;
}

// Containers and init containers of a Deployment's pod template.
std::vector<yaml::Node> PodContainers(const yaml::Node& deployment, bool with_init) {
  std::vector<yaml::Node> out;
  const yaml::Node pod = FindPath(deployment, {"spec", "template", "spec"});
  for (absl::string_view list :
       {absl::string_view("containers"), absl::string_view("initContainers")}) {
    if (list == "initContainers" && !with_init) continue;
    std::optional<Entry> e = Find(pod, list);
    if (!e) continue;
    for (const yaml::Node& c : Items(e->value)) {
      if (c.IsMap()) out.push_back(c);
    }
  }
  return out;
}

// INVALID_ARGUMENT when a document of `manifest`, or an item of a List document, is a Secret.
absl::Status CheckNoSecret(const Manifest& manifest) {
  for (const yaml::Node& doc : manifest.docs) {
    std::vector<yaml::Node> objects = {doc};
    for (const yaml::Node& item : Items(FindPath(doc, {"items"}))) objects.push_back(item);
    for (const yaml::Node& obj : objects) {
      if (ScalarAt(obj, "kind") == "Secret") {
        return absl::InvalidArgumentError(
            absl::StrCat("contains a Secret \"", ScalarAt(FindPath(obj, {"metadata"}), "name"),
                         "\" at ", Where(obj.mark()), "; ", kNoCredential));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckConfigEntry(absl::string_view what, absl::string_view key,
                              absl::string_view value) {
  if (LooksLikeCredentialKey(key)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", key, "\" looks like a credential; ", kNoCredential));
  }
  if (LooksLikeCredentialValue(value)) {
    return absl::InvalidArgumentError(absl::StrCat("the value of ", what, " \"", key,
                                                   "\" looks like a credential; ", kNoCredential));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// In-place editing
// ---------------------------------------------------------------------------------------------

// What elfdeploy owns in a document: scalars to set, mappings to descend into (created when
// missing), a list that must hold {name: value}, and container lists whose matching images
// are replaced.
struct Patch {
  enum class Kind { kScalar, kMap, kNamedItem, kImages };
  Kind kind = Kind::kMap;
  // Key of the entry this patch applies to in its parent mapping.
  std::string key;
  std::string value;
  std::vector<Patch> children;
  // kMap: new entries go after this entry's line when the mapping has it.
  std::string after_key;
};

Patch ScalarPatch(std::string key, std::string value) {
  Patch p;
  p.kind = Patch::Kind::kScalar;
  p.key = std::move(key);
  p.value = std::move(value);
  return p;
}

Patch MapPatch(std::string key, std::vector<Patch> children, std::string after_key = "") {
  Patch p;
  p.kind = Patch::Kind::kMap;
  p.key = std::move(key);
  p.children = std::move(children);
  p.after_key = std::move(after_key);
  return p;
}

Patch NamedItemPatch(std::string key, std::string name) {
  Patch p;
  p.kind = Patch::Kind::kNamedItem;
  p.key = std::move(key);
  p.value = std::move(name);
  return p;
}

Patch ImagesPatch(std::string key) {
  Patch p;
  p.kind = Patch::Kind::kImages;
  p.key = std::move(key);
  return p;
}

struct Span {
  std::size_t begin;
  std::size_t end;
};

bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsBreak(char c) { return c == '\n' || c == '\r'; }

// Splices owned values into one YAML text. Positions come from the parser's node marks.
class Editor {
 public:
  Editor(const std::string& text, std::set<std::string> match_repos, std::string image)
      : s_(text), match_repos_(std::move(match_repos)), image_(std::move(image)) {
    nl_ = absl::StrContains(text, "\r\n") ? "\r\n" : "\n";
  }

  // Applies `patch` to the document `root` (a mapping).
  absl::Status ApplyDocument(const yaml::Node& root, const Patch& patch) {
    DetectStyle(root);
    std::optional<Entry> first = FirstEntry(root);
    json_ = root.IsFlow() && first && CharAt(first->key.mark().pos) == '"';
    return ApplyMap(root, patch, Ctx{false, 0, ""});
  }

  absl::StatusOr<std::string> Result() const {
    std::vector<const Edit*> order;
    order.reserve(edits_.size());
    for (const Edit& e : edits_) order.push_back(&e);
    std::stable_sort(order.begin(), order.end(), [](const Edit* a, const Edit* b) {
      if (a->begin != b->begin) return a->begin < b->begin;
      const bool a_insert = a->begin == a->end;
      const bool b_insert = b->begin == b->end;
      if (a_insert != b_insert) return a_insert;
      return a->depth > b->depth;
    });
    std::string out;
    out.reserve(s_.size() + 256);
    std::size_t pos = 0;
    for (const Edit* e : order) {
      if (e->begin < pos || e->end > s_.size()) {
        return absl::InternalError("overlapping in-place edits");
      }
      out.append(s_, pos, e->begin - pos);
      out += e->text;
      pos = e->end;
    }
    out.append(s_, pos, std::string::npos);
    return out;
  }

 private:
  struct Ctx {
    bool flow;
    int depth;
    std::string path;
  };
  struct Edit {
    std::size_t begin;
    std::size_t end;
    int depth;
    std::string text;
  };

  static std::optional<Entry> FirstEntry(const yaml::Node& map) {
    if (map.size() == 0) return std::nullopt;
    return Entry{map.Key(0), map.Value(0)};
  }
  static std::optional<Entry> LastEntry(const yaml::Node& map) {
    if (map.size() == 0) return std::nullopt;
    return Entry{map.Key(map.size() - 1), map.Value(map.size() - 1)};
  }

  char CharAt(int pos) const {
    if (pos < 0 || static_cast<std::size_t>(pos) >= s_.size()) return '\0';
    return s_[static_cast<std::size_t>(pos)];
  }

  absl::StatusOr<std::size_t> PosOf(const yaml::Node& node) const {
    const int pos = node.mark().pos;
    if (pos < 0 || static_cast<std::size_t>(pos) > s_.size()) {
      return absl::InternalError("YAML node without a position");
    }
    return static_cast<std::size_t>(pos);
  }

  static absl::Status Unlocatable(const yaml::Node& node, absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot edit ", what, " at ", Where(node.mark()), " in place"));
  }

  void DetectStyle(const yaml::Node& root) {
    step_ = 2;
    seq_indent_ = 0;
    bool step_found = false;
    bool seq_found = false;
    std::vector<yaml::Node> todo = {root};
    while (!todo.empty() && !(step_found && seq_found)) {
      const yaml::Node node = todo.back();
      todo.pop_back();
      if (node.IsSequence()) {
        const std::vector<yaml::Node> items = Items(node);
        todo.insert(todo.end(), items.rbegin(), items.rend());
        continue;
      }
      if (!node.IsMap() || node.IsFlow()) continue;
      std::vector<yaml::Node> children;
      for (std::size_t i = 0; i < node.size(); ++i) {
        const yaml::Node key = node.Key(i);
        const yaml::Node value = node.Value(i);
        if (value.IsFlow()) continue;
        const int delta = value.mark().column - key.mark().column;
        if (value.IsMap() && !step_found && delta > 0 && delta <= 8) {
          step_ = delta;
          step_found = true;
        }
        if (value.IsSequence() && !seq_found && delta >= 0 && delta <= 8 &&
            CharAt(value.mark().pos) == '-') {
          seq_indent_ = delta;
          seq_found = true;
        }
        children.push_back(value);
      }
      for (auto it = children.rbegin(); it != children.rend(); ++it) todo.push_back(*it);
    }
  }

  std::size_t PlainLineEnd(std::size_t b, bool flow) const {
    std::size_t i = b;
    while (i < s_.size()) {
      const char c = s_[i];
      if (IsBreak(c)) break;
      if (c == '#' && i > b && IsBlank(s_[i - 1])) break;
      if (c == ':') {
        const char next = i + 1 < s_.size() ? s_[i + 1] : '\n';
        if (IsBlank(next) || IsBreak(next)) break;
        if (flow && absl::StrContains(",[]{}", next)) break;
      }
      if (flow && absl::StrContains(",[]{}", c)) break;
      ++i;
    }
    while (i > b && IsBlank(s_[i - 1])) --i;
    return i;
  }

  std::size_t LineEnd(std::size_t pos) const {
    const std::size_t nl = s_.find('\n', pos);
    return nl == std::string::npos ? s_.size() : nl + 1;
  }

  // End of a block scalar's last content line (content is indented deeper than parent_indent).
  Span BlockScalarSpan(std::size_t b, int parent_indent) const {
    std::size_t end = b;
    while (end < s_.size() && !IsBreak(s_[end])) ++end;
    std::size_t line = LineEnd(b);
    while (line < s_.size()) {
      std::size_t i = line;
      while (i < s_.size() && s_[i] == ' ') ++i;
      std::size_t line_end = i;
      while (line_end < s_.size() && !IsBreak(s_[line_end])) ++line_end;
      bool blank = true;
      for (std::size_t k = i; k < line_end; ++k) blank = blank && IsBlank(s_[k]);
      if (!blank) {
        if (static_cast<int>(i - line) <= parent_indent) break;
        end = line_end;
      }
      line = LineEnd(line);
    }
    return Span{b, end};
  }

  absl::StatusOr<Span> ScalarSpan(const yaml::Node& node, bool flow, int parent_indent) const {
    absl::StatusOr<std::size_t> pos = PosOf(node);
    if (!pos.ok()) return pos.status();
    const std::size_t b = *pos;
    const char c = b < s_.size() ? s_[b] : '\0';
    if (c == '"') {
      for (std::size_t i = b + 1; i < s_.size(); ++i) {
        if (s_[i] == '\\') {
          ++i;
        } else if (s_[i] == '"') {
          return Span{b, i + 1};
        }
      }
      return Unlocatable(node, "a double-quoted scalar");
    }
    if (c == '\'') {
      for (std::size_t i = b + 1; i < s_.size(); ++i) {
        if (s_[i] != '\'') continue;
        if (i + 1 < s_.size() && s_[i + 1] == '\'') {
          ++i;
        } else {
          return Span{b, i + 1};
        }
      }
      return Unlocatable(node, "a single-quoted scalar");
    }
    if ((c == '|' || c == '>') && !flow) return BlockScalarSpan(b, parent_indent);
    if (c == '\0' || absl::StrContains("!&*|>{}[],#", c)) return Unlocatable(node, "a scalar");
    const std::string& expected = node.Scalar();
    std::size_t end = PlainLineEnd(b, flow);
    std::string folded = s_.substr(b, end - b);
    if (folded == expected) return Span{b, end};
    int breaks = 0;
    std::size_t cur = end;
    while (folded.size() < expected.size()) {
      const std::size_t nl = s_.find('\n', cur);
      if (nl == std::string::npos) break;
      const std::size_t line = nl + 1;
      std::size_t i = line;
      while (i < s_.size() && IsBlank(s_[i])) ++i;
      if (i >= s_.size()) break;
      if (IsBreak(s_[i])) {
        ++breaks;
        cur = i;
        continue;
      }
      if (s_[i] == '#') break;
      if (!flow && static_cast<int>(i - line) <= parent_indent) break;
      const std::size_t e = PlainLineEnd(i, flow);
      folded += breaks > 0 ? std::string(static_cast<std::size_t>(breaks), '\n') : " ";
      folded.append(s_, i, e - i);
      breaks = 0;
      if (folded == expected) return Span{b, e};
      cur = e;
    }
    return Unlocatable(node, "a plain scalar");
  }

  absl::StatusOr<std::size_t> ColonEnd(const yaml::Node& key, bool flow) const {
    absl::StatusOr<Span> span = ScalarSpan(key, flow, -1);
    if (!span.ok()) return span.status();
    std::size_t i = span->end;
    while (i < s_.size() && IsBlank(s_[i])) ++i;
    if (i >= s_.size() || s_[i] != ':') return Unlocatable(key, "the key");
    return i + 1;
  }

  // The text after a key's colon that holds its null value ("", " null", " ~").
  absl::StatusOr<Span> NullSpan(const yaml::Node& key, bool flow) const {
    absl::StatusOr<std::size_t> colon = ColonEnd(key, flow);
    if (!colon.ok()) return colon.status();
    std::size_t i = *colon;
    while (i < s_.size() && IsBlank(s_[i])) ++i;
    for (absl::string_view token : {"null", "Null", "NULL", "~"}) {
      if (s_.compare(i, token.size(), token.data(), token.size()) != 0) continue;
      const std::size_t after = i + token.size();
      if (after >= s_.size() || IsBlank(s_[after]) || IsBreak(s_[after]) ||
          absl::StrContains(",]}#", s_[after])) {
        return Span{*colon, after};
      }
    }
    return Span{*colon, *colon};
  }

  absl::StatusOr<std::size_t> FlowEnd(const yaml::Node& node) const {
    absl::StatusOr<std::size_t> pos = PosOf(node);
    if (!pos.ok()) return pos.status();
    if (*pos >= s_.size() || (s_[*pos] != '{' && s_[*pos] != '[')) {
      return Unlocatable(node, "a flow collection");
    }
    int depth = 0;
    bool token_start = true;
    for (std::size_t i = *pos; i < s_.size(); ++i) {
      const char c = s_[i];
      if ((c == '"' || c == '\'') && token_start) {
        for (++i; i < s_.size(); ++i) {
          if (c == '"' && s_[i] == '\\') {
            ++i;
          } else if (s_[i] == c) {
            if (c == '\'' && i + 1 < s_.size() && s_[i + 1] == '\'') {
              ++i;
            } else {
              break;
            }
          }
        }
        token_start = false;
        continue;
      }
      if (c == '#' && (i == 0 || IsBlank(s_[i - 1]) || IsBreak(s_[i - 1]))) {
        while (i < s_.size() && s_[i] != '\n') ++i;
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
        token_start = true;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
        token_start = false;
      } else if (c == ',' || c == ':') {
        token_start = true;
      } else if (!IsBlank(c) && !IsBreak(c)) {
        token_start = false;
      }
    }
    return Unlocatable(node, "a flow collection");
  }

  absl::StatusOr<std::size_t> EntryEnd(const Entry& e, bool flow) const {
    if (e.value.IsNull()) {
      absl::StatusOr<Span> span = NullSpan(e.key, flow);
      if (!span.ok()) return span.status();
      return span->end;
    }
    return NodeEnd(e.value, flow, e.key.mark().column);
  }

  absl::StatusOr<std::size_t> NodeEnd(const yaml::Node& node, bool flow, int parent_indent) const {
    const bool f = flow || node.IsFlow();
    if (node.IsScalar()) {
      absl::StatusOr<Span> span = ScalarSpan(node, f, parent_indent);
      if (!span.ok()) return span.status();
      return span->end;
    }
    if ((node.IsMap() || node.IsSequence()) && f) return FlowEnd(node);
    if (node.IsMap()) {
      std::optional<Entry> last = LastEntry(node);
      if (!last) return Unlocatable(node, "an empty mapping");
      return EntryEnd(*last, false);
    }
    if (node.IsSequence() && node.size() > 0) {
      const yaml::Node last = node.Item(node.size() - 1);
      if (!last.IsNull()) return NodeEnd(last, false, node.mark().column);
    }
    return Unlocatable(node, "a value");
  }

  void Replace(Span span, std::string text, int depth) {
    edits_.push_back(Edit{span.begin, span.end, depth, std::move(text)});
  }
  void Insert(std::size_t pos, std::string text, int depth) {
    edits_.push_back(Edit{pos, pos, depth, std::move(text)});
  }

  // Text for whole lines inserted at a line start `pos` (handles a last line without newline).
  std::string LinesAt(std::size_t pos, const std::vector<std::string>& lines, int indent) const {
    std::string text;
    for (const std::string& line : lines) {
      absl::StrAppend(&text, std::string(static_cast<std::size_t>(indent), ' '), line, nl_);
    }
    if (pos == s_.size() && !s_.empty() && s_.back() != '\n') {
      text = absl::StrCat(nl_, text.substr(0, text.size() - nl_.size()));
    }
    return text;
  }

  QuoteStyle NewStyle() const { return json_ ? QuoteStyle::kDouble : QuoteStyle::kPlain; }

  std::string Key(absl::string_view key, bool flow) const {
    return FormatScalar(key, NewStyle(), flow);
  }

  std::string Flow(const Patch& patch) const {
    switch (patch.kind) {
      case Patch::Kind::kScalar:
        return FormatScalar(patch.value, NewStyle(), true);
      case Patch::Kind::kNamedItem:
        return absl::StrCat("[{", Key("name", true), ": ",
                            FormatScalar(patch.value, NewStyle(), true), "}]");
      case Patch::Kind::kImages:
        return "[]";
      case Patch::Kind::kMap:
        break;
    }
    std::vector<std::string> parts;
    for (const Patch& child : patch.children) {
      if (child.kind == Patch::Kind::kImages) continue;
      parts.push_back(absl::StrCat(Key(child.key, true), ": ", Flow(child)));
    }
    return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
  }

  // Lines of `key: <patch>` in block style, indented relative to the key.
  std::vector<std::string> Block(const Patch& patch) const {
    const std::string k = Key(patch.key, false);
    switch (patch.kind) {
      case Patch::Kind::kScalar:
        return {absl::StrCat(k, ": ", FormatScalar(patch.value, NewStyle(), false))};
      case Patch::Kind::kNamedItem:
        return {
            absl::StrCat(k, ":"),
            absl::StrCat(std::string(static_cast<std::size_t>(seq_indent_), ' '), "- ",
                         Key("name", false), ": ", FormatScalar(patch.value, NewStyle(), false))};
      case Patch::Kind::kImages:
        return {};
      case Patch::Kind::kMap:
        break;
    }
    std::vector<std::string> lines = {absl::StrCat(k, ":")};
    for (const std::string& line : BlockChildren(patch)) {
      lines.push_back(absl::StrCat(std::string(static_cast<std::size_t>(step_), ' '), line));
    }
    return lines;
  }

  std::vector<std::string> BlockChildren(const Patch& patch) const {
    std::vector<std::string> lines;
    for (const Patch& child : patch.children) {
      for (std::string& line : Block(child)) lines.push_back(std::move(line));
    }
    return lines;
  }

  absl::Status ApplyMap(const yaml::Node& map, const Patch& patch, const Ctx& ctx) {
    const bool flow = ctx.flow || map.IsFlow();
    std::vector<const Patch*> missing;
    for (const Patch& child : patch.children) {
      const std::string path = ctx.path.empty() ? child.key : ctx.path + "." + child.key;
      std::optional<Entry> e = Find(map, child.key);
      if (e) {
        RENDER_RETURN_IF_ERROR(ApplyValue(*e, child, Ctx{flow, ctx.depth + 1, path}));
      } else if (child.kind != Patch::Kind::kImages) {
        missing.push_back(&child);
      }
    }
    if (missing.empty()) return absl::OkStatus();

    if (flow) {
      std::vector<std::string> parts;
      parts.reserve(missing.size());
      for (const auto* m : missing) {
        parts.push_back(absl::StrCat(Key(m->key, true), ": ", Flow(*m)));
      }
      const std::string text = absl::StrJoin(parts, ", ");
      std::optional<Entry> last = LastEntry(map);
      if (!last) {
        absl::StatusOr<std::size_t> pos = PosOf(map);
        if (!pos.ok()) return pos.status();
        if (CharAt(map.mark().pos) != '{') return Unlocatable(map, "an empty mapping");
        Insert(*pos + 1, text, ctx.depth);
        return absl::OkStatus();
      }
      absl::StatusOr<std::size_t> end = EntryEnd(*last, true);
      if (!end.ok()) return end.status();
      Insert(*end, absl::StrCat(", ", text), ctx.depth);
      return absl::OkStatus();
    }

    std::optional<Entry> first = FirstEntry(map);
    if (!first) return Unlocatable(map, "an empty mapping");
    const int col = first->key.mark().column;
    std::vector<std::string> lines;
    for (const auto* m : missing) {
      for (std::string& line : Block(*m)) lines.push_back(std::move(line));
    }
    std::optional<std::size_t> at;
    const std::optional<Entry> anchor =
        patch.after_key.empty() ? std::nullopt : Find(map, patch.after_key);
    if (anchor) {
      absl::StatusOr<std::size_t> end = EntryEnd(*anchor, false);
      if (end.ok()) at = LineEnd(*end);
    }
    if (!at) {
      std::optional<Entry> last = LastEntry(map);
      absl::StatusOr<std::size_t> end = EntryEnd(*last, false);
      if (end.ok()) at = LineEnd(*end);
    }
    if (at) {
      Insert(*at, LinesAt(*at, lines, col), ctx.depth);
      return absl::OkStatus();
    }
    absl::StatusOr<std::size_t> pos = PosOf(first->key);
    if (!pos.ok()) return pos.status();
    const std::string indent(static_cast<std::size_t>(col), ' ');
    Insert(*pos, absl::StrCat(absl::StrJoin(lines, nl_ + indent), nl_, indent), ctx.depth);
    return absl::OkStatus();
  }

  absl::Status ApplyValue(const Entry& e, const Patch& patch, const Ctx& ctx) {
    const yaml::Node& value = e.value;
    const int key_col = e.key.mark().column;
    switch (patch.kind) {
      case Patch::Kind::kScalar: {
        if (value.IsScalar()) {
          const bool plain = value.IsPlain();
          if (value.Scalar() == patch.value && !(plain && NeedsQuotes(patch.value, ctx.flow))) {
            return absl::OkStatus();
          }
          absl::StatusOr<Span> span = ScalarSpan(value, ctx.flow, key_col);
          if (!span.ok()) return span.status();
          const char c = s_[span->begin];
          QuoteStyle style = c == '"'    ? QuoteStyle::kDouble
                             : c == '\'' ? QuoteStyle::kSingle
                                         : NewStyle();
          Replace(*span, FormatScalar(patch.value, style, ctx.flow), ctx.depth);
          return absl::OkStatus();
        }
        if (value.IsNull()) {
          absl::StatusOr<Span> span = NullSpan(e.key, ctx.flow);
          if (!span.ok()) return span.status();
          Replace(*span, absl::StrCat(" ", FormatScalar(patch.value, NewStyle(), ctx.flow)),
                  ctx.depth);
          return absl::OkStatus();
        }
        return absl::InvalidArgumentError(absl::StrCat(ctx.path, " must be a string"));
      }
      case Patch::Kind::kMap: {
        if (value.IsMap()) return ApplyMap(value, patch, ctx);
        if (!value.IsNull()) {
          return absl::InvalidArgumentError(absl::StrCat(ctx.path, " must be a mapping"));
        }
        absl::StatusOr<Span> span = NullSpan(e.key, ctx.flow);
        if (!span.ok()) return span.status();
        if (ctx.flow) {
          Replace(*span, absl::StrCat(" ", Flow(patch)), ctx.depth);
          return absl::OkStatus();
        }
        std::string text;
        const std::string indent(static_cast<std::size_t>(key_col + step_), ' ');
        for (const std::string& line : BlockChildren(patch)) {
          absl::StrAppend(&text, nl_, indent, line);
        }
        Replace(*span, text, ctx.depth);
        return absl::OkStatus();
      }
      case Patch::Kind::kNamedItem: {
        if (value.IsSequence()) return EnsureNamedItem(value, patch, ctx);
        if (!value.IsNull()) {
          return absl::InvalidArgumentError(absl::StrCat(ctx.path, " must be a list"));
        }
        absl::StatusOr<Span> span = NullSpan(e.key, ctx.flow);
        if (!span.ok()) return span.status();
        if (ctx.flow) {
          Replace(*span, absl::StrCat(" ", Flow(patch)), ctx.depth);
          return absl::OkStatus();
        }
        Replace(*span,
                absl::StrCat(nl_, std::string(static_cast<std::size_t>(key_col + seq_indent_), ' '),
                             "- ", Key("name", false), ": ",
                             FormatScalar(patch.value, NewStyle(), false)),
                ctx.depth);
        return absl::OkStatus();
      }
      case Patch::Kind::kImages: {
        if (!value.IsSequence()) return absl::OkStatus();
        const bool seq_flow = ctx.flow || value.IsFlow();
        const std::vector<yaml::Node> items = Items(value);
        for (std::size_t i = 0; i < items.size(); ++i) {
          const yaml::Node& item = items[i];
          std::optional<Entry> image = Find(item, "image");
          if (!image || !image->value.IsScalar()) continue;
          if (!match_repos_.contains(RepoPath(image->value.Scalar()))) continue;
          RENDER_RETURN_IF_ERROR(ApplyValue(*image, ScalarPatch("image", image_),
                                            Ctx{seq_flow || item.IsFlow(), ctx.depth + 2,
                                                absl::StrCat(ctx.path, "[", i, "].image")}));
        }
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  absl::Status EnsureNamedItem(const yaml::Node& seq, const Patch& patch, const Ctx& ctx) {
    for (const yaml::Node& item : Items(seq)) {
      if (ScalarAt(item, "name") == patch.value) return absl::OkStatus();
    }
    const bool flow = ctx.flow || seq.IsFlow();
    const std::string entry =
        absl::StrCat(Key("name", flow), ": ", FormatScalar(patch.value, NewStyle(), flow));
    if (flow) {
      const std::string item = absl::StrCat("{", entry, "}");
      if (seq.size() == 0) {
        absl::StatusOr<std::size_t> pos = PosOf(seq);
        if (!pos.ok()) return pos.status();
        if (CharAt(seq.mark().pos) != '[') return Unlocatable(seq, "an empty list");
        Insert(*pos + 1, item, ctx.depth);
        return absl::OkStatus();
      }
      absl::StatusOr<std::size_t> end = NodeEnd(seq.Item(seq.size() - 1), true, -1);
      if (!end.ok()) return end.status();
      Insert(*end, absl::StrCat(", ", item), ctx.depth);
      return absl::OkStatus();
    }
    absl::StatusOr<std::size_t> pos = PosOf(seq);
    if (!pos.ok()) return pos.status();
    if (CharAt(seq.mark().pos) != '-') return Unlocatable(seq, "a list");
    const int col = seq.mark().column;
    absl::StatusOr<std::size_t> end = NodeEnd(seq, false, col - 1);
    if (end.ok()) {
      const std::size_t at = LineEnd(*end);
      Insert(at, LinesAt(at, {absl::StrCat("- ", entry)}, col), ctx.depth);
      return absl::OkStatus();
    }
    const std::string indent(static_cast<std::size_t>(col), ' ');
    Insert(*pos, absl::StrCat("- ", entry, nl_, indent), ctx.depth);
    return absl::OkStatus();
  }

  const std::string& s_;
  std::set<std::string> match_repos_;
  std::string image_;
  std::string nl_;
  int step_ = 2;
  int seq_indent_ = 0;
  bool json_ = false;
  std::vector<Edit> edits_;
};

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

struct AppContext {
  const AppInput* app;
  std::string ns;
  std::string secret;
  std::set<std::string> match_repos;
};

std::vector<Patch> LabelPatches(const AppInput& app) {
  return {ScalarPatch(kNameLabel, app.name), ScalarPatch(kPartOfLabel, app.group),
          ScalarPatch(kManagedByLabel, kManagedBy)};
}

Patch MetadataPatch(const AppContext& ctx) {
  return MapPatch(
      "", {MapPatch("metadata",
                    {ScalarPatch("namespace", ctx.ns), MapPatch("labels", LabelPatches(*ctx.app))},
                    "name")});
}

Patch DeploymentPatch(const AppContext& ctx) {
  std::vector<Patch> pod;
  if (!ctx.secret.empty()) pod.push_back(NamedItemPatch("imagePullSecrets", ctx.secret));
  pod.push_back(ImagesPatch("containers"));
  pod.push_back(ImagesPatch("initContainers"));
  Patch patch = MetadataPatch(ctx);
  patch.children.push_back(MapPatch(
      "spec",
      {MapPatch("template", {MapPatch("metadata", {MapPatch("labels", LabelPatches(*ctx.app))}),
                             MapPatch("spec", std::move(pod))})}));
  return patch;
}

bool HasLabels(const yaml::Node& labels, const AppInput& app) {
  return ScalarAt(labels, kNameLabel) == app.name && ScalarAt(labels, kPartOfLabel) == app.group &&
         ScalarAt(labels, kManagedByLabel) == kManagedBy;
}

bool HasMetadata(const yaml::Node& doc, const AppContext& ctx) {
  const yaml::Node metadata = FindPath(doc, {"metadata"});
  return ScalarAt(metadata, "namespace") == ctx.ns &&
         HasLabels(FindPath(metadata, {"labels"}), *ctx.app);
}

// Applies `patch` to the documents of `manifest` that `select` accepts and returns the new
// text, after checking that it parses and that `verify` holds for those documents.
template <typename Select, typename Verify>
absl::StatusOr<std::string> EditManifest(const Manifest& manifest, const AppContext& ctx,
                                         const Patch& patch, Select select, Verify verify) {
  Editor editor(manifest.text, ctx.match_repos, ctx.app->image);
  for (const yaml::Node& doc : manifest.docs) {
    if (select(doc)) RENDER_RETURN_IF_ERROR(editor.ApplyDocument(doc, patch));
  }
  absl::StatusOr<std::string> text = editor.Result();
  if (!text.ok()) return text.status();
  absl::StatusOr<Manifest> again = ParseManifest(*text, /*own_output=*/true);
  if (!again.ok()) {
    return absl::InternalError(
        absl::StrCat("in-place edit produced invalid YAML: ", again.status().message()));
  }
  for (const yaml::Node& doc : again->docs) {
    if (select(doc) && !verify(doc)) {
      return absl::InternalError(absl::StrCat("in-place edit of the ", ScalarAt(doc, "kind"),
                                              " at ", Where(doc.mark()), " did not take effect"));
    }
  }
  return absl::StrCat(manifest.bom, *text);
}

// Block-style YAML for the files elfdeploy generates: two-space indentation, keys in the order
// written, sequences indented under their key, strings plain unless plain style would change
// them (then double-quoted).
class BlockWriter {
 public:
  BlockWriter& Field(absl::string_view key, absl::string_view value) {
    return Line(absl::StrCat(Plain(key), ": ", Plain(value)));
  }
  BlockWriter& Field(absl::string_view key, const char* value) {
    return Field(key, absl::string_view(value));
  }
  BlockWriter& Field(absl::string_view key, int value) {
    return Line(absl::StrCat(Plain(key), ": ", value));
  }
  BlockWriter& Field(absl::string_view key, bool value) {
    return Line(absl::StrCat(Plain(key), ": ", value ? "true" : "false"));
  }
  // Opens a mapping or a sequence under `key`; End() closes it.
  BlockWriter& Map(absl::string_view key) { return Open(key); }
  BlockWriter& List(absl::string_view key) { return Open(key); }
  // A scalar item of the open sequence.
  BlockWriter& Item(absl::string_view value) { return Line(absl::StrCat("- ", Plain(value))); }
  // A mapping item of the open sequence; End() closes it.
  BlockWriter& ItemMap() {
    stack_.push_back(indent_);
    indent_ += 2;
    dash_ = true;
    return *this;
  }
  BlockWriter& End() {
    indent_ = stack_.back();
    stack_.pop_back();
    return *this;
  }
  std::string Take() { return std::move(out_); }

 private:
  static std::string Plain(absl::string_view s) {
    return FormatScalar(s, QuoteStyle::kPlain, false);
  }

  BlockWriter& Open(absl::string_view key) {
    Line(absl::StrCat(Plain(key), ":"));
    stack_.push_back(indent_);
    indent_ += 2;
    return *this;
  }
  BlockWriter& Line(absl::string_view text) {
    if (dash_) {
      out_.append(static_cast<std::size_t>(indent_ - 2), ' ');
      out_ += "- ";
      dash_ = false;
    } else {
      out_.append(static_cast<std::size_t>(indent_), ' ');
    }
    absl::StrAppend(&out_, text, "\n");
    return *this;
  }

  std::string out_;
  int indent_ = 0;
  bool dash_ = false;  // the next line starts a mapping item
  std::vector<int> stack_;
};

void WriteMetadata(BlockWriter& out, absl::string_view name, const AppContext& ctx) {
  out.Map("metadata").Field("name", name).Field("namespace", ctx.ns);
  out.Map("labels")
      .Field(kNameLabel, ctx.app->name)
      .Field(kPartOfLabel, ctx.app->group)
      .Field(kManagedByLabel, kManagedBy)
      .End();
  out.End();
}

struct ServicePort {
  std::string name;
  int port;
  int target_port;
  std::string protocol;
};

absl::StatusOr<int> PortNumber(const yaml::Node& node, absl::string_view what) {
  int port = 0;
  if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " at ", Where(node.mark()), " is not a port number"));
  }
  return port;
}

bool IsPortName(absl::string_view name) {
  if (name.size() > 15 || !IsDns1123Label(name)) return false;
  return std::any_of(name.begin(), name.end(), [](char c) { return absl::ascii_isalpha(c); });
}

absl::StatusOr<std::vector<ServicePort>> ServicePorts(const yaml::Node& deployment,
                                                      const AppContext& ctx) {
  std::vector<ServicePort> ports;
  std::set<std::pair<int, std::string>> seen;
  std::set<std::string> names;
  std::optional<int> first_matching;
  for (const yaml::Node& container : PodContainers(deployment, false)) {
    const bool matching = ctx.match_repos.contains(RepoPath(ScalarAt(container, "image")));
    for (const yaml::Node& p : Items(FindPath(container, {"ports"}))) {
      std::optional<Entry> cp = Find(p, "containerPort");
      if (!cp) continue;
      absl::StatusOr<int> number = PortNumber(cp->value, "containerPort");
      if (!number.ok()) return number.status();
      if (matching && !first_matching) first_matching = *number;
      std::string protocol = ScalarAt(p, "protocol");
      if (protocol.empty()) protocol = "TCP";
      if (!seen.insert({*number, protocol}).second) continue;
      std::string name = ScalarAt(p, "name");
      if (!IsPortName(name) || names.contains(name)) {
        name = absl::StrCat(absl::AsciiStrToLower(protocol), "-", *number);
      }
      names.insert(name);
      ports.push_back(ServicePort{name, *number, *number, protocol});
    }
  }
  const int port = ctx.app->port;
  if (port > 0) {
    const int target = first_matching.value_or(ports.empty() ? port : ports.front().port);
    return std::vector<ServicePort>{ServicePort{absl::StrCat("tcp-", port), port, target, "TCP"}};
  }
  return ports;
}

std::string GenerateService(const AppContext& ctx, const std::vector<ServicePort>& ports) {
  BlockWriter out;
  out.Field("apiVersion", "v1").Field("kind", "Service");
  WriteMetadata(out, ctx.app->name, ctx);
  out.Map("spec");
  out.Map("selector").Field(kNameLabel, ctx.app->name).Field(kPartOfLabel, ctx.app->group).End();
  out.List("ports");
  for (const ServicePort& p : ports) {
    out.ItemMap()
        .Field("name", p.name)
        .Field("port", p.port)
        .Field("targetPort", p.target_port)
        .Field("protocol", p.protocol)
        .End();
  }
  out.End().End();
  return out.Take();
}

bool IsConfigMapKey(absl::string_view key) {
  if (key.empty() || key.size() > 253 || key == "." || key == "..") return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

std::string GenerateConfigMap(const AppContext& ctx) {
  BlockWriter out;
  out.Field("apiVersion", "v1").Field("kind", "ConfigMap");
  WriteMetadata(out, absl::StrCat(ctx.app->name, "-config"), ctx);
  out.Map("data");
  for (const auto& [key, value] : ctx.app->config) out.Field(key, value);
  out.End();
  return out.Take();
}

std::string GenerateKustomization(const std::vector<std::string>& resources) {
  BlockWriter out;
  out.Field("apiVersion", kKustomizeApiVersion).Field("kind", "Kustomization").List("resources");
  for (const std::string& r : resources) out.Item(r);
  out.End();
  return out.Take();
}

std::string GenerateApplication(const TargetInput& target, absl::string_view group,
                                absl::string_view path) {
  BlockWriter out;
  out.Field("apiVersion", "argoproj.io/v1alpha1").Field("kind", "Application");
  out.Map("metadata")
      .Field("name", absl::StrCat("elf-", group))
      .Field("namespace", target.argocd_namespace)
      .End();
  out.Map("spec").Field("project", target.project);
  out.Map("source")
      .Field("repoURL", target.repo_url)
      .Field("targetRevision", target.target_revision)
      .Field("path", path)
      .End();
  out.Map("destination")
      .Field("server", target.destination_server)
      .Field("namespace", target.namespace_)
      .End();
  out.Map("syncPolicy");
  out.Map("automated").Field("prune", true).Field("selfHeal", true).End();
  out.List("syncOptions").Item("CreateNamespace=true").End();
  out.End().End();
  return out.Take();
}

std::string JoinPath(absl::string_view prefix, absl::string_view rest) {
  return prefix.empty() ? Str(rest) : absl::StrCat(prefix, "/", rest);
}

absl::Status AppError(const AppInput& app, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("app \"", app.group, "/", app.name, "\": ", status.message()));
}

absl::Status AppError(const AppInput& app, absl::string_view what, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("app \"", app.group, "/", app.name, "\": ", what,
                                                  ": ", status.message()));
}

absl::StatusOr<Manifest> ParseAppManifest(const AppInput& app, absl::string_view what,
                                          absl::string_view text) {
  absl::StatusOr<Manifest> manifest = ParseManifest(text);
  if (!manifest.ok()) return AppError(app, what, manifest.status());
  absl::Status secret = CheckNoSecret(*manifest);
  if (!secret.ok()) return AppError(app, what, secret);
  return manifest;
}

std::vector<yaml::Node> DocsOfKind(const Manifest& manifest, absl::string_view kind) {
  std::vector<yaml::Node> docs;
  for (const yaml::Node& doc : manifest.docs) {
    if (ScalarAt(doc, "kind") == kind) docs.push_back(doc);
  }
  return docs;
}

std::string KindsOf(const Manifest& manifest) {
  std::vector<std::string> kinds;
  for (const yaml::Node& doc : manifest.docs) {
    const std::string kind = ScalarAt(doc, "kind");
    kinds.push_back(kind.empty() ? "<no kind>" : kind);
  }
  return kinds.empty() ? "none" : absl::StrJoin(kinds, ", ");
}

// Edits the given Service or ConfigMap YAML: namespace and labels of every document of `kind`.
absl::StatusOr<std::string> EditCompanion(const AppContext& ctx, absl::string_view what,
                                          absl::string_view text, absl::string_view kind,
                                          Manifest* parsed) {
  const AppInput& app = *ctx.app;
  absl::StatusOr<Manifest> manifest = ParseAppManifest(app, what, text);
  if (!manifest.ok()) return manifest.status();
  if (DocsOfKind(*manifest, kind).empty()) {
    return AppError(
        app, absl::InvalidArgumentError(absl::StrCat(
                 what, " has no kind: ", kind, " document (found: ", KindsOf(*manifest), ")")));
  }
  auto select = [kind](const yaml::Node& doc) { return ScalarAt(doc, "kind") == kind; };
  auto verify = [&ctx](const yaml::Node& doc) { return HasMetadata(doc, ctx); };
  absl::StatusOr<std::string> edited =
      EditManifest(*manifest, ctx, MetadataPatch(ctx), select, verify);
  if (!edited.ok()) return AppError(app, what, edited.status());
  *parsed = std::move(*manifest);
  return edited;
}

absl::Status RenderApp(const AppInput& app, const TargetInput& target, absl::string_view prefix,
                       std::vector<RenderedFile>& files) {
  AppContext ctx;
  ctx.app = &app;
  ctx.ns = app.namespace_.empty() ? target.namespace_ : app.namespace_;
  ctx.secret = target.no_image_pull_secret ? "" : target.image_pull_secret;
  if (!IsDns1123Label(ctx.ns)) {
    return AppError(app, absl::InvalidArgumentError(
                             absl::StrCat("namespace \"", ctx.ns, "\" is not a DNS-1123 label")));
  }
  if (std::string problem = ImageProblem(app.image); !problem.empty()) {
    return AppError(app, absl::InvalidArgumentError(problem));
  }
  if (app.port < 0 || app.port > 65535) {
    return AppError(
        app, absl::InvalidArgumentError(absl::StrCat("port ", app.port, " is not a port number")));
  }
  if (app.match_images.empty()) {
    ctx.match_repos.insert(RepoPath(app.image));
  }
  for (const std::string& m : app.match_images) {
    if (m.empty() || HasControlOrSpace(m)) {
      return AppError(app, absl::InvalidArgumentError(
                               absl::StrCat("match_images entry \"", m, "\" is not an image")));
    }
    ctx.match_repos.insert(RepoPath(m));
  }
  if (!app.configmap_yaml.empty() && !app.config.empty()) {
    return AppError(app,
                    absl::InvalidArgumentError("config and configmap_yaml are mutually exclusive"));
  }
  for (const auto& [key, value] : app.config) {
    if (!IsConfigMapKey(key)) {
      return AppError(app, absl::InvalidArgumentError(absl::StrCat(
                               "config key \"", key, "\" is not a valid ConfigMap key")));
    }
    absl::Status cred = CheckConfigEntry("config key", key, value);
    if (!cred.ok()) return AppError(app, cred);
  }

  if (app.deployment_yaml.empty()) {
    return AppError(app, absl::InvalidArgumentError("deployment_yaml is required"));
  }
  absl::StatusOr<Manifest> manifest = ParseAppManifest(app, "deployment_yaml", app.deployment_yaml);
  if (!manifest.ok()) return manifest.status();
  const std::vector<yaml::Node> deployments = DocsOfKind(*manifest, "Deployment");
  if (deployments.size() != 1) {
    return AppError(app, absl::InvalidArgumentError(absl::StrCat(
                             "deployment_yaml must hold exactly one kind: Deployment document "
                             "(found: ",
                             KindsOf(*manifest), ")")));
  }
  const yaml::Node& deployment = deployments.front();
  std::vector<std::string> images;
  int matching = 0;
  for (const yaml::Node& container : PodContainers(deployment, true)) {
    const std::string image = ScalarAt(container, "image");
    if (!image.empty() && std::find(images.begin(), images.end(), image) == images.end()) {
      images.push_back(image);
    }
    if (!image.empty() && ctx.match_repos.contains(RepoPath(image))) ++matching;
    for (const yaml::Node& env : Items(FindPath(container, {"env"}))) {
      std::optional<Entry> value = Find(env, "value");
      if (!value || !value->value.IsScalar() || value->value.Scalar().empty()) continue;
      absl::Status cred = CheckConfigEntry("env", ScalarAt(env, "name"), value->value.Scalar());
      if (!cred.ok()) {
        return AppError(app, "deployment_yaml",
                        absl::InvalidArgumentError(absl::StrCat(
                            "container \"", ScalarAt(container, "name"), "\": ", cred.message())));
      }
    }
  }
  if (matching == 0) {
    return AppError(app, "deployment_yaml",
                    absl::InvalidArgumentError(absl::StrCat(
                        "no container uses the app's image (repository ",
                        absl::StrJoin(ctx.match_repos, " or "), "); images found: ",
                        images.empty() ? std::string("none") : absl::StrJoin(images, ", "))));
  }

  const yaml::Node selector = FindPath(deployment, {"spec", "selector", "matchLabels"});
  for (const Patch& label : LabelPatches(app)) {
    std::optional<Entry> pinned = Find(selector, label.key);
    if (!pinned) continue;
    const std::string value = pinned->value.IsScalar() ? pinned->value.Scalar() : "";
    if (value == label.value) continue;
    return AppError(app, "deployment_yaml",
                    absl::InvalidArgumentError(absl::StrCat(
                        "spec.selector.matchLabels has ", label.key, "=", value,
                        " but elfdeploy labels the pods ", label.key, "=", label.value,
                        "; a Deployment's selector is immutable: rename the app or change "
                        "the selector")));
  }

  auto is_deployment = [](const yaml::Node& doc) { return ScalarAt(doc, "kind") == "Deployment"; };
  auto verify = [&ctx](const yaml::Node& doc) {
    if (!HasMetadata(doc, ctx)) return false;
    if (!HasLabels(FindPath(doc, {"spec", "template", "metadata", "labels"}), *ctx.app)) {
      return false;
    }
    if (!ctx.secret.empty()) {
      bool found = false;
      for (const yaml::Node& s :
           Items(FindPath(doc, {"spec", "template", "spec", "imagePullSecrets"}))) {
        found = found || ScalarAt(s, "name") == ctx.secret;
      }
      if (!found) return false;
    }
    for (const yaml::Node& c : PodContainers(doc, true)) {
      const std::string image = ScalarAt(c, "image");
      if (ctx.match_repos.contains(RepoPath(image)) && image != ctx.app->image) return false;
    }
    return true;
  };
  absl::StatusOr<std::string> deployment_text =
      EditManifest(*manifest, ctx, DeploymentPatch(ctx), is_deployment, verify);
  if (!deployment_text.ok()) return AppError(app, "deployment_yaml", deployment_text.status());

  const std::string dir = JoinPath(prefix, absl::StrCat("manifests/", app.group, "/", app.name));
  std::vector<std::string> resources;
  files.push_back(RenderedFile{absl::StrCat(dir, "/deployment.yaml"), *std::move(deployment_text)});
  resources.push_back("deployment.yaml");

  if (!app.service_yaml.empty()) {
    Manifest parsed;
    absl::StatusOr<std::string> service =
        EditCompanion(ctx, "service_yaml", app.service_yaml, "Service", &parsed);
    if (!service.ok()) return service.status();
    files.push_back(RenderedFile{absl::StrCat(dir, "/service.yaml"), *std::move(service)});
    resources.push_back("service.yaml");
  } else if (DocsOfKind(*manifest, "Service").empty()) {
    absl::StatusOr<std::vector<ServicePort>> ports = ServicePorts(deployment, ctx);
    if (!ports.ok()) return AppError(app, "deployment_yaml", ports.status());
    if (!ports->empty()) {
      files.push_back(
          RenderedFile{absl::StrCat(dir, "/service.yaml"), GenerateService(ctx, *ports)});
      resources.push_back("service.yaml");
    }
  }

  if (!app.configmap_yaml.empty()) {
    Manifest parsed;
    absl::StatusOr<std::string> configmap =
        EditCompanion(ctx, "configmap_yaml", app.configmap_yaml, "ConfigMap", &parsed);
    if (!configmap.ok()) return configmap.status();
    for (const yaml::Node& doc : DocsOfKind(parsed, "ConfigMap")) {
      for (absl::string_view section : {"data", "binaryData"}) {
        const yaml::Node data = FindPath(doc, {section});
        if (!data.IsMap()) continue;
        for (std::size_t i = 0; i < data.size(); ++i) {
          const yaml::Node value = data.Value(i);
          absl::Status cred = CheckConfigEntry("ConfigMap key", data.Key(i).Scalar(),
                                               value.IsScalar() ? value.Scalar() : "");
          if (!cred.ok()) return AppError(app, "configmap_yaml", cred);
        }
      }
    }
    files.push_back(RenderedFile{absl::StrCat(dir, "/configmap.yaml"), *std::move(configmap)});
    resources.push_back("configmap.yaml");
  } else if (!app.config.empty()) {
    files.push_back(RenderedFile{absl::StrCat(dir, "/configmap.yaml"), GenerateConfigMap(ctx)});
    resources.push_back("configmap.yaml");
  }

  std::sort(resources.begin(), resources.end());
  files.push_back(
      RenderedFile{absl::StrCat(dir, "/kustomization.yaml"), GenerateKustomization(resources)});
  return absl::OkStatus();
}

absl::StatusOr<std::string> ValidatePrefix(absl::string_view prefix) {
  while (absl::EndsWith(prefix, "/")) prefix.remove_suffix(1);
  if (prefix.empty()) return std::string();
  if (absl::StartsWith(prefix, "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("target path_prefix \"", prefix, "\" must be relative (no leading \"/\")"));
  }
  for (absl::string_view part : absl::StrSplit(prefix, '/')) {
    if (part.empty() || part == "." || part == ".." || HasControlOrSpace(part) ||
        absl::StrContains(part, '\\')) {
      return absl::InvalidArgumentError(absl::StrCat("target path_prefix \"", prefix,
                                                     "\" has an invalid segment \"", part, "\""));
    }
  }
  return Str(prefix);
}

absl::Status ValidateTarget(const TargetInput& target) {
  auto required = [](absl::string_view field, absl::string_view value) -> absl::Status {
    if (value.empty() || HasControlOrSpace(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target ", field, " \"", value, "\" must be non-empty and without whitespace"));
    }
    return absl::OkStatus();
  };
  RENDER_RETURN_IF_ERROR(required("repo_url", target.repo_url));
  RENDER_RETURN_IF_ERROR(required("target_revision", target.target_revision));
  RENDER_RETURN_IF_ERROR(required("destination_server", target.destination_server));
  RENDER_RETURN_IF_ERROR(required("project", target.project));
  const std::pair<absl::string_view, absl::string_view> namespaces[] = {
      {"namespace", target.namespace_}, {"argocd_namespace", target.argocd_namespace}};
  for (const auto& [field, value] : namespaces) {
    if (!IsDns1123Label(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("target ", field, " \"", value, "\" is not a DNS-1123 label"));
    }
  }
  if (!target.no_image_pull_secret && !IsDns1123Subdomain(target.image_pull_secret)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target image_pull_secret \"", target.image_pull_secret, "\" is not a DNS-1123 subdomain"));
  }
  return absl::OkStatus();
}

bool ByPath(const RenderedFile& a, const RenderedFile& b) { return a.path < b.path; }

// Fewer apps than this per extra thread are not worth starting it for.
constexpr size_t kAppsPerThread = 16;

absl::StatusOr<RenderedApps> RenderAppsUnsafe(const std::vector<AppInput>& apps,
                                              const TargetInput& target) {
  if (apps.empty()) return absl::InvalidArgumentError("no apps to render");
  absl::StatusOr<std::string> prefix = ValidatePrefix(target.path_prefix);
  if (!prefix.ok()) return prefix.status();
  RENDER_RETURN_IF_ERROR(ValidateTarget(target));

  RenderedApps rendered;
  rendered.prefix = *std::move(prefix);
  for (const AppInput& app : apps) {
    const std::pair<absl::string_view, absl::string_view> names[] = {{"name", app.name},
                                                                     {"group", app.group}};
    for (const auto& [field, value] : names) {
      if (!IsDns1123Label(value)) {
        return AppError(app, absl::InvalidArgumentError(absl::StrCat(
                                 field, " \"", value,
                                 "\" is not a DNS-1123 label (lowercase letters, digits and "
                                 "\"-\", at most 63; no \"/\" or \"..\")")));
      }
    }
    if (!rendered.groups[app.group].insert(app.name).second) {
      return AppError(app, absl::InvalidArgumentError("duplicate app in the request"));
    }
  }

  // Apps render independently, on up to one thread per core; the first error in request order
  // wins, so the answer does not depend on scheduling.
  std::vector<std::vector<RenderedFile>> per_app(apps.size());
  std::vector<absl::Status> statuses(apps.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < apps.size();) {
      try {
        statuses[i] = RenderApp(apps[i], target, rendered.prefix, per_app[i]);
      } catch (const std::exception& e) {
        statuses[i] = absl::InternalError(absl::StrCat("rendering failed: ", e.what()));
      }
    }
  };
  size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()),
                                    (apps.size() + kAppsPerThread - 1) / kAppsPerThread);
  std::vector<std::thread> workers;
  for (size_t t = 1; t < threads; ++t) workers.emplace_back(work);
  work();
  for (std::thread& worker : workers) worker.join();
  for (size_t i = 0; i < apps.size(); ++i) {
    RENDER_RETURN_IF_ERROR(statuses[i]);
    for (RenderedFile& file : per_app[i]) rendered.files.push_back(std::move(file));
  }
  std::sort(rendered.files.begin(), rendered.files.end(), ByPath);
  return rendered;
}

#undef RENDER_RETURN_IF_ERROR

}  // namespace

absl::StatusOr<RenderedApps> RenderApps(const std::vector<AppInput>& apps,
                                        const TargetInput& target) {
  try {
    return RenderAppsUnsafe(apps, target);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("rendering failed: ", e.what()));
  }
}

absl::StatusOr<RenderResult> AssembleTree(
    const RenderedApps& apps, const TargetInput& target,
    const std::map<std::string, std::set<std::string>>& existing_apps) {
  try {
    RenderResult result;
    for (const auto& [group, names] : apps.groups) {
      std::set<std::string> all = names;
      auto existing = existing_apps.find(group);
      if (existing != existing_apps.end()) {
        for (const std::string& name : existing->second) {
          if (IsDns1123Label(name)) all.insert(name);
        }
      }
      const std::string manifests = GroupDir(apps, group);
      result.files.push_back(
          RenderedFile{absl::StrCat(manifests, "/kustomization.yaml"),
                       GenerateKustomization(std::vector<std::string>(all.begin(), all.end()))});
      const std::string app_path =
          JoinPath(apps.prefix, absl::StrCat("applications/", group, "-app.yaml"));
      result.files.push_back(RenderedFile{app_path, GenerateApplication(target, group, manifests)});
      result.applications.emplace_back(app_path, group);
    }
    std::sort(result.files.begin(), result.files.end(), ByPath);
    return result;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("rendering failed: ", e.what()));
  }
}

std::string GroupDir(const RenderedApps& apps, const std::string& group) {
  return JoinPath(apps.prefix, absl::StrCat("manifests/", group));
}

std::vector<const RenderedFile*> MergeByPath(const std::vector<RenderedFile>& apps,
                                             const std::vector<RenderedFile>& groups) {
  std::vector<const RenderedFile*> all;
  all.reserve(apps.size() + groups.size());
  for (const RenderedFile& file : apps) all.push_back(&file);
  for (const RenderedFile& file : groups) all.push_back(&file);
  std::inplace_merge(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(apps.size()), all.end(),
                     [](const RenderedFile* a, const RenderedFile* b) { return ByPath(*a, *b); });
  return all;
}

absl::StatusOr<RenderResult> RenderTree(
    const std::vector<AppInput>& apps, const TargetInput& target,
    const std::map<std::string, std::set<std::string>>& existing_apps) {
  absl::StatusOr<RenderedApps> rendered = RenderApps(apps, target);
  if (!rendered.ok()) return rendered.status();
  absl::StatusOr<RenderResult> result = AssembleTree(*rendered, target, existing_apps);
  if (!result.ok()) return result.status();
  std::vector<RenderedFile> files;
  for (const RenderedFile* file : MergeByPath(rendered->files, result->files)) {
    files.push_back(*file);
  }
  result->files = std::move(files);
  return result;
}

}  // namespace elfdeploy::publisher
