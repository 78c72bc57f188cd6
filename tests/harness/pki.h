#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace elfdeploy::testing {

// Writes a test CA into `dir`, created when missing (ca.pem, ca.key), and, for each of `names`, a
// certificate it signed (<name>.pem, <name>.key) for localhost and 127.0.0.1, valid two days. EC
// P-256 keys, made with the openssl CLI.
absl::Status WriteTestPki(const std::string& dir, const std::vector<std::string>& names);

}  // namespace elfdeploy::testing
