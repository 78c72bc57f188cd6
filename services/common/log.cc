#include "services/common/log.h"

#include <unistd.h>

#include <array>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace elfdeploy {

bool IsSensitiveKey(absl::string_view key) {
  static constexpr std::array<absl::string_view, 9> kWords = {
      "password",   "passwd",  "secret", "token",      "authorization",
      "credential", "api_key", "apikey", "private_key"};
  std::string lower = absl::AsciiStrToLower(key);
  if (lower == "auth") return true;
  for (absl::string_view word : kWords) {
    if (absl::StrContains(lower, word)) return true;
  }
  return false;
}

std::string RedactValue(absl::string_view value) {
  for (absl::string_view scheme : {"Bearer ", "Basic "}) {
    if (absl::StartsWithIgnoreCase(value, scheme)) {
      return absl::StrCat(value.substr(0, scheme.size()), kRedacted);
    }
  }
  std::string out;
  size_t pos = 0;
  // Every "scheme://user:password@" in the value loses its password.
  while (true) {
    size_t scheme_end = value.find("://", pos);
    if (scheme_end == absl::string_view::npos) break;
    size_t info_start = scheme_end + 3;
    size_t authority_end = value.find_first_of("/?# \t\"'", info_start);
    if (authority_end == absl::string_view::npos) authority_end = value.size();
    absl::string_view authority = value.substr(info_start, authority_end - info_start);
    size_t at = authority.rfind('@');
    size_t colon = authority.find(':');
    if (at != absl::string_view::npos && colon != absl::string_view::npos && colon < at) {
      absl::StrAppend(&out, value.substr(pos, info_start + colon + 1 - pos), kRedacted);
      pos = info_start + at;
    } else {
      absl::StrAppend(&out, value.substr(pos, authority_end - pos));
      pos = authority_end;
    }
  }
  absl::StrAppend(&out, value.substr(pos));
  return out;
}

namespace log {
namespace {

struct State {
  absl::Mutex mu;
  Options options ABSL_GUARDED_BY(mu);
};

State& GlobalState() {
  static State* state = new State();
  return *state;
}

absl::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "info";
}

// logfmt quoting: bare when the value has no space, '=', '"' or control characters.
void AppendLogfmtValue(std::string* out, absl::string_view value) {
  bool bare = !value.empty();
  for (char c : value) {
    if (c == ' ' || c == '=' || c == '"' || static_cast<unsigned char>(c) < 0x20) {
      bare = false;
      break;
    }
  }
  if (bare) {
    out->append(value.data(), value.size());
    return;
  }
  out->push_back('"');
  for (char c : value) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

}  // namespace

Field::Field(absl::string_view key, absl::string_view value)
    : key_(key), value_(IsSensitiveKey(key) ? std::string(kRedacted) : RedactValue(value)) {}

Field::Field(absl::string_view key, const Secret& /*value*/) : key_(key), value_(kRedacted) {}

Field::Field(absl::string_view key, int64_t value)
    : key_(key),
      value_(IsSensitiveKey(key) ? std::string(kRedacted) : absl::StrCat(value)),
      raw_(!IsSensitiveKey(key)) {}

Field::Field(absl::string_view key, uint64_t value)
    : key_(key),
      value_(IsSensitiveKey(key) ? std::string(kRedacted) : absl::StrCat(value)),
      raw_(!IsSensitiveKey(key)) {}

Field::Field(absl::string_view key, double value)
    : key_(key),
      value_(IsSensitiveKey(key) ? std::string(kRedacted) : absl::StrCat(value)),
      raw_(!IsSensitiveKey(key)) {}

Field::Field(absl::string_view key, bool value)
    : key_(key),
      value_(IsSensitiveKey(key) ? std::string(kRedacted) : (value ? "true" : "false")),
      raw_(!IsSensitiveKey(key)) {}

Field::Field(absl::string_view key, const absl::Status& value)
    : Field(key, absl::string_view(value.ToString())) {}

Field::Field(absl::string_view key, absl::Duration value)
    : Field(key, absl::string_view(absl::FormatDuration(value))) {}

void Configure(const Options& options) {
  State& state = GlobalState();
  absl::MutexLock lock(&state.mu);
  state.options = options;
}

absl::Status ParseLevel(absl::string_view text, Level* level) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarning, Level::kError}) {
    if (absl::EqualsIgnoreCase(text, LevelName(l))) {
      *level = l;
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("log level \"", text, "\" is not one of debug, info, warning, error"));
}

absl::Status ParseFormat(absl::string_view text, Format* format) {
  if (absl::EqualsIgnoreCase(text, "logfmt")) {
    *format = Format::kLogfmt;
  } else if (absl::EqualsIgnoreCase(text, "json")) {
    *format = Format::kJson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("log format \"", text, "\" is not one of logfmt, json"));
  }
  return absl::OkStatus();
}

std::string FormatLine(const Options& options, absl::Time time, Level level, absl::string_view msg,
                       absl::Span<const Field> fields) {
  std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  std::string redacted_msg = RedactValue(msg);
  if (options.format == Format::kJson) {
    nlohmann::ordered_json line;
    line["ts"] = ts;
    line["level"] = LevelName(level);
    if (!options.service.empty()) line["service"] = options.service;
    line["msg"] = redacted_msg;
    for (const Field& field : fields) {
      line[field.key()] = field.raw() ? nlohmann::ordered_json::parse(field.value())
                                      : nlohmann::ordered_json(field.value());
    }
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string out = absl::StrCat("ts=", ts, " level=", LevelName(level));
  if (!options.service.empty()) absl::StrAppend(&out, " service=", options.service);
  out.append(" msg=");
  AppendLogfmtValue(&out, redacted_msg);
  for (const Field& field : fields) {
    absl::StrAppend(&out, " ", field.key(), "=");
    AppendLogfmtValue(&out, field.value());
  }
  return out;
}

void Write(Level level, absl::string_view msg, absl::Span<const Field> fields) {
  Options options;
  {
    State& state = GlobalState();
    absl::MutexLock lock(&state.mu);
    if (level < state.options.level) return;
    options = state.options;
  }
  std::string line = FormatLine(options, absl::Now(), level, msg, fields);
  line.push_back('\n');
  size_t written = 0;
  while (written < line.size()) {
    ssize_t n = ::write(options.fd, line.data() + written, line.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
}

}  // namespace log
}  // namespace elfdeploy
