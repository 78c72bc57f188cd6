#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace elfdeploy::builder {

// A .dockerignore file, matched as Docker does (moby/patternmatcher, with BuildKit's fsutil
// walker rules for descending into excluded directories).
class DockerIgnore {
 public:
  // Reads the patterns: a line starting with '#' is a comment, lines are trimmed, empty lines
  // skipped, patterns cleaned (filepath.Clean, leading '/' removed), '!' marks an exception.
  // Patterns use Go filepath.Match syntax (`*`, `?`, `[...]`, `\` escapes) plus `**` for any
  // number of directories. INVALID_ARGUMENT ".dockerignore:<line>: ..." for a bad pattern
  // (e.g. an unterminated `[`) or a lone "!".
  static absl::StatusOr<DockerIgnore> Parse(absl::string_view text);

  // Whether `path` (relative to the context root, '/'-separated, no leading "./") is excluded:
  // the last pattern matching it or one of its parent directories wins. The root is never
  // excluded.
  bool Excluded(absl::string_view path) const;

  // Whether an exception ('!' pattern) could re-include something inside `dir`, so a walker that
  // found `dir` excluded must still descend into it.
  bool MayHaveExceptionsUnder(absl::string_view dir) const;

  // The cleaned patterns in order, exceptions prefixed with '!' (e.g. for cache keys).
  std::vector<std::string> Patterns() const;

 private:
  enum class MatchType { kExact, kPrefix, kSuffix, kRegexp };

  struct Token {
    enum Kind { kLiteral, kStar, kOne, kAnyDirs, kAny, kClass } kind = kLiteral;
    char literal = 0;
    bool negated = false;
    std::vector<std::pair<char32_t, char32_t>> ranges;
  };

  struct Pattern {
    std::string cleaned;
    bool exclusion = false;
    MatchType type = MatchType::kExact;
    std::vector<Token> tokens;
  };

  static Pattern Compile(std::string cleaned, bool exclusion);
  static bool Match(const Pattern& pattern, absl::string_view path);

  std::vector<Pattern> patterns_;
  bool only_prefix_exceptions_ = true;
};

}  // namespace elfdeploy::builder
