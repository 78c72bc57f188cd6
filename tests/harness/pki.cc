#include "tests/harness/pki.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/harness/process.h"

namespace elfdeploy::testing {

absl::Status WriteTestPki(const std::string& dir, const std::vector<std::string>& names) {
  std::string script = absl::StrCat(R"(set -e; mkdir -p "$1"; cd "$1"; shift
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
  -out ca.pem -days 2 -subj /CN=elfdeploy-test-ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
for who in "$@"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$who.key" \
    -out "$who.csr" -subj "/CN=$who" 2>/dev/null
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$who.pem" \
    -days 2 -extfile san.ext 2>/dev/null
done)");
  std::vector<std::string> argv = {"/bin/sh", "-c", script, "pki", dir};
  argv.insert(argv.end(), names.begin(), names.end());
  absl::StatusOr<CommandResult> made = RunCommand({.argv = argv});
  if (!made.ok()) return made.status();
  if (made->exit_code != 0) {
    return absl::InternalError(absl::StrCat("making test certificates (",
                                            absl::StrJoin(names, ", "), "): ", made->output));
  }
  return absl::OkStatus();
}

}  // namespace elfdeploy::testing
