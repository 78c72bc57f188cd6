#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/cluster_watcher.pb.h"
#include "elfdeploy/v1/orchestrator.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

// elfctl's output, free of gRPC: functions from protos to text or JSON.
namespace elfdeploy::elfctl {

enum class NameCase {
  kPascal,  // SYNC_STATUS_OUT_OF_SYNC -> OutOfSync (Argo CD's spelling)
  kLower,   // STAGE_VERIFYING -> verifying
  kUpper,   // ROLLOUT_STATE_TIMED_OUT -> TIMED_OUT
};

// `value`'s name in `descriptor` without the enum's UPPER_SNAKE prefix, in `name_case`; the number
// when `value` is not defined.
std::string ShortEnumName(const google::protobuf::EnumDescriptor& descriptor, int value,
                          NameCase name_case);

// The short names of elfctl's tables; "-" for the _UNSPECIFIED value.
std::string StageName(v1::Stage stage);             // verifying
std::string StateName(v1::RolloutState state);      // SUCCEEDED
std::string SyncName(v1::SyncStatus status);        // Synced
std::string HealthName(v1::HealthStatus status);    // Healthy
std::string FindingKindName(v1::FindingKind kind);  // ImagePull
std::string SeverityName(v1::Severity severity);    // error

// "0 B", "512 B", "12.3 kB", "12.3 MB" (powers of 1000).
std::string HumanBytes(int64_t bytes);
// "0.4s", "41.2s", "3m12s", "1h02m".
std::string HumanDuration(absl::Duration duration);
// "sha256:0123456" from a digest or image reference holding one; "-" when none.
std::string ShortDigest(absl::string_view digest);
// First 7 characters; "-" when empty.
std::string ShortRevision(absl::string_view revision);

// Rows (the first is the header) as columns separated by two spaces, trailing spaces trimmed.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows);

bool IsTerminal(v1::RolloutState state);
// kExitOk for SUCCEEDED, kExitFailed otherwise.
int ExitCodeForState(v1::RolloutState state);

// `rollout <id> SUCCEEDED in 41.2s commit abc1234` (commit omitted when none).
std::string RenderSummaryLine(const v1::Rollout& rollout);

// Every finding of a rollout (its own, then each app's), as RenderFindings prints them.
std::vector<std::pair<std::string, v1::Finding>> CollectFindings(const v1::Rollout& rollout);
// One block per (app, finding): `APP  Kind/Reason (severity[, fatal]): message`, the evidence
// indented below, then the remediation. "" for none.
std::string RenderFindings(const std::vector<std::pair<std::string, v1::Finding>>& findings);

// `elfctl status`: header lines, the app table, the findings. Times in `zone`; `now` ends the
// duration of a rollout still running.
std::string RenderRolloutStatus(const v1::Rollout& rollout, absl::Time now, absl::TimeZone zone);

// `elfctl rollouts`: ID, STATE, APPS, COMMIT, CREATED, DURATION.
std::string RenderRolloutList(const std::vector<v1::Rollout>& rollouts, absl::Time now,
                              absl::TimeZone zone);

// `elfctl diagnose APP`: the workloads and findings, or "no problems found for APP".
std::string RenderDiagnosis(const v1::DiagnoseResponse& response, absl::string_view app);

// The message as one JSON document with the proto3 JSON (camelCase) names, ending in a newline.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

// Plain (non-terminal) rendering of a WatchRollout stream: one line per stored event, progress at
// most once per app and stage per second.
class PlainEventPrinter {
 public:
  // `start`: the rollout's create time; line times are relative to it.
  explicit PlainEventPrinter(absl::Time start) : start_(start) {}

  // The line(s) for `event` received at `now`, each ending in '\n'; "" when skipped.
  std::string Line(const v1::WatchRolloutResponse& event, absl::Time now);

 private:
  absl::Time start_;
  std::map<std::pair<std::string, int>, absl::Time> last_progress_;
};

// The live table of a rollout being followed on a terminal.
class LiveView {
 public:
  // `rollout`: as Deploy returned it (id, create time, apps known so far).
  explicit LiveView(const v1::Rollout& rollout, absl::Time now);

  // Applies one event received at `now`.
  void Apply(const v1::WatchRolloutResponse& event, absl::Time now);

  // The frame at `now`: a line with the rollout id, state and total elapsed, the app table
  // (APP, GROUP, STAGE, DETAIL, BYTES, ELAPSED), then the findings; each line cut to `width`
  // columns (0: no limit) and ending in '\n'.
  std::string Frame(absl::Time now, int width) const;

  // A line shown under the title (e.g. a reconnect in progress); "" clears it.
  void SetNotice(std::string notice) { notice_ = std::move(notice); }

  const v1::Rollout& rollout() const { return rollout_; }

 private:
  struct Row {
    std::string app;
    std::string group;
    v1::Stage stage = v1::STAGE_UNSPECIFIED;
    std::string detail;
    int64_t bytes = 0;
    absl::Time stage_start = absl::InfinitePast();
    absl::Time first_start = absl::InfinitePast();
    absl::Time end = absl::InfiniteFuture();
  };
  Row& RowFor(const std::string& app);

  v1::Rollout rollout_;
  absl::Time start_;
  absl::Time end_ = absl::InfiniteFuture();
  std::vector<Row> rows_;
  std::vector<std::pair<std::string, v1::Finding>> findings_;
  std::string notice_;
};

// ANSI sequence that moves the cursor up over the `lines` lines of the previous frame and clears
// them; "" when `lines` is 0.
std::string RedrawPrefix(int lines);

}  // namespace elfdeploy::elfctl
