#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace elfdeploy {

// A value that must never be printed: logs, metrics, API responses and error messages see
// "[REDACTED]". Only Reveal() gives the value, for the one place that sends it to its peer.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  const std::string& Reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  bool operator==(const Secret&) const = default;

 private:
  std::string value_;
};

inline constexpr absl::string_view kRedacted = "[REDACTED]";

// True when a key names a credential (password, token, secret, authorization, ...); such values
// are redacted whatever their type.
bool IsSensitiveKey(absl::string_view key);

// `value` with credentials removed: URL user-info passwords ("https://u:p@h" ->
// "https://u:[REDACTED]@h") and HTTP auth schemes ("Bearer x", "Basic x") are redacted; anything
// else is returned unchanged.
std::string RedactValue(absl::string_view value);

namespace log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class Format { kLogfmt, kJson };

// One key=value pair of a log line. Values are converted once, at construction; a Secret, or any
// value under a sensitive key, becomes "[REDACTED]", and URLs lose their passwords.
class Field {
 public:
  Field(absl::string_view key, absl::string_view value);
  Field(absl::string_view key, const char* value) : Field(key, absl::string_view(value)) {}
  Field(absl::string_view key, const std::string& value) : Field(key, absl::string_view(value)) {}
  Field(absl::string_view key, const Secret& value);
  Field(absl::string_view key, int value) : Field(key, static_cast<int64_t>(value)) {}
  Field(absl::string_view key, int64_t value);
  Field(absl::string_view key, uint64_t value);
  Field(absl::string_view key, double value);
  Field(absl::string_view key, bool value);
  Field(absl::string_view key, const absl::Status& value);
  Field(absl::string_view key, absl::Duration value);

  const std::string& key() const { return key_; }
  const std::string& value() const { return value_; }
  // True when the value is a number or boolean (written unquoted in JSON).
  bool raw() const { return raw_; }

 private:
  std::string key_;
  std::string value_;
  bool raw_ = false;
};

struct Options {
  Level level = Level::kInfo;
  Format format = Format::kLogfmt;
  // Added to every line as service=...
  std::string service;
  // File descriptor lines are written to; each line is a single write(2).
  int fd = 2;
};

// Replaces the process-wide logging options. Thread-safe.
void Configure(const Options& options);

// Parses "debug|info|warning|error" and "logfmt|json".
absl::Status ParseLevel(absl::string_view text, Level* level);
absl::Status ParseFormat(absl::string_view text, Format* format);

// Formats one event as a single line (no trailing newline), for tests and sinks.
std::string FormatLine(const Options& options, absl::Time time, Level level, absl::string_view msg,
                       absl::Span<const Field> fields);

// Writes one event line when `level` is enabled. Thread-safe.
void Write(Level level, absl::string_view msg, absl::Span<const Field> fields);

inline void Debug(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kDebug, msg, fields);
}
inline void Info(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kInfo, msg, fields);
}
inline void Warning(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kWarning, msg, fields);
}
inline void Error(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kError, msg, fields);
}

}  // namespace log
}  // namespace elfdeploy
