#include "services/common/oci/manifest.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace elfdeploy::oci {
namespace {

using Json = nlohmann::json;

absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<Json> ParseJson(absl::string_view bytes, absl::string_view where) {
  Json json = Json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return Bad(where, "not a JSON object");
  return json;
}

std::string StringField(const Json& json, const char* key) {
  auto it = json.find(key);
  return it != json.end() && it->is_string() ? it->get<std::string>() : "";
}

absl::StatusOr<std::map<std::string, std::string>> Annotations(const Json& json,
                                                               absl::string_view where) {
  std::map<std::string, std::string> out;
  auto it = json.find("annotations");
  if (it == json.end() || it->is_null()) return out;
  if (!it->is_object()) return Bad(where, "annotations must be an object");
  for (const auto& [key, value] : it->items()) {
    if (!value.is_string()) return Bad(where, absl::StrCat("annotation ", key, " is not a string"));
    out[key] = value.get<std::string>();
  }
  return out;
}

absl::StatusOr<Descriptor> ParseDescriptor(const Json& json, absl::string_view where) {
  if (!json.is_object()) return Bad(where, "descriptor is not an object");
  Descriptor d;
  d.media_type = StringField(json, "mediaType");
  absl::StatusOr<Digest> digest = Digest::Parse(StringField(json, "digest"));
  if (!digest.ok()) return Bad(where, digest.status().message());
  d.digest = *digest;
  auto size = json.find("size");
  if (size == json.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return Bad(where, absl::StrCat("descriptor ", d.digest.ToString(), " has no valid size"));
  }
  d.size = size->get<int64_t>();
  if (auto p = json.find("platform"); p != json.end() && p->is_object()) {
    Platform platform;
    platform.os = StringField(*p, "os");
    platform.architecture = StringField(*p, "architecture");
    platform.variant = StringField(*p, "variant");
    platform.os_version = StringField(*p, "os.version");
    d.platform = platform;
  }
  absl::StatusOr<std::map<std::string, std::string>> annotations = Annotations(json, where);
  if (!annotations.ok()) return annotations.status();
  d.annotations = *std::move(annotations);
  if (auto urls = json.find("urls"); urls != json.end() && urls->is_array()) {
    for (const Json& url : *urls) {
      if (url.is_string()) d.urls.push_back(url.get<std::string>());
    }
  }
  return d;
}

Json DescriptorJson(const Descriptor& d) {
  Json json = {{"mediaType", d.media_type}, {"digest", d.digest.ToString()}, {"size", d.size}};
  if (d.platform.has_value()) {
    Json platform = {{"os", d.platform->os}, {"architecture", d.platform->architecture}};
    if (!d.platform->variant.empty()) platform["variant"] = d.platform->variant;
    if (!d.platform->os_version.empty()) platform["os.version"] = d.platform->os_version;
    json["platform"] = platform;
  }
  if (!d.annotations.empty()) json["annotations"] = d.annotations;
  if (!d.urls.empty()) json["urls"] = d.urls;
  return json;
}

}  // namespace

bool IsIndexMediaType(absl::string_view media_type) {
  return media_type == kOciIndex || media_type == kDockerManifestList;
}

bool IsManifestMediaType(absl::string_view media_type) {
  return media_type == kOciManifest || media_type == kDockerManifest;
}

std::string Platform::ToString() const {
  std::string out = absl::StrCat(os, "/", architecture);
  if (!variant.empty()) absl::StrAppend(&out, "/", variant);
  return out;
}

absl::StatusOr<Platform> ParsePlatform(absl::string_view text) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("platform \"", text, "\" is not os/arch[/variant]"));
  }
  Platform p;
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

Platform DefaultPlatform() { return Platform{"linux", "amd64", "", ""}; }

absl::StatusOr<std::string> DetectManifestMediaType(absl::string_view bytes) {
  absl::StatusOr<Json> json = ParseJson(bytes, "manifest");
  if (!json.ok()) return json.status();
  std::string media_type = StringField(*json, "mediaType");
  if (!media_type.empty()) return media_type;
  if (auto v = json->find("schemaVersion"); v != json->end() && *v == 1) {
    return absl::InvalidArgumentError("manifest: Docker schema 1 manifests are not supported");
  }
  if (json->contains("manifests")) return std::string(kOciIndex);
  if (json->contains("config")) return std::string(kOciManifest);
  return absl::InvalidArgumentError("manifest: neither an image manifest nor an index");
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view bytes, absl::string_view where) {
  absl::StatusOr<Json> json = ParseJson(bytes, where);
  if (!json.ok()) return json.status();
  Manifest m;
  m.media_type = StringField(*json, "mediaType");
  if (m.media_type.empty()) m.media_type = kOciManifest;
  if (!IsManifestMediaType(m.media_type)) {
    return Bad(where, absl::StrCat("media type ", m.media_type, " is not an image manifest"));
  }
  auto config = json->find("config");
  if (config == json->end()) return Bad(where, "manifest has no config");
  absl::StatusOr<Descriptor> config_descriptor = ParseDescriptor(*config, where);
  if (!config_descriptor.ok()) return config_descriptor.status();
  m.config = *std::move(config_descriptor);
  auto layers = json->find("layers");
  if (layers != json->end() && !layers->is_null()) {
    if (!layers->is_array()) return Bad(where, "layers must be an array");
    for (const Json& layer : *layers) {
      absl::StatusOr<Descriptor> d = ParseDescriptor(layer, where);
      if (!d.ok()) return d.status();
      m.layers.push_back(*std::move(d));
    }
  }
  absl::StatusOr<std::map<std::string, std::string>> annotations = Annotations(*json, where);
  if (!annotations.ok()) return annotations.status();
  m.annotations = *std::move(annotations);
  return m;
}

absl::StatusOr<Index> ParseIndex(absl::string_view bytes, absl::string_view where) {
  absl::StatusOr<Json> json = ParseJson(bytes, where);
  if (!json.ok()) return json.status();
  Index index;
  index.media_type = StringField(*json, "mediaType");
  if (index.media_type.empty()) index.media_type = kOciIndex;
  if (!IsIndexMediaType(index.media_type)) {
    return Bad(where, absl::StrCat("media type ", index.media_type, " is not an index"));
  }
  auto manifests = json->find("manifests");
  if (manifests != json->end() && !manifests->is_null()) {
    if (!manifests->is_array()) return Bad(where, "manifests must be an array");
    for (const Json& entry : *manifests) {
      absl::StatusOr<Descriptor> d = ParseDescriptor(entry, where);
      if (!d.ok()) return d.status();
      index.manifests.push_back(*std::move(d));
    }
  }
  absl::StatusOr<std::map<std::string, std::string>> annotations = Annotations(*json, where);
  if (!annotations.ok()) return annotations.status();
  index.annotations = *std::move(annotations);
  return index;
}

std::string SerializeManifest(const Manifest& manifest) {
  Json json = {{"schemaVersion", 2},
               {"mediaType", manifest.media_type},
               {"config", DescriptorJson(manifest.config)},
               {"layers", Json::array()}};
  for (const Descriptor& layer : manifest.layers) json["layers"].push_back(DescriptorJson(layer));
  if (!manifest.annotations.empty()) json["annotations"] = manifest.annotations;
  return json.dump();
}

std::string SerializeIndex(const Index& index) {
  Json json = {{"schemaVersion", 2}, {"mediaType", index.media_type}, {"manifests", Json::array()}};
  for (const Descriptor& d : index.manifests) json["manifests"].push_back(DescriptorJson(d));
  if (!index.annotations.empty()) json["annotations"] = index.annotations;
  return json.dump();
}

absl::StatusOr<Descriptor> SelectPlatform(const Index& index, const Platform& platform) {
  std::vector<std::string> available;
  for (const Descriptor& d : index.manifests) {
    if (!d.platform.has_value()) continue;
    available.push_back(d.platform->ToString());
    if (d.platform->os == platform.os && d.platform->architecture == platform.architecture &&
        (platform.variant.empty() || d.platform->variant == platform.variant)) {
      return d;
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "no manifest for platform ", platform.ToString(),
      " in the index (has: ", available.empty() ? "none" : absl::StrJoin(available, ", "), ")"));
}

}  // namespace elfdeploy::oci
