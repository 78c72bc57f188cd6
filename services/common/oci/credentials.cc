#include "services/common/oci/credentials.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace elfdeploy::oci {

std::string NormalizeRegistryKey(absl::string_view key) {
  absl::ConsumePrefix(&key, "https://");
  absl::ConsumePrefix(&key, "http://");
  key = key.substr(0, key.find('/'));
  if (key == "index.docker.io" || key == "registry-1.docker.io") return "docker.io";
  return std::string(key);
}

absl::StatusOr<CredentialStore> CredentialStore::LoadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("auth file ", path, " cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

absl::StatusOr<CredentialStore> CredentialStore::Parse(absl::string_view content,
                                                       const std::string& path) {
  nlohmann::json json =
      nlohmann::json::parse(content.data(), content.data() + content.size(), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("auth file ", path, ": not a JSON object"));
  }
  CredentialStore store;
  store.source_ = path;
  auto auths = json.find("auths");
  if (auths == json.end() || auths->is_null()) return store;
  if (!auths->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("auth file ", path, ": auths is not an object"));
  }
  for (const auto& [key, entry] : auths->items()) {
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth file ", path, ": auths.", key, " is not an object"));
    }
    RegistryCredential credential;
    std::string auth = entry.value("auth", "");
    if (!auth.empty()) {
      std::string decoded;
      size_t colon = std::string::npos;
      if (absl::Base64Unescape(auth, &decoded)) colon = decoded.find(':');
      if (colon == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("auth file ", path, ": auths.", key,
                                                       ".auth is not base64 of user:password"));
      }
      credential.username = decoded.substr(0, colon);
      credential.password = Secret(decoded.substr(colon + 1));
    } else {
      credential.username = entry.value("username", "");
      credential.password = Secret(entry.value("password", ""));
    }
    credential.identity_token = Secret(entry.value("identitytoken", ""));
    if (credential.username.empty() && credential.identity_token.empty()) continue;
    store.by_host_[NormalizeRegistryKey(key)] = std::move(credential);
  }
  return store;
}

absl::StatusOr<CredentialStore> CredentialStore::LoadDefault(
    const std::string& auth_file, const std::function<const char*(const char*)>& getenv) {
  if (!auth_file.empty()) return LoadFile(auth_file);
  if (const char* env = getenv("REGISTRY_AUTH_FILE"); env != nullptr && *env != '\0') {
    return LoadFile(env);
  }
  if (const char* home = getenv("HOME"); home != nullptr && *home != '\0') {
    absl::StatusOr<CredentialStore> store = LoadFile(absl::StrCat(home, "/.docker/config.json"));
    if (store.ok() || store.status().code() != absl::StatusCode::kNotFound) return store;
  }
  return CredentialStore();
}

void CredentialStore::Set(absl::string_view registry, RegistryCredential credential) {
  by_host_[NormalizeRegistryKey(registry)] = std::move(credential);
}

void CredentialStore::Merge(const CredentialStore& other) {
  for (const auto& [host, credential] : other.by_host_) by_host_.emplace(host, credential);
  if (source_.empty()) source_ = other.source_;
}

std::optional<RegistryCredential> CredentialStore::Find(absl::string_view registry) const {
  auto it = by_host_.find(NormalizeRegistryKey(registry));
  if (it == by_host_.end()) return std::nullopt;
  return it->second;
}

}  // namespace elfdeploy::oci
