#include "tests/kubesim/source_render.h"

#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/kubesim/manifests.h"
#include "tests/kubesim/store.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;

constexpr int kMaxDepth = 32;

// `relative` resolved against `dir`, normalized; an error when it leaves the repository.
absl::StatusOr<std::string> JoinInRepo(const std::string& dir, absl::string_view relative) {
  std::vector<std::string> parts;
  if (!absl::StartsWith(relative, "/")) {
    for (absl::string_view part : absl::StrSplit(dir, '/', absl::SkipEmpty())) {
      parts.emplace_back(part);
    }
  }
  for (absl::string_view part : absl::StrSplit(relative, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (parts.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("resource \"", relative, "\" is outside the repository"));
      }
      parts.pop_back();
      continue;
    }
    parts.emplace_back(part);
  }
  return absl::StrJoin(parts, "/");
}

std::string FileIn(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : absl::StrCat(dir, "/", name);
}

class Kustomizer {
 public:
  explicit Kustomizer(const TreeView& tree) : tree_(tree) {}

  // The kustomization file of `dir`, or "" when it has none.
  absl::StatusOr<std::string> KustomizationFile(const std::string& dir) const {
    for (const char* name : {"kustomization.yaml", "kustomization.yml", "Kustomization"}) {
      absl::StatusOr<std::optional<std::string>> content = tree_.ReadFile(FileIn(dir, name));
      if (!content.ok()) return content.status();
      if (content->has_value()) return FileIn(dir, name);
    }
    return std::string();
  }

  absl::StatusOr<std::vector<json>> Build(const std::string& dir, int depth) {
    if (depth > kMaxDepth) {
      return absl::InvalidArgumentError(absl::StrCat("kustomizations nested deeper than ",
                                                     kMaxDepth, " at '", dir, "' (a cycle?)"));
    }
    absl::StatusOr<std::string> file = KustomizationFile(dir);
    if (!file.ok()) return file.status();
    if (file->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in "
          "directory '",
          dir, "'"));
    }
    absl::StatusOr<std::optional<std::string>> text = tree_.ReadFile(*file);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::vector<json>> docs = ParseManifests(**text, *file);
    if (!docs.ok()) return docs.status();
    json kustomization = docs->empty() ? json::object() : docs->front();
    for (const auto& [key, value] : kustomization.items()) {
      static const std::set<std::string> kSupported = {
          "apiVersion", "kind", "resources", "namespace", "commonLabels", "commonAnnotations"};
      if (!kSupported.contains(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(*file, ": field '", key, "' is not supported by kubesim"));
      }
    }
    std::vector<json> objects;
    if (kustomization.contains("resources")) {
      const json& resources = kustomization["resources"];
      if (!resources.is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(*file, ": resources is not a list"));
      }
      for (const json& resource : resources) {
        if (!resource.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(*file, ": a resource is not a string"));
        }
        absl::StatusOr<std::string> path = JoinInRepo(dir, resource.get<std::string>());
        if (!path.ok()) return path.status();
        absl::StatusOr<std::vector<json>> loaded = LoadResource(*path, depth);
        if (!loaded.ok()) return loaded.status();
        for (json& object : *loaded) objects.push_back(std::move(object));
      }
    }
    std::string ns = kustomization.value("namespace", "");
    for (json& object : objects) {
      json& metadata = object["metadata"];
      const ResourceType* type =
          FindResourceByKind(object.value("apiVersion", ""), object.value("kind", ""));
      if (!ns.empty() && (type == nullptr || type->namespaced)) metadata["namespace"] = ns;
      for (const char* field : {"commonLabels", "commonAnnotations"}) {
        if (!kustomization.contains(field)) continue;
        if (!kustomization[field].is_object()) {
          return absl::InvalidArgumentError(absl::StrCat(*file, ": ", field, " is not a map"));
        }
        json& target = metadata[std::string(field) == "commonLabels" ? "labels" : "annotations"];
        for (const auto& [key, value] : kustomization[field].items()) target[key] = value;
      }
    }
    return objects;
  }

  absl::StatusOr<std::vector<json>> LoadResource(const std::string& path, int depth) {
    absl::StatusOr<std::optional<std::vector<std::string>>> listing = tree_.ListDir(path);
    if (!listing.ok()) return listing.status();
    if (listing->has_value()) return Build(path, depth + 1);
    absl::StatusOr<std::optional<std::string>> content = tree_.ReadFile(path);
    if (!content.ok()) return content.status();
    if (!content->has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("accumulating resources: '", path, "': no such file or directory"));
    }
    return ParseManifests(**content, path);
  }

 private:
  const TreeView& tree_;
};

}  // namespace

absl::StatusOr<RenderedSource> RenderSource(const TreeView& tree, const std::string& path) {
  absl::StatusOr<std::string> dir = JoinInRepo("", path);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::optional<std::vector<std::string>>> listing = tree.ListDir(*dir);
  if (!listing.ok()) return listing.status();
  if (!listing->has_value()) {
    return absl::NotFoundError(absl::StrCat(path, ": app path does not exist"));
  }
  Kustomizer kustomizer(tree);
  absl::StatusOr<std::string> kustomization = kustomizer.KustomizationFile(*dir);
  if (!kustomization.ok()) return kustomization.status();
  RenderedSource rendered;
  if (!kustomization->empty()) {
    rendered.source_type = "Kustomize";
    absl::StatusOr<std::vector<json>> objects = kustomizer.Build(*dir, 0);
    if (!objects.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("`kustomize build ", *dir,
                       "` failed exit status 1: Error: ", objects.status().message()));
    }
    rendered.objects = *std::move(objects);
    return rendered;
  }
  rendered.source_type = "Directory";
  for (const std::string& name : **listing) {
    if (absl::EndsWith(name, "/")) continue;
    if (!absl::EndsWith(name, ".yaml") && !absl::EndsWith(name, ".yml") &&
        !absl::EndsWith(name, ".json")) {
      continue;
    }
    std::string file = FileIn(*dir, name);
    absl::StatusOr<std::optional<std::string>> content = tree.ReadFile(file);
    if (!content.ok()) return content.status();
    absl::StatusOr<std::vector<json>> objects = ParseManifests(content->value_or(""), file);
    if (!objects.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Failed to unmarshal \"", name, "\": ", objects.status().message()));
    }
    for (json& object : *objects) rendered.objects.push_back(std::move(object));
  }
  return rendered;
}

}  // namespace elfdeploy::kubesim
