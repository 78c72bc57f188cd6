#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace elfdeploy::oci {

// A registry image reference normalised as Docker normalises it (distribution/reference
// ParseNormalizedNamed): "nginx" is docker.io/library/nginx; "index.docker.io" is "docker.io".
struct ImageReference {
  // Registry host with optional port: "docker.io", "localhost:5000", "reg.example.com".
  std::string domain;
  // Repository path in the registry: "library/nginx", "elf-automations/executive-team".
  std::string path;
  // Tag, or "" when absent.
  std::string tag;
  // "sha256:…", or "" when absent.
  std::string digest;

  // "domain/path".
  std::string Name() const { return domain + "/" + path; }
  // Fully qualified: "domain/path[:tag][@digest]".
  std::string ToString() const;
  // Tag, digest or "latest": what to ask the registry for (the digest wins when both are given).
  std::string Reference() const;
  bool operator==(const ImageReference&) const = default;
};

// A Docker tag: 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'.
bool IsValidTag(absl::string_view tag);

// Parses a Docker image reference. INVALID_ARGUMENT names the problem: empty name, upper-case
// repository, name longer than 255 characters, bad tag (at most 128 of [A-Za-z0-9_.-], not
// starting with '.' or '-'), bad digest, a 64-hex identifier used as a name, bad format.
absl::StatusOr<ImageReference> ParseImageReference(absl::string_view text);

// An image location in the transports skopeo users know (DESIGN.md):
//   docker://<reference>     a registry image; no tag and no digest means ":latest"
//   oci:<dir>[:<ref-name>]   an OCI image layout directory and a ref name in its index.json
struct TransportReference {
  enum class Kind { kDocker, kOciLayout };
  Kind kind = Kind::kDocker;
  ImageReference image;    // kDocker
  std::string layout_dir;  // kOciLayout
  std::string layout_ref;  // kOciLayout; "" when not given

  std::string ToString() const;
};

// INVALID_ARGUMENT for an unknown transport, an empty layout directory, a bad ref name or a bad
// image reference.
absl::StatusOr<TransportReference> ParseTransportReference(absl::string_view text);

}  // namespace elfdeploy::oci
