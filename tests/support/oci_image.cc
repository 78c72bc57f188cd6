#include "tests/support/oci_image.h"

#include <zlib.h>

#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "services/common/oci/copy.h"
#include "services/common/oci/layout.h"
#include "services/common/oci/reference.h"
#include "services/common/oci/registry_client.h"

namespace elfdeploy::testing {
namespace {

// A ustar archive with one regular file.
std::string TarOneFile(const std::string& name, const std::string& content) {
  std::string header(512, '\0');
  auto put = [&header](size_t offset, const std::string& value) {
    header.replace(offset, value.size(), value);
  };
  put(0, name);
  put(100, "0000644");
  put(108, "0000000");
  put(116, "0000000");
  put(124, absl::StrFormat("%011o", content.size()));
  put(136, "00000000000");
  put(156, "0");
  put(257, std::string("ustar\0", 6) + "00");
  header.replace(148, 8, "        ");
  unsigned sum = 0;
  for (unsigned char c : header) sum += c;
  put(148, absl::StrFormat("%06o", sum) + std::string("\0 ", 2));
  std::string out = header + content;
  out.append((512 - content.size() % 512) % 512, '\0');
  out.append(1024, '\0');
  return out;
}

std::string Gzip(const std::string& data) {
  z_stream stream{};
  deflateInit2(&stream, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

std::string RandomBytes(int64_t size, std::mt19937_64& random) {
  std::string out(static_cast<size_t>(size), '\0');
  for (size_t i = 0; i + 8 <= out.size(); i += 8) {
    uint64_t v = random();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

absl::StatusOr<oci::Descriptor> WriteImage(oci::OciLayout& layout,
                                           const std::vector<int64_t>& layer_sizes,
                                           const std::string& architecture, uint64_t seed,
                                           TestImage* image) {
  std::mt19937_64 random(seed);
  oci::Manifest manifest;
  manifest.media_type = oci::kOciManifest;
  nlohmann::json diff_ids = nlohmann::json::array();
  for (size_t i = 0; i < layer_sizes.size(); ++i) {
    std::string tar =
        TarOneFile(absl::StrCat("layer", i, ".bin"), RandomBytes(layer_sizes[i], random));
    diff_ids.push_back(oci::Digest::Sha256Of(tar).ToString());
    std::string gz = Gzip(tar);
    absl::StatusOr<oci::Digest> digest = layout.WriteBlob(gz);
    if (!digest.ok()) return digest.status();
    manifest.layers.push_back(
        oci::Descriptor{oci::kOciLayerGzip, *digest, static_cast<int64_t>(gz.size()), {}, {}, {}});
    if (image != nullptr) {
      image->layers.push_back(*digest);
      image->total_bytes += static_cast<int64_t>(gz.size());
    }
  }
  nlohmann::json config = {{"architecture", architecture},
                           {"os", "linux"},
                           {"created", "1970-01-01T00:00:00Z"},
                           {"config", {{"Cmd", {"/bin/sh"}}}},
                           {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  std::string config_bytes = config.dump();
  absl::StatusOr<oci::Digest> config_digest = layout.WriteBlob(config_bytes);
  if (!config_digest.ok()) return config_digest.status();
  manifest.config = oci::Descriptor{
      oci::kOciConfig, *config_digest, static_cast<int64_t>(config_bytes.size()), {}, {}, {}};
  std::string manifest_bytes = oci::SerializeManifest(manifest);
  absl::StatusOr<oci::Digest> manifest_digest = layout.WriteBlob(manifest_bytes);
  if (!manifest_digest.ok()) return manifest_digest.status();
  if (image != nullptr) {
    image->config = *config_digest;
    image->manifest_digest = *manifest_digest;
    image->total_bytes += static_cast<int64_t>(config_bytes.size());
  }
  oci::Descriptor descriptor{oci::kOciManifest,
                             *manifest_digest,
                             static_cast<int64_t>(manifest_bytes.size()),
                             std::nullopt,
                             {},
                             {}};
  descriptor.platform = oci::Platform{"linux", architecture, "", ""};
  return descriptor;
}

}  // namespace

absl::StatusOr<TestImage> WriteTestImage(const std::string& layout_dir, const std::string& ref,
                                         const std::vector<int64_t>& layer_sizes, uint64_t seed) {
  absl::StatusOr<oci::OciLayout> layout = oci::OciLayout::OpenOrCreate(layout_dir);
  if (!layout.ok()) return layout.status();
  TestImage image;
  absl::StatusOr<oci::Descriptor> d = WriteImage(*layout, layer_sizes, "amd64", seed, &image);
  if (!d.ok()) return d.status();
  d->platform.reset();
  if (absl::Status s = layout->Tag(ref, *d); !s.ok()) return s;
  return image;
}

absl::Status PushLayoutImage(const std::string& layout_dir, const std::string& ref,
                             const std::string& destination) {
  absl::StatusOr<oci::TransportReference> from =
      oci::ParseTransportReference(absl::StrCat("oci:", layout_dir, ":", ref));
  if (!from.ok()) return from.status();
  absl::StatusOr<oci::TransportReference> to =
      oci::ParseTransportReference(absl::StrCat("docker://", destination));
  if (!to.ok()) return to.status();
  std::unique_ptr<oci::Registry> client = oci::NewRegistryClient({});
  return oci::CopyImage(*client, *from, *to, {}).status();
}

absl::StatusOr<oci::Digest> WriteTestIndex(const std::string& layout_dir, const std::string& ref,
                                           uint64_t seed, oci::Digest* amd64) {
  absl::StatusOr<oci::OciLayout> layout = oci::OciLayout::OpenOrCreate(layout_dir);
  if (!layout.ok()) return layout.status();
  oci::Index index;
  index.media_type = oci::kOciIndex;
  for (const char* arch : {"amd64", "arm64"}) {
    absl::StatusOr<oci::Descriptor> d = WriteImage(*layout, {4096}, arch, seed++, nullptr);
    if (!d.ok()) return d.status();
    if (std::string(arch) == "amd64" && amd64 != nullptr) *amd64 = d->digest;
    index.manifests.push_back(*d);
  }
  std::string bytes = oci::SerializeIndex(index);
  absl::StatusOr<oci::Digest> digest = layout->WriteBlob(bytes);
  if (!digest.ok()) return digest.status();
  absl::Status tagged = layout->Tag(
      ref, oci::Descriptor{
               oci::kOciIndex, *digest, static_cast<int64_t>(bytes.size()), std::nullopt, {}, {}});
  if (!tagged.ok()) return tagged;
  return *digest;
}

}  // namespace elfdeploy::testing
