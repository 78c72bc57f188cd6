#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace elfdeploy::publisher {

// One app to place in the GitOps tree (elfdeploy.v1.AppManifest).
struct AppInput {
  // DNS-1123 label; the folder manifests/<group>/<name>/.
  std::string name;
  // DNS-1123 label, e.g. "teams" or "mcps".
  std::string group;
  // Full reference pinned by digest: <registry>/<repo>:<tag>@sha256:<hex>.
  std::string image;
  // The app's own manifests; service_yaml and configmap_yaml may be empty (then generated).
  std::string deployment_yaml;
  std::string service_yaml;
  std::string configmap_yaml;
  // Service port of the generated Service; 0 means the containers' containerPorts.
  int port = 0;
  // Data of the generated ConfigMap "<name>-config".
  std::map<std::string, std::string> config;
  // Image repositories (registry, tag and digest ignored) whose containers get `image`; empty
  // means the repository of `image` itself, e.g. "elf-automations/executive-team".
  std::vector<std::string> match_images;
  // Namespace of the app's objects; empty means the target's.
  std::string namespace_;
};

// Where the tree goes and what its Argo CD Applications point at (GitOpsTarget and
// ClusterDestination).
struct TargetInput {
  // Directory of manifests/ and applications/ in the repository; empty means the root.
  std::string path_prefix = "elf-automations";
  // Application spec.source.repoURL.
  std::string repo_url;
  std::string target_revision = "HEAD";
  // Default namespace of the apps and Application spec.destination.namespace.
  std::string namespace_ = "elf-automations";
  std::string destination_server = "https://kubernetes.default.svc";
  std::string argocd_namespace = "argocd";
  std::string project = "default";
  // Name of the image pull Secret the pods reference; the Secret itself is never written.
  std::string image_pull_secret = "regcred";
  bool no_image_pull_secret = false;
};

// One file of the tree.
struct RenderedFile {
  // Repository-relative, e.g. "elf-automations/manifests/teams/executive-team/deployment.yaml".
  std::string path;
  std::string content;
};

struct RenderResult {
  // Sorted by path.
  std::vector<RenderedFile> files;
  // (path of <prefix>/applications/<group>-app.yaml, group), sorted by group.
  std::vector<std::pair<std::string, std::string>> applications;
};

// Renders the GitOps tree of `apps` under target.path_prefix:
//   manifests/<group>/<app>/deployment.yaml   the app's deployment_yaml edited in place: images of
//                                             matching containers, metadata.namespace, the
//                                             app.kubernetes.io/{name,part-of,managed-by} labels
//                                             on the Deployment and its pod template, and
//                                             imagePullSecrets; every other byte is kept
//   manifests/<group>/<app>/service.yaml      given (namespace and labels edited in place) or
//                                             generated: `port` to the first matching container's
//                                             first containerPort, else every containerPort (none
//                                             without ports or when deployment_yaml has one)
//   manifests/<group>/<app>/configmap.yaml    given (edited likewise) or generated from `config`
//   manifests/<group>/<app>/kustomization.yaml  the app's files
//   manifests/<group>/kustomization.yaml      the app folders of the group, sorted: the rendered
//                                             apps and existing_apps[group] (names that are not
//                                             DNS-1123 labels are skipped; each listed folder
//                                             needs its kustomization.yaml, as rendered here)
//   applications/<group>-app.yaml             Argo CD Application "elf-<group>"
// The same input gives byte-identical output, and rendering an output again changes nothing.
// INVALID_ARGUMENT naming the app and the problem: no apps, invalid target, invalid YAML, YAML
// anchors/aliases/tags (alias expansion beyond 100000 nodes is reported as a YAML bomb), no single
// Deployment, no container using the app's image (lists the images found), a selector pinning
// one of elfdeploy's labels to another value, names that are not DNS-1123 labels, duplicate
// apps, an image without digest, any Secret document and any credential-looking config key, env
// value or config value.
absl::StatusOr<RenderResult> RenderTree(
    const std::vector<AppInput>& apps, const TargetInput& target,
    const std::map<std::string, std::set<std::string>>& existing_apps);

// RenderTree in two steps: RenderApps does everything that depends on the request alone (all the
// validation, every app's files), AssembleTree what depends on the branch as well (each group's
// kustomization, which also lists existing_apps, and Application). RenderTree's files are the
// two lists merged by path.
struct RenderedApps {
  std::string prefix;  // target.path_prefix, validated
  std::map<std::string, std::set<std::string>> groups;
  std::vector<RenderedFile> files;  // the apps' own files, sorted by path
};
absl::StatusOr<RenderedApps> RenderApps(const std::vector<AppInput>& apps,
                                        const TargetInput& target);
// The groups' files (sorted by path) and applications; `target` as given to RenderApps.
absl::StatusOr<RenderResult> AssembleTree(
    const RenderedApps& apps, const TargetInput& target,
    const std::map<std::string, std::set<std::string>>& existing_apps);
// "<prefix>/manifests/<group>": the folder of a group's apps and kustomization.
std::string GroupDir(const RenderedApps& apps, const std::string& group);
// The apps' and the groups' files in one list sorted by path.
std::vector<const RenderedFile*> MergeByPath(const std::vector<RenderedFile>& apps,
                                             const std::vector<RenderedFile>& groups);

}  // namespace elfdeploy::publisher
