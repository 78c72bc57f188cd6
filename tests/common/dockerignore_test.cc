#include "services/builder/dockerignore.h"

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
using ::testing::IsEmpty;

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

struct MatchCase {
  std::string name;
  std::string patterns;
  std::vector<std::pair<std::string, bool>> paths;  // path -> excluded
};

void PrintTo(const MatchCase& c, std::ostream* os) { *os << Printable(c.name); }

class DockerIgnoreTest : public ::testing::TestWithParam<MatchCase> {};

TEST_P(DockerIgnoreTest, Excludes) {
  const MatchCase& c = GetParam();
  absl::StatusOr<DockerIgnore> ignore = DockerIgnore::Parse(c.patterns);
  ASSERT_TRUE(ignore.ok()) << ignore.status();
  for (const auto& [path, excluded] : c.paths) {
    EXPECT_EQ(ignore->Excluded(path), excluded) << "path " << path;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DockerIgnoreTest,
    ::testing::Values(
        MatchCase{"StarIsOneLevel",
                  "*.log",
                  {{"a.log", true},
                   {".log", true},
                   {"dir/a.log", false},
                   {"a.log/x", true},
                   {"a.logx", false}}},
        MatchCase{"DoubleStarAnyDepth",
                  "**/*.tmp",
                  {{"x.tmp", true}, {"a/b/x.tmp", true}, {"a/x.tmpl", false}, {"a/x.tmp/y", true}}},
        MatchCase{"DoubleStarSuffix",
                  "**/cache\n**.bak",
                  {{"cache", true},
                   {"a/cache", true},
                   {"a/b/cache/f", true},
                   {"a/mycache", false},
                   {"x.bak", true},
                   {"d/x.bak", true},
                   {"x.baky", false}}},
        MatchCase{"DoubleStarMiddle",
                  "a/**/z",
                  {{"a/z", true},
                   {"a/b/z", true},
                   {"a/b/c/z/f", true},
                   {"a/bz", false},
                   {"b/a/z", false}}},
        MatchCase{"TrailingDoubleStar",
                  "docs/**",
                  {{"docs", false}, {"docs/x", true}, {"docs/a/b", true}, {"docsx", false}}},
        MatchCase{"DoubleStarMatchesAll", "**", {{"a", true}, {"a/b/c", true}, {".", false}}},
        MatchCase{"TrailingSlashDir",
                  "build/",
                  {{"build", true}, {"build/x/y", true}, {"buildx", false}, {"src/build", false}}},
        MatchCase{"ExceptionInsideExcludedDir",
                  "build\n!build/keep.txt",
                  {{"build", true},
                   {"build/keep.txt", false},
                   {"build/other", true},
                   {"build/sub/keep.txt", true}}},
        MatchCase{"LastMatchWins",
                  "!a.txt\n*.txt\n!b.txt",
                  {{"a.txt", true}, {"b.txt", false}, {"c.txt", true}}},
        MatchCase{"ExceptionDoesNotReachIntoExcludedParent",
                  "*\n!*.go",
                  {{"main.go", false}, {"x.txt", true}, {"dir/main.go", true}}},
        MatchCase{
            "ExceptionOfWholeDir", "vendor\n!vendor", {{"vendor", false}, {"vendor/a/b", false}}},
        MatchCase{"LeadingSlash",
                  "/abs/path",
                  {{"abs/path", true}, {"abs/path/f", true}, {"x/abs/path", false}}},
        MatchCase{"DirExcludesEverythingUnder",
                  "dir",
                  {{"dir", true}, {"dir/sub/file", true}, {"dirt", false}, {"a/dir", false}}},
        MatchCase{"Comments",
                  "# secret\n#*.md\n  # indented is a pattern\nkeep",
                  {{"secret", false},
                   {"# secret", false},
                   {"a.md", false},
                   {"# indented is a pattern", true},
                   {"keep", true}}},
        MatchCase{"WhitespaceAndEmptyLines",
                  "\n   \n  spaced.txt  \r\n\t!  spaced.txt/keep \n",
                  {{"spaced.txt", true}, {"spaced.txt/keep", false}, {"spaced.txt/other", true}}},
        MatchCase{"QuestionMark",
                  "?.txt",
                  {{"a.txt", true}, {"ab.txt", false}, {".txt", false}, {"\xC3\xA9.txt", true}}},
        MatchCase{"CharacterClass",
                  "[a-c].md\nx[^0-9]y\n[\\]].z",
                  {{"b.md", true}, {"d.md", false}, {"xay", true}, {"x5y", false}, {"].z", true}}},
        MatchCase{"CleanedPatterns",
                  "./a/../b\nc//d/./e/\n../outside",
                  {{"b", true},
                   {"a", false},
                   {"a/b", false},
                   {"c/d/e", true},
                   {"c/d", false},
                   {"../outside", true}}},
        MatchCase{"EscapedWildcard", "a\\*b", {{"a*b", true}, {"axb", false}}},
        MatchCase{"RegexCharactersAreLiteral",
                  "v1.0+(x)|{y}$",
                  {{"v1.0+(x)|{y}$", true}, {"v1x0+(x)|{y}$", false}}},
        MatchCase{"PathsAreCleaned", "a/b", {{"./a/b", true}, {"a//b/", true}, {"a/c/../b", true}}},
        MatchCase{"Empty", "", {{"anything", false}, {"a/b", false}}}),
    [](const ::testing::TestParamInfo<MatchCase>& info) { return info.param.name; });

struct ErrorCase {
  std::string patterns;
  std::string message;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << Printable(c.patterns); }

class DockerIgnoreErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(DockerIgnoreErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<DockerIgnore> ignore = DockerIgnore::Parse(c.patterns);
  ASSERT_FALSE(ignore.ok()) << c.patterns;
  EXPECT_EQ(ignore.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(ignore.status().message()), c.message);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DockerIgnoreErrorTest,
    ::testing::Values(
        ErrorCase{"ok\n[a", ".dockerignore:2: invalid pattern \"[a\": syntax error in pattern"},
        ErrorCase{"# c\n\nx\\",
                  ".dockerignore:3: invalid pattern \"x\\\": syntax error in pattern"},
        ErrorCase{"[]", ".dockerignore:1: invalid pattern \"[]\": syntax error in pattern"},
        ErrorCase{"[a-]", ".dockerignore:1: invalid pattern \"[a-]\": syntax error in pattern"},
        ErrorCase{"a\n!b/[", ".dockerignore:2: invalid pattern \"b/[\": syntax error in pattern"},
        ErrorCase{"a\n  !  \n", ".dockerignore:2: illegal exclusion pattern: \"!\""}),
    CaseNumber());

TEST(DockerIgnoreTest, PatternsAreCleaned) {
  absl::StatusOr<DockerIgnore> ignore = DockerIgnore::Parse("./a/../b\n!/c/\n\xEF\xBB\xBFx\n");
  ASSERT_TRUE(ignore.ok()) << ignore.status();
  EXPECT_THAT(ignore->Patterns(), ElementsAre("b", "!c", "\xEF\xBB\xBFx"));

  ignore = DockerIgnore::Parse("\xEF\xBB\xBF*.o\n");
  ASSERT_TRUE(ignore.ok());
  EXPECT_THAT(ignore->Patterns(), ElementsAre("*.o"));
  EXPECT_TRUE(ignore->Excluded("main.o"));

  ignore = DockerIgnore::Parse("# only a comment\n");
  ASSERT_TRUE(ignore.ok());
  EXPECT_THAT(ignore->Patterns(), IsEmpty());
}

struct DescendCase {
  std::string name;
  std::string patterns;
  std::vector<std::pair<std::string, bool>> dirs;  // dir -> may have exceptions under it
};

void PrintTo(const DescendCase& c, std::ostream* os) { *os << Printable(c.name); }

class MayHaveExceptionsUnderTest : public ::testing::TestWithParam<DescendCase> {};

TEST_P(MayHaveExceptionsUnderTest, Decides) {
  const DescendCase& c = GetParam();
  absl::StatusOr<DockerIgnore> ignore = DockerIgnore::Parse(c.patterns);
  ASSERT_TRUE(ignore.ok()) << ignore.status();
  for (const auto& [dir, expected] : c.dirs) {
    EXPECT_EQ(ignore->MayHaveExceptionsUnder(dir), expected) << "dir " << dir;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MayHaveExceptionsUnderTest,
    ::testing::Values(
        DescendCase{"NoExceptions", "node_modules\n*.log", {{"node_modules", false}, {"a", false}}},
        DescendCase{"LiteralException",
                    "build\n!build/keep.txt\ndir\n!dir2/x",
                    {{"build", true},
                     {"other", false},
                     {"dir", false},
                     {"dir2", true},
                     {"build/keep.txt", true},
                     {"build/sub", false}}},
        DescendCase{"TrailingGlobIsStillAPrefix",
                    "build\n!build/sub/**\n!logs/*",
                    {{"build", true}, {"build/sub", true}, {"build/other", false}, {"logs", true}}},
        DescendCase{"WildcardExceptionMeansDescendEverywhere",
                    "*\n!**/*.go",
                    {{"anything", true}, {"a/b", true}}},
        DescendCase{"RootAlwaysDescends", "x\n!y", {{".", true}, {"", true}}}),
    [](const ::testing::TestParamInfo<DescendCase>& info) { return info.param.name; });

}  // namespace
}  // namespace elfdeploy::builder
