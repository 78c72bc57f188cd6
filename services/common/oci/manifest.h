#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/oci/digest.h"

namespace elfdeploy::oci {

inline constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
inline constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
inline constexpr char kOciConfig[] = "application/vnd.oci.image.config.v1+json";
inline constexpr char kOciLayerGzip[] = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr char kDockerManifest[] = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr char kDockerManifestList[] =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr char kDockerConfig[] = "application/vnd.docker.container.image.v1+json";
inline constexpr char kDockerLayerGzip[] = "application/vnd.docker.image.rootfs.diff.tar.gzip";
// The Accept header of a client that handles every manifest kind above.
inline constexpr char kManifestAccept[] =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr char kRefNameAnnotation[] = "org.opencontainers.image.ref.name";

bool IsIndexMediaType(absl::string_view media_type);
bool IsManifestMediaType(absl::string_view media_type);

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;
  std::string os_version;

  // "os/arch[/variant]".
  std::string ToString() const;
  bool operator==(const Platform&) const = default;
};

// Parses "os/arch[/variant]". INVALID_ARGUMENT when not of that shape.
absl::StatusOr<Platform> ParsePlatform(absl::string_view text);

// linux/amd64, the platform chosen from an index unless asked otherwise.
Platform DefaultPlatform();

struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::optional<Platform> platform;
  std::map<std::string, std::string> annotations;
  std::vector<std::string> urls;
};

// An image manifest (OCI or Docker v2 schema 2).
struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
};

// An image index (OCI) or manifest list (Docker).
struct Index {
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
};

// The media type of manifest bytes: `mediaType` when present, else guessed from the shape
// (`manifests` → OCI index, `config` → OCI manifest). INVALID_ARGUMENT for non-JSON or
// schema 1 manifests.
absl::StatusOr<std::string> DetectManifestMediaType(absl::string_view bytes);

// Parse JSON; every descriptor's digest and size are validated. `where` names the source in errors.
absl::StatusOr<Manifest> ParseManifest(absl::string_view bytes, absl::string_view where);
absl::StatusOr<Index> ParseIndex(absl::string_view bytes, absl::string_view where);

// Serialises with sorted keys and no insignificant whitespace (stable digests).
std::string SerializeManifest(const Manifest& manifest);
std::string SerializeIndex(const Index& index);

// The index entry for `platform` (a variant in `platform` must match; an empty one matches
// any). NOT_FOUND lists the platforms the index has.
absl::StatusOr<Descriptor> SelectPlatform(const Index& index, const Platform& platform);

}  // namespace elfdeploy::oci
