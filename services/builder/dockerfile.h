#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace elfdeploy::builder {

// One Dockerfile instruction, as BuildKit's parser sees it.
struct Instruction {
  int line = 0;                    // 1-based line where it starts
  std::string keyword;             // upper-case: "FROM", "RUN", ...
  std::vector<std::string> flags;  // leading "--name=value" / "--name" flags ("--from=build",
                                   // "--link"), quotes and backslashes removed as BuildKit does
  std::string args;   // the rest, continuation lines joined (escape+newline removed), comment
                      // lines inside continuations dropped, trimmed
  bool json = false;  // args is a JSON string array (exec form) and json_args holds it
  std::vector<std::string> json_args;
  std::string original;  // "KEYWORD [flags] args" as one line, for history / cache keys
};

struct Dockerfile {
  char escape = '\\';
  std::vector<Instruction> instructions;  // in order, including ARGs before the first FROM
};

// Parses Dockerfile syntax: parser directives (`# escape=` and `# syntax=`, only before any
// other line), comments, empty lines, line continuations with the escape character (also across
// empty and comment lines), exec (JSON) form for RUN/CMD/ENTRYPOINT/SHELL/COPY/ADD/VOLUME, and
// flags. Errors are INVALID_ARGUMENT "Dockerfile:<line>: <what>": unknown instruction, missing
// arguments, heredocs (`<<EOF`, not supported), an instruction other than ARG before the first
// FROM, no FROM at all. An escape character on the last line is accepted, as Docker does.
absl::StatusOr<Dockerfile> ParseDockerfile(absl::string_view text);

// Parses one already-joined instruction line, e.g. an ONBUILD trigger read back from an image
// config; `line_number` only names the line in errors.
absl::StatusOr<Instruction> ParseInstructionLine(absl::string_view line, int line_number,
                                                 char escape = '\\');

// The strings of `text` when it is a JSON array of strings (exec form, e.g. the command of
// "HEALTHCHECK CMD [...]"); nullopt when it is not valid JSON starting with '[' (shell form);
// INVALID_ARGUMENT for a valid JSON array holding anything but strings, as Docker rejects it.
absl::StatusOr<std::optional<std::vector<std::string>>> ParseExecForm(absl::string_view text);

// A variable's value, or nullopt when it is not set.
using Lookup = std::function<std::optional<std::string>(absl::string_view name)>;

// Docker's shell-word processing (BuildKit shell.Lex): expands variables and splits `text` into
// words on unquoted whitespace. Single quotes are literal; double quotes allow $ expansion and
// escape only $, " and the escape character; outside quotes the escape character escapes any
// character. Supports $VAR, ${VAR}, ${VAR:-word}, ${VAR-word}, ${VAR:+word}, ${VAR+word},
// ${VAR:?msg}, ${VAR?msg}, ${VAR#pat}, ${VAR##pat}, ${VAR%pat}, ${VAR%%pat}, ${VAR/pat/repl} and
// ${VAR//pat/repl}; unset variables expand to "". An empty `env` sets nothing. Unterminated
// quotes or ${, bad substitutions and ${VAR?} on an unset variable are INVALID_ARGUMENT.
absl::StatusOr<std::vector<std::string>> ProcessWords(absl::string_view text, const Lookup& env,
                                                      char escape = '\\');

// Same as ProcessWords without splitting: the whole text is one word (spaces kept), e.g. a
// WORKDIR or USER value.
absl::StatusOr<std::string> ProcessWord(absl::string_view text, const Lookup& env,
                                        char escape = '\\');

// The pairs of an ENV, LABEL or ARG instruction, keys and values expanded with `env` and quotes
// removed: `k=v k2="v 2"`, or the legacy one-pair "ENV key value with spaces" (ENV/LABEL only).
// ARG allows a bare name (value nullopt); ENV and LABEL values are always set. INVALID_ARGUMENT
// "Dockerfile:<line>: ..." for other instructions, flags, empty keys, a word without '=', and
// ENV/ARG names holding whitespace or '='.
absl::StatusOr<std::vector<std::pair<std::string, std::optional<std::string>>>> ParseKeyValues(
    const Instruction& instruction, const Lookup& env, char escape = '\\');

// The flags of `instruction` as name -> value ("--link" -> ""), checked against the `allowed`
// names (without "--"). An unknown or repeated flag is INVALID_ARGUMENT
// "Dockerfile:<line>: unknown flag --x for COPY" / "... duplicate flag --x for COPY".
absl::StatusOr<std::map<std::string, std::string>> ParseFlags(
    const Instruction& instruction, const std::vector<std::string>& allowed);

struct Stage {
  int index = 0;
  std::string name;      // lower-cased "AS" name, or "" when unnamed
  std::string base;      // the image (or earlier stage name), expanded; may be "scratch"
  std::string platform;  // --platform value, expanded; "" when not given
  int line = 0;          // line of the FROM
  std::vector<Instruction> instructions;  // after the FROM, up to the next FROM
};

struct BuildStructure {
  // Global ARGs (before the first FROM), values after expansion and build-arg overrides; nullopt
  // for a declaration without default that no build arg sets.
  std::vector<std::pair<std::string, std::optional<std::string>>> global_args;
  std::vector<Stage> stages;
};

// Splits `dockerfile` into global ARGs and stages: FROM [--platform=p] <image> [AS <name>]. The
// image and platform words are expanded with the global ARGs, whose defaults `build_args`
// override; the predefined platform args (BUILDPLATFORM, TARGETPLATFORM, TARGETOS, TARGETARCH,
// ...) are visible there when `build_args` holds them, declared or not. Stage names are
// lower-cased and must be unique and match [a-z][a-z0-9-_.]*. INVALID_ARGUMENT naming the line
// for a malformed FROM ("FROM a b c"), an unknown FROM flag, a bad or duplicate stage name, or an
// image that expands to "".
absl::StatusOr<BuildStructure> SplitStages(const Dockerfile& dockerfile,
                                           const std::map<std::string, std::string>& build_args);

}  // namespace elfdeploy::builder
