#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tests/kubesim/git_source.h"

namespace elfdeploy::kubesim {

struct RenderedSource {
  std::vector<nlohmann::json> objects;
  // status.sourceType as Argo CD reports it: "Kustomize" or "Directory".
  std::string source_type;
};

// Renders the manifests of an Application's source path the way Argo CD's repo-server does, for
// what elfdeploy writes:
//  - a directory with kustomization.yaml (or .yml, or Kustomization): `resources` (files, and
//    directories with their own kustomization, recursively; paths relative to the directory and
//    never outside the repository), `namespace` (set on every namespaced object), `commonLabels`
//    and `commonAnnotations`. Any other field is refused by name, where kustomize would apply it.
//  - otherwise every *.yaml, *.yml and *.json file of the directory (not recursive).
// Errors are INVALID_ARGUMENT with the repo-server's wording: "`kustomize build <path>` failed
// exit status 1: Error: ..." or "Failed to unmarshal \"<file>\": ...", and NOT_FOUND
// "<path>: app path does not exist".
absl::StatusOr<RenderedSource> RenderSource(const TreeView& tree, const std::string& path);

}  // namespace elfdeploy::kubesim
