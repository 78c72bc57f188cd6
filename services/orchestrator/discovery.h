#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "elfdeploy/v1/orchestrator.pb.h"

namespace elfdeploy::orchestrator {

// One app a rollout deploys, resolved on the orchestrator's host.
struct DiscoveredApp {
  std::string name;                               // DNS-1123 label; the Deployment name
  std::string group;                              // DNS-1123 label, e.g. "teams"
  std::string dir;                                // absolute build context
  std::string dockerfile;                         // relative to dir
  std::string deployment_path;                    // absolute path of the app's Deployment manifest
  std::map<std::string, std::string> build_args;  // the request's, then the app's over them
};

// The apps of a Deploy request, sorted by group then name. With request.apps() empty: every
// `<source_dir>/<group>/<name>/` holding a Dockerfile and k8s/deployment.yaml (the seed's
// layout: teams/, mcps/, ...); folders without a Dockerfile are skipped, a Dockerfile without
// k8s/deployment.yaml is an error. With explicit apps: each as AppSource describes it.
// Errors: INVALID_ARGUMENT (neither source_dir nor apps, a relative dir without source_dir, a name
// or group that is not a DNS-1123 label, a duplicate app, a path leaving its folder), NOT_FOUND (a
// folder, Dockerfile or manifest missing, naming it), FAILED_PRECONDITION (no app in source_dir).
absl::StatusOr<std::vector<DiscoveredApp>> DiscoverApps(const v1::DeployRequest& request);

}  // namespace elfdeploy::orchestrator
