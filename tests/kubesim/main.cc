// elfdeploy-kubesim: a Kubernetes API server simulator for elfdeploy's tests and local demo.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/common/log.h"
#include "tests/kubesim/api_server.h"
#include "tests/kubesim/argocd.h"
#include "tests/kubesim/churn.h"
#include "tests/kubesim/kubelet.h"
#include "tests/kubesim/manifests.h"
#include "tests/kubesim/store.h"

ABSL_FLAG(std::string, listen_addr, "127.0.0.1:6443",
          "HOST:PORT to serve the Kubernetes API on; port 0 picks a free port (logged as addr= "
          "on the 'serving' line)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate file: serve HTTPS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file for --tls_cert");
ABSL_FLAG(std::string, token, "",
          "Require 'Authorization: Bearer <token>' (prefer --token_file: argv is visible)");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token to require");
ABSL_FLAG(int64_t, history_window, 10000,
          "Changes kept for watches and list pages; older resourceVersions answer 410 Expired");
ABSL_FLAG(absl::Duration, bookmark_interval, absl::Seconds(1),
          "Period of BOOKMARK events on watches with allowWatchBookmarks=true");
ABSL_FLAG(absl::Duration, max_watch_timeout, absl::Minutes(30),
          "How long a watch without timeoutSeconds lasts");
ABSL_FLAG(std::string, seed_file, "",
          "YAML or JSON (multi-document) manifests to load at start-up");
ABSL_FLAG(uint64_t, seed, 1, "Seed for uids and generated names (same seed, same objects)");
ABSL_FLAG(int, threads, 128, "HTTP worker threads; each open watch or log stream holds one");
ABSL_FLAG(std::string, gitops_repo, "",
          "Argo CD: read Applications from <gitops_prefix>/applications/*.yaml of this repository "
          "(file://, a path, git://, http://) and keep them updated as its branch moves");
ABSL_FLAG(std::string, gitops_branch, "main", "Branch of --gitops_repo");
ABSL_FLAG(std::string, gitops_prefix, "", "Directory of applications/ in --gitops_repo");
ABSL_FLAG(std::string, argocd_namespace, "argocd", "Namespace of the Argo CD Applications");
ABSL_FLAG(std::string, cache_dir, "",
          "Where repository mirrors live; default: a temporary directory removed at exit");
ABSL_FLAG(absl::Duration, app_resync, absl::Minutes(3),
          "Argo CD compares every Application again this often");
ABSL_FLAG(absl::Duration, repo_poll, absl::Seconds(1),
          "Branch heads of the Applications' repositories are polled this often");
ABSL_FLAG(std::string, node_name, "kubesim-node", "The simulated node's name");
ABSL_FLAG(absl::Duration, container_start_delay, absl::Seconds(1),
          "Kubelet: image resolved -> container running");
ABSL_FLAG(absl::Duration, ready_delay, absl::ZeroDuration(), "Kubelet: running -> ready");
ABSL_FLAG(absl::Duration, crash_after, absl::Seconds(2),
          "Kubelet: how long a container with ELFDEPLOY_SIM_EXIT_CODE runs before it exits");
ABSL_FLAG(absl::Duration, image_pull_backoff, absl::Seconds(10),
          "Kubelet: first image pull back-off (doubles up to --image_pull_backoff_max)");
ABSL_FLAG(absl::Duration, err_image_pull_hold, absl::Seconds(1),
          "Kubelet: how long ErrImagePull shows before ImagePullBackOff");
ABSL_FLAG(absl::Duration, image_pull_backoff_max, absl::Minutes(5), "Kubelet: pull back-off cap");
ABSL_FLAG(absl::Duration, crash_backoff, absl::Seconds(10),
          "Kubelet: first crash-loop back-off (doubles up to --crash_backoff_max)");
ABSL_FLAG(absl::Duration, crash_backoff_max, absl::Minutes(5), "Kubelet: crash back-off cap");
ABSL_FLAG(absl::Duration, progress_deadline_unit, absl::Seconds(1),
          "How long one second of spec.progressDeadlineSeconds lasts (shorter in tests)");
ABSL_FLAG(absl::Duration, resolve_cache_ttl, absl::Seconds(5),
          "Kubelet: registry answers are reused this long per image and credentials");
ABSL_FLAG(std::vector<std::string>, insecure_registries, {},
          "Registries the kubelet may reach over plain http or unverified TLS (loopback ones "
          "may always use plain http)");
ABSL_FLAG(std::string, registry_ca_file, "", "PEM CA bundle that verifies registries");
ABSL_FLAG(int, churn_pods, 0, "Churn mode: pods created in --churn_namespace");
ABSL_FLAG(double, churn_rate, 0, "Churn mode: changes per second to those pods");
ABSL_FLAG(std::string, churn_namespace, "churn", "Churn mode: the namespace of its pods");
ABSL_FLAG(std::string, log_level, "info", "debug|info|warning|error");
ABSL_FLAG(std::string, log_format, "logfmt", "logfmt|json");

namespace elfdeploy::kubesim {
namespace {

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Kubernetes API simulator: list/watch/get/create/replace/patch/delete of pods, events, "
      "deployments, applications, secrets, ... with real resourceVersion semantics.\n"
      "Usage: elfdeploy-kubesim [--listen_addr HOST:PORT] [--tls_cert F --tls_key F] "
      "[--token_file F] [--seed_file F]");
  absl::ParseCommandLine(argc, argv);

  log::Options log_options;
  log_options.service = "kubesim";
  absl::Status status = log::ParseLevel(absl::GetFlag(FLAGS_log_level), &log_options.level);
  if (status.ok()) status = log::ParseFormat(absl::GetFlag(FLAGS_log_format), &log_options.format);
  if (!status.ok()) {
    std::cerr << status.message() << "\n";
    return 2;
  }
  log::Configure(log_options);

  ApiServerOptions options;
  options.listen_addr = absl::GetFlag(FLAGS_listen_addr);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.bookmark_interval = absl::GetFlag(FLAGS_bookmark_interval);
  options.max_watch_timeout = absl::GetFlag(FLAGS_max_watch_timeout);
  options.threads = absl::GetFlag(FLAGS_threads);
  std::string token = absl::GetFlag(FLAGS_token);
  std::string token_file = absl::GetFlag(FLAGS_token_file);
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      log::Error("cannot read the token file", {{"path", token_file}});
      return 2;
    }
    token = std::string(absl::StripAsciiWhitespace(text.str()));
  }
  options.token = Secret(token);
  int64_t window = absl::GetFlag(FLAGS_history_window);
  if (window < 1) {
    log::Error("--history_window must be at least 1");
    return 2;
  }

  // Termination signals are taken by sigwait below, never by another thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ObjectStoreOptions store_options;
  store_options.history_window = static_cast<size_t>(window);
  store_options.seed = absl::GetFlag(FLAGS_seed);
  ObjectStore store(store_options);
  std::string seed_file = absl::GetFlag(FLAGS_seed_file);
  if (!seed_file.empty()) {
    status = LoadSeedFile(store, seed_file);
    if (!status.ok()) {
      log::Error("cannot load the seed file", {{"path", seed_file}, {"error", status}});
      return 2;
    }
  }
  absl::StatusOr<std::unique_ptr<ApiServer>> server = ApiServer::Start(&store, options);
  if (!server.ok()) {
    log::Error("cannot start", {{"error", server.status()}});
    return 1;
  }

  ArgoOptions argo_options;
  argo_options.argocd_namespace = absl::GetFlag(FLAGS_argocd_namespace);
  argo_options.gitops_repo = absl::GetFlag(FLAGS_gitops_repo);
  argo_options.gitops_branch = absl::GetFlag(FLAGS_gitops_branch);
  argo_options.gitops_prefix = absl::GetFlag(FLAGS_gitops_prefix);
  argo_options.app_resync = absl::GetFlag(FLAGS_app_resync);
  argo_options.repo_poll = absl::GetFlag(FLAGS_repo_poll);
  argo_options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  std::string temporary_cache;
  if (argo_options.cache_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/elfdeploy-kubesim-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) {
      log::Error("cannot create a cache directory", {{"path", pattern}});
      return 1;
    }
    temporary_cache = argo_options.cache_dir = pattern;
  }
  if (absl::IsNotFound(store.Get("namespaces", "", argo_options.argocd_namespace).status())) {
    store.Create("namespaces", {{"metadata", {{"name", argo_options.argocd_namespace}}}})
        .IgnoreError();
  }
  ArgoController argo(store, argo_options);
  argo.Start();

  KubeletOptions kubelet_options;
  kubelet_options.seed = absl::GetFlag(FLAGS_seed);
  kubelet_options.node_name = absl::GetFlag(FLAGS_node_name);
  kubelet_options.container_start_delay = absl::GetFlag(FLAGS_container_start_delay);
  kubelet_options.ready_delay = absl::GetFlag(FLAGS_ready_delay);
  kubelet_options.crash_after = absl::GetFlag(FLAGS_crash_after);
  kubelet_options.image_pull_backoff = absl::GetFlag(FLAGS_image_pull_backoff);
  kubelet_options.image_pull_backoff_max = absl::GetFlag(FLAGS_image_pull_backoff_max);
  kubelet_options.err_image_pull_hold = absl::GetFlag(FLAGS_err_image_pull_hold);
  kubelet_options.crash_backoff = absl::GetFlag(FLAGS_crash_backoff);
  kubelet_options.crash_backoff_max = absl::GetFlag(FLAGS_crash_backoff_max);
  kubelet_options.progress_deadline_unit = absl::GetFlag(FLAGS_progress_deadline_unit);
  kubelet_options.resolve_cache_ttl = absl::GetFlag(FLAGS_resolve_cache_ttl);
  kubelet_options.insecure_registries = absl::GetFlag(FLAGS_insecure_registries);
  kubelet_options.ca_file = absl::GetFlag(FLAGS_registry_ca_file);
  KubeletSim kubelet(store, kubelet_options);
  if (absl::Status started = kubelet.Start(); !started.ok()) {
    log::Error("cannot start the kubelet", {{"error", started}});
    return 1;
  }
  ChurnOptions churn_options;
  churn_options.pods = absl::GetFlag(FLAGS_churn_pods);
  churn_options.rate = absl::GetFlag(FLAGS_churn_rate);
  churn_options.namespace_ = absl::GetFlag(FLAGS_churn_namespace);
  churn_options.seed = absl::GetFlag(FLAGS_seed);
  ChurnSim churn(store, churn_options);
  if (churn_options.pods > 0) {
    if (absl::Status started = churn.Start(); !started.ok()) {
      log::Error("cannot start churn", {{"error", started}});
      return 1;
    }
  }
  log::Info("serving", {{"addr", (*server)->address()},
                        {"url", (*server)->base_url()},
                        {"tls", (*server)->tls()},
                        {"authn", !options.token.empty() ? "bearer" : "none"},
                        {"resource_version", store.resource_version()}});
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  log::Info("stopping", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
  churn.Stop();
  kubelet.Stop();
  argo.Stop();
  (*server)->Stop();
  if (!temporary_cache.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(temporary_cache, ignored);
  }
  log::Info("stopped");
  return 0;
}

}  // namespace
}  // namespace elfdeploy::kubesim

int main(int argc, char** argv) { return elfdeploy::kubesim::Run(argc, argv); }
