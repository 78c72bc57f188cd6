#include "tests/support/stack.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "tests/harness/pki.h"
#include "tests/support/oci_image.h"

namespace elfdeploy::testing {
namespace {

constexpr char kAgentToken[] = "stack-agent-token";

absl::Status Annotate(absl::string_view what, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Stack>> Stack::Start(StackOptions options) {
  absl::StatusOr<TempDir> dir = TempDir::Create(options.dir_prefix);
  if (!dir.ok()) return dir.status();
  std::unique_ptr<Stack> stack(new Stack(std::move(options), *std::move(dir)));
  if (absl::Status started = stack->StartAll(); !started.ok()) return started;
  return stack;
}

Stack::~Stack() {
  stub_.reset();
  orchestrator_.reset();
  agent_.reset();
  watcher_.reset();
  publisher_.reset();
  registry_sync_.reset();
  builder_.reset();
  if (kubesim_ != nullptr) kubesim_->Stop(absl::Seconds(10)).IgnoreError();
}

absl::Status Stack::StartAll() {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  if (!registry.ok()) return Annotate("registry", registry.status());
  registry_ = *std::move(registry);
  absl::StatusOr<std::unique_ptr<GitDaemonFixture>> git = GitDaemonFixture::Start();
  if (!git.ok()) return Annotate("git daemon", git.status());
  git_ = *std::move(git);
  if (absl::StatusOr<std::string> repo = git_->CreateBareRepo("gitops"); !repo.ok()) {
    return Annotate("gitops repository", repo.status());
  }
  if (absl::StatusOr<TestImage> base =
          WriteTestImage(dir_.Join("base"), "3.11", options_.base_layer_sizes, options_.base_seed);
      !base.ok()) {
    return Annotate("base image", base.status());
  }
  if (absl::Status pushed = PushLayoutImage(
          dir_.Join("base"), "3.11", absl::StrCat(registry_->host(), "/elf/python-base:3.11"));
      !pushed.ok()) {
    return Annotate("seeding the base image", pushed);
  }

  std::vector<std::string> kubesim_argv = {
      BinaryPath("elfdeploy-kubesim"), "--listen_addr=127.0.0.1:0",
      "--gitops_repo=" + git_->url("gitops"), "--gitops_prefix=elf-automations"};
  kubesim_argv.insert(kubesim_argv.end(), options_.kubesim_flags.begin(),
                      options_.kubesim_flags.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> kubesim =
      ChildProcess::Start({.argv = kubesim_argv, .log_path = dir_.Join("kubesim.log")});
  if (!kubesim.ok()) return Annotate("kubesim", kubesim.status());
  kubesim_ = *std::move(kubesim);
  std::string line;
  if (absl::Status s = kubesim_->WaitForLogLine("msg=serving", absl::Seconds(30), &line); !s.ok()) {
    return Annotate("kubesim", s);
  }
  kubesim_url_ = LogfmtValue(line, "url");
  if (absl::Status s = WriteKubeconfig(kubeconfig(), kubesim_url_); !s.ok()) return s;
  if (options_.tls) {
    if (absl::Status s = WriteTestPki(dir_.Join("tls"), {"server", "client"}); !s.ok()) return s;
  }

  absl::StatusOr<std::unique_ptr<ServiceProcess>> builder =
      StartService({.binary = "elfdeploy-builder",
                    .env = {{"ELFDEPLOY_BUILDER_STORE_DIR", dir_.Join("store")}}});
  if (!builder.ok()) return builder.status();
  builder_ = *std::move(builder);
  absl::StatusOr<std::unique_ptr<ServiceProcess>> registry_sync =
      StartService({.binary = "elfdeploy-registry-sync"});
  if (!registry_sync.ok()) return registry_sync.status();
  registry_sync_ = *std::move(registry_sync);
  absl::StatusOr<std::unique_ptr<ServiceProcess>> publisher =
      StartService({.binary = "elfdeploy-manifest-publisher",
                    .env = {{"ELFDEPLOY_PUBLISHER_CACHE_DIR", dir_.Join("cache")}}});
  if (!publisher.ok()) return publisher.status();
  publisher_ = *std::move(publisher);

  ServiceProcessOptions watcher = {
      .binary = "elfdeploy-cluster-watcher",
      .env = {{"ELFDEPLOY_WATCHER_DATA_DIR", dir_.Join("watcher")},
              {"ELFDEPLOY_WATCHER_AGENT_TOKEN", kAgentToken},
              {"ELFDEPLOY_WATCHER_REGISTRY_SYNC_ADDR", registry_sync_->grpc_addr()}}};
  if (options_.tls) {
    for (auto& kv : PeerTlsEnv("WATCHER_REGISTRY_SYNC_TLS")) watcher.env.push_back(kv);
  }
  absl::StatusOr<std::unique_ptr<ServiceProcess>> started_watcher = StartService(watcher);
  if (!started_watcher.ok()) return started_watcher.status();
  watcher_ = *std::move(started_watcher);

  ServiceProcessOptions agent = {.binary = "elfdeploy-agent",
                                 .env = {{"ELFDEPLOY_AGENT_KUBECONFIG", kubeconfig()},
                                         {"ELFDEPLOY_AGENT_WATCHER_ADDR", watcher_->grpc_addr()},
                                         {"ELFDEPLOY_AGENT_TOKEN", kAgentToken},
                                         {"ELFDEPLOY_AGENT_CLUSTER_NAME", "sim"}},
                                 .grpc = false};
  if (options_.tls) {
    agent.env.insert(agent.env.end(), {{"ELFDEPLOY_AGENT_CA_FILE", ca_file()},
                                       {"ELFDEPLOY_AGENT_CLIENT_CERT_FILE", client_cert_file()},
                                       {"ELFDEPLOY_AGENT_CLIENT_KEY_FILE", client_key_file()}});
  } else {
    agent.env.emplace_back("ELFDEPLOY_AGENT_INSECURE", "true");
  }
  absl::StatusOr<std::unique_ptr<ServiceProcess>> started_agent = StartService(agent);
  if (!started_agent.ok()) return started_agent.status();
  agent_ = *std::move(started_agent);
  return RestartOrchestrator();
}

absl::Status Stack::RestartOrchestrator() {
  stub_.reset();
  orchestrator_.reset();
  ServiceProcessOptions options = {
      .binary = "elfdeploy-orchestrator",
      .env = {{"ELFDEPLOY_ORCHESTRATOR_DATA_DIR", dir_.Join("orchestrator")},
              {"DOCKER_REGISTRY", registry_->host()},
              {"GITOPS_REPO", git_->url("gitops")},
              {"ELFDEPLOY_ORCHESTRATOR_BUILDER_ADDR", builder_->grpc_addr()},
              {"ELFDEPLOY_ORCHESTRATOR_REGISTRY_SYNC_ADDR", registry_sync_->grpc_addr()},
              {"ELFDEPLOY_ORCHESTRATOR_MANIFEST_PUBLISHER_ADDR", publisher_->grpc_addr()},
              {"ELFDEPLOY_ORCHESTRATOR_CLUSTER_WATCHER_ADDR", watcher_->grpc_addr()}}};
  options.env.insert(options.env.end(), options_.orchestrator_env.begin(),
                     options_.orchestrator_env.end());
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options_.tls) {
    // TLS towards its peers with the client certificate; its own port serves TLS without asking
    // for one, as elfctl users reach it.
    for (auto& kv : PeerTlsEnv("ORCHESTRATOR_TLS")) options.env.push_back(kv);
    options.env.insert(options.env.end(),
                       {{"ELFDEPLOY_SERVER_TLS_CERT_FILE", dir_.Join("tls/server.pem")},
                        {"ELFDEPLOY_SERVER_TLS_KEY_FILE", dir_.Join("tls/server.key")}});
    options.tls_ca_file = ca_file();
    absl::StatusOr<std::string> ca = ReadFile(ca_file());
    if (!ca.ok()) return ca.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *ca;
    credentials = grpc::SslCredentials(ssl);
  }
  absl::StatusOr<std::unique_ptr<ServiceProcess>> orchestrator = ServiceProcess::Start(options);
  if (!orchestrator.ok()) return Annotate("elfdeploy-orchestrator", orchestrator.status());
  orchestrator_ = *std::move(orchestrator);
  stub_ = v1::OrchestratorService::NewStub(
      grpc::CreateChannel(orchestrator_->grpc_addr(), credentials));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ServiceProcess>> Stack::StartService(ServiceProcessOptions options) {
  if (options_.tls && options.grpc) {
    options.env.insert(options.env.end(),
                       {{"ELFDEPLOY_SERVER_TLS_CERT_FILE", dir_.Join("tls/server.pem")},
                        {"ELFDEPLOY_SERVER_TLS_KEY_FILE", dir_.Join("tls/server.key")},
                        {"ELFDEPLOY_SERVER_TLS_CLIENT_CA_FILE", ca_file()}});
    options.tls_ca_file = ca_file();
    options.tls_client_cert_file = client_cert_file();
    options.tls_client_key_file = client_key_file();
  }
  const std::string binary = options.binary;
  absl::StatusOr<std::unique_ptr<ServiceProcess>> service = ServiceProcess::Start(options);
  if (!service.ok()) return Annotate(binary, service.status());
  return service;
}

absl::StatusOr<v1::WatchRolloutResponse> Stack::Follow(
    const std::string& id, const std::function<bool(const v1::WatchRolloutResponse&)>& until,
    absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::WatchRolloutRequest request;
  request.set_id(id);
  std::unique_ptr<grpc::ClientReader<v1::WatchRolloutResponse>> reader =
      stub_->WatchRollout(&context, request);
  v1::WatchRolloutResponse event;
  v1::WatchRolloutResponse last;
  while (reader->Read(&event)) {
    if (until && until(event)) {
      context.TryCancel();
      reader->Finish().IgnoreError();
      return event;
    }
    last = std::move(event);
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("WatchRollout ", id, ": ", status.error_message()));
  }
  if (until) return absl::NotFoundError(absl::StrCat("rollout ", id, " ended first"));
  return last;
}

std::vector<std::pair<std::string, ServiceProcess*>> Stack::services() {
  return {{"elfdeploy-builder", builder_.get()},
          {"elfdeploy-registry-sync", registry_sync_.get()},
          {"elfdeploy-manifest-publisher", publisher_.get()},
          {"elfdeploy-cluster-watcher", watcher_.get()},
          {"elfdeploy-agent", agent_.get()},
          {"elfdeploy-orchestrator", orchestrator_.get()}};
}

std::vector<std::pair<std::string, std::string>> Stack::PeerTlsEnv(
    const std::string& prefix) const {
  return {{absl::StrCat("ELFDEPLOY_", prefix, "_CA_FILE"), ca_file()},
          {absl::StrCat("ELFDEPLOY_", prefix, "_CERT_FILE"), client_cert_file()},
          {absl::StrCat("ELFDEPLOY_", prefix, "_KEY_FILE"), client_key_file()}};
}

}  // namespace elfdeploy::testing
