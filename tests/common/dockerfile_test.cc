#include "services/builder/dockerfile.h"

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace elfdeploy::builder {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

using Pairs = std::vector<std::pair<std::string, std::optional<std::string>>>;

// The text with everything but plain characters as \xNN: readable in failures, and safe in the
// test names CMake's gtest_discover_tests derives from printed parameters.
std::string Printable(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
        absl::string_view(" -_./:=,!?*+@'").find(c) != absl::string_view::npos) {
      out.push_back(c);
    } else {
      out += "\\x" + absl::BytesToHexString(absl::string_view(&c, 1));
    }
  }
  return out;
}

// Names unnamed cases by number, so test names stay plain; PrintTo shows the case on failure.
struct CaseNumber {
  template <typename T>
  std::string operator()(const ::testing::TestParamInfo<T>& info) const {
    return "Case" + std::to_string(info.index);
  }
};

std::string Message(const absl::Status& status) { return std::string(status.message()); }

Lookup MapLookup(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](absl::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// The instructions as "line KEYWORD|flags|args" strings, for compact expectations.
std::vector<std::string> Summary(const Dockerfile& dockerfile) {
  std::vector<std::string> out;
  for (const Instruction& inst : dockerfile.instructions) {
    std::string flags;
    for (const std::string& flag : inst.flags) flags += (flags.empty() ? "" : ",") + flag;
    out.push_back(std::to_string(inst.line) + " " + inst.keyword + "|" + flags + "|" + inst.args);
  }
  return out;
}

struct ParseCase {
  std::string name;
  std::string text;
  char escape;
  std::vector<std::string> summary;
};

void PrintTo(const ParseCase& c, std::ostream* os) { *os << Printable(c.name); }

class ParseDockerfileTest : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseDockerfileTest, Parses) {
  const ParseCase& c = GetParam();
  absl::StatusOr<Dockerfile> df = ParseDockerfile(c.text);
  ASSERT_TRUE(df.ok()) << df.status();
  EXPECT_EQ(df->escape, c.escape);
  EXPECT_EQ(Summary(*df), c.summary);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseDockerfileTest,
    ::testing::Values(
        ParseCase{"Minimal", "FROM alpine:3.19\n", '\\', {"1 FROM||alpine:3.19"}},
        ParseCase{
            "EscapeDirectiveBacktick",
            "# escape=`\nFROM mcr.microsoft.com/windows\nCOPY C:\\src\\ C:\\dst\\\nRUN dir `\n"
            "    /s\n",
            '`',
            {"2 FROM||mcr.microsoft.com/windows", "3 COPY||C:\\src\\ C:\\dst\\",
             "4 RUN||dir     /s"}},
        ParseCase{"SyntaxAndEscapeDirectives",
                  "# syntax=docker/dockerfile:1\n#escape = \\ \nFROM a\n",
                  '\\',
                  {"3 FROM||a"}},
        ParseCase{"DirectiveAfterCommentIsComment",
                  "# hello\n# escape=`\nFROM a\nRUN x \\\n  y\n",
                  '\\',
                  {"3 FROM||a", "4 RUN||x   y"}},
        ParseCase{
            "DirectiveAfterEmptyLineIsComment", "\n# escape=`\nFROM a\n", '\\', {"3 FROM||a"}},
        ParseCase{"DirectiveAfterInstructionIsComment",
                  "FROM a\n# escape=`\nRUN b \\\nc\n",
                  '\\',
                  {"1 FROM||a", "3 RUN||b c"}},
        ParseCase{"ContinuationAcrossCommentAndEmptyLines",
                  "FROM debian:12\nRUN apt-get update && \\\n    # refresh first\n"
                  "    apt-get install -y \\\n\n    curl\nCMD [\"curl\"]\n",
                  '\\',
                  {"1 FROM||debian:12", "2 RUN||apt-get update &&     apt-get install -y     curl",
                   "7 CMD||[\"curl\"]"}},
        ParseCase{"TrailingSpaceAfterEscape",
                  "FROM a\nRUN a \\  \n b\n",
                  '\\',
                  {"1 FROM||a", "2 RUN||a  b"}},
        ParseCase{
            "EscapeAloneOnALine", "FROM a\nRUN a\\\n\\\nb\n", '\\', {"1 FROM||a", "2 RUN||ab"}},
        ParseCase{"UnterminatedContinuationAtEof",
                  "FROM a\nRUN echo hi \\",
                  '\\',
                  {"1 FROM||a", "2 RUN||echo hi"}},
        ParseCase{"EscapedEscapeDoesNotContinue",
                  "FROM a\nRUN echo \\\\\nRUN b\n",
                  '\\',
                  {"1 FROM||a", "2 RUN||echo \\\\", "3 RUN||b"}},
        ParseCase{"CommentsAndIndentation",
                  "# leading comment\n\n   # indented comment\n  FROM a\n\tRUN b # not a comment\n",
                  '\\',
                  {"4 FROM||a", "5 RUN||b # not a comment"}},
        ParseCase{"CrlfAndBom",
                  "\xEF\xBB\xBF# escape=`\r\nFROM a\r\nRUN x `\r\n  y\r\n",
                  '`',
                  {"2 FROM||a", "3 RUN||x   y"}},
        ParseCase{"CaseInsensitiveKeywords",
                  "from a AS b\nrun echo\nCopY x y\nOnBuild run make\n",
                  '\\',
                  {"1 FROM||a AS b", "2 RUN||echo", "3 COPY||x y", "4 ONBUILD||run make"}},
        ParseCase{"ArgsBeforeFrom",
                  "ARG BASE=alpine\nARG TAG\nFROM $BASE:$TAG\n",
                  '\\',
                  {"1 ARG||BASE=alpine", "2 ARG||TAG", "3 FROM||$BASE:$TAG"}},
        ParseCase{"Flags",
                  "FROM --platform=$BUILDPLATFORM golang AS build\n"
                  "COPY --from=build --chown=1000:1000 --chmod=755 /out /bin/app\n"
                  "COPY --link a b\n"
                  "RUN --mount=\"type=cache,target=/root/.cache\" go build\n"
                  "COPY --link -- --weird /dst\n",
                  '\\',
                  {"1 FROM|--platform=$BUILDPLATFORM|golang AS build",
                   "2 COPY|--from=build,--chown=1000:1000,--chmod=755|/out /bin/app",
                   "3 COPY|--link|a b", "4 RUN|--mount=type=cache,target=/root/.cache|go build",
                   "5 COPY|--link|--weird /dst"}},
        ParseCase{"NotHeredocs",
                  "FROM a\nRUN echo \"<<EOF\"\nRUN cat <<< \"x\"\nRUN [\"cat\", \"<<EOF\"]\n"
                  "RUN echo a<<b\nENV X=<<EOF\n",
                  '\\',
                  {"1 FROM||a", "2 RUN||echo \"<<EOF\"", "3 RUN||cat <<< \"x\"",
                   "4 RUN||[\"cat\", \"<<EOF\"]", "5 RUN||echo a<<b", "6 ENV||X=<<EOF"}}),
    [](const ::testing::TestParamInfo<ParseCase>& info) { return info.param.name; });

struct ExecCase {
  std::string line;
  bool json;
  std::vector<std::string> json_args;
};

void PrintTo(const ExecCase& c, std::ostream* os) { *os << Printable(c.line); }

class ExecFormTest : public ::testing::TestWithParam<ExecCase> {};

TEST_P(ExecFormTest, DetectsJsonArrays) {
  const ExecCase& c = GetParam();
  absl::StatusOr<Dockerfile> df = ParseDockerfile("FROM a\n" + c.line + "\n");
  ASSERT_TRUE(df.ok()) << df.status();
  const Instruction& inst = df->instructions.at(1);
  EXPECT_EQ(inst.json, c.json) << c.line;
  EXPECT_EQ(inst.json_args, c.json_args) << c.line;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ExecFormTest,
    ::testing::Values(
        ExecCase{"CMD [\"echo\", \"a b\"]", true, {"echo", "a b"}},
        ExecCase{"ENTRYPOINT [ \"/bin/app\" , \"--flag\" ]  ", true, {"/bin/app", "--flag"}},
        ExecCase{"RUN [\"sh\", \"-c\", \"echo \\\"q\\\" \\u00e9\\n\"]",
                 true,
                 {"sh", "-c", "echo \"q\" \xC3\xA9\n"}},
        ExecCase{"SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]",
                 true,
                 {"/bin/bash", "-o", "pipefail", "-c"}},
        ExecCase{"COPY [\"a b.txt\", \"/dst/\"]", true, {"a b.txt", "/dst/"}},
        ExecCase{"VOLUME [\"/data\", \"/logs\"]", true, {"/data", "/logs"}},
        ExecCase{"CMD []", true, {}},
        ExecCase{"CMD [\"\\ud83d\\ude00\"]", true, {"\xF0\x9F\x98\x80"}},
        ExecCase{"CMD [a, b]", false, {}}, ExecCase{"CMD [\"unterminated", false, {}},
        ExecCase{"CMD [\"a\"] trailing", false, {}}, ExecCase{"CMD ['single']", false, {}},
        ExecCase{"RUN echo [1]", false, {}}, ExecCase{"VOLUME /a /b", false, {}},
        ExecCase{"HEALTHCHECK CMD [\"curl\", \"-f\", \"http://localhost/\"]", false, {}},
        ExecCase{"USER [\"root\"]", false, {}}),
    CaseNumber());

TEST(ExecFormTest, NonStringArrayIsAnError) {
  for (const char* line : {"RUN [\"a\", 1]", "CMD [\"a\", null]", "ENTRYPOINT [[\"a\"]]",
                           "COPY [\"a\", {\"b\": 1}]"}) {
    absl::StatusOr<Dockerfile> df = ParseDockerfile(std::string("FROM a\n") + line + "\n");
    ASSERT_FALSE(df.ok()) << line;
    EXPECT_EQ(df.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Message(df.status()),
              "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings "
              "only");
  }
}

TEST(ParseExecFormTest, ReadsHealthcheckCommands) {
  absl::StatusOr<std::optional<std::vector<std::string>>> exec =
      ParseExecForm(" [\"curl\", \"-f\"]");
  ASSERT_TRUE(exec.ok());
  ASSERT_TRUE(exec->has_value());
  EXPECT_THAT(**exec, ElementsAre("curl", "-f"));

  exec = ParseExecForm("curl -f");
  ASSERT_TRUE(exec.ok());
  EXPECT_FALSE(exec->has_value());

  EXPECT_FALSE(ParseExecForm("[true]").ok());
}

TEST(ParseDockerfileTest, OriginalIsOneNormalisedLine) {
  absl::StatusOr<Dockerfile> df =
      ParseDockerfile("from a\ncopy --from=build \\\n  /out /bin/\nRUN [\"a\",  \"b\"]\n");
  ASSERT_TRUE(df.ok()) << df.status();
  ASSERT_EQ(df->instructions.size(), 3u);
  EXPECT_EQ(df->instructions[0].original, "FROM a");
  EXPECT_EQ(df->instructions[1].original, "COPY --from=build /out /bin/");
  EXPECT_EQ(df->instructions[2].original, "RUN [\"a\",  \"b\"]");
}

struct ErrorCase {
  std::string name;
  std::string text;
  std::string message;  // expected prefix of the message
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << Printable(c.name); }

class ParseDockerfileErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ParseDockerfileErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<Dockerfile> df = ParseDockerfile(c.text);
  ASSERT_FALSE(df.ok());
  EXPECT_EQ(df.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(df.status()), StartsWith(c.message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseDockerfileErrorTest,
    ::testing::Values(
        ErrorCase{"Empty", "", "Dockerfile:1: file with no instructions"},
        ErrorCase{"OnlyComments", "# a\n\n# b\n", "Dockerfile:3: file with no instructions"},
        ErrorCase{"OnlyArgs", "ARG A=1\nARG B\n", "Dockerfile:2: no FROM instruction"},
        ErrorCase{"UnknownInstruction", "FROM a\n\nFOO bar\n",
                  "Dockerfile:3: unknown instruction: FOO (known: ADD, ARG, CMD, COPY, "
                  "ENTRYPOINT, ENV, EXPOSE, FROM, HEALTHCHECK, LABEL, MAINTAINER, ONBUILD, RUN, "
                  "SHELL, STOPSIGNAL, USER, VOLUME, WORKDIR)"},
        ErrorCase{"InstructionBeforeFrom", "ARG A\nENV B=c\nFROM a\n",
                  "Dockerfile:2: ENV before the first FROM"},
        ErrorCase{"RunBeforeFrom", "# c\nRUN x\n", "Dockerfile:2: RUN before the first FROM"},
        ErrorCase{"HeredocRun", "FROM a\nRUN <<EOF\necho hi\nEOF\n",
                  "Dockerfile:2: heredocs (<<EOF) are not supported in RUN"},
        ErrorCase{"HeredocCopyChomp", "FROM a\nCOPY <<-EOT /etc/x\n\tx\n\tEOT\n",
                  "Dockerfile:2: heredocs (<<EOF) are not supported in COPY"},
        ErrorCase{"HeredocQuotedWithFd", "FROM a\nRUN --network=none \\\n  cat 3<<\"EOF\"\n",
                  "Dockerfile:2: heredocs"},
        ErrorCase{"HeredocInOnbuild", "FROM a\nONBUILD RUN <<EOF\nx\nEOF\n",
                  "Dockerfile:2: heredocs"},
        ErrorCase{"MissingArguments", "FROM a\nRUN   \n",
                  "Dockerfile:2: RUN requires at least one"},
        ErrorCase{"MissingArgumentsAfterFlags", "FROM a\nCOPY --link\n",
                  "Dockerfile:2: COPY requires at least one"},
        ErrorCase{"FromWithoutImage", "FROM\n", "Dockerfile:1: FROM requires at least one"},
        ErrorCase{"CopyWithoutDestination", "FROM a\nCOPY onlyone\n",
                  "Dockerfile:2: COPY requires at least two arguments"},
        ErrorCase{"AddJsonWithoutDestination", "FROM a\nADD [\"x\"]\n",
                  "Dockerfile:2: ADD requires at least two arguments"},
        ErrorCase{"ShellNotJson", "FROM a\nSHELL /bin/sh -c\n",
                  "Dockerfile:2: SHELL requires the arguments to be in JSON form"},
        ErrorCase{"EmptyVolume", "FROM a\nVOLUME [\"\"]\n",
                  "Dockerfile:2: VOLUME specified can not be an empty string"},
        ErrorCase{"OnbuildOnbuild", "FROM a\nONBUILD ONBUILD RUN x\n",
                  "Dockerfile:2: Chaining ONBUILD"},
        ErrorCase{"OnbuildFrom", "FROM a\nONBUILD FROM b\n",
                  "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"},
        ErrorCase{"OnbuildUnknown", "FROM a\nONBUILD BOGUS x\n",
                  "Dockerfile:2: unknown instruction: BOGUS"},
        ErrorCase{"DuplicateDirective", "# escape=`\n# escape=\\\nFROM a\n",
                  "Dockerfile:2: only one escape parser directive can be used"},
        ErrorCase{"InvalidEscape", "# escape=x\nFROM a\n",
                  "Dockerfile:1: invalid escape token 'x' does not match ` or \\"},
        ErrorCase{"ErrorLineAfterContinuation", "FROM a\nRUN a \\\n  b\nNOPE\n",
                  "Dockerfile:4: unknown instruction: NOPE"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

TEST(ParseInstructionLineTest, ParsesOnbuildTriggers) {
  absl::StatusOr<Instruction> inst = ParseInstructionLine("copy --chown=app . /src", 7);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->line, 7);
  EXPECT_EQ(inst->keyword, "COPY");
  EXPECT_THAT(inst->flags, ElementsAre("--chown=app"));
  EXPECT_EQ(inst->args, ". /src");

  EXPECT_EQ(Message(ParseInstructionLine("", 3).status()), "Dockerfile:3: empty instruction");
  EXPECT_THAT(Message(ParseInstructionLine("RUN cat <<EOF", 4).status()),
              StartsWith("Dockerfile:4: heredocs"));
}

struct WordsCase {
  std::string text;
  std::vector<std::string> words;
  std::string word;  // ProcessWord of the same text
};

void PrintTo(const WordsCase& c, std::ostream* os) { *os << Printable(c.text); }

const std::map<std::string, std::string>& TestEnv() {
  static const auto* env = new std::map<std::string, std::string>{{"SET", "value"},
                                                                  {"EMPTY", ""},
                                                                  {"SPACED", "a  b"},
                                                                  {"P", "/usr/local/bin"},
                                                                  {"FOO", "foo boo"},
                                                                  {"U",
                                                                   "\xC3\xA9"
                                                                   "a"}};
  return *env;
}

class ProcessWordsTest : public ::testing::TestWithParam<WordsCase> {};

TEST_P(ProcessWordsTest, ExpandsAndSplits) {
  const WordsCase& c = GetParam();
  const Lookup env = MapLookup(TestEnv());
  absl::StatusOr<std::vector<std::string>> words = ProcessWords(c.text, env, '\\');
  ASSERT_TRUE(words.ok()) << c.text << ": " << words.status();
  EXPECT_EQ(*words, c.words) << c.text;
  absl::StatusOr<std::string> word = ProcessWord(c.text, env, '\\');
  ASSERT_TRUE(word.ok()) << c.text << ": " << word.status();
  EXPECT_EQ(*word, c.word) << c.text;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ProcessWordsTest,
    ::testing::Values(
        WordsCase{"$SET", {"value"}, "value"}, WordsCase{"${SET}", {"value"}, "value"},
        WordsCase{"pre${SET}post $SET.x", {"prevaluepost", "value.x"}, "prevaluepost value.x"},
        WordsCase{"$UNSET", {}, ""}, WordsCase{"a${UNSET}b", {"ab"}, "ab"},
        WordsCase{"${UNSET:-d}", {"d"}, "d"}, WordsCase{"${EMPTY:-d}", {"d"}, "d"},
        WordsCase{"${SET:-d}", {"value"}, "value"}, WordsCase{"${UNSET-d}", {"d"}, "d"},
        WordsCase{"${EMPTY-d}", {}, ""}, WordsCase{"${SET-d}", {"value"}, "value"},
        WordsCase{"${UNSET:-$SET}", {"value"}, "value"},
        WordsCase{"${UNSET:-a b}", {"a", "b"}, "a b"}, WordsCase{"${UNSET:+a}", {}, ""},
        WordsCase{"${EMPTY:+a}", {}, ""}, WordsCase{"${SET:+a}", {"a"}, "a"},
        WordsCase{"${EMPTY+a}", {"a"}, "a"}, WordsCase{"${UNSET+a}", {}, ""},
        WordsCase{"${SET:?boom}", {"value"}, "value"}, WordsCase{"$SPACED", {"a", "b"}, "a  b"},
        WordsCase{"\"$SPACED\"", {"a  b"}, "a  b"},
        WordsCase{"'$SET ${SET}'", {"$SET ${SET}"}, "$SET ${SET}"},
        WordsCase{"\"$SET\" '$SET'", {"value", "$SET"}, "value $SET"},
        WordsCase{"a\\ b \\$SET", {"a b", "$SET"}, "a b $SET"},
        WordsCase{"\"a\\\"b\" \"c\\$d\" \"e\\\\f\" \"g\\nh\"",
                  {"a\"b", "c$d", "e\\f", "g\\nh"},
                  "a\"b c$d e\\f g\\nh"},
        WordsCase{"'it''s' \"x\"'y'z", {"its", "xyz"}, "its xyz"},
        WordsCase{" a  b\tc ", {"a", "b", "c"}, " a  b\tc "}, WordsCase{"\"\" ''", {}, " "},
        WordsCase{"$ a$ $1 $$", {"$", "a$"}, "$ a$  "},
        WordsCase{"trailing\\", {"trailing"}, "trailing"},
        WordsCase{"${SET#v} ${SET%e} ${SET#x}", {"alue", "valu", "value"}, "alue valu value"},
        WordsCase{"${P##*/} ${P#*/} ${P%/*} ${P%%/*}",
                  {"bin", "usr/local/bin", "/usr/local"},
                  "bin usr/local/bin /usr/local "},
        WordsCase{"${SET/a/A} ${FOO//o/0} ${FOO/o*/X}",
                  {"vAlue", "f00", "b00", "fX"},
                  "vAlue f00 b00 fX"},
        WordsCase{"${U#?}", {"a"}, "a"}),
    CaseNumber());

TEST(ProcessWordsTest, BacktickEscape) {
  const Lookup env = MapLookup(TestEnv());
  absl::StatusOr<std::vector<std::string>> words =
      ProcessWords("a` b C:\\dir \"`$SET`\"\" `$SET", env, '`');
  ASSERT_TRUE(words.ok()) << words.status();
  EXPECT_THAT(*words, ElementsAre("a b", "C:\\dir", "$SET\"", "$SET"));
}

TEST(ProcessWordsTest, EmptyLookupSetsNothing) {
  absl::StatusOr<std::string> word = ProcessWord("x${A:-d}$B", Lookup(), '\\');
  ASSERT_TRUE(word.ok());
  EXPECT_EQ(*word, "xd");
}

struct WordsErrorCase {
  std::string text;
  std::string message;
};

void PrintTo(const WordsErrorCase& c, std::ostream* os) { *os << Printable(c.text); }

class ProcessWordsErrorTest : public ::testing::TestWithParam<WordsErrorCase> {};

TEST_P(ProcessWordsErrorTest, Rejects) {
  const WordsErrorCase& c = GetParam();
  const Lookup env = MapLookup(TestEnv());
  absl::StatusOr<std::vector<std::string>> words = ProcessWords(c.text, env, '\\');
  ASSERT_FALSE(words.ok()) << c.text;
  EXPECT_EQ(words.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(words.status()), HasSubstr(c.message)) << c.text;
  EXPECT_FALSE(ProcessWord(c.text, env, '\\').ok()) << c.text;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ProcessWordsErrorTest,
    ::testing::Values(WordsErrorCase{"'abc", "looking for matching single-quote"},
                      WordsErrorCase{"\"abc", "looking for matching double-quote"},
                      WordsErrorCase{"\"abc\\", "looking for matching double-quote"},
                      WordsErrorCase{"${SET", "missing '}'"}, WordsErrorCase{"x${", "missing '}'"},
                      WordsErrorCase{"${UNSET:-abc", "missing '}'"},
                      WordsErrorCase{"${}", "bad substitution"},
                      WordsErrorCase{"${:x}", "bad substitution"},
                      WordsErrorCase{"${SET:x}", "unsupported modifier (:x)"},
                      WordsErrorCase{"${SET^}", "unsupported modifier (^)"},
                      WordsErrorCase{"${SET/a", "missing '/'"},
                      WordsErrorCase{"${UNSET:?boom}", "UNSET: boom"},
                      WordsErrorCase{"${EMPTY:?}", "EMPTY: is not allowed to be empty"},
                      WordsErrorCase{"${UNSET?}", "UNSET: is not allowed to be unset"},
                      WordsErrorCase{"${SET#\\x}", "invalid escape"}),
    CaseNumber());

TEST(ProcessWordsErrorTest, NamesTheText) {
  EXPECT_EQ(Message(ProcessWords("'abc", Lookup(), '\\').status()),
            "failed to process \"'abc\": unexpected end of statement while looking for matching "
            "single-quote");
}

Instruction Parsed(const std::string& line) {
  absl::StatusOr<Instruction> inst = ParseInstructionLine(line, 5);
  EXPECT_TRUE(inst.ok()) << line << ": " << inst.status();
  return inst.ok() ? *inst : Instruction{};
}

struct KeyValueCase {
  std::string line;
  Pairs pairs;
};

void PrintTo(const KeyValueCase& c, std::ostream* os) { *os << Printable(c.line); }

class ParseKeyValuesTest : public ::testing::TestWithParam<KeyValueCase> {};

TEST_P(ParseKeyValuesTest, Parses) {
  const KeyValueCase& c = GetParam();
  absl::StatusOr<Pairs> pairs = ParseKeyValues(Parsed(c.line), MapLookup(TestEnv()), '\\');
  ASSERT_TRUE(pairs.ok()) << c.line << ": " << pairs.status();
  EXPECT_EQ(*pairs, c.pairs) << c.line;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseKeyValuesTest,
    ::testing::Values(
        KeyValueCase{"ENV a=1 b=\"two words\" c=$SET d=",
                     {{"a", "1"}, {"b", "two words"}, {"c", "value"}, {"d", ""}}},
        KeyValueCase{"ENV X=a\\ b Y='$SET' Z=\"${SET}s\"",
                     {{"X", "a b"}, {"Y", "$SET"}, {"Z", "values"}}},
        KeyValueCase{"ENV PATH /usr/bin:$SET", {{"PATH", "/usr/bin:value"}}},
        KeyValueCase{"ENV MSG \"hello world\"   again", {{"MSG", "hello world   again"}}},
        KeyValueCase{"env LOWER ok", {{"LOWER", "ok"}}},
        KeyValueCase{"LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0 "
                     "description='a \"quoted\" one'",
                     {{"com.example.vendor", "ACME Inc"},
                      {"version", "1.0"},
                      {"description", "a \"quoted\" one"}}},
        KeyValueCase{"LABEL \"with space\"=x", {{"with space", "x"}}},
        KeyValueCase{"LABEL maintainer someone@example.com",
                     {{"maintainer", "someone@example.com"}}},
        KeyValueCase{"ARG name", {{"name", std::nullopt}}},
        KeyValueCase{"ARG v=1.2 other empty= q=\"a b\"",
                     {{"v", "1.2"}, {"other", std::nullopt}, {"empty", ""}, {"q", "a b"}}},
        KeyValueCase{"ARG D=${UNSET:-fallback}", {{"D", "fallback"}}}),
    CaseNumber());

struct KeyValueErrorCase {
  std::string line;
  std::string message;
};

void PrintTo(const KeyValueErrorCase& c, std::ostream* os) { *os << Printable(c.line); }

class ParseKeyValuesErrorTest : public ::testing::TestWithParam<KeyValueErrorCase> {};

TEST_P(ParseKeyValuesErrorTest, Rejects) {
  const KeyValueErrorCase& c = GetParam();
  absl::StatusOr<Pairs> pairs = ParseKeyValues(Parsed(c.line), MapLookup(TestEnv()), '\\');
  ASSERT_FALSE(pairs.ok()) << c.line;
  EXPECT_EQ(pairs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(pairs.status()), c.message) << c.line;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseKeyValuesErrorTest,
    ::testing::Values(
        KeyValueErrorCase{"ENV =x", "Dockerfile:5: ENV names can not be blank"},
        KeyValueErrorCase{"ARG =x", "Dockerfile:5: ARG names can not be blank"},
        KeyValueErrorCase{"LABEL a=1 =2", "Dockerfile:5: LABEL names can not be blank"},
        KeyValueErrorCase{"ENV a=1 b",
                          "Dockerfile:5: Syntax error - can't find = in \"b\". Must "
                          "be of the form: name=value"},
        KeyValueErrorCase{"ENV onlykey", "Dockerfile:5: ENV must have two arguments"},
        KeyValueErrorCase{"ENV \"a b\"=c",
                          "Dockerfile:5: invalid ENV name \"a b\": names can not hold whitespace "
                          "or '='"},
        KeyValueErrorCase{"ARG $EMPTY=1", "Dockerfile:5: ARG name \"$EMPTY\" expands to nothing"},
        KeyValueErrorCase{"ENV a=\"open",
                          "Dockerfile:5: failed to process \"\\\"open\": "
                          "unexpected end of statement while looking for "
                          "matching double-quote"},
        KeyValueErrorCase{"ENV --foo=bar a=b", "Dockerfile:5: unknown flag --foo for ENV"},
        KeyValueErrorCase{"RUN a=b", "Dockerfile:5: RUN has no key=value arguments"}),
    CaseNumber());

TEST(ParseFlagsTest, ReturnsAllowedFlags) {
  const std::vector<std::string> allowed = {"from", "chown", "chmod", "link"};
  absl::StatusOr<std::map<std::string, std::string>> flags =
      ParseFlags(Parsed("COPY --from=build --chown=1000:1000 --link --chmod=755 a b"), allowed);
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(*flags,
            (std::map<std::string, std::string>{
                {"from", "build"}, {"chown", "1000:1000"}, {"link", ""}, {"chmod", "755"}}));

  flags = ParseFlags(Parsed("COPY a b"), allowed);
  ASSERT_TRUE(flags.ok());
  EXPECT_THAT(*flags, IsEmpty());

  flags = ParseFlags(Parsed("COPY --from= a b"), allowed);
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->at("from"), "");
}

TEST(ParseFlagsTest, RejectsUnknownAndRepeatedFlags) {
  const std::vector<std::string> allowed = {"from", "link"};
  EXPECT_EQ(Message(ParseFlags(Parsed("COPY --foo=1 a b"), allowed).status()),
            "Dockerfile:5: unknown flag --foo for COPY");
  EXPECT_EQ(Message(ParseFlags(Parsed("COPY --from=a --link --from=b x y"), allowed).status()),
            "Dockerfile:5: duplicate flag --from for COPY");
  EXPECT_EQ(Message(ParseFlags(Parsed("RUN --=x y"), allowed).status()),
            "Dockerfile:5: unknown flag -- for RUN");
  EXPECT_EQ(ParseFlags(Parsed("COPY --foo a b"), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

absl::StatusOr<BuildStructure> Split(const std::string& text,
                                     const std::map<std::string, std::string>& build_args) {
  absl::StatusOr<Dockerfile> df = ParseDockerfile(text);
  if (!df.ok()) return df.status();
  return SplitStages(*df, build_args);
}

constexpr char kMultiStage[] =
    "ARG BASE=alpine\n"
    "ARG TAG=3.19\n"
    "ARG UNUSED\n"
    "FROM ${BASE}:${TAG} AS Build\n"
    "ARG TAG\n"
    "RUN make\n"
    "FROM --platform=$BUILDPLATFORM scratch\n"
    "COPY --from=build /out /out\n"
    "FROM build as final.stage-1_x\n";

TEST(SplitStagesTest, SplitsStagesWithDefaults) {
  absl::StatusOr<BuildStructure> s = Split(kMultiStage, {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->global_args, (Pairs{{"BASE", "alpine"}, {"TAG", "3.19"}, {"UNUSED", std::nullopt}}));
  ASSERT_EQ(s->stages.size(), 3u);
  const Stage& build = s->stages[0];
  EXPECT_EQ(build.index, 0);
  EXPECT_EQ(build.name, "build");
  EXPECT_EQ(build.base, "alpine:3.19");
  EXPECT_EQ(build.platform, "");
  EXPECT_EQ(build.line, 4);
  ASSERT_EQ(build.instructions.size(), 2u);
  EXPECT_EQ(build.instructions[0].original, "ARG TAG");
  EXPECT_EQ(build.instructions[1].original, "RUN make");
  const Stage& unnamed = s->stages[1];
  EXPECT_EQ(unnamed.index, 1);
  EXPECT_EQ(unnamed.name, "");
  EXPECT_EQ(unnamed.base, "scratch");
  EXPECT_EQ(unnamed.line, 7);
  ASSERT_EQ(unnamed.instructions.size(), 1u);
  EXPECT_THAT(unnamed.instructions[0].flags, ElementsAre("--from=build"));
  const Stage& final_stage = s->stages[2];
  EXPECT_EQ(final_stage.name, "final.stage-1_x");
  EXPECT_EQ(final_stage.base, "build");
  EXPECT_THAT(final_stage.instructions, IsEmpty());
}

TEST(SplitStagesTest, BuildArgsOverrideDefaults) {
  absl::StatusOr<BuildStructure> s = Split(
      kMultiStage,
      {{"TAG", "edge"}, {"UNUSED", "x"}, {"BUILDPLATFORM", "linux/amd64"}, {"NOT_DECLARED", "y"}});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->global_args, (Pairs{{"BASE", "alpine"}, {"TAG", "edge"}, {"UNUSED", "x"}}));
  EXPECT_EQ(s->stages[0].base, "alpine:edge");
  EXPECT_EQ(s->stages[1].platform, "linux/amd64");
}

TEST(SplitStagesTest, GlobalArgsSeeEarlierOnes) {
  const std::string text =
      "ARG A=x B=${A}1\nARG C=${B}y\nFROM reg/$C:${UNDECLARED:-t}$NOT_DECLARED\n";
  absl::StatusOr<BuildStructure> s = Split(text, {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->global_args, (Pairs{{"A", "x"}, {"B", "x1"}, {"C", "x1y"}}));
  EXPECT_EQ(s->stages[0].base, "reg/x1y:t");

  s = Split(text, {{"A", "z"}, {"NOT_DECLARED", "q"}});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->global_args, (Pairs{{"A", "z"}, {"B", "z1"}, {"C", "z1y"}}));
  EXPECT_EQ(s->stages[0].base, "reg/z1y:t");
}

struct SplitErrorCase {
  std::string text;
  std::string message;
};

void PrintTo(const SplitErrorCase& c, std::ostream* os) { *os << Printable(c.text); }

class SplitStagesErrorTest : public ::testing::TestWithParam<SplitErrorCase> {};

TEST_P(SplitStagesErrorTest, Rejects) {
  const SplitErrorCase& c = GetParam();
  absl::StatusOr<BuildStructure> s = Split(c.text, {});
  ASSERT_FALSE(s.ok()) << c.text;
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(s.status()), c.message) << c.text;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SplitStagesErrorTest,
    ::testing::Values(
        SplitErrorCase{"FROM a b c\n",
                       "Dockerfile:1: FROM requires either one or three arguments: FROM <image> "
                       "[AS <name>]"},
        SplitErrorCase{"FROM a AS\n",
                       "Dockerfile:1: FROM requires either one or three arguments: FROM <image> "
                       "[AS <name>]"},
        SplitErrorCase{"FROM a AS b\nRUN x\nFROM c AS B\n",
                       "Dockerfile:3: duplicate stage name \"b\" (first defined on line 1)"},
        SplitErrorCase{"FROM a AS 1x\n",
                       "Dockerfile:1: invalid name for build stage: \"1x\", name can't start "
                       "with a number or contain symbols"},
        SplitErrorCase{"FROM a AS b$c\n",
                       "Dockerfile:1: invalid name for build stage: \"b$c\", name can't start "
                       "with a number or contain symbols"},
        SplitErrorCase{"FROM --foo=x a\n", "Dockerfile:1: unknown flag --foo for FROM"},
        SplitErrorCase{"ARG E\nFROM $E\n", "Dockerfile:2: base name ($E) should not be blank"},
        SplitErrorCase{"ARG E=\"x\nFROM a\n",
                       "Dockerfile:1: failed to process \"\\\"x\": unexpected end of statement "
                       "while looking for matching double-quote"}),
    CaseNumber());

TEST(SplitStagesTest, RejectsDockerfilesWithoutStages) {
  Dockerfile df;
  df.instructions.push_back(Parsed("ARG A"));
  EXPECT_EQ(Message(SplitStages(df, {}).status()),
            "Dockerfile:5: no FROM instruction: the Dockerfile has no stage to build");
  df.instructions.push_back(Parsed("RUN x"));
  EXPECT_EQ(Message(SplitStages(df, {}).status()),
            "Dockerfile:5: RUN before the first FROM: only ARG may come before FROM");
}

}  // namespace
}  // namespace elfdeploy::builder
