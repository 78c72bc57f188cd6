#include "services/builder/dockerfile.h"

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "services/builder/path_util.h"

namespace elfdeploy::builder {
namespace {

constexpr const char* kKnownInstructions[] = {
    "ADD",    "ARG",   "CMD",         "COPY",  "ENTRYPOINT", "ENV",
    "EXPOSE", "FROM",  "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD",
    "RUN",    "SHELL", "STOPSIGNAL",  "USER",  "VOLUME",     "WORKDIR"};

constexpr const char* kPlatformArgs[] = {"BUILDPLATFORM", "BUILDOS",        "BUILDARCH",
                                         "BUILDVARIANT",  "TARGETPLATFORM", "TARGETOS",
                                         "TARGETARCH",    "TARGETVARIANT"};

constexpr int kEof = -1;

void Append(std::string* out, absl::string_view s) { out->append(s.data(), s.size()); }

std::string Str(absl::string_view s) { return std::string(s.data(), s.size()); }

// Go's unicode.IsSpace, for ASCII.
bool IsSpace(int c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// BuildKit's reWhitespace: [\t\v\f\r ].
bool IsTokenSpace(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }

// RE2's \s.
bool IsRe2Space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("Dockerfile:", line, ": ", what));
}

// Go's %q for the printable text of error messages.
std::string Quote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

bool IsKnownInstruction(absl::string_view keyword) {
  for (const char* known : kKnownInstructions) {
    if (keyword == known) return true;
  }
  return false;
}

bool IsPlatformArg(absl::string_view name) {
  for (const char* arg : kPlatformArgs) {
    if (name == arg) return true;
  }
  return false;
}

bool IsRuneStart(absl::string_view s, size_t i) {
  return i >= s.size() || (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
}

// Shell patterns of ${VAR#pat}, ${VAR%pat} and ${VAR/pat/repl}, matched as BuildKit's regexp
// conversion does: '*' is any run of characters but '\n', '?' one such character.
struct GlobToken {
  enum Kind { kLiteral, kStar, kOne } kind;
  char literal;
};

absl::StatusOr<std::vector<GlobToken>> CompileShellPattern(absl::string_view pattern) {
  std::vector<GlobToken> tokens;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '*') {
      tokens.push_back({GlobToken::kStar, 0});
    } else if (c == '?') {
      tokens.push_back({GlobToken::kOne, 0});
    } else if (c == '\\') {
      if (i + 1 < pattern.size() && (pattern[i + 1] == '}' || pattern[i + 1] == '/')) continue;
      if (i + 1 >= pattern.size()) return absl::InvalidArgumentError("invalid escape '\\'");
      const char next = pattern[++i];
      if (next != '*' && next != '?' && next != '\\') {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid escape '\\", std::string(1, next), "'"));
      }
      tokens.push_back({GlobToken::kLiteral, next});
    } else {
      tokens.push_back({GlobToken::kLiteral, c});
    }
  }
  return tokens;
}

class GlobMatcher {
 public:
  GlobMatcher(const std::vector<GlobToken>& tokens, absl::string_view text)
      : tokens_(tokens), text_(text) {}

  // Whether the tokens match text[begin, end) exactly.
  bool Matches(size_t begin, size_t end) {
    end_ = end;
    memo_.assign((tokens_.size() + 1) * (end - begin + 1), 0);
    begin_ = begin;
    return Match(0, begin);
  }

 private:
  bool Match(size_t t, size_t pos) {
    if (t == tokens_.size()) return pos == end_;
    int8_t& memo = memo_[t * (end_ - begin_ + 1) + (pos - begin_)];
    if (memo != 0) return memo > 0;
    bool result = false;
    const GlobToken& token = tokens_[t];
    switch (token.kind) {
      case GlobToken::kLiteral:
        result = pos < end_ && text_[pos] == token.literal && Match(t + 1, pos + 1);
        break;
      case GlobToken::kOne:
        if (pos < end_ && text_[pos] != '\n') {
          char32_t rune;
          const size_t size = DecodeRune(text_.substr(0, end_), pos, &rune);
          result = Match(t + 1, pos + size);
        }
        break;
      case GlobToken::kStar:
        result = Match(t + 1, pos);
        for (size_t p = pos; !result && p < end_ && text_[p] != '\n'; ++p) {
          result = Match(t + 1, p + 1);
        }
        break;
    }
    memo = result ? 1 : -1;
    return result;
  }

  const std::vector<GlobToken>& tokens_;
  absl::string_view text_;
  size_t begin_ = 0;
  size_t end_ = 0;
  std::vector<int8_t> memo_;
};

absl::StatusOr<std::string> TrimMatch(absl::string_view pattern, const std::string& value,
                                      bool greedy, bool suffix) {
  absl::StatusOr<std::vector<GlobToken>> tokens = CompileShellPattern(pattern);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid pattern (", pattern, ") in substitution: ", tokens.status().message()));
  }
  GlobMatcher matcher(*tokens, value);
  const size_t n = value.size();
  for (size_t k = 0; k <= n; ++k) {
    const size_t len = greedy ? n - k : k;
    if (suffix) {
      const size_t begin = n - len;
      if (IsRuneStart(value, begin) && matcher.Matches(begin, n)) return value.substr(0, begin);
    } else if (IsRuneStart(value, len) && matcher.Matches(0, len)) {
      return value.substr(len);
    }
  }
  return value;
}

absl::StatusOr<std::string> ReplaceMatch(absl::string_view pattern, absl::string_view replacement,
                                         const std::string& value, bool all) {
  absl::StatusOr<std::vector<GlobToken>> tokens = CompileShellPattern(pattern);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid pattern (", pattern, ") in substitution: ", tokens.status().message()));
  }
  GlobMatcher matcher(*tokens, value);
  const size_t n = value.size();
  auto find = [&](size_t from, size_t* begin, size_t* end) {
    for (size_t b = from; b <= n; ++b) {
      if (!IsRuneStart(value, b)) continue;
      for (size_t e = n + 1; e-- > b;) {
        if (IsRuneStart(value, e) && matcher.Matches(b, e)) {
          *begin = b;
          *end = e;
          return true;
        }
      }
    }
    return false;
  };
  std::string out;
  size_t begin = 0;
  size_t end = 0;
  if (!all) {
    if (!find(0, &begin, &end)) return value;
    out = value.substr(0, begin);
    Append(&out, replacement);
    Append(&out, absl::string_view(value).substr(end));
    return out;
  }
  size_t search = 0;
  size_t last_end = 0;
  while (search <= n && find(search, &begin, &end)) {
    Append(&out, absl::string_view(value).substr(last_end, begin - last_end));
    if (end > last_end || begin == 0) Append(&out, replacement);
    last_end = end;
    size_t width = 0;
    if (search < n) {
      char32_t rune;
      width = DecodeRune(value, search, &rune);
    }
    if (search + width > end) {
      search += width;
    } else if (search + 1 > end) {
      ++search;
    } else {
      search = end;
    }
  }
  Append(&out, absl::string_view(value).substr(last_end));
  return out;
}

// BuildKit's wordsStruct: splits on whitespace, except what the lexer adds raw.
class Words {
 public:
  void AddChar(char c) {
    if (IsSpace(c) && in_word_) {
      if (!word_.empty()) {
        words_.push_back(std::move(word_));
        word_.clear();
        in_word_ = false;
      }
    } else if (!IsSpace(c)) {
      AddRawChar(c);
    }
  }
  void AddRawChar(char c) {
    word_.push_back(c);
    in_word_ = true;
  }
  void AddString(absl::string_view s) {
    for (char c : s) AddChar(c);
  }
  void AddRawString(absl::string_view s) {
    Append(&word_, s);
    in_word_ = true;
  }
  std::vector<std::string> Take() {
    if (!word_.empty()) {
      words_.push_back(std::move(word_));
      word_.clear();
      in_word_ = false;
    }
    return std::move(words_);
  }

 private:
  std::string word_;
  std::vector<std::string> words_;
  bool in_word_ = false;
};

struct LexOptions {
  bool raw_quotes = false;
  bool raw_escapes = false;
  bool skip_unset = false;
};

// BuildKit's shell.Lex over bytes; the special characters are all ASCII.
class Lexer {
 public:
  Lexer(absl::string_view text, const Lookup* env, char escape, LexOptions options)
      : text_(text),
        env_(env),
        escape_(static_cast<unsigned char>(escape)),
        options_(options),
        raw_escapes_(options.raw_escapes) {}

  absl::Status Process(std::string* result, std::vector<std::string>* words) {
    absl::Status status = ProcessStopOn(kEof, options_.raw_escapes, result, words);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("failed to process ", Quote(text_), ": ", status.message()));
    }
    return absl::OkStatus();
  }

 private:
  int Peek() const { return pos_ < text_.size() ? static_cast<unsigned char>(text_[pos_]) : kEof; }
  int Next() { return pos_ < text_.size() ? static_cast<unsigned char>(text_[pos_++]) : kEof; }

  std::optional<std::string> GetEnv(const std::string& name) const {
    if (env_ == nullptr || !*env_) return std::nullopt;
    return (*env_)(name);
  }

  absl::Status ProcessStopOn(int stop, bool raw_escapes, std::string* out,
                             std::vector<std::string>* words_out) {
    const bool saved_raw_escapes = raw_escapes_;
    raw_escapes_ = raw_escapes;
    absl::Status status = ProcessStopOnInner(stop, out, words_out);
    raw_escapes_ = saved_raw_escapes;
    return status;
  }

  absl::Status ProcessStopOnInner(int stop, std::string* out, std::vector<std::string>* words_out) {
    std::string result;
    Words words;
    while (Peek() != kEof) {
      int ch = Peek();
      if (stop != kEof && ch == stop) {
        Next();
        *out = std::move(result);
        if (words_out != nullptr) *words_out = words.Take();
        return absl::OkStatus();
      }
      if (ch == '$' || ch == '\'' || ch == '"') {
        absl::StatusOr<std::string> part = ch == '$'    ? ProcessDollar()
                                           : ch == '\'' ? ProcessSingleQuote()
                                                        : ProcessDoubleQuote();
        if (!part.ok()) return part.status();
        result += *part;
        if (ch == '$') {
          words.AddString(*part);
        } else {
          words.AddRawString(*part);
        }
        continue;
      }
      ch = Next();
      if (ch == escape_) {
        if (raw_escapes_) {
          words.AddRawChar(static_cast<char>(ch));
          result.push_back(static_cast<char>(ch));
        }
        ch = Next();
        if (ch == kEof) break;
        words.AddRawChar(static_cast<char>(ch));
      } else {
        words.AddChar(static_cast<char>(ch));
      }
      result.push_back(static_cast<char>(ch));
    }
    if (stop != kEof) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected end of statement while looking for matching ", std::string(1, stop)));
    }
    *out = std::move(result);
    if (words_out != nullptr) *words_out = words.Take();
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ProcessSingleQuote() {
    std::string result;
    int ch = Next();
    if (options_.raw_quotes) result.push_back(static_cast<char>(ch));
    for (;;) {
      ch = Next();
      if (ch == kEof) {
        return absl::InvalidArgumentError(
            "unexpected end of statement while looking for matching single-quote");
      }
      if (ch == '\'') {
        if (options_.raw_quotes) result.push_back(static_cast<char>(ch));
        return result;
      }
      result.push_back(static_cast<char>(ch));
    }
  }

  absl::StatusOr<std::string> ProcessDoubleQuote() {
    std::string result;
    int ch = Next();
    if (options_.raw_quotes) result.push_back(static_cast<char>(ch));
    for (;;) {
      const int peek = Peek();
      if (peek == kEof) {
        return absl::InvalidArgumentError(
            "unexpected end of statement while looking for matching double-quote");
      }
      if (peek == '"') {
        ch = Next();
        if (options_.raw_quotes) result.push_back(static_cast<char>(ch));
        return result;
      }
      if (peek == '$') {
        absl::StatusOr<std::string> value = ProcessDollar();
        if (!value.ok()) return value.status();
        result += *value;
        continue;
      }
      ch = Next();
      if (ch == escape_) {
        if (raw_escapes_) result.push_back(static_cast<char>(ch));
        const int next = Peek();
        if (next == kEof) continue;
        if (next == '"' || next == '$' || next == escape_) ch = Next();
      }
      result.push_back(static_cast<char>(ch));
    }
  }

  static bool IsSpecialParam(int ch) {
    switch (ch) {
      case '@':
      case '*':
      case '#':
      case '?':
      case '-':
      case '$':
      case '!':
      case '0':
        return true;
      default:
        return false;
    }
  }

  std::string ProcessName() {
    std::string name;
    while (Peek() != kEof) {
      const int ch = Peek();
      if (name.empty() && absl::ascii_isdigit(static_cast<unsigned char>(ch))) {
        while (Peek() != kEof && absl::ascii_isdigit(static_cast<unsigned char>(Peek()))) {
          name.push_back(static_cast<char>(Next()));
        }
        return name;
      }
      if (name.empty() && IsSpecialParam(ch)) {
        Next();
        return std::string(1, static_cast<char>(ch));
      }
      if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '_') break;
      name.push_back(static_cast<char>(Next()));
    }
    return name;
  }

  absl::StatusOr<std::string> ProcessDollar() {
    Next();
    if (Peek() != '{') {
      std::string name = ProcessName();
      if (name.empty()) return std::string("$");
      std::optional<std::string> value = GetEnv(name);
      if (!value.has_value() && options_.skip_unset) return absl::StrCat("$", name);
      return value.value_or("");
    }
    Next();
    const absl::Status missing_brace = absl::InvalidArgumentError("syntax error: missing '}'");
    switch (Peek()) {
      case kEof:
        return missing_brace;
      case '{':
      case '}':
      case ':':
        return absl::InvalidArgumentError("syntax error: bad substitution");
      default:
        break;
    }
    const std::string name = ProcessName();
    int ch = Next();
    if (ch == kEof) return missing_brace;
    std::string modifier(1, static_cast<char>(ch));
    if (ch == '}') {
      std::optional<std::string> value = GetEnv(name);
      if (!value.has_value() && options_.skip_unset) return absl::StrCat("${", name, "}");
      return value.value_or("");
    }
    bool null_is_unset = false;
    const bool colon = ch == ':';
    if (colon) {
      null_is_unset = true;
      ch = Next();
      if (ch != kEof) modifier.push_back(static_cast<char>(ch));
    }
    if (colon || ch == '+' || ch == '-' || ch == '?' || ch == '#' || ch == '%') {
      std::string word;
      absl::Status status = ProcessStopOn('}', ch == '#' || ch == '%', &word, nullptr);
      if (!status.ok()) {
        if (Peek() == kEof) return missing_brace;
        return status;
      }
      std::optional<std::string> value = GetEnv(name);
      if (options_.skip_unset && !value.has_value()) {
        return absl::StrCat("${", name, modifier, word, "}");
      }
      const bool unset = !value.has_value() || (null_is_unset && value->empty());
      switch (ch) {
        case '-':
          return unset ? word : *value;
        case '+':
          return unset ? std::string() : word;
        case '?':
          if (!value.has_value()) {
            return absl::InvalidArgumentError(
                absl::StrCat(name, ": ", word.empty() ? "is not allowed to be unset" : word));
          }
          if (null_is_unset && value->empty()) {
            return absl::InvalidArgumentError(
                absl::StrCat(name, ": ", word.empty() ? "is not allowed to be empty" : word));
          }
          return *value;
        case '#':
        case '%': {
          bool greedy = false;
          if (!word.empty() && word[0] == ch) {
            greedy = true;
            word.erase(0, 1);
          }
          return TrimMatch(word, value.value_or(""), greedy, ch == '%');
        }
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("unsupported modifier (", modifier, ") in substitution"));
      }
    }
    if (ch == '/') {
      const bool all = Peek() == '/';
      if (all) Next();
      std::string pattern;
      absl::Status status = ProcessStopOn('/', true, &pattern, nullptr);
      if (!status.ok()) {
        if (Peek() == kEof) return absl::InvalidArgumentError("syntax error: missing '/' in ${}");
        return status;
      }
      std::string replacement;
      status = ProcessStopOn('}', true, &replacement, nullptr);
      if (!status.ok()) {
        if (Peek() == kEof) return missing_brace;
        return status;
      }
      std::optional<std::string> value = GetEnv(name);
      if (options_.skip_unset && !value.has_value()) {
        return absl::StrCat("${", name, "/", pattern, "/", replacement, "}");
      }
      return ReplaceMatch(pattern, replacement, value.value_or(""), all);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported modifier (", modifier, ") in substitution"));
  }

  absl::string_view text_;
  const Lookup* env_;
  int escape_;
  LexOptions options_;
  bool raw_escapes_;
  size_t pos_ = 0;
};

// BuildKit's parseWords: splits on whitespace, keeping quotes and escapes for later expansion.
std::vector<std::string> SplitKeepingQuotes(absl::string_view rest, char escape) {
  enum { kSpaces, kWord, kQuote } phase = kSpaces;
  std::vector<std::string> words;
  std::string word;
  char quote = 0;
  bool blank_ok = false;
  const size_t n = rest.size();
  for (size_t pos = 0; pos <= n; ++pos) {
    char ch = pos < n ? rest[pos] : 0;
    if (phase == kSpaces) {
      if (pos == n) break;
      if (IsSpace(ch)) continue;
      phase = kWord;
    }
    if (pos == n) {
      if (blank_ok || !word.empty()) words.push_back(word);
      break;
    }
    if (phase == kWord) {
      if (IsSpace(ch)) {
        phase = kSpaces;
        if (blank_ok || !word.empty()) words.push_back(word);
        word.clear();
        blank_ok = false;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        quote = ch;
        blank_ok = true;
        phase = kQuote;
      }
      if (ch == escape) {
        if (pos + 1 == n) continue;
        word.push_back(ch);
        ch = rest[++pos];
      }
      word.push_back(ch);
      continue;
    }
    if (ch == quote) phase = kWord;
    if (ch == escape && quote != '\'') {
      if (pos + 1 == n) {
        phase = kWord;
        continue;
      }
      word.push_back(ch);
      ch = rest[++pos];
    }
    word.push_back(ch);
  }
  return words;
}

// BuildKit's extractBuilderFlags: the leading "--" words, and what follows them.
absl::string_view ExtractFlags(absl::string_view line, std::vector<std::string>* flags) {
  enum { kSpaces, kWord, kQuote } phase = kSpaces;
  std::string word;
  char quote = 0;
  bool blank_ok = false;
  const size_t n = line.size();
  for (size_t pos = 0; pos <= n; ++pos) {
    char ch = pos < n ? line[pos] : 0;
    if (phase == kSpaces) {
      if (pos == n) break;
      if (IsSpace(ch)) continue;
      if (ch != '-' || pos + 1 == n || line[pos + 1] != '-') return line.substr(pos);
      phase = kWord;
    }
    if (pos == n) {
      if (word != "--" && (blank_ok || !word.empty())) flags->push_back(word);
      break;
    }
    if (phase == kWord) {
      if (IsSpace(ch)) {
        phase = kSpaces;
        if (word == "--") return line.substr(pos);
        if (blank_ok || !word.empty()) flags->push_back(word);
        word.clear();
        blank_ok = false;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        quote = ch;
        blank_ok = true;
        phase = kQuote;
        continue;
      }
      if (ch == '\\') {
        if (pos + 1 == n) continue;
        ch = line[++pos];
      }
      word.push_back(ch);
      continue;
    }
    if (ch == quote) {
      phase = kWord;
      continue;
    }
    if (ch == '\\') {
      if (pos + 1 == n) {
        phase = kWord;
        continue;
      }
      ch = line[++pos];
    }
    word.push_back(ch);
  }
  return absl::string_view();
}

// BuildKit's reWhitespace.Split of trimmed text: the non-empty runs between [\t\v\f\r ].
std::vector<absl::string_view> SplitTokenSpace(absl::string_view s) {
  std::vector<absl::string_view> parts;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsTokenSpace(s[i])) ++i;
    const size_t start = i;
    while (i < s.size() && !IsTokenSpace(s[i])) ++i;
    if (i > start) parts.push_back(s.substr(start, i - start));
  }
  return parts;
}

// Splits at the first run of [\t\v\f\r ]: {before, after}; after is empty when there is none.
std::pair<absl::string_view, absl::string_view> SplitFirstToken(absl::string_view s) {
  size_t i = 0;
  while (i < s.size() && !IsTokenSpace(s[i])) ++i;
  absl::string_view first = s.substr(0, i);
  while (i < s.size() && IsTokenSpace(s[i])) ++i;
  return {first, s.substr(i)};
}

// Matches ^(\d*)<<(-?)([^<]*)$ and returns the third group.
bool MatchHeredocWord(absl::string_view word, absl::string_view* rest) {
  size_t i = 0;
  while (i < word.size() && absl::ascii_isdigit(static_cast<unsigned char>(word[i]))) ++i;
  if (word.substr(i, 2) != "<<") return false;
  i += 2;
  if (i < word.size() && word[i] == '-') ++i;
  absl::string_view tail = word.substr(i);
  if (tail.find('<') != absl::string_view::npos) return false;
  *rest = tail;
  return true;
}

// Whether BuildKit would read a heredoc for `line` (its heredocsFromLine).
bool HasHeredoc(absl::string_view line) {
  std::string ignored;
  std::vector<std::string> words;
  Lexer raw(line, nullptr, '\\', LexOptions{true, true, true});
  if (!raw.Process(&ignored, &words).ok()) return false;
  for (const std::string& word : words) {
    absl::string_view rest;
    if (!MatchHeredocWord(word, &rest) || rest.empty()) continue;
    std::vector<std::string> name;
    Lexer cooked(rest, nullptr, '\\', LexOptions{false, false, true});
    if (!cooked.Process(&ignored, &name).ok() || name.size() == 1) return true;
  }
  return false;
}

bool TakesExecForm(absl::string_view keyword) {
  return keyword == "RUN" || keyword == "CMD" || keyword == "ENTRYPOINT" || keyword == "SHELL" ||
         keyword == "COPY" || keyword == "ADD" || keyword == "VOLUME";
}

absl::StatusOr<Instruction> BuildInstruction(absl::string_view line, int line_number, char escape,
                                             bool trigger) {
  Instruction inst;
  inst.line = line_number;
  auto [word, rest] = SplitFirstToken(absl::StripAsciiWhitespace(line));
  inst.keyword = absl::AsciiStrToUpper(word);
  if (!IsKnownInstruction(inst.keyword)) {
    return LineError(line_number, absl::StrCat("unknown instruction: ", inst.keyword, " (known: ",
                                               absl::StrJoin(kKnownInstructions, ", "), ")"));
  }
  inst.args = Str(absl::StripAsciiWhitespace(ExtractFlags(rest, &inst.flags)));
  if (inst.args.empty()) {
    return LineError(line_number, absl::StrCat(inst.keyword, " requires at least one argument"));
  }
  const std::string& kw = inst.keyword;
  if (TakesExecForm(kw)) {
    absl::StatusOr<std::optional<std::vector<std::string>>> exec = ParseExecForm(inst.args);
    if (!exec.ok()) return LineError(line_number, exec.status().message());
    if (exec->has_value()) {
      inst.json = true;
      inst.json_args = std::move(**exec);
    }
  }
  if ((kw == "RUN" || kw == "COPY" || kw == "ADD") && !inst.json && HasHeredoc(line)) {
    return LineError(line_number, absl::StrCat("heredocs (<<EOF) are not supported in ", kw,
                                               "; put the content in a file of the context"));
  }
  if (kw == "COPY" || kw == "ADD") {
    const size_t count = inst.json ? inst.json_args.size() : SplitTokenSpace(inst.args).size();
    if (count < 2) {
      return LineError(line_number,
                       absl::StrCat(kw,
                                    " requires at least two arguments, but only one was "
                                    "provided. Destination could not be determined"));
    }
  } else if (kw == "SHELL") {
    if (!inst.json)
      return LineError(line_number, "SHELL requires the arguments to be in JSON form");
    if (inst.json_args.empty()) {
      return LineError(line_number, "SHELL requires at least one argument");
    }
  } else if (kw == "VOLUME" && inst.json) {
    if (inst.json_args.empty()) {
      return LineError(line_number, "VOLUME requires at least one argument");
    }
    for (const std::string& volume : inst.json_args) {
      if (absl::StripAsciiWhitespace(volume).empty()) {
        return LineError(line_number, "VOLUME specified can not be an empty string");
      }
    }
  } else if (kw == "ONBUILD") {
    if (trigger) {
      return LineError(line_number, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
    }
    absl::StatusOr<Instruction> sub = BuildInstruction(inst.args, line_number, escape, true);
    if (!sub.ok()) return sub.status();
    if (sub->keyword == "FROM" || sub->keyword == "MAINTAINER") {
      return LineError(line_number,
                       absl::StrCat(sub->keyword, " isn't allowed as an ONBUILD trigger"));
    }
  }
  inst.original = inst.keyword;
  for (const std::string& flag : inst.flags) absl::StrAppend(&inst.original, " ", flag);
  absl::StrAppend(&inst.original, " ", inst.args);
  return inst;
}

// Parser directives (BuildKit's directives struct).
class Directives {
 public:
  char escape() const { return escape_; }

  // Looks at a line while directives may still appear: a directive line is consumed, anything
  // else ends the directives.
  absl::Status Check(absl::string_view line) {
    if (done_) return absl::OkStatus();
    std::string key;
    std::string value;
    if (!Match(line, &key, &value)) {
      done_ = true;
      return absl::OkStatus();
    }
    if (key != "escape" && key != "syntax") {
      done_ = true;
      return absl::OkStatus();
    }
    if (!seen_.insert(key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("only one ", key, " parser directive can be used"));
    }
    if (key == "escape") {
      if (value != "`" && value != "\\") {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid escape token '", value, "' does not match ` or \\"));
      }
      escape_ = value[0];
    }
    return absl::OkStatus();
  }

  // Removes the escape character ending `line` (followed only by spaces and tabs); false when
  // the line does not continue. An escaped escape character does not continue the line.
  bool TrimContinuation(std::string* line) const {
    size_t end = line->size();
    while (end > 0 && ((*line)[end - 1] == ' ' || (*line)[end - 1] == '\t')) --end;
    if (end == 0 || (*line)[end - 1] != escape_) return false;
    const size_t at = end - 1;
    if (at > 0 && (*line)[at - 1] == escape_) return false;
    line->resize(at);
    return true;
  }

 private:
  // ^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$
  static bool Match(absl::string_view line, std::string* key, std::string* value) {
    size_t i = 0;
    if (line.empty() || line[0] != '#') return false;
    ++i;
    while (i < line.size() && IsRe2Space(line[i])) ++i;
    const size_t key_start = i;
    if (i >= line.size() || !absl::ascii_isalpha(static_cast<unsigned char>(line[i]))) return false;
    while (i < line.size() && absl::ascii_isalnum(static_cast<unsigned char>(line[i]))) ++i;
    *key = absl::AsciiStrToLower(line.substr(key_start, i - key_start));
    while (i < line.size() && IsRe2Space(line[i])) ++i;
    if (i >= line.size() || line[i] != '=') return false;
    ++i;
    absl::string_view tail = line.substr(i);
    if (tail.empty()) return false;
    size_t b = 0;
    while (b < tail.size() && IsRe2Space(tail[b])) ++b;
    size_t e = tail.size();
    while (e > b && IsRe2Space(tail[e - 1])) --e;
    *value = b < e ? Str(tail.substr(b, e - b)) : Str(tail.substr(tail.size() - 1));
    return true;
  }

  char escape_ = '\\';
  bool done_ = false;
  std::set<std::string> seen_;
};

absl::string_view TrimNewline(absl::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

absl::string_view TrimLeadingSpace(absl::string_view s) {
  while (!s.empty() && IsSpace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return s;
}

bool IsCommentLine(absl::string_view raw) {
  absl::string_view s = TrimLeadingSpace(TrimNewline(raw));
  return !s.empty() && s[0] == '#';
}

// BuildKit's processLine: the line without newline (and leading space), emptied if a comment.
std::string ProcessLine(absl::string_view raw, bool strip_leading, Directives* directives,
                        absl::Status* status) {
  absl::string_view s = TrimNewline(raw);
  if (strip_leading) s = TrimLeadingSpace(s);
  *status = directives->Check(s);
  if (!s.empty() && s[0] == '#') return std::string();
  return Str(s);
}

std::vector<absl::string_view> SplitLines(absl::string_view text) {
  std::vector<absl::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == absl::string_view::npos) {
      lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, nl + 1 - start));
    start = nl + 1;
  }
  return lines;
}

bool HasSpaceOrEquals(absl::string_view name) {
  for (char c : name) {
    if (IsSpace(static_cast<unsigned char>(c)) || c == '=' || c == '\0') return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::optional<std::vector<std::string>>> ParseExecForm(absl::string_view text) {
  absl::string_view trimmed = TrimLeadingSpace(text);
  if (trimmed.empty() || trimmed[0] != '[') return std::nullopt;
  nlohmann::json json =
      nlohmann::json::parse(trimmed.begin(), trimmed.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_array()) return std::nullopt;
  std::vector<std::string> strings;
  strings.reserve(json.size());
  for (const nlohmann::json& element : json) {
    if (!element.is_string()) {
      return absl::InvalidArgumentError(
          "when using JSON array syntax, arrays must be comprised of strings only");
    }
    strings.push_back(element.get<std::string>());
  }
  return strings;
}

absl::StatusOr<Instruction> ParseInstructionLine(absl::string_view line, int line_number,
                                                 char escape) {
  if (absl::StripAsciiWhitespace(line).empty()) {
    return LineError(line_number, "empty instruction");
  }
  return BuildInstruction(line, line_number, escape, false);
}

absl::StatusOr<Dockerfile> ParseDockerfile(absl::string_view text) {
  if (absl::StartsWith(text, "\xEF\xBB\xBF")) text.remove_prefix(3);
  const std::vector<absl::string_view> lines = SplitLines(text);
  Directives directives;
  Dockerfile dockerfile;
  bool seen_from = false;
  size_t next = 0;
  int current = 0;
  while (next < lines.size()) {
    absl::string_view raw = lines[next++];
    absl::Status status;
    std::string line = ProcessLine(raw, true, &directives, &status);
    ++current;
    if (!status.ok()) return LineError(current, status.message());
    const int start = current;
    bool continues = directives.TrimContinuation(&line);
    if (!continues && line.empty()) continue;
    while (continues && next < lines.size()) {
      absl::string_view cont_raw = lines[next++];
      std::string cont = ProcessLine(cont_raw, false, &directives, &status);
      ++current;
      if (!status.ok()) return LineError(current, status.message());
      if (IsCommentLine(cont_raw)) continue;
      if (TrimLeadingSpace(cont).empty()) continue;
      continues = directives.TrimContinuation(&cont);
      line += cont;
    }
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<Instruction> inst = BuildInstruction(line, start, directives.escape(), false);
    if (!inst.ok()) return inst.status();
    if (inst->keyword == "FROM") {
      seen_from = true;
    } else if (!seen_from && inst->keyword != "ARG") {
      return LineError(
          start,
          absl::StrCat(inst->keyword, " before the first FROM: only ARG may come before FROM"));
    }
    dockerfile.instructions.push_back(*std::move(inst));
  }
  dockerfile.escape = directives.escape();
  const int last = current > 0 ? current : 1;
  if (dockerfile.instructions.empty()) return LineError(last, "file with no instructions");
  if (!seen_from)
    return LineError(last, "no FROM instruction: the Dockerfile has no stage to build");
  return dockerfile;
}

absl::StatusOr<std::vector<std::string>> ProcessWords(absl::string_view text, const Lookup& env,
                                                      char escape) {
  Lexer lexer(text, &env, escape, LexOptions{});
  std::string result;
  std::vector<std::string> words;
  absl::Status status = lexer.Process(&result, &words);
  if (!status.ok()) return status;
  return words;
}

absl::StatusOr<std::string> ProcessWord(absl::string_view text, const Lookup& env, char escape) {
  Lexer lexer(text, &env, escape, LexOptions{});
  std::string result;
  std::vector<std::string> words;
  absl::Status status = lexer.Process(&result, &words);
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<std::vector<std::pair<std::string, std::optional<std::string>>>> ParseKeyValues(
    const Instruction& instruction, const Lookup& env, char escape) {
  const std::string& kw = instruction.keyword;
  const int line = instruction.line;
  if (kw != "ENV" && kw != "LABEL" && kw != "ARG") {
    return LineError(line, absl::StrCat(kw, " has no key=value arguments"));
  }
  absl::StatusOr<std::map<std::string, std::string>> flags = ParseFlags(instruction, {});
  if (!flags.ok()) return flags.status();
  const std::vector<std::string> words = SplitKeepingQuotes(instruction.args, escape);
  if (words.empty()) return LineError(line, absl::StrCat(kw, " requires at least one argument"));

  std::vector<std::pair<std::string, std::optional<std::string>>> pairs;
  auto expand = [&](absl::string_view word) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> expanded = ProcessWord(word, env, escape);
    if (!expanded.ok()) return LineError(line, expanded.status().message());
    return expanded;
  };
  auto add = [&](absl::string_view raw_key,
                 std::optional<absl::string_view> raw_value) -> absl::Status {
    if (raw_key.empty()) return LineError(line, absl::StrCat(kw, " names can not be blank"));
    absl::StatusOr<std::string> key = expand(raw_key);
    if (!key.ok()) return key.status();
    if (key->empty()) {
      return LineError(line, absl::StrCat(kw, " name ", Quote(raw_key), " expands to nothing"));
    }
    if (kw != "LABEL" && HasSpaceOrEquals(*key)) {
      return LineError(line, absl::StrCat("invalid ", kw, " name ", Quote(*key),
                                          ": names can not hold whitespace or '='"));
    }
    std::optional<std::string> value;
    if (raw_value.has_value()) {
      absl::StatusOr<std::string> expanded = expand(*raw_value);
      if (!expanded.ok()) return expanded.status();
      value = *std::move(expanded);
    }
    pairs.emplace_back(*std::move(key), std::move(value));
    return absl::OkStatus();
  };

  if (kw == "ARG") {
    for (const std::string& word : words) {
      const size_t eq = word.find('=');
      absl::Status status = eq == std::string::npos ? add(word, std::nullopt)
                                                    : add(absl::string_view(word).substr(0, eq),
                                                          absl::string_view(word).substr(eq + 1));
      if (!status.ok()) return status;
    }
    return pairs;
  }
  if (words[0].find('=') == std::string::npos) {
    auto [key, value] = SplitFirstToken(instruction.args);
    if (value.empty()) return LineError(line, absl::StrCat(kw, " must have two arguments"));
    absl::Status status = add(key, value);
    if (!status.ok()) return status;
    return pairs;
  }
  for (const std::string& word : words) {
    const size_t eq = word.find('=');
    if (eq == std::string::npos) {
      return LineError(line, absl::StrCat("Syntax error - can't find = in ", Quote(word),
                                          ". Must be of the form: name=value"));
    }
    absl::Status status =
        add(absl::string_view(word).substr(0, eq), absl::string_view(word).substr(eq + 1));
    if (!status.ok()) return status;
  }
  return pairs;
}

absl::StatusOr<std::map<std::string, std::string>> ParseFlags(
    const Instruction& instruction, const std::vector<std::string>& allowed) {
  std::map<std::string, std::string> flags;
  for (const std::string& flag : instruction.flags) {
    absl::string_view body(flag);
    if (absl::StartsWith(body, "--")) body.remove_prefix(2);
    const size_t eq = body.find('=');
    const std::string name = Str(body.substr(0, eq));
    const std::string value = eq == absl::string_view::npos ? "" : Str(body.substr(eq + 1));
    bool known = false;
    for (const std::string& a : allowed) known = known || (!name.empty() && a == name);
    if (!known) {
      return LineError(instruction.line,
                       absl::StrCat("unknown flag --", name, " for ", instruction.keyword));
    }
    if (!flags.emplace(name, value).second) {
      return LineError(instruction.line,
                       absl::StrCat("duplicate flag --", name, " for ", instruction.keyword));
    }
  }
  return flags;
}

absl::StatusOr<BuildStructure> SplitStages(const Dockerfile& dockerfile,
                                           const std::map<std::string, std::string>& build_args) {
  BuildStructure structure;
  std::map<std::string, std::string> visible;
  const Lookup lookup = [&](absl::string_view name) -> std::optional<std::string> {
    const std::string key = Str(name);
    if (auto it = visible.find(key); it != visible.end()) return it->second;
    if (IsPlatformArg(key)) {
      if (auto it = build_args.find(key); it != build_args.end()) return it->second;
    }
    return std::nullopt;
  };
  std::map<std::string, int> stage_lines;
  for (const Instruction& inst : dockerfile.instructions) {
    if (inst.keyword != "FROM") {
      if (!structure.stages.empty()) {
        structure.stages.back().instructions.push_back(inst);
        continue;
      }
      if (inst.keyword != "ARG") {
        return LineError(inst.line, absl::StrCat(inst.keyword,
                                                 " before the first FROM: only ARG "
                                                 "may come before FROM"));
      }
      if (!inst.flags.empty()) {
        if (absl::Status s = ParseFlags(inst, {}).status(); !s.ok()) return s;
      }
      for (const std::string& word : SplitKeepingQuotes(inst.args, dockerfile.escape)) {
        Instruction one = inst;
        one.args = word;
        absl::StatusOr<std::vector<std::pair<std::string, std::optional<std::string>>>> args =
            ParseKeyValues(one, lookup, dockerfile.escape);
        if (!args.ok()) return args.status();
        for (auto& [name, value] : *args) {
          if (auto it = build_args.find(name); it != build_args.end()) value = it->second;
          visible[name] = value.value_or("");
          structure.global_args.emplace_back(name, value);
        }
      }
      continue;
    }
    absl::StatusOr<std::map<std::string, std::string>> flags = ParseFlags(inst, {"platform"});
    if (!flags.ok()) return flags.status();
    std::vector<absl::string_view> words = SplitTokenSpace(inst.args);
    Stage stage;
    stage.index = static_cast<int>(structure.stages.size());
    stage.line = inst.line;
    if (words.size() == 3 && absl::EqualsIgnoreCase(words[1], "as")) {
      stage.name = absl::AsciiStrToLower(words[2]);
      bool valid = absl::ascii_islower(static_cast<unsigned char>(stage.name[0]));
      for (char c : stage.name) {
        valid = valid && (absl::ascii_islower(static_cast<unsigned char>(c)) ||
                          absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-' ||
                          c == '_' || c == '.');
      }
      if (!valid) {
        return LineError(inst.line, absl::StrCat("invalid name for build stage: ", Quote(words[2]),
                                                 ", name can't start with a number or contain "
                                                 "symbols"));
      }
      auto [it, inserted] = stage_lines.emplace(stage.name, inst.line);
      if (!inserted) {
        return LineError(inst.line, absl::StrCat("duplicate stage name ", Quote(stage.name),
                                                 " (first defined on line ", it->second, ")"));
      }
    } else if (words.size() != 1) {
      return LineError(inst.line,
                       "FROM requires either one or three arguments: FROM <image> [AS <name>]");
    }
    absl::StatusOr<std::string> base = ProcessWord(words[0], lookup, dockerfile.escape);
    if (!base.ok()) return LineError(inst.line, base.status().message());
    if (base->empty()) {
      return LineError(inst.line, absl::StrCat("base name (", words[0], ") should not be blank"));
    }
    stage.base = *std::move(base);
    if (auto it = flags->find("platform"); it != flags->end()) {
      absl::StatusOr<std::string> platform = ProcessWord(it->second, lookup, dockerfile.escape);
      if (!platform.ok()) return LineError(inst.line, platform.status().message());
      stage.platform = *std::move(platform);
    }
    structure.stages.push_back(std::move(stage));
  }
  if (structure.stages.empty()) {
    const int line = dockerfile.instructions.empty() ? 1 : dockerfile.instructions.back().line;
    return LineError(line, "no FROM instruction: the Dockerfile has no stage to build");
  }
  return structure;
}

}  // namespace elfdeploy::builder
