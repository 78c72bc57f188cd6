#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "services/common/log.h"

namespace elfdeploy::agent {

// Where and how to reach a Kubernetes API server.
struct KubeConfig {
  // "https://10.0.0.1:443".
  std::string server;
  // CA that verifies the server: a file or PEM text; both empty means the system store.
  std::string ca_file;
  std::string ca_pem;
  bool insecure_skip_tls_verify = false;
  // Bearer token, fixed; or read from token_file, again whenever the file changes (projected
  // service-account tokens rotate).
  Secret token;
  std::string token_file;
  // Client certificate auth: files or PEM text.
  std::string client_cert_file;
  std::string client_key_file;
  std::string client_cert_pem;
  Secret client_key_pem;
  // For messages: "in-cluster" or "kubeconfig <path> context <name>".
  std::string source;
};

using GetEnv = std::function<const char*(const char*)>;

// The service-account directory of a pod.
inline constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";

// The in-cluster config: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the token and
// CA of `service_account_dir`. FAILED_PRECONDITION when not running in a pod (no env, no token).
absl::StatusOr<KubeConfig> InClusterConfig(
    const GetEnv& getenv, const std::string& service_account_dir = kServiceAccountDir);

// A kubeconfig file's `context` ("" = current-context): the cluster's server,
// certificate-authority(-data) and insecure-skip-tls-verify, the user's token, tokenFile and
// client-certificate(-data)/client-key(-data); relative file paths are relative to the kubeconfig.
// INVALID_ARGUMENT naming the file and what is missing; exec and auth-provider plugins are refused
// by name.
absl::StatusOr<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context);

// The agent's rule: an explicit kubeconfig path wins; then the in-cluster config when
// KUBERNETES_SERVICE_HOST is set; then $KUBECONFIG (its first entry), then ~/.kube/config.
absl::StatusOr<KubeConfig> ResolveKubeConfig(const std::string& kubeconfig,
                                             const std::string& context, const GetEnv& getenv);

}  // namespace elfdeploy::agent
