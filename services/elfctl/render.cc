#include "services/elfctl/render.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "services/common/proto_time.h"
#include "services/elfctl/options.h"

namespace elfdeploy::elfctl {
namespace {

constexpr size_t kDetailWidth = 60;

// Number of code points (display columns, near enough) of UTF-8 text.
size_t Columns(absl::string_view text) {
  return std::count_if(text.begin(), text.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

// `text` cut to at most `width` code points; with `ellipsis`, a cut ends in "…".
std::string Cut(absl::string_view text, size_t width, bool ellipsis) {
  if (Columns(text) <= width) return std::string(text);
  const size_t keep = ellipsis && width > 0 ? width - 1 : width;
  size_t columns = 0;
  size_t i = 0;
  for (; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      if (columns == keep) break;
      ++columns;
    }
  }
  std::string out(text.substr(0, i));
  if (ellipsis && width > 0) out += "…";
  return out;
}

// The first line of `text`.
std::string FirstLine(absl::string_view text) {
  return std::string(text.substr(0, text.find('\n')));
}

std::string TimeOrDash(const google::protobuf::Timestamp& timestamp, absl::TimeZone zone) {
  if (!IsSet(timestamp)) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", FromTimestamp(timestamp), zone);
}

// How long `rollout` ran: from its start (or creation) to its end, or to `now` while running; -1s
// when it has not started.
absl::Duration RolloutDuration(const v1::Rollout& rollout, absl::Time now) {
  const google::protobuf::Timestamp& start =
      IsSet(rollout.start_time()) ? rollout.start_time() : rollout.create_time();
  if (!IsSet(start)) return absl::Seconds(-1);
  const absl::Time end = IsSet(rollout.end_time()) ? FromTimestamp(rollout.end_time()) : now;
  return std::max(absl::ZeroDuration(), end - FromTimestamp(start));
}

std::string FindingHeadline(absl::string_view app, const v1::Finding& finding) {
  std::string kind = FindingKindName(finding.kind());
  if (!finding.reason().empty() && finding.reason() != kind)
    absl::StrAppend(&kind, "/", finding.reason());
  std::string severity = SeverityName(finding.severity());
  if (finding.fatal()) severity = severity == "-" ? "fatal" : absl::StrCat(severity, ", fatal");
  return absl::StrCat(app.empty() ? "(rollout)" : app, "  ", kind, " (", severity,
                      "): ", finding.message());
}

bool IsTerminalStage(v1::Stage stage) {
  return stage == v1::STAGE_SUCCEEDED || stage == v1::STAGE_FAILED || stage == v1::STAGE_CANCELLED;
}

std::string PrefixOf(const google::protobuf::EnumDescriptor& descriptor) {
  std::string prefix;
  for (char c : descriptor.name()) {
    if (absl::ascii_isupper(c) && !prefix.empty()) prefix += '_';
    prefix += absl::ascii_toupper(c);
  }
  return prefix + "_";
}

}  // namespace

std::string ShortEnumName(const google::protobuf::EnumDescriptor& descriptor, int value,
                          NameCase name_case) {
  const google::protobuf::EnumValueDescriptor* found = descriptor.FindValueByNumber(value);
  if (found == nullptr) return absl::StrCat(value);
  absl::string_view name = found->name();
  const std::string prefix = PrefixOf(descriptor);
  if (absl::StartsWith(name, prefix) && name.size() > prefix.size()) {
    name.remove_prefix(prefix.size());
  }
  switch (name_case) {
    case NameCase::kUpper:
      return std::string(name);
    case NameCase::kLower:
      return absl::AsciiStrToLower(name);
    case NameCase::kPascal: {
      std::string out;
      for (absl::string_view word : absl::StrSplit(name, '_', absl::SkipEmpty())) {
        std::string w = absl::AsciiStrToLower(word);
        w[0] = absl::ascii_toupper(w[0]);
        out += w;
      }
      return out;
    }
  }
  return std::string(name);
}

namespace {
template <typename Enum>
std::string ShortOrDash(Enum value, NameCase name_case) {
  if (static_cast<int>(value) == 0) return "-";
  return ShortEnumName(*google::protobuf::GetEnumDescriptor<Enum>(), static_cast<int>(value),
                       name_case);
}
}  // namespace

std::string StageName(v1::Stage stage) { return ShortOrDash(stage, NameCase::kLower); }
std::string StateName(v1::RolloutState state) { return ShortOrDash(state, NameCase::kUpper); }
std::string SyncName(v1::SyncStatus status) { return ShortOrDash(status, NameCase::kPascal); }
std::string HealthName(v1::HealthStatus status) { return ShortOrDash(status, NameCase::kPascal); }
std::string FindingKindName(v1::FindingKind kind) { return ShortOrDash(kind, NameCase::kPascal); }
std::string SeverityName(v1::Severity severity) { return ShortOrDash(severity, NameCase::kLower); }

std::string HumanBytes(int64_t bytes) {
  if (bytes < 1000) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"kB", "MB", "GB", "TB", "PB"};
  double value = static_cast<double>(bytes) / 1000;
  size_t unit = 0;
  while (value >= 999.95 && unit + 1 < std::size(kUnits)) {
    value /= 1000;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string HumanDuration(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) duration = absl::ZeroDuration();
  if (duration < absl::Seconds(59.95)) {
    return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(duration));
  }
  const int64_t seconds = absl::ToInt64Seconds(duration);
  if (seconds < 3600) return absl::StrFormat("%dm%02ds", seconds / 60, seconds % 60);
  return absl::StrFormat("%dh%02dm", seconds / 3600, (seconds % 3600) / 60);
}

std::string ShortDigest(absl::string_view digest) {
  size_t at = digest.find("sha256:");
  if (at == absl::string_view::npos) return digest.empty() ? "-" : std::string(digest);
  return std::string(digest.substr(at, 7 + 7));
}

std::string ShortRevision(absl::string_view revision) {
  if (revision.empty()) return "-";
  return std::string(revision.substr(0, 7));
}

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], Columns(row[i]));
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - Columns(row[i]) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

bool IsTerminal(v1::RolloutState state) {
  return state == v1::ROLLOUT_STATE_SUCCEEDED || state == v1::ROLLOUT_STATE_FAILED ||
         state == v1::ROLLOUT_STATE_TIMED_OUT || state == v1::ROLLOUT_STATE_CANCELLED;
}

int ExitCodeForState(v1::RolloutState state) {
  return state == v1::ROLLOUT_STATE_SUCCEEDED ? kExitOk : kExitFailed;
}

std::string RenderSummaryLine(const v1::Rollout& rollout) {
  std::string line = absl::StrCat("rollout ", rollout.id(), " ", StateName(rollout.state()));
  const absl::Duration duration = RolloutDuration(rollout, absl::Now());
  if (duration >= absl::ZeroDuration()) absl::StrAppend(&line, " in ", HumanDuration(duration));
  if (!rollout.commit().empty()) {
    absl::StrAppend(&line, " commit ", ShortRevision(rollout.commit()),
                    rollout.commit_no_op() ? " (no change)" : "");
  }
  return line + "\n";
}

std::vector<std::pair<std::string, v1::Finding>> CollectFindings(const v1::Rollout& rollout) {
  std::vector<std::pair<std::string, v1::Finding>> findings;
  for (const v1::Finding& finding : rollout.findings())
    findings.emplace_back(finding.app(), finding);
  for (const v1::AppRollout& app : rollout.apps()) {
    for (const v1::Finding& finding : app.findings()) findings.emplace_back(app.name(), finding);
  }
  return findings;
}

std::string RenderFindings(const std::vector<std::pair<std::string, v1::Finding>>& findings) {
  std::string out;
  for (const auto& [app, finding] : findings) {
    absl::StrAppend(&out, FindingHeadline(app, finding), "\n");
    for (const std::string& evidence : finding.evidence()) {
      for (absl::string_view line : absl::StrSplit(evidence, '\n')) {
        absl::StrAppend(&out, "    ", line, "\n");
      }
    }
    if (!finding.remediation().empty()) {
      absl::StrAppend(&out, "    remediation: ", finding.remediation(), "\n");
    }
  }
  return out;
}

std::string RenderRolloutStatus(const v1::Rollout& rollout, absl::Time now, absl::TimeZone zone) {
  std::vector<std::vector<std::string>> header = {
      {"Rollout:", rollout.id()},
      {"State:", StateName(rollout.state())},
  };
  if (!rollout.message().empty()) header.push_back({"Message:", FirstLine(rollout.message())});
  header.push_back({"Commit:", rollout.commit().empty()
                                   ? "-"
                                   : absl::StrCat(rollout.commit(),
                                                  rollout.commit_no_op() ? " (no change)" : "")});
  header.push_back({"Created:", TimeOrDash(rollout.create_time(), zone)});
  const absl::Duration duration = RolloutDuration(rollout, now);
  std::string took = duration < absl::ZeroDuration() ? "-" : HumanDuration(duration);
  if (!IsTerminal(rollout.state()) && duration >= absl::ZeroDuration()) took += " (running)";
  header.push_back({"Duration:", took});
  std::string out = RenderTable(header);

  std::vector<std::vector<std::string>> rows = {{"APP", "GROUP", "SYNC", "HEALTH", "REVISION",
                                                 "PODS", "DISCOVERED", "STAGE", "IMAGE DIGEST"}};
  for (const v1::AppRollout& app : rollout.apps()) {
    rows.push_back({app.name(), app.group().empty() ? "-" : app.group(),
                    SyncName(app.sync_status()), HealthName(app.health_status()),
                    ShortRevision(app.observed_revision()),
                    absl::StrCat(app.pods_ready(), "/", app.pods_desired()),
                    app.discovered() ? "yes" : "no", StageName(app.stage()),
                    ShortDigest(app.image_digest().empty() ? app.image() : app.image_digest())});
  }
  absl::StrAppend(&out, "\n", RenderTable(rows));
  const std::string findings = RenderFindings(CollectFindings(rollout));
  if (!findings.empty()) absl::StrAppend(&out, "\nFINDINGS:\n", findings);
  return out;
}

std::string RenderRolloutList(const std::vector<v1::Rollout>& rollouts, absl::Time now,
                              absl::TimeZone zone) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "APPS", "COMMIT", "CREATED", "DURATION"}};
  for (const v1::Rollout& rollout : rollouts) {
    const absl::Duration duration = RolloutDuration(rollout, now);
    rows.push_back({rollout.id(), StateName(rollout.state()), absl::StrCat(rollout.apps_size()),
                    ShortRevision(rollout.commit()), TimeOrDash(rollout.create_time(), zone),
                    duration < absl::ZeroDuration() ? "-" : HumanDuration(duration)});
  }
  return RenderTable(rows);
}

std::string RenderDiagnosis(const v1::DiagnoseResponse& response, absl::string_view app) {
  std::string out;
  if (!response.cluster().empty()) absl::StrAppend(&out, "Cluster: ", response.cluster(), "\n");
  if (response.workloads_size() > 0) {
    std::vector<std::vector<std::string>> rows = {
        {"APP", "NAMESPACE", "READY", "PODS", "DIGESTS", "DISCOVERED"}};
    for (const v1::WorkloadStatus& workload : response.workloads()) {
      std::vector<std::string> digests;
      for (const std::string& digest : workload.running_digests()) {
        digests.push_back(ShortDigest(digest));
      }
      rows.push_back({workload.app(), workload.namespace_(), workload.ready() ? "yes" : "no",
                      absl::StrCat(workload.pods_ready(), "/", workload.pods_total()),
                      digests.empty() ? "-" : absl::StrJoin(digests, ","),
                      workload.discovered() ? "yes" : "no"});
    }
    absl::StrAppend(&out, RenderTable(rows), "\n");
  }
  if (response.findings_size() == 0) {
    absl::StrAppend(&out, "no problems found for ", app, "\n");
    return out;
  }
  std::vector<std::pair<std::string, v1::Finding>> findings;
  for (const v1::Finding& finding : response.findings()) {
    findings.emplace_back(finding.app().empty() ? std::string(app) : finding.app(), finding);
  }
  absl::StrAppend(&out, "FINDINGS:\n", RenderFindings(findings));
  return out;
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string json;
  google::protobuf::util::Status status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("JSON encoding: ", status.message().as_string()));
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

std::string PlainEventPrinter::Line(const v1::WatchRolloutResponse& event, absl::Time now) {
  const absl::Time at = IsSet(event.event_time()) ? FromTimestamp(event.event_time()) : now;
  const std::string when = start_ == absl::InfinitePast() ? HumanDuration(absl::ZeroDuration())
                                                          : HumanDuration(at - start_);
  switch (event.event_case()) {
    case v1::WatchRolloutResponse::kAppStage: {
      const v1::AppStageChange& change = event.app_stage();
      std::string message = change.message();
      if (message.empty()) message = change.status().message();
      std::string line = absl::StrCat(when, " ", change.app(), " ", StageName(change.stage()));
      if (!message.empty()) absl::StrAppend(&line, ": ", FirstLine(message));
      return line + "\n";
    }
    case v1::WatchRolloutResponse::kProgress: {
      const v1::AppProgress& progress = event.progress();
      const auto key = std::make_pair(progress.app(), static_cast<int>(progress.stage()));
      auto it = last_progress_.find(key);
      if (it != last_progress_.end() && now - it->second < absl::Seconds(1)) return "";
      last_progress_[key] = now;
      std::string line = absl::StrCat(when, " ", progress.app(), " ", StageName(progress.stage()));
      if (!progress.message().empty()) absl::StrAppend(&line, ": ", FirstLine(progress.message()));
      if (progress.bytes_total() > 0) {
        absl::StrAppend(&line, " (", HumanBytes(progress.bytes_done()), " / ",
                        HumanBytes(progress.bytes_total()), ")");
      } else if (progress.bytes_done() > 0) {
        absl::StrAppend(&line, " (", HumanBytes(progress.bytes_done()), ")");
      }
      return line + "\n";
    }
    case v1::WatchRolloutResponse::kFinding: {
      const v1::RolloutFinding& finding = event.finding();
      const std::string app = finding.app().empty() ? finding.finding().app() : finding.app();
      return absl::StrCat(when, " finding: ", FindingHeadline(app, finding.finding()), "\n");
    }
    case v1::WatchRolloutResponse::kState: {
      const v1::RolloutStateChange& change = event.state();
      std::string line = absl::StrCat(when, " rollout ", StateName(change.state()));
      if (!change.message().empty()) absl::StrAppend(&line, ": ", FirstLine(change.message()));
      return line + "\n";
    }
    case v1::WatchRolloutResponse::EVENT_NOT_SET:
      break;
  }
  return "";
}

LiveView::LiveView(const v1::Rollout& rollout, absl::Time now) : rollout_(rollout) {
  start_ = IsSet(rollout.create_time()) ? std::min(now, FromTimestamp(rollout.create_time())) : now;
  for (const v1::AppRollout& app : rollout.apps()) {
    Row& row = RowFor(app.name());
    row.group = app.group();
    row.stage = app.stage();
    row.detail = app.message();
    row.bytes = app.bytes_pushed();
  }
}

LiveView::Row& LiveView::RowFor(const std::string& app) {
  for (Row& row : rows_) {
    if (row.app == app) return row;
  }
  rows_.push_back(Row{});
  rows_.back().app = app;
  return rows_.back();
}

void LiveView::Apply(const v1::WatchRolloutResponse& event, absl::Time now) {
  const absl::Time at =
      IsSet(event.event_time()) ? std::min(now, FromTimestamp(event.event_time())) : now;
  switch (event.event_case()) {
    case v1::WatchRolloutResponse::kAppStage: {
      const v1::AppStageChange& change = event.app_stage();
      Row& row = RowFor(change.app());
      const v1::AppRollout& status = change.status();
      if (!status.group().empty()) row.group = status.group();
      row.stage = change.stage();
      row.detail = change.message().empty() ? status.message() : change.message();
      if (status.bytes_pushed() > 0) row.bytes = status.bytes_pushed();
      row.stage_start = at;
      if (status.stage_timings_size() > 0) {
        const v1::StageTiming& last = status.stage_timings(status.stage_timings_size() - 1);
        if (last.stage() == change.stage() && IsSet(last.start_time())) {
          row.stage_start = std::min(now, FromTimestamp(last.start_time()));
        }
        if (IsSet(status.stage_timings(0).start_time())) {
          row.first_start = std::min(now, FromTimestamp(status.stage_timings(0).start_time()));
        }
      }
      if (row.first_start == absl::InfinitePast()) row.first_start = row.stage_start;
      row.end = IsTerminalStage(row.stage) ? row.stage_start : absl::InfiniteFuture();
      break;
    }
    case v1::WatchRolloutResponse::kProgress: {
      const v1::AppProgress& progress = event.progress();
      Row& row = RowFor(progress.app());
      if (progress.stage() != v1::STAGE_UNSPECIFIED && progress.stage() != row.stage) {
        row.stage = progress.stage();
        row.stage_start = at;
        if (row.first_start == absl::InfinitePast()) row.first_start = at;
      }
      if (!progress.message().empty()) row.detail = progress.message();
      if (progress.bytes_done() > 0) row.bytes = progress.bytes_done();
      break;
    }
    case v1::WatchRolloutResponse::kFinding: {
      const v1::RolloutFinding& finding = event.finding();
      findings_.emplace_back(finding.app().empty() ? finding.finding().app() : finding.app(),
                             finding.finding());
      break;
    }
    case v1::WatchRolloutResponse::kState: {
      const v1::RolloutStateChange& change = event.state();
      if (!change.rollout().id().empty()) rollout_ = change.rollout();
      rollout_.set_state(change.state());
      if (!change.message().empty()) rollout_.set_message(change.message());
      if (IsTerminal(change.state())) {
        end_ = IsSet(change.rollout().end_time())
                   ? std::min(now, FromTimestamp(change.rollout().end_time()))
                   : at;
      }
      break;
    }
    case v1::WatchRolloutResponse::EVENT_NOT_SET:
      break;
  }
}

std::string LiveView::Frame(absl::Time now, int width) const {
  std::string title = absl::StrCat("rollout ", rollout_.id(), "  ", StateName(rollout_.state()),
                                   "  ", HumanDuration(std::min(now, end_) - start_));
  if (!rollout_.message().empty()) absl::StrAppend(&title, "  ", FirstLine(rollout_.message()));
  if (!notice_.empty()) absl::StrAppend(&title, "\n", notice_);
  std::vector<std::vector<std::string>> rows = {
      {"APP", "GROUP", "STAGE", "DETAIL", "BYTES", "ELAPSED"}};
  for (const Row& row : rows_) {
    std::string elapsed = "-";
    if (IsTerminalStage(row.stage)) {
      if (row.first_start != absl::InfinitePast()) {
        elapsed = HumanDuration(row.end - row.first_start);
      }
    } else if (row.stage_start != absl::InfinitePast()) {
      elapsed = HumanDuration(now - row.stage_start);
    }
    rows.push_back({row.app, row.group.empty() ? "-" : row.group, StageName(row.stage),
                    row.detail.empty() ? "" : Cut(FirstLine(row.detail), kDetailWidth, true),
                    row.bytes > 0 ? HumanBytes(row.bytes) : "-", elapsed});
  }
  std::string frame = absl::StrCat(title, "\n", RenderTable(rows));
  if (!findings_.empty()) {
    absl::StrAppend(&frame, "FINDINGS:\n");
    for (const auto& [app, finding] : findings_) {
      absl::StrAppend(&frame, FindingHeadline(app, finding), "\n");
    }
  }
  if (width <= 0) return frame;
  std::string out;
  for (absl::string_view line : absl::StrSplit(frame, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, Cut(line, static_cast<size_t>(width), false), "\n");
  }
  return out;
}

std::string RedrawPrefix(int lines) {
  if (lines <= 0) return "";
  return absl::StrCat("\r\x1b[", lines, "A\x1b[J");
}

}  // namespace elfdeploy::elfctl
