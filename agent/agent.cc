#include "agent/agent.h"

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/event_buffer.h"
#include "agent/kube/client.h"
#include "agent/kube/config.h"
#include "agent/kube/convert.h"
#include "agent/kube/informer.h"
#include "agent/link.h"
#include "agent/requests.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "services/common/proto_time.h"

namespace elfdeploy {
namespace {

constexpr char kVersion[] = "0.1.0";

struct Watched {
  v1::ObjectKind kind;
  std::string name;  // for keys and logs: "pods"
  std::string path;
  std::string ns;  // "" = all namespaces
};

std::string CollectionPath(const std::string& resource, const std::string& ns) {
  bool apps = resource == "deployments";
  bool argo = resource == "applications";
  std::string prefix = argo ? "/apis/argoproj.io/v1alpha1" : apps ? "/apis/apps/v1" : "/api/v1";
  return ns.empty() ? absl::StrCat(prefix, "/", resource)
                    : absl::StrCat(prefix, "/namespaces/", ns, "/", resource);
}

// The string at `object.metadata[key]`, or "".
std::string_view MetadataString(simdjson::dom::element object, const char* key) {
  std::string_view text;
  return object["metadata"][key].get(text) == simdjson::SUCCESS ? text : std::string_view();
}

class Agent final : public Component {
 public:
  Agent(AgentOptions options, agent::KubeConfig kube, Secret token,
        std::shared_ptr<prometheus::Registry> metrics)
      : options_(std::move(options)),
        client_(std::move(kube)),
        buffer_(static_cast<size_t>(std::max<int64_t>(1, options_.buffer_events))),
        metrics_(std::move(metrics)),
        sent_(prometheus::BuildCounter()
                  .Name("elfdeploy_agent_events_sent_total")
                  .Help("Events sent to cluster-watcher (replays included).")
                  .Register(*metrics_)
                  .Add({})),
        buffered_(prometheus::BuildGauge()
                      .Name("elfdeploy_agent_buffered_events")
                      .Help("Events kept until cluster-watcher acknowledges them.")
                      .Register(*metrics_)
                      .Add({})),
        reconnects_(prometheus::BuildCounter()
                        .Name("elfdeploy_agent_reconnects_total")
                        .Help("Connections to cluster-watcher made again after one ended.")
                        .Register(*metrics_)
                        .Add({})),
        restarts_(prometheus::BuildCounter()
                      .Name("elfdeploy_agent_watch_restarts_total")
                      .Help("Kubernetes watches started again, by reason.")
                      .Register(*metrics_)) {
    epoch_ = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    link_options_.watcher_addr = options_.watcher_addr;
    link_options_.cluster = options_.cluster_name;
    link_options_.insecure = options_.insecure;
    link_options_.ca_file = options_.ca_file;
    link_options_.tls_server_name = options_.tls_server_name;
    link_options_.client_cert_file = options_.client_cert_file;
    link_options_.client_key_file = options_.client_key_file;
    link_options_.token = std::move(token);
    link_options_.heartbeat_interval = options_.heartbeat_interval;
    link_options_.batch_linger = options_.batch_linger;
    link_options_.agent_version = kVersion;
    link_options_.argocd_namespace = options_.argocd_namespace;
    link_options_.namespaces = options_.namespaces;
    for (const char* reason : {"expired", "error", "timeout"}) {
      restart_counters_[reason] = &restarts_.Add({{"reason", reason}});
    }
  }

  void Start() {
    watched_.push_back({v1::OBJECT_KIND_APPLICATION, "applications",
                        CollectionPath("applications", options_.argocd_namespace),
                        options_.argocd_namespace});
    std::vector<std::string> namespaces = options_.namespaces;
    if (namespaces.empty()) namespaces.push_back("");
    for (const std::string& ns : namespaces) {
      watched_.push_back(
          {v1::OBJECT_KIND_DEPLOYMENT, "deployments", CollectionPath("deployments", ns), ns});
      watched_.push_back({v1::OBJECT_KIND_POD, "pods", CollectionPath("pods", ns), ns});
      watched_.push_back({v1::OBJECT_KIND_EVENT, "events", CollectionPath("events", ns), ns});
    }
    auto cancelled = [this] { return stopping_.load(); };
    for (const Watched& watched : watched_) {
      threads_.emplace_back([this, watched, cancelled] { RunInformer(watched, cancelled); });
    }
    link_ = std::make_unique<agent::AgentLink>(
        link_options_, epoch_, buffer_,
        [this](const v1::AgentRequest& request) { return agent::HandleRequest(client_, request); },
        [this] {
          absl::StatusOr<std::string> version = client_.ServerVersion();
          return version.ok() ? *version : std::string();
        },
        agent::LinkMetrics{.sent = [this](size_t n) { sent_.Increment(static_cast<double>(n)); },
                           .reconnected = [this] { reconnects_.Increment(); }});
    threads_.emplace_back([this, cancelled] { link_->Run(cancelled); });
    threads_.emplace_back([this] {
      while (!stopping_) {
        buffered_.Set(static_cast<double>(buffer_.size()));
        absl::SleepFor(absl::Milliseconds(500));
      }
    });
    log::Info("agent started", {{"cluster", options_.cluster_name},
                                {"watcher", options_.watcher_addr},
                                {"kubernetes", client_.config().source},
                                {"epoch", static_cast<int64_t>(epoch_)}});
  }

  void Stop() override {
    if (stopping_.exchange(true)) return;
    buffer_.Wake();
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
  }

  ~Agent() override { Stop(); }

 private:
  void RunInformer(const Watched& watched, const std::function<bool()>& cancelled) {
    agent::InformerOptions options;
    options.path = watched.path;
    options.watch_timeout = options_.watch_timeout;
    agent::InformerHandler handler;
    handler.on_change = [this, &watched](agent::Change change, simdjson::dom::element object) {
      absl::StatusOr<v1::ClusterObject> converted = kube::ToClusterObject(watched.kind, object);
      if (!converted.ok()) {
        log::Warning("skipping an object the agent cannot read",
                     {{"collection", watched.path}, {"error", converted.status()}});
        return;
      }
      v1::AgentEvent event;
      *event.mutable_observed_time() = ToTimestamp(absl::Now());
      v1::ObjectChange* out = event.mutable_change();
      out->set_type(change == agent::Change::kAdded      ? v1::CHANGE_TYPE_ADDED
                    : change == agent::Change::kModified ? v1::CHANGE_TYPE_MODIFIED
                                                         : v1::CHANGE_TYPE_DELETED);
      *out->mutable_object() = *std::move(converted);
      std::string_view ns = MetadataString(object, "namespace");
      std::string_view name = MetadataString(object, "name");
      buffer_.Push(absl::StrCat(watched.name, "/", absl::string_view(ns.data(), ns.size()), "/",
                                absl::string_view(name.data(), name.size())),
                   std::move(event));
    };
    handler.on_synced = [this, &watched](const std::string& resource_version) {
      // A list of thousands of objects leaves freed pages behind; give them back.
      malloc_trim(0);
      v1::AgentEvent event;
      *event.mutable_observed_time() = ToTimestamp(absl::Now());
      v1::AgentSnapshotComplete* done = event.mutable_snapshot_complete();
      done->set_kind(watched.kind);
      done->set_namespace_(watched.ns);
      done->set_resource_version(resource_version);
      buffer_.Push("", std::move(event));
    };
    handler.on_restart = [this](agent::Restart restart, const absl::Status&) {
      restart_counters_[restart == agent::Restart::kExpired ? "expired"
                        : restart == agent::Restart::kError ? "error"
                                                            : "timeout"]
          ->Increment();
    };
    agent::Informer informer(client_, options, handler, kube::IdentityJson);
    informer.Run(cancelled);
  }

  const AgentOptions options_;
  agent::KubeClient client_;
  agent::EventBuffer buffer_;
  std::shared_ptr<prometheus::Registry> metrics_;
  prometheus::Counter& sent_;
  prometheus::Gauge& buffered_;
  prometheus::Counter& reconnects_;
  prometheus::Family<prometheus::Counter>& restarts_;
  std::map<std::string, prometheus::Counter*> restart_counters_;
  agent::LinkOptions link_options_;
  uint64_t epoch_ = 0;
  std::vector<Watched> watched_;
  std::unique_ptr<agent::AgentLink> link_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
};

}  // namespace

void BindAgentConfig(ConfigBinder& binder, AgentOptions* options) {
  binder.Bind("agent.watcher_addr", &options->watcher_addr);
  binder.Bind("agent.cluster_name", &options->cluster_name);
  binder.Bind("agent.ca_file", &options->ca_file);
  binder.Bind("agent.tls_server_name", &options->tls_server_name);
  binder.Bind("agent.client_cert_file", &options->client_cert_file);
  binder.Bind("agent.client_key_file", &options->client_key_file);
  binder.Bind("agent.insecure", &options->insecure);
  binder.Bind("agent.token", &options->token);
  binder.Bind("agent.token_file", &options->token_file);
  binder.Bind("agent.heartbeat_interval", &options->heartbeat_interval);
  binder.Bind("agent.kubeconfig", &options->kubeconfig);
  binder.Bind("agent.kube_context", &options->kube_context);
  binder.Bind("agent.argocd_namespace", &options->argocd_namespace);
  binder.Bind("agent.namespaces", &options->namespaces);
  binder.Bind("agent.buffer_events", &options->buffer_events);
  binder.Bind("agent.batch_linger", &options->batch_linger);
  binder.Bind("agent.watch_timeout", &options->watch_timeout);
}

absl::StatusOr<std::unique_ptr<Component>> MakeAgent(
    const AgentOptions& options, std::shared_ptr<prometheus::Registry> metrics) {
  absl::StatusOr<agent::KubeConfig> kube =
      agent::ResolveKubeConfig(options.kubeconfig, options.kube_context, std::getenv);
  if (!kube.ok()) return kube.status();
  Secret token = options.token;
  if (!options.token_file.empty()) {
    std::ifstream in(options.token_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      return absl::FailedPreconditionError(
          absl::StrCat("agent.token_file ", options.token_file, " cannot be read"));
    }
    token = Secret(std::string(absl::StripAsciiWhitespace(text.str())));
  }
  if (!options.insecure && options.ca_file.empty()) {
    return absl::FailedPreconditionError(
        "agent.ca_file is required: the watcher's certificate is verified against a pinned CA "
        "(agent.insecure: true only for local tests)");
  }
  auto agent = std::make_unique<Agent>(options, *std::move(kube), std::move(token), metrics);
  agent->Start();
  return std::unique_ptr<Component>(std::move(agent));
}

}  // namespace elfdeploy
