#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tests/kubesim/store.h"

namespace elfdeploy::kubesim {

// Parses a stream of YAML documents (JSON is YAML too) into JSON values, the way kubectl reads
// manifests: plain scalars follow the YAML 1.2 core schema (null, true/false, integers, floats),
// quoted or !!str-tagged ones stay strings; empty documents are skipped and the items of a
// `kind: List` document are returned in its place. INVALID_ARGUMENT names `source`, line and column
// for malformed YAML and rejects documents that are not mappings.
absl::StatusOr<std::vector<nlohmann::json>> ParseManifests(absl::string_view text,
                                                           absl::string_view source);

// Stores `objects` (each with apiVersion and kind of a served type): Namespaces first, then the
// rest in order; an object that already exists is replaced (its status too). INVALID_ARGUMENT for
// a type the store does not serve.
absl::Status ApplyManifests(ObjectStore& store, const std::vector<nlohmann::json>& objects);

// ParseManifests of the file at `path`, then ApplyManifests.
absl::Status LoadSeedFile(ObjectStore& store, const std::string& path);

}  // namespace elfdeploy::kubesim
