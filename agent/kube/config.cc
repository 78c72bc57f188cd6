#include "agent/kube/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace elfdeploy::agent {
namespace {

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, " cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Scalar(const YAML::Node& node, const char* key) {
  const YAML::Node value = node[key];
  return value && value.IsScalar() ? value.Scalar() : "";
}

// The entry of kubeconfig list `list` (clusters, users, contexts) called `name`, or an undefined
// node.
YAML::Node Named(const YAML::Node& root, const char* list, const std::string& name) {
  const YAML::Node entries = root[list];
  if (entries && entries.IsSequence()) {
    for (const YAML::Node& entry : entries) {
      if (Scalar(entry, "name") == name) return entry;
    }
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

absl::StatusOr<std::string> Base64Data(const std::string& data, const std::string& what) {
  std::string decoded;
  if (!absl::Base64Unescape(data, &decoded)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not base64"));
  }
  return decoded;
}

}  // namespace

absl::StatusOr<KubeConfig> InClusterConfig(const GetEnv& getenv,
                                           const std::string& service_account_dir) {
  const char* host = getenv("KUBERNETES_SERVICE_HOST");
  const char* port = getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return absl::FailedPreconditionError(
        "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set");
  }
  KubeConfig config;
  std::string host_text = host;
  // An IPv6 service address needs brackets in a URL.
  if (absl::StrContains(host_text, ':')) host_text = absl::StrCat("[", host_text, "]");
  config.server = absl::StrCat("https://", host_text, ":", port);
  config.token_file = absl::StrCat(service_account_dir, "/token");
  if (!std::filesystem::exists(config.token_file)) {
    return absl::FailedPreconditionError(
        absl::StrCat("not in a cluster: no service-account token at ", config.token_file));
  }
  std::string ca = absl::StrCat(service_account_dir, "/ca.crt");
  if (std::filesystem::exists(ca)) config.ca_file = ca;
  config.source = "in-cluster";
  return config;
}

absl::StatusOr<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context) {
  absl::StatusOr<std::string> text = ReadText(path);
  if (!text.ok())
    return absl::InvalidArgumentError(absl::StrCat("kubeconfig ", text.status().message()));
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("kubeconfig ", path, ": ", e.what()));
  }
  if (!root.IsMap())
    return absl::InvalidArgumentError(absl::StrCat("kubeconfig ", path, ": not a map"));
  std::string context_name = context.empty() ? Scalar(root, "current-context") : context;
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("kubeconfig ", path, " context \"", context_name, "\": ", what));
  };
  if (context_name.empty()) return bad("no context given and no current-context");
  YAML::Node ctx = Named(root, "contexts", context_name);
  if (!ctx) return bad("no such context");
  std::string cluster_name = Scalar(ctx["context"], "cluster");
  std::string user_name = Scalar(ctx["context"], "user");
  YAML::Node cluster = Named(root, "clusters", cluster_name)["cluster"];
  if (!cluster) return bad(absl::StrCat("cluster \"", cluster_name, "\" is missing"));
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  auto resolve = [&](const std::string& file) {
    if (file.empty() || std::filesystem::path(file).is_absolute()) return file;
    return (dir / file).string();
  };

  KubeConfig config;
  config.source = absl::StrCat("kubeconfig ", path, " context ", context_name);
  config.server = Scalar(cluster, "server");
  if (config.server.empty()) return bad("the cluster has no server");
  config.ca_file = resolve(Scalar(cluster, "certificate-authority"));
  if (std::string data = Scalar(cluster, "certificate-authority-data"); !data.empty()) {
    absl::StatusOr<std::string> pem = Base64Data(data, "certificate-authority-data");
    if (!pem.ok()) return bad(std::string(pem.status().message()));
    config.ca_pem = *pem;
  }
  config.insecure_skip_tls_verify = Scalar(cluster, "insecure-skip-tls-verify") == "true";

  if (!user_name.empty()) {
    YAML::Node user = Named(root, "users", user_name)["user"];
    if (!user) return bad(absl::StrCat("user \"", user_name, "\" is missing"));
    if (user["exec"] || user["auth-provider"]) {
      return bad(
          "exec and auth-provider credential plugins are not supported; use a token, a "
          "tokenFile or a client certificate");
    }
    config.token = Secret(Scalar(user, "token"));
    config.token_file = resolve(Scalar(user, "tokenFile"));
    config.client_cert_file = resolve(Scalar(user, "client-certificate"));
    config.client_key_file = resolve(Scalar(user, "client-key"));
    if (std::string data = Scalar(user, "client-certificate-data"); !data.empty()) {
      absl::StatusOr<std::string> pem = Base64Data(data, "client-certificate-data");
      if (!pem.ok()) return bad(std::string(pem.status().message()));
      config.client_cert_pem = *pem;
    }
    if (std::string data = Scalar(user, "client-key-data"); !data.empty()) {
      absl::StatusOr<std::string> pem = Base64Data(data, "client-key-data");
      if (!pem.ok()) return bad("client-key-data is not base64");
      config.client_key_pem = Secret(*pem);
    }
  }
  return config;
}

absl::StatusOr<KubeConfig> ResolveKubeConfig(const std::string& kubeconfig,
                                             const std::string& context, const GetEnv& getenv) {
  if (!kubeconfig.empty()) return LoadKubeconfig(kubeconfig, context);
  const char* host = getenv("KUBERNETES_SERVICE_HOST");
  if (host != nullptr && *host != '\0') return InClusterConfig(getenv);
  const char* env = getenv("KUBECONFIG");
  if (env != nullptr && *env != '\0') {
    std::string first(absl::StripAsciiWhitespace(*absl::StrSplit(env, ':').begin()));
    return LoadKubeconfig(first, context);
  }
  const char* home = getenv("HOME");
  std::string fallback = absl::StrCat(home != nullptr ? home : "", "/.kube/config");
  if (!std::filesystem::exists(fallback)) {
    return absl::FailedPreconditionError(
        "no Kubernetes config: not in a cluster, no --kubeconfig, no $KUBECONFIG and no "
        "~/.kube/config");
  }
  return LoadKubeconfig(fallback, context);
}

}  // namespace elfdeploy::agent
