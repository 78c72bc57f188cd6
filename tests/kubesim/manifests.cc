#include "tests/kubesim/manifests.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;

std::string Where(absl::string_view source, const YAML::Mark& mark) {
  return absl::StrCat(source, ":", mark.line + 1, ":", mark.column + 1);
}

// A plain (untagged, unquoted) scalar under the YAML 1.2 core schema.
json PlainScalar(const std::string& text) {
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  int64_t integer = 0;
  if (absl::SimpleAtoi(text, &integer)) return integer;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'o')) {
    uint64_t value = 0;
    if (text[1] == 'x' && absl::SimpleHexAtoi(text.substr(2), &value)) return value;
  }
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == ".inf" || lower == "+.inf") return INFINITY;
  if (lower == "-.inf") return -INFINITY;
  if (lower == ".nan") return NAN;
  bool numeric = !text.empty() && text.find_first_not_of("0123456789+-.eE") == std::string::npos &&
                 text.find_first_of("0123456789") != std::string::npos;
  double real = 0;
  if (numeric && absl::SimpleAtod(text, &real)) return real;
  return text;
}

absl::StatusOr<json> ToJson(const YAML::Node& node, absl::string_view source) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return json(nullptr);
    case YAML::NodeType::Scalar: {
      const std::string& tag = node.Tag();
      if (tag == "!" || tag == "tag:yaml.org,2002:str") return json(node.Scalar());
      return PlainScalar(node.Scalar());
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const YAML::Node& item : node) {
        absl::StatusOr<json> value = ToJson(item, source);
        if (!value.ok()) return value.status();
        out.push_back(*std::move(value));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& pair : node) {
        if (!pair.first.IsScalar()) {
          return absl::InvalidArgumentError(
              absl::StrCat(Where(source, pair.first.Mark()), ": mapping keys must be scalars"));
        }
        absl::StatusOr<json> value = ToJson(pair.second, source);
        if (!value.ok()) return value.status();
        out[pair.first.Scalar()] = *std::move(value);
      }
      return out;
    }
  }
  return json(nullptr);
}

}  // namespace

absl::StatusOr<std::vector<json>> ParseManifests(absl::string_view text, absl::string_view source) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(Where(source, e.mark), ": ", e.msg));
  }
  std::vector<json> out;
  for (const YAML::Node& document : documents) {
    if (document.IsNull()) continue;
    if (!document.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(source, document.Mark()), ": a manifest must be a mapping"));
    }
    absl::StatusOr<json> object = ToJson(document, source);
    if (!object.ok()) return object.status();
    if (absl::EndsWith(object->value("kind", ""), "List")) {
      if (object->contains("items") && (*object)["items"].is_array()) {
        for (json& item : (*object)["items"]) out.push_back(std::move(item));
        continue;
      }
    }
    out.push_back(*std::move(object));
  }
  return out;
}

absl::Status ApplyManifests(ObjectStore& store, const std::vector<json>& objects) {
  std::vector<const json*> ordered;
  for (const json& object : objects) {
    if (object.value("kind", "") == "Namespace") ordered.push_back(&object);
  }
  for (const json& object : objects) {
    if (object.value("kind", "") != "Namespace") ordered.push_back(&object);
  }
  for (const json* object : ordered) {
    std::string api_version = object->value("apiVersion", "");
    std::string kind = object->value("kind", "");
    const ResourceType* type = FindResourceByKind(api_version, kind);
    if (type == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("kubesim does not serve ", kind, " in ", api_version));
    }
    absl::StatusOr<ObjectPtr> created = store.Create(type->resource, *object);
    if (absl::IsAlreadyExists(created.status())) {
      json replacement = *object;
      replacement["metadata"].erase("resourceVersion");
      created = store.Update(type->resource, std::move(replacement));
    }
    if (!created.ok()) {
      return absl::Status(
          created.status().code(),
          absl::StrCat(kind, " ", object->value(json::json_pointer("/metadata/name"), ""), ": ",
                       created.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::Status LoadSeedFile(ObjectStore& store, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read seed file ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::vector<json>> objects = ParseManifests(text.str(), path);
  if (!objects.ok()) return objects.status();
  return ApplyManifests(store, *objects);
}

}  // namespace elfdeploy::kubesim
