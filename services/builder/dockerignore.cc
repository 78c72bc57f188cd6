#include "services/builder/dockerignore.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/builder/path_util.h"

namespace elfdeploy::builder {
namespace {

// Characters that make an exception a wildcard for fsutil's descend optimisation.
constexpr absl::string_view kPatternChars = "*[]?^\\";

std::string Str(absl::string_view s) { return std::string(s.data(), s.size()); }

// Go's getEsc: one character of a class, possibly escaped; false on a syntax error.
bool ClassChar(absl::string_view p, size_t* pos, char32_t* rune) {
  if (*pos >= p.size() || p[*pos] == '-' || p[*pos] == ']') return false;
  if (p[*pos] == '\\') {
    ++*pos;
    if (*pos >= p.size()) return false;
  }
  const size_t size = DecodeRune(p, *pos, rune);
  if (*rune == 0xFFFD && size == 1) return false;
  *pos += size;
  return *pos < p.size();
}

// Parses the class starting after '[' (filepath.Match syntax); false on a syntax error.
bool ParseClass(absl::string_view p, size_t* pos, bool* negated,
                std::vector<std::pair<char32_t, char32_t>>* ranges) {
  *negated = false;
  if (*pos < p.size() && p[*pos] == '^') {
    *negated = true;
    ++*pos;
  }
  for (;;) {
    if (*pos < p.size() && p[*pos] == ']' && !ranges->empty()) {
      ++*pos;
      return true;
    }
    char32_t lo;
    if (!ClassChar(p, pos, &lo)) return false;
    char32_t hi = lo;
    if (p[*pos] == '-') {
      ++*pos;
      if (!ClassChar(p, pos, &hi)) return false;
    }
    ranges->emplace_back(lo, hi);
  }
}

// Whether filepath.Match accepts the syntax of `p`.
bool ValidPattern(absl::string_view p) {
  size_t pos = 0;
  while (pos < p.size()) {
    const char c = p[pos++];
    if (c == '\\') {
      if (pos >= p.size()) return false;
      ++pos;
    } else if (c == '[') {
      bool negated;
      std::vector<std::pair<char32_t, char32_t>> ranges;
      if (!ParseClass(p, &pos, &negated, &ranges)) return false;
    }
  }
  return true;
}

absl::string_view WithoutTrailingGlob(absl::string_view pattern) {
  absl::ConsumeSuffix(&pattern, "/**");
  absl::ConsumeSuffix(&pattern, "/*");
  return pattern;
}

}  // namespace

DockerIgnore::Pattern DockerIgnore::Compile(std::string cleaned, bool exclusion) {
  Pattern pattern;
  pattern.exclusion = exclusion;
  MatchType type = MatchType::kExact;
  absl::string_view p = cleaned;
  size_t pos = 0;
  auto literal = [&](char c) {
    Token token;
    token.kind = Token::kLiteral;
    token.literal = c;
    pattern.tokens.push_back(std::move(token));
  };
  auto simple = [&](Token::Kind kind) {
    Token token;
    token.kind = kind;
    pattern.tokens.push_back(std::move(token));
  };
  for (int i = 0; pos < p.size(); ++i) {
    const char ch = p[pos++];
    if (ch == '*') {
      if (pos < p.size() && p[pos] == '*') {
        ++pos;
        if (pos < p.size() && p[pos] == '/') ++pos;
        if (pos == p.size()) {
          if (type == MatchType::kExact) {
            type = MatchType::kPrefix;
          } else {
            simple(Token::kAny);
            type = MatchType::kRegexp;
          }
        } else {
          simple(Token::kAnyDirs);
          type = MatchType::kRegexp;
        }
        if (i == 0) type = MatchType::kSuffix;
      } else {
        simple(Token::kStar);
        type = MatchType::kRegexp;
      }
    } else if (ch == '?') {
      simple(Token::kOne);
      type = MatchType::kRegexp;
    } else if (ch == '\\') {
      if (pos < p.size()) {
        literal(p[pos++]);
        type = MatchType::kRegexp;
      } else {
        literal('\\');
      }
    } else if (ch == '[') {
      Token token;
      token.kind = Token::kClass;
      ParseClass(p, &pos, &token.negated, &token.ranges);
      pattern.tokens.push_back(std::move(token));
      type = MatchType::kRegexp;
    } else if (ch == ']') {
      literal(ch);
      type = MatchType::kRegexp;
    } else {
      literal(ch);
    }
  }
  pattern.type = type;
  pattern.cleaned = std::move(cleaned);
  return pattern;
}

bool DockerIgnore::Match(const Pattern& pattern, absl::string_view path) {
  const std::string& cleaned = pattern.cleaned;
  switch (pattern.type) {
    case MatchType::kExact:
      return path == cleaned;
    case MatchType::kPrefix:
      return absl::StartsWith(path, absl::string_view(cleaned).substr(0, cleaned.size() - 2));
    case MatchType::kSuffix: {
      absl::string_view suffix = absl::string_view(cleaned).substr(2);
      if (absl::EndsWith(path, suffix)) return true;
      return !suffix.empty() && suffix[0] == '/' && path == suffix.substr(1);
    }
    case MatchType::kRegexp:
      break;
  }
  const std::vector<Token>& tokens = pattern.tokens;
  const size_t n = path.size();
  std::vector<int8_t> memo((tokens.size() + 1) * (n + 1), 0);
  auto match = [&](auto&& self, size_t t, size_t pos) -> bool {
    if (t == tokens.size()) return pos == n;
    int8_t& seen = memo[t * (n + 1) + pos];
    if (seen != 0) return seen > 0;
    const Token& token = tokens[t];
    bool result = false;
    switch (token.kind) {
      case Token::kLiteral:
        result = pos < n && path[pos] == token.literal && self(self, t + 1, pos + 1);
        break;
      case Token::kStar:
        result = self(self, t + 1, pos);
        for (size_t p = pos; !result && p < n && path[p] != '/'; ++p) {
          result = self(self, t + 1, p + 1);
        }
        break;
      case Token::kOne:
      case Token::kClass:
        if (pos < n) {
          char32_t rune;
          const size_t size = DecodeRune(path, pos, &rune);
          bool ok = false;
          if (token.kind == Token::kOne) {
            ok = rune != '/';
          } else {
            bool in = false;
            for (const auto& [lo, hi] : token.ranges) in = in || (lo <= rune && rune <= hi);
            ok = in != token.negated;
          }
          result = ok && self(self, t + 1, pos + size);
        }
        break;
      case Token::kAnyDirs:
        result = self(self, t + 1, pos);
        for (size_t p = pos; !result && p < n && path[p] != '\n'; ++p) {
          if (path[p] == '/') result = self(self, t + 1, p + 1);
        }
        break;
      case Token::kAny:
        result = self(self, t + 1, pos);
        for (size_t p = pos; !result && p < n && path[p] != '\n'; ++p) {
          result = self(self, t + 1, p + 1);
        }
        break;
    }
    seen = result ? 1 : -1;
    return result;
  };
  return match(match, 0, 0);
}

absl::StatusOr<DockerIgnore> DockerIgnore::Parse(absl::string_view text) {
  DockerIgnore ignore;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (line_number == 1) absl::ConsumePrefix(&line, "\xEF\xBB\xBF");
    absl::ConsumeSuffix(&line, "\r");
    if (absl::StartsWith(line, "#")) continue;
    absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty()) continue;
    const bool invert = trimmed[0] == '!';
    if (invert) trimmed = absl::StripAsciiWhitespace(trimmed.substr(1));
    std::string pattern = Str(trimmed);
    if (!pattern.empty()) {
      pattern = CleanPath(pattern);
      if (pattern.size() > 1 && pattern[0] == '/') pattern.erase(0, 1);
    }
    if (invert) pattern = absl::StrCat("!", pattern);

    std::string cleaned = CleanPath(absl::StripAsciiWhitespace(pattern));
    bool exclusion = false;
    if (cleaned[0] == '!') {
      if (cleaned.size() == 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(".dockerignore:", line_number, ": illegal exclusion pattern: \"!\""));
      }
      exclusion = true;
      cleaned.erase(0, 1);
    }
    if (!ValidPattern(cleaned)) {
      return absl::InvalidArgumentError(absl::StrCat(".dockerignore:", line_number,
                                                     ": invalid pattern \"", cleaned,
                                                     "\": syntax error in pattern"));
    }
    if (exclusion &&
        WithoutTrailingGlob(cleaned).find_first_of(kPatternChars) != absl::string_view::npos) {
      ignore.only_prefix_exceptions_ = false;
    }
    ignore.patterns_.push_back(Compile(std::move(cleaned), exclusion));
  }
  return ignore;
}

bool DockerIgnore::Excluded(absl::string_view path) const {
  std::string file = CleanPath(path);
  while (!file.empty() && file[0] == '/') file.erase(0, 1);
  if (file.empty() || file == ".") return false;
  std::vector<std::string> parents;
  const size_t slash = file.rfind('/');
  if (slash != std::string::npos) {
    const std::string parent = CleanPath(absl::string_view(file).substr(0, slash));
    if (parent != ".") {
      std::string prefix;
      for (absl::string_view dir : absl::StrSplit(parent, '/')) {
        if (!prefix.empty()) prefix.push_back('/');
        prefix.append(dir.data(), dir.size());
        parents.push_back(prefix);
      }
    }
  }
  bool matched = false;
  for (const Pattern& pattern : patterns_) {
    if (pattern.exclusion != matched) continue;
    bool match = Match(pattern, file);
    for (size_t i = 0; !match && i < parents.size(); ++i) match = Match(pattern, parents[i]);
    if (match) matched = !pattern.exclusion;
  }
  return matched;
}

bool DockerIgnore::MayHaveExceptionsUnder(absl::string_view dir) const {
  bool any = false;
  for (const Pattern& pattern : patterns_) any = any || pattern.exclusion;
  if (!any) return false;
  if (!only_prefix_exceptions_) return true;
  std::string clean = CleanPath(dir);
  while (!clean.empty() && clean[0] == '/') clean.erase(0, 1);
  if (clean.empty() || clean == ".") return true;
  const std::string dir_slash = clean + "/";
  for (const Pattern& pattern : patterns_) {
    if (!pattern.exclusion) continue;
    if (absl::StartsWith(absl::StrCat(WithoutTrailingGlob(pattern.cleaned), "/"), dir_slash)) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> DockerIgnore::Patterns() const {
  std::vector<std::string> out;
  out.reserve(patterns_.size());
  for (const Pattern& pattern : patterns_) {
    out.push_back(pattern.exclusion ? absl::StrCat("!", pattern.cleaned) : pattern.cleaned);
  }
  return out;
}

}  // namespace elfdeploy::builder
