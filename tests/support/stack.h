#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy::testing {

struct StackOptions {
  // Prefix of the stack's temporary directory.
  std::string dir_prefix = "stack-";
  // Layers of the base image the examples build FROM (WriteTestImage's sizes and seed).
  std::vector<int64_t> base_layer_sizes = {2048};
  int base_seed = 9;
  // Flags for elfdeploy-kubesim beside its address and the GitOps repository.
  std::vector<std::string> kubesim_flags = {};
  // Extra environment of the orchestrator, e.g. {"ELFDEPLOY_ORCHESTRATOR_SETTLE", "1s"}.
  std::vector<std::pair<std::string, std::string>> orchestrator_env = {};
  // Every gRPC server serves TLS and requires a client certificate signed by the stack's CA;
  // every client (the orchestrator, the watcher, the agent, the tests) presents one.
  bool tls = false;
};

// The whole flow on this machine, for end-to-end tests and benchmarks: docker-registry holding
// the examples' base image (<host>/elf/python-base:3.11), a git daemon with the bare repository
// "gitops", elfdeploy-kubesim as the cluster (syncing that repository under elf-automations/),
// the five services and the agent, each a child process on free ports. The destructor stops
// them, the services first.
class Stack {
 public:
  static absl::StatusOr<std::unique_ptr<Stack>> Start(StackOptions options);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  // Stops the orchestrator and starts it again on the same data directory.
  absl::Status RestartOrchestrator();

  TempDir& dir() { return dir_; }
  RegistryFixture& registry() { return *registry_; }
  GitDaemonFixture& git() { return *git_; }
  const std::string& kubesim_url() const { return kubesim_url_; }
  std::string kubeconfig() const { return dir_.Join("kubeconfig"); }
  ServiceProcess& builder() { return *builder_; }
  ServiceProcess& registry_sync() { return *registry_sync_; }
  ServiceProcess& publisher() { return *publisher_; }
  ServiceProcess& watcher() { return *watcher_; }
  ServiceProcess& agent() { return *agent_; }
  ServiceProcess& orchestrator() { return *orchestrator_; }
  // Every service and the agent, as (binary name, process).
  std::vector<std::pair<std::string, ServiceProcess*>> services();
  // A stub on the current orchestrator (replaced by RestartOrchestrator).
  v1::OrchestratorService::Stub& stub() { return *stub_; }

  // Follows rollout `id`'s events for at most `timeout`: the first one `until` accepts, or
  // without `until` the last one when the stream ends (the terminal state). NOT_FOUND when the
  // stream ended before `until` accepted any; the stream's error otherwise.
  absl::StatusOr<v1::WatchRolloutResponse> Follow(
      const std::string& id,
      const std::function<bool(const v1::WatchRolloutResponse&)>& until = nullptr,
      absl::Duration timeout = absl::Minutes(2));

  // With tls: the CA and a client certificate it signed, in <dir>/tls.
  std::string ca_file() const { return dir_.Join("tls/ca.pem"); }
  std::string client_cert_file() const { return dir_.Join("tls/client.pem"); }
  std::string client_key_file() const { return dir_.Join("tls/client.key"); }

 private:
  Stack(StackOptions options, TempDir dir) : options_(std::move(options)), dir_(std::move(dir)) {}
  absl::Status StartAll();
  absl::StatusOr<std::unique_ptr<ServiceProcess>> StartService(ServiceProcessOptions options);
  // ELFDEPLOY_<prefix>_CA_FILE, _CERT_FILE and _KEY_FILE of a client dialing TLS peers.
  std::vector<std::pair<std::string, std::string>> PeerTlsEnv(const std::string& prefix) const;

  const StackOptions options_;
  TempDir dir_;
  std::unique_ptr<RegistryFixture> registry_;
  std::unique_ptr<GitDaemonFixture> git_;
  std::unique_ptr<ChildProcess> kubesim_;
  std::string kubesim_url_;
  std::unique_ptr<ServiceProcess> builder_;
  std::unique_ptr<ServiceProcess> registry_sync_;
  std::unique_ptr<ServiceProcess> publisher_;
  std::unique_ptr<ServiceProcess> watcher_;
  std::unique_ptr<ServiceProcess> agent_;
  std::unique_ptr<ServiceProcess> orchestrator_;
  std::unique_ptr<v1::OrchestratorService::Stub> stub_;
};

}  // namespace elfdeploy::testing
