#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/manifest_publisher/git_publish.h"
#include "services/manifest_publisher/render.h"

namespace elfdeploy::publisher {

// What one Render or Publish call asks for, free of gRPC.
struct PublishParams {
  std::vector<AppInput> apps;
  TargetInput tree;
  GitTarget git;
  std::string message;
  std::string correlation_id;
  std::string author_name;
  std::string author_email;
};

enum class Change { kAdded, kModified, kDeleted, kUnchanged };

struct FileResult {
  std::string path;
  std::string content;
  Change change = Change::kUnchanged;
};

struct RenderOutcome {
  std::vector<FileResult> files;  // sorted by path
  std::string diff;
  std::string base_commit;
  bool no_op = false;
  std::vector<std::pair<std::string, std::string>> applications;  // (path, group)
};

struct PublishResult {
  PublishOutcome git;
  std::vector<FileResult> changed;  // without content
  std::vector<std::pair<std::string, std::string>> applications;
};

// The publish metrics of DESIGN.md's naming.
class PublishMetrics {
 public:
  explicit PublishMetrics(prometheus::Registry& registry);
  void Published(const PublishOutcome& outcome, absl::Duration elapsed);

 private:
  prometheus::Counter& commits_;
  prometheus::Counter& noops_;
  prometheus::Counter& push_retries_;
  prometheus::Histogram& seconds_;
};

struct ManifestPublisherOptions {
  PublisherOptions git;
  std::string author_name = "elfdeploy";
  std::string author_email = "elfdeploy@localhost";
};

// ManifestPublisherService's logic: renders the GitOps tree on top of the branch head and commits
// it (Publish) or diffs it (Render). Thread-safe.
class ManifestPublisher {
 public:
  // `metrics` may be null.
  ManifestPublisher(ManifestPublisherOptions options, PublishMetrics* metrics);

  absl::StatusOr<RenderOutcome> Render(const PublishParams& params);
  absl::StatusOr<PublishResult> Publish(const PublishParams& params);

 private:
  CommitSpec MakeCommit(const PublishParams& params) const;

  ManifestPublisherOptions options_;
  PublishMetrics* metrics_;
  GitPublisher git_;
};

}  // namespace elfdeploy::publisher
