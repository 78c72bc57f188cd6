#include "services/orchestrator/discovery.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/k8s_names.h"

namespace elfdeploy::orchestrator {
namespace {

namespace fs = std::filesystem;

// `relative` inside `dir`, refusing absolute paths and "..".
absl::StatusOr<fs::path> Inside(const fs::path& dir, const std::string& relative,
                                const std::string& what) {
  fs::path path(relative);
  if (path.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", relative, "\" must be relative"));
  }
  for (const fs::path& part : path) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", relative, "\" leaves the app folder"));
    }
  }
  return dir / path;
}

absl::StatusOr<DiscoveredApp> Resolve(const v1::AppSource& source, const fs::path& source_dir,
                                      const v1::DeployRequest& request) {
  const std::string where = absl::StrCat("app ", source.group(), "/", source.name());
  for (const auto& [value, field] :
       {std::pair{source.name(), "name"}, std::pair{source.group(), "group"}}) {
    if (!IsDns1123Label(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", field, " \"", value,
          "\" is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"));
    }
  }
  fs::path dir;
  if (source.dir().empty()) {
    if (source_dir.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": no dir and no source_dir"));
    }
    dir = source_dir / source.group() / source.name();
  } else if (fs::path(source.dir()).is_absolute()) {
    dir = source.dir();
  } else if (source_dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": dir \"", source.dir(), "\" is relative and there is no source_dir"));
  } else {
    dir = source_dir / source.dir();
  }
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(where, ": folder ", dir.string(), " does not exist"));
  }
  DiscoveredApp app;
  app.name = source.name();
  app.group = source.group();
  app.dir = fs::absolute(dir).lexically_normal().string();
  app.dockerfile = source.dockerfile().empty() ? "Dockerfile" : source.dockerfile();
  absl::StatusOr<fs::path> dockerfile = Inside(dir, app.dockerfile, "dockerfile");
  if (!dockerfile.ok())
    return absl::Status(dockerfile.status().code(),
                        absl::StrCat(where, ": ", dockerfile.status().message()));
  if (!fs::is_regular_file(*dockerfile, ec)) {
    return absl::NotFoundError(absl::StrCat(where, ": no ", dockerfile->string()));
  }
  std::string manifest =
      source.deployment_path().empty() ? "k8s/deployment.yaml" : source.deployment_path();
  absl::StatusOr<fs::path> deployment = Inside(dir, manifest, "deployment_path");
  if (!deployment.ok())
    return absl::Status(deployment.status().code(),
                        absl::StrCat(where, ": ", deployment.status().message()));
  if (!fs::is_regular_file(*deployment, ec)) {
    return absl::NotFoundError(absl::StrCat(where, ": no ", deployment->string()));
  }
  app.deployment_path = fs::absolute(*deployment).lexically_normal().string();
  for (const auto& [key, value] : request.build_args()) app.build_args[key] = value;
  for (const auto& [key, value] : source.build_args()) app.build_args[key] = value;
  return app;
}

}  // namespace

absl::StatusOr<std::vector<DiscoveredApp>> DiscoverApps(const v1::DeployRequest& request) {
  fs::path source_dir = request.source_dir();
  std::vector<v1::AppSource> sources(request.apps().begin(), request.apps().end());
  std::error_code ec;
  if (sources.empty()) {
    if (source_dir.empty()) {
      return absl::InvalidArgumentError("source_dir or apps is required");
    }
    if (!fs::is_directory(source_dir, ec)) {
      return absl::NotFoundError(
          absl::StrCat("source_dir ", source_dir.string(), " does not exist"));
    }
    for (const fs::directory_entry& group : fs::directory_iterator(source_dir, ec)) {
      if (!group.is_directory() || absl::StartsWith(group.path().filename().string(), ".")) {
        continue;
      }
      for (const fs::directory_entry& app : fs::directory_iterator(group.path(), ec)) {
        if (!app.is_directory() || !fs::is_regular_file(app.path() / "Dockerfile", ec)) continue;
        v1::AppSource source;
        source.set_group(group.path().filename().string());
        source.set_name(app.path().filename().string());
        sources.push_back(std::move(source));
      }
    }
    if (sources.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no app in ", source_dir.string(),
                       ": expected <group>/<app>/Dockerfile (teams/, mcps/)"));
    }
  }
  std::vector<DiscoveredApp> apps;
  std::set<std::string> names;
  for (const v1::AppSource& source : sources) {
    absl::StatusOr<DiscoveredApp> app = Resolve(source, source_dir, request);
    if (!app.ok()) return app.status();
    // The app name is the Deployment name, unique across groups in one namespace.
    if (!names.insert(app->name).second) {
      return absl::InvalidArgumentError(absl::StrCat("app ", app->name, " appears twice"));
    }
    apps.push_back(*std::move(app));
  }
  std::sort(apps.begin(), apps.end(), [](const DiscoveredApp& a, const DiscoveredApp& b) {
    return std::tie(a.group, a.name) < std::tie(b.group, b.name);
  });
  return apps;
}

}  // namespace elfdeploy::orchestrator
