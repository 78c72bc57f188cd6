#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/log.h"

namespace elfdeploy::oci {

struct RegistryCredential {
  std::string username;
  Secret password;
  // A registry-issued refresh token (docker config "identitytoken"), used in the OAuth2 flow.
  Secret identity_token;
};

// Registry credentials by registry host, as docker and skopeo keep them.
class CredentialStore {
 public:
  // Reads a docker config.json: `auths.<registry>.auth` (base64 "user:password") or
  // `username`/`password`, and `identitytoken`. INVALID_ARGUMENT names the file and the bad entry;
  // NOT_FOUND when the file does not exist.
  static absl::StatusOr<CredentialStore> LoadFile(const std::string& path);
  // The same from the text of a config.json (e.g. a kubernetes.io/dockerconfigjson Secret's
  // .dockerconfigjson); `path` names where it came from in errors and source().
  static absl::StatusOr<CredentialStore> Parse(absl::string_view content, const std::string& path);

  // The first file that exists of: `auth_file` (must exist when given), $REGISTRY_AUTH_FILE,
  // $HOME/.docker/config.json; an empty store when none does.
  static absl::StatusOr<CredentialStore> LoadDefault(
      const std::string& auth_file, const std::function<const char*(const char*)>& getenv);

  // Adds (or replaces) credentials for `registry` ("host[:port]"); config entries win over files.
  void Set(absl::string_view registry, RegistryCredential credential);
  // Adds every entry of `other` not already present.
  void Merge(const CredentialStore& other);

  // Credentials for a registry host. Keys may be written as docker writes them ("https://host/v1/",
  // "host"); docker.io also matches "https://index.docker.io/v1/".
  std::optional<RegistryCredential> Find(absl::string_view registry) const;

  // Where the credentials came from, for messages ("/root/.docker/config.json", "config").
  const std::string& source() const { return source_; }

 private:
  std::map<std::string, RegistryCredential> by_host_;
  std::string source_;
};

// The host[:port] a config.json key names: strips a scheme and a path.
std::string NormalizeRegistryKey(absl::string_view key);

}  // namespace elfdeploy::oci
