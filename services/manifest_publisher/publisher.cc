#include "services/manifest_publisher/publisher.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace elfdeploy::publisher {

namespace {

// The request's RenderApps, done by the first render of a Publish or Render: a render again on a
// branch that moved only reassembles the groups' files. GitPublisher renders one at a time.
class AppsOnce {
 public:
  explicit AppsOnce(const PublishParams& params) : params_(params) {}

  const absl::StatusOr<RenderedApps>& Get() {
    if (!apps_.has_value()) apps_ = RenderApps(params_.apps, params_.tree);
    return *apps_;
  }

 private:
  const PublishParams& params_;
  std::optional<absl::StatusOr<RenderedApps>> apps_;
};

// Renders `params` on the branch's tree; the last render's applications and files go to
// `applications` and `files`.
RenderFn MakeRender(const PublishParams& params, AppsOnce& apps,
                    std::vector<std::pair<std::string, std::string>>* applications,
                    std::vector<FileResult>* files) {
  return [&params, &apps, applications,
          files](const TreeReader& tree) -> absl::StatusOr<std::vector<FileChange>> {
    const absl::StatusOr<RenderedApps>& rendered = apps.Get();
    if (!rendered.ok()) return rendered.status();
    // Every app folder already in a rendered group stays listed in its kustomization.
    std::map<std::string, std::set<std::string>> existing;
    for (const auto& [group, names] : rendered->groups) {
      absl::StatusOr<std::vector<std::string>> listed = tree.ListDir(GroupDir(*rendered, group));
      if (!listed.ok()) return listed.status();
      std::set<std::string>& apps_there = existing[group];
      for (const std::string& name : *listed) {
        if (name != "kustomization.yaml") apps_there.insert(name);
      }
    }
    absl::StatusOr<RenderResult> assembled = AssembleTree(*rendered, params.tree, existing);
    if (!assembled.ok()) return assembled.status();
    std::vector<FileChange> changes;
    files->clear();
    for (const RenderedFile* file : MergeByPath(rendered->files, assembled->files)) {
      absl::StatusOr<std::optional<std::string>> current = tree.ReadFile(file->path);
      if (!current.ok()) return current.status();
      Change change = !current->has_value()        ? Change::kAdded
                      : **current == file->content ? Change::kUnchanged
                                                   : Change::kModified;
      files->push_back(FileResult{file->path, file->content, change});
      changes.push_back(FileChange{file->path, file->content});
    }
    *applications = std::move(assembled->applications);
    return changes;
  };
}

}  // namespace

PublishMetrics::PublishMetrics(prometheus::Registry& registry)
    : commits_(prometheus::BuildCounter()
                   .Name("elfdeploy_publish_commits_total")
                   .Help("GitOps commits pushed.")
                   .Register(registry)
                   .Add({})),
      noops_(prometheus::BuildCounter()
                 .Name("elfdeploy_publish_noop_total")
                 .Help("Publishes whose tree equalled the head: no commit.")
                 .Register(registry)
                 .Add({})),
      push_retries_(prometheus::BuildCounter()
                        .Name("elfdeploy_publish_push_retries_total")
                        .Help("Pushes retried after the remote moved (non-fast-forward).")
                        .Register(registry)
                        .Add({})),
      seconds_(prometheus::BuildHistogram()
                   .Name("elfdeploy_publish_seconds")
                   .Help("Duration of successful publishes.")
                   .Register(registry)
                   .Add({}, prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                                                    10, 30, 60})) {}

void PublishMetrics::Published(const PublishOutcome& outcome, absl::Duration elapsed) {
  if (outcome.no_op) {
    noops_.Increment();
  } else {
    commits_.Increment();
  }
  if (outcome.attempts > 1) push_retries_.Increment(outcome.attempts - 1);
  seconds_.Observe(absl::ToDoubleSeconds(elapsed));
}

ManifestPublisher::ManifestPublisher(ManifestPublisherOptions options, PublishMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics), git_(options_.git) {}

CommitSpec ManifestPublisher::MakeCommit(const PublishParams& params) const {
  CommitSpec commit;
  std::vector<std::string> names;
  std::vector<std::pair<std::string, std::string>> images;
  for (const AppInput& app : params.apps) {
    names.push_back(app.name);
    size_t at = app.image.rfind('@');
    images.emplace_back(app.name, at == std::string::npos ? app.image : app.image.substr(at + 1));
  }
  std::sort(images.begin(), images.end());
  commit.message =
      params.message.empty() ? absl::StrCat("Deploy ", absl::StrJoin(names, ", ")) : params.message;
  if (!params.correlation_id.empty()) {
    commit.trailers.emplace_back("Elfdeploy-Rollout", params.correlation_id);
  }
  for (const auto& [name, digest] : images) {
    commit.trailers.emplace_back("Image", absl::StrCat(name, "=", digest));
  }
  commit.author_name = params.author_name.empty() ? options_.author_name : params.author_name;
  commit.author_email = params.author_email.empty() ? options_.author_email : params.author_email;
  return commit;
}

absl::StatusOr<RenderOutcome> ManifestPublisher::Render(const PublishParams& params) {
  if (params.apps.empty()) return absl::InvalidArgumentError("apps: at least one is required");
  std::vector<std::pair<std::string, std::string>> applications;
  std::vector<FileResult> files;
  AppsOnce apps(params);
  absl::StatusOr<std::pair<std::string, std::string>> diff =
      git_.Diff(params.git, MakeRender(params, apps, &applications, &files));
  if (!diff.ok()) return diff.status();
  RenderOutcome outcome;
  outcome.files = std::move(files);
  outcome.diff = diff->first;
  outcome.base_commit = diff->second;
  outcome.no_op = std::all_of(outcome.files.begin(), outcome.files.end(),
                              [](const FileResult& f) { return f.change == Change::kUnchanged; });
  outcome.applications = std::move(applications);
  return outcome;
}

absl::StatusOr<PublishResult> ManifestPublisher::Publish(const PublishParams& params) {
  if (params.apps.empty()) return absl::InvalidArgumentError("apps: at least one is required");
  absl::Time start = absl::Now();
  std::vector<std::pair<std::string, std::string>> applications;
  std::vector<FileResult> files;
  AppsOnce apps(params);
  absl::StatusOr<PublishOutcome> outcome =
      git_.Publish(params.git, MakeRender(params, apps, &applications, &files), MakeCommit(params));
  if (!outcome.ok()) return outcome.status();
  if (metrics_ != nullptr) metrics_->Published(*outcome, absl::Now() - start);
  PublishResult result;
  result.git = *outcome;
  result.applications = std::move(applications);
  if (!outcome->no_op) {
    for (FileResult& file : files) {
      if (file.change == Change::kUnchanged) continue;
      file.content.clear();
      result.changed.push_back(std::move(file));
    }
  }
  return result;
}

}  // namespace elfdeploy::publisher
