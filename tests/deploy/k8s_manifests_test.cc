// deploy/k8s: every kustomization renders with the real `kubectl kustomize`, and what it renders
// is what elfdeploy needs in a cluster: the workloads, hardened containers, gRPC probes on the
// right ports, Services with Prometheus annotations, a PodDisruptionBudget and a NetworkPolicy per
// workload, configs that agree with the manifests, the agent's exact RBAC, and no secret values.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <ostream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "yaml-cpp/yaml.h"

namespace elfdeploy {
namespace {

using ::testing::Contains;
using ::testing::IsEmpty;

constexpr char kKubectl[] = "/usr/bin/kubectl";

const std::filesystem::path& K8sDir() {
  static const auto* dir =
      new std::filesystem::path(std::filesystem::path(ELFDEPLOY_SOURCE_DIR) / "deploy" / "k8s");
  return *dir;
}

struct ServiceSpec {
  std::string component;  // "cluster-watcher"
  int grpc = 0;
  int metrics = 0;
  std::string Name() const { return "elfdeploy-" + component; }
};

const std::vector<ServiceSpec>& Services() {
  static const auto* services = new std::vector<ServiceSpec>{
      {"orchestrator", 7400, 9400},    {"builder", 7401, 9401},
      {"registry-sync", 7402, 9402},   {"manifest-publisher", 7403, 9403},
      {"cluster-watcher", 7404, 9404},
  };
  return *services;
}

constexpr int kAgentMetricsPort = 9405;

// The Secrets the manifests may reference; deploy/k8s/README.md tells how to create each.
const std::set<std::string>& DocumentedSecrets() {
  static const auto* secrets = new std::set<std::string>{
      "elfdeploy-registry-auth",        "elfdeploy-pull-auth",   "elfdeploy-git-credentials",
      "elfdeploy-watcher-agent-tokens", "elfdeploy-agent-token", "elfdeploy-agent-watcher-ca",
  };
  return *secrets;
}

// ---------------------------------------------------------------------------------------------
// YAML helpers
// ---------------------------------------------------------------------------------------------

// A read-only view of a YAML node. [] of a missing key, of a non-map or At() past the end gives an
// absent view instead of throwing (yaml-cpp throws on [] of a missing node), and assignment
// rebinds the view (yaml-cpp's Node::operator= writes through into the document).
class View {
 public:
  View() = default;
  explicit View(const YAML::Node& node) {
    if (node.IsDefined() && !node.IsNull()) {
      node_.reset(node);
      present_ = true;
    }
  }
  View(const View& other) : present_(other.present_) { node_.reset(other.node_); }
  View& operator=(const View& other) {
    node_.reset(other.node_);
    present_ = other.present_;
    return *this;
  }

  View operator[](const std::string& key) const {
    if (!IsMap()) return View();
    const YAML::Node& node = node_;
    return View(node[key]);
  }
  View At(size_t index) const {
    if (!present_ || !node_.IsSequence() || index >= node_.size()) return View();
    const YAML::Node& node = node_;
    return View(node[index]);
  }
  explicit operator bool() const { return present_; }
  bool IsMap() const { return present_ && node_.IsMap(); }
  size_t size() const {
    return present_ && (node_.IsMap() || node_.IsSequence()) ? node_.size() : 0;
  }
  std::string Scalar() const { return present_ && node_.IsScalar() ? node_.Scalar() : ""; }
  // A sequence's elements; none for anything else.
  std::vector<View> Items() const {
    std::vector<View> out;
    if (present_ && node_.IsSequence()) {
      for (const YAML::Node& item : node_) out.emplace_back(item);
    }
    return out;
  }
  // A map's entries in order; none for anything else.
  std::vector<std::pair<std::string, View>> Entries() const {
    std::vector<std::pair<std::string, View>> out;
    if (IsMap()) {
      for (const auto& entry : node_) out.emplace_back(entry.first.Scalar(), View(entry.second));
    }
    return out;
  }

 private:
  YAML::Node node_;
  bool present_ = false;
};

std::string Str(const View& node) { return node.Scalar(); }

int Int(const View& node) {
  int value = -1;
  return absl::SimpleAtoi(Str(node), &value) ? value : -1;
}

bool True(const View& node) { return Str(node) == "true"; }
bool False(const View& node) { return Str(node) == "false"; }

std::map<std::string, std::string> StringMap(const View& node) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : node.Entries()) out[key] = Str(value);
  return out;
}

std::vector<std::string> Strings(const View& node) {
  std::vector<std::string> out;
  for (const View& item : node.Items()) out.push_back(Str(item));
  return out;
}

// Whether every pair of `selector` is in `labels`, and `selector` is not empty.
bool Selects(const std::map<std::string, std::string>& selector,
             const std::map<std::string, std::string>& labels) {
  if (selector.empty()) return false;
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

// Port of "host:port".
int AddrPort(const std::string& addr) {
  size_t colon = addr.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(addr.substr(colon + 1), &port)) return -1;
  return port;
}

// Kubernetes quantities to a number (cpu in cores, memory in bytes).
double Quantity(const std::string& text) {
  static const std::vector<std::pair<std::string, double>> kSuffixes = {
      {"Ki", 1024.0},
      {"Mi", 1024.0 * 1024},
      {"Gi", 1024.0 * 1024 * 1024},
      {"Ti", 1024.0 * 1024 * 1024 * 1024},
      {"m", 0.001},
      {"k", 1e3},
      {"M", 1e6},
      {"G", 1e9}};
  for (const auto& [suffix, factor] : kSuffixes) {
    if (absl::EndsWith(text, suffix)) {
      double value = 0;
      if (!absl::SimpleAtod(text.substr(0, text.size() - suffix.size()), &value)) return -1;
      return value * factor;
    }
  }
  double value = 0;
  return absl::SimpleAtod(text, &value) ? value : -1;
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

struct Rendered {
  int exit_code = -1;
  std::string text;  // kubectl's combined output
  std::vector<View> docs;
  std::string parse_error;

  std::vector<View> OfKind(const std::string& kind) const {
    std::vector<View> out;
    for (const View& doc : docs) {
      if (Str(doc["kind"]) == kind) out.push_back(doc);
    }
    return out;
  }
  // The object, or an undefined node.
  View Find(const std::string& kind, const std::string& name) const {
    for (const View& doc : docs) {
      if (Str(doc["kind"]) == kind && Str(doc["metadata"]["name"]) == name) return doc;
    }
    return View();
  }
  std::vector<View> Workloads() const {
    std::vector<View> out = OfKind("Deployment");
    for (const View& set : OfKind("StatefulSet")) out.push_back(set);
    return out;
  }
};

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) output->append(buffer, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool HaveKubectl() { return access(kKubectl, X_OK) == 0; }

// `kubectl kustomize deploy/k8s/<target>`, once per target.
const Rendered& Render(const std::string& target) {
  static auto* cache = new std::map<std::string, Rendered>();
  auto it = cache->find(target);
  if (it != cache->end()) return it->second;
  Rendered& r = (*cache)[target];
  r.exit_code =
      RunCommand(absl::StrCat(kKubectl, " kustomize ", (K8sDir() / target).string()), &r.text);
  if (r.exit_code == 0) {
    try {
      for (const YAML::Node& doc : YAML::LoadAll(r.text)) {
        if (doc.IsMap()) r.docs.emplace_back(doc);
      }
    } catch (const YAML::Exception& e) {
      r.parse_error = e.what();
    }
  }
  return r;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

struct Target {
  std::string dir;     // under deploy/k8s
  bool agent = false;  // the agent's kustomization rather than the five services
};

void PrintTo(const Target& target, std::ostream* os) { *os << target.dir; }

const std::vector<Target>& Targets() {
  static const auto* targets = new std::vector<Target>{
      {"base", false}, {"overlays/dev", false},         {"overlays/production", false},
      {"agent", true}, {"overlays/argocd-agent", true},
  };
  return *targets;
}

class K8sManifestsTest : public ::testing::TestWithParam<Target> {
 protected:
  void SetUp() override {
    if (!HaveKubectl()) GTEST_SKIP() << "kubectl is not installed at " << kKubectl;
    const Rendered& r = Render(GetParam().dir);
    ASSERT_EQ(r.exit_code, 0) << r.text;
    ASSERT_THAT(r.parse_error, IsEmpty()) << r.text;
    ASSERT_FALSE(r.docs.empty());
    rendered_ = &r;
  }

  // Each workload with the ServiceSpec it runs (component), or nullptr for the agent.
  std::vector<std::pair<View, const ServiceSpec*>> WorkloadsWithSpec() const {
    std::vector<std::pair<View, const ServiceSpec*>> out;
    for (const View& workload : rendered_->Workloads()) {
      const ServiceSpec* spec = nullptr;
      for (const ServiceSpec& s : Services()) {
        if (Str(workload["metadata"]["name"]) == s.Name()) spec = &s;
      }
      out.emplace_back(workload, spec);
    }
    return out;
  }

  const Rendered* rendered_ = nullptr;
};

// The containers (and init containers) of a workload's pod template.
std::vector<View> Containers(const View& workload) {
  std::vector<View> out;
  const View pod = workload["spec"]["template"]["spec"];
  for (const char* key : {"initContainers", "containers"}) {
    for (const View& c : pod[key].Items()) out.push_back(c);
  }
  return out;
}

int NamedPort(const View& container, const std::string& name) {
  for (const View& port : container["ports"].Items()) {
    if (Str(port["name"]) == name) return Int(port["containerPort"]);
  }
  return -1;
}

TEST_P(K8sManifestsTest, RendersTheExpectedWorkloads) {
  std::set<std::string> names;
  for (const View& w : rendered_->Workloads()) {
    names.insert(absl::StrCat(Str(w["metadata"]["namespace"]), "/", Str(w["metadata"]["name"])));
  }
  std::set<std::string> expected;
  if (GetParam().agent) {
    expected.insert("argocd/elfdeploy-agent");
  } else {
    for (const ServiceSpec& s : Services()) expected.insert("elfdeploy/" + s.Name());
  }
  EXPECT_EQ(names, expected);
  for (const View& doc : rendered_->docs) {
    const std::string kind = Str(doc["kind"]);
    if (kind == "Namespace" || kind == "ClusterRole" || kind == "ClusterRoleBinding") continue;
    EXPECT_EQ(Str(doc["metadata"]["namespace"]), GetParam().agent ? "argocd" : "elfdeploy")
        << kind << " " << Str(doc["metadata"]["name"]);
  }
}

TEST_P(K8sManifestsTest, ContainersAreHardened) {
  for (const View& w : rendered_->Workloads()) {
    const std::string name = Str(w["metadata"]["name"]);
    const View pod = w["spec"]["template"]["spec"];
    const View pod_sc = pod["securityContext"];
    EXPECT_FALSE(True(pod["hostNetwork"]) || True(pod["hostPID"]) || True(pod["hostIPC"])) << name;
    for (const View& volume : pod["volumes"].Items()) {
      EXPECT_FALSE(volume["hostPath"]) << name << " volume " << Str(volume["name"]);
    }
    std::vector<View> containers = Containers(w);
    ASSERT_FALSE(containers.empty()) << name;
    for (const View& c : containers) {
      const std::string where = absl::StrCat(name, "/", Str(c["name"]));
      const View sc = c["securityContext"];
      auto effective = [&](const char* key) { return sc[key] ? sc[key] : pod_sc[key]; };
      EXPECT_TRUE(True(effective("runAsNonRoot"))) << where;
      EXPECT_EQ(Int(effective("runAsUser")), 65532) << where;
      EXPECT_TRUE(True(sc["readOnlyRootFilesystem"])) << where;
      EXPECT_TRUE(False(sc["allowPrivilegeEscalation"])) << where;
      EXPECT_FALSE(True(sc["privileged"])) << where;
      EXPECT_THAT(Strings(sc["capabilities"]["drop"]), Contains("ALL")) << where;
      EXPECT_FALSE(sc["capabilities"]["add"]) << where;
      EXPECT_EQ(Str(effective("seccompProfile")["type"]), "RuntimeDefault") << where;
      for (const char* section : {"requests", "limits"}) {
        for (const char* resource : {"cpu", "memory"}) {
          const std::string value = Str(c["resources"][section][resource]);
          EXPECT_GT(Quantity(value), 0) << where << " resources." << section << "." << resource;
        }
      }
      // Requests never above limits.
      for (const char* resource : {"cpu", "memory", "ephemeral-storage"}) {
        const std::string request = Str(c["resources"]["requests"][resource]);
        const std::string limit = Str(c["resources"]["limits"][resource]);
        if (!request.empty() && !limit.empty()) {
          EXPECT_LE(Quantity(request), Quantity(limit)) << where << " " << resource;
        }
      }
    }
  }
}

TEST_P(K8sManifestsTest, ProbesCheckTheRightPort) {
  for (const auto& [w, spec] : WorkloadsWithSpec()) {
    for (const View& c : Containers(w)) {
      const std::string where = absl::StrCat(Str(w["metadata"]["name"]), "/", Str(c["name"]));
      if (spec != nullptr) {
        EXPECT_EQ(NamedPort(c, "grpc"), spec->grpc) << where;
        EXPECT_EQ(NamedPort(c, "metrics"), spec->metrics) << where;
        for (const char* probe : {"readinessProbe", "livenessProbe"}) {
          ASSERT_TRUE(c[probe]["grpc"]) << where << " " << probe << " is not a gRPC probe";
          EXPECT_EQ(Int(c[probe]["grpc"]["port"]), spec->grpc) << where << " " << probe;
        }
        if (c["startupProbe"]) {
          EXPECT_EQ(Int(c["startupProbe"]["grpc"]["port"]), spec->grpc) << where;
        }
      } else {
        // The agent serves no gRPC: its probes read /metrics.
        EXPECT_EQ(NamedPort(c, "grpc"), -1) << where;
        EXPECT_EQ(NamedPort(c, "metrics"), kAgentMetricsPort) << where;
        for (const char* probe : {"readinessProbe", "livenessProbe"}) {
          const View get = c[probe]["httpGet"];
          ASSERT_TRUE(get) << where << " " << probe;
          EXPECT_EQ(Str(get["path"]), "/metrics") << where << " " << probe;
          EXPECT_TRUE(Str(get["port"]) == "metrics" || Int(get["port"]) == kAgentMetricsPort)
              << where << " " << probe;
        }
      }
    }
  }
}

void ExpectPrometheusAnnotations(const View& object, int port, const std::string& what) {
  std::map<std::string, std::string> annotations = StringMap(object["metadata"]["annotations"]);
  EXPECT_EQ(annotations["prometheus.io/scrape"], "true") << what;
  EXPECT_EQ(annotations["prometheus.io/port"], std::to_string(port)) << what;
  EXPECT_EQ(annotations["prometheus.io/path"], "/metrics") << what;
}

void ExpectLabels(const View& object, const std::string& what) {
  std::map<std::string, std::string> labels = StringMap(object["metadata"]["labels"]);
  EXPECT_EQ(labels["app.kubernetes.io/part-of"], "elfdeploy") << what;
  EXPECT_THAT(labels["app.kubernetes.io/name"], ::testing::StartsWith("elfdeploy-")) << what;
  EXPECT_FALSE(labels["app.kubernetes.io/component"].empty()) << what;
}

TEST_P(K8sManifestsTest, ServicesExposeGrpcAndMetricsForPrometheus) {
  std::vector<View> services = rendered_->OfKind("Service");
  if (GetParam().agent) {
    EXPECT_THAT(services, IsEmpty()) << "the agent accepts no connections";
  } else {
    EXPECT_EQ(services.size(), Services().size());
  }
  for (const View& service : services) {
    const std::string name = Str(service["metadata"]["name"]);
    const ServiceSpec* spec = nullptr;
    for (const ServiceSpec& s : Services()) {
      if (s.Name() == name) spec = &s;
    }
    ASSERT_NE(spec, nullptr) << "unexpected Service " << name;
    std::map<std::string, int> ports;
    for (const View& port : service["spec"]["ports"].Items()) {
      ports[Str(port["name"])] = Int(port["port"]);
    }
    EXPECT_EQ(ports, (std::map<std::string, int>{{"grpc", spec->grpc}, {"metrics", spec->metrics}}))
        << name;
    ExpectPrometheusAnnotations(service, spec->metrics, "Service " + name);
    // ServiceMonitor-compatible: selectable by the standard labels, port named "metrics".
    ExpectLabels(service, "Service " + name);
    const View workload = rendered_->Find("Deployment", name);
    ASSERT_TRUE(workload) << name;
    EXPECT_TRUE(Selects(StringMap(service["spec"]["selector"]),
                        StringMap(workload["spec"]["template"]["metadata"]["labels"])))
        << "Service " << name << " does not select its pods";
  }
  for (const auto& [w, spec] : WorkloadsWithSpec()) {
    const std::string name = Str(w["metadata"]["name"]);
    ExpectLabels(w, name);
    ExpectLabels(w["spec"]["template"], name + " pod template");
    ExpectPrometheusAnnotations(w["spec"]["template"], spec ? spec->metrics : kAgentMetricsPort,
                                name + " pod template");
  }
}

// Whether `rule` (one NetworkPolicy ingress entry) opens `port`.
bool OpensPort(const View& rule, int port) {
  for (const View& p : rule["ports"].Items()) {
    if (Int(p["port"]) == port) return true;
  }
  return false;
}

TEST_P(K8sManifestsTest, EveryWorkloadHasADisruptionBudgetAndANetworkPolicy) {
  for (const auto& [w, spec] : WorkloadsWithSpec()) {
    const std::string name = Str(w["metadata"]["name"]);
    const std::string ns = Str(w["metadata"]["namespace"]);
    const std::map<std::string, std::string> pod_labels =
        StringMap(w["spec"]["template"]["metadata"]["labels"]);
    int budgets = 0;
    for (const View& pdb : rendered_->OfKind("PodDisruptionBudget")) {
      if (Str(pdb["metadata"]["namespace"]) != ns ||
          !Selects(StringMap(pdb["spec"]["selector"]["matchLabels"]), pod_labels)) {
        continue;
      }
      ++budgets;
      EXPECT_NE(!pdb["spec"]["minAvailable"], !pdb["spec"]["maxUnavailable"])
          << "PDB of " << name << " needs exactly one of minAvailable and maxUnavailable";
      // A Deployment of several replicas keeps one up; minAvailable on a single replica would
      // block every node drain.
      const int replicas = w["spec"]["replicas"] ? Int(w["spec"]["replicas"]) : 1;
      if (pdb["spec"]["minAvailable"]) {
        EXPECT_LT(Int(pdb["spec"]["minAvailable"]), replicas) << name;
      }
      if (replicas > 1) {
        EXPECT_GE(Int(pdb["spec"]["minAvailable"]), 1) << name;
      }
    }
    EXPECT_EQ(budgets, 1) << "PodDisruptionBudgets selecting " << name;

    std::vector<View> policies;
    for (const View& policy : rendered_->OfKind("NetworkPolicy")) {
      if (Str(policy["metadata"]["namespace"]) == ns &&
          Selects(StringMap(policy["spec"]["podSelector"]["matchLabels"]), pod_labels)) {
        policies.push_back(policy);
      }
    }
    ASSERT_EQ(policies.size(), 1u) << "NetworkPolicies selecting " << name;
    const View policy = policies[0];
    EXPECT_THAT(Strings(policy["spec"]["policyTypes"]), Contains("Ingress")) << name;
    const int metrics = spec ? spec->metrics : kAgentMetricsPort;
    std::set<int> opened;
    for (const View& rule : policy["spec"]["ingress"].Items()) {
      for (const View& p : rule["ports"].Items()) opened.insert(Int(p["port"]));
      ASSERT_TRUE(rule["ports"]) << name << ": an ingress rule without ports opens every port";
      if (OpensPort(rule, metrics)) {
        // Metrics only from the monitoring namespace.
        ASSERT_EQ(rule["from"].size(), 1u) << name;
        EXPECT_EQ(
            StringMap(rule["from"].At(0)["namespaceSelector"]["matchLabels"]),
            (std::map<std::string, std::string>{{"kubernetes.io/metadata.name", "monitoring"}}))
            << name;
        EXPECT_FALSE(rule["from"].At(0)["podSelector"]) << name;
      }
      if (spec != nullptr && OpensPort(rule, spec->grpc)) {
        // Agents dial cluster-watcher from anywhere; every other gRPC port is restricted.
        if (spec->component == "cluster-watcher") {
          EXPECT_FALSE(rule["from"]) << name;
        } else {
          EXPECT_TRUE(rule["from"] && rule["from"].size() > 0) << name << " gRPC is open to all";
        }
      }
    }
    std::set<int> expected = {metrics};
    if (spec != nullptr) expected.insert(spec->grpc);
    EXPECT_EQ(opened, expected) << name;
  }
  if (!GetParam().agent) {
    // Anything not let in by a service's policy is denied.
    const View deny = rendered_->Find("NetworkPolicy", "elfdeploy-default-deny-ingress");
    ASSERT_TRUE(deny);
    EXPECT_EQ(deny["spec"]["podSelector"].size(), 0u);
    EXPECT_FALSE(deny["spec"]["ingress"]);
  }
}

// The volume mounted deepest above `path` in `container` (the mount that holds the file), or an
// undefined node.
View MountFor(const View& container, const std::string& path) {
  View best;
  size_t best_length = 0;
  for (const View& mount : container["volumeMounts"].Items()) {
    const std::string at = Str(mount["mountPath"]);
    if ((path == at || absl::StartsWith(path, at + "/")) && at.size() > best_length) {
      best = mount;
      best_length = at.size();
    }
  }
  return best;
}

// The pod volume named `name`, or an undefined node.
View Volume(const View& pod, const std::string& name) {
  for (const View& volume : pod["volumes"].Items()) {
    if (Str(volume["name"]) == name) return volume;
  }
  return View();
}

// Calls `fn(dotted_key, value)` for every scalar of a config document.
void ForEachScalar(const View& node, const std::string& prefix,
                   const std::function<void(const std::string&, const View&)>& fn) {
  if (node.IsMap()) {
    for (const auto& [key, value] : node.Entries()) {
      ForEachScalar(value, prefix.empty() ? key : prefix + "." + key, fn);
    }
  } else {
    fn(prefix, node);
  }
}

TEST_P(K8sManifestsTest, ConfigAgreesWithTheManifests) {
  for (const auto& [w, spec] : WorkloadsWithSpec()) {
    const std::string name = Str(w["metadata"]["name"]);
    const View pod = w["spec"]["template"]["spec"];
    const View c = pod["containers"].At(0);
    EXPECT_EQ(Strings(c["args"]),
              (std::vector<std::string>{"--config", "/etc/elfdeploy/config/config.yaml"}))
        << name;
    std::string config_map;
    for (const View& volume : pod["volumes"].Items()) {
      for (const View& mount : c["volumeMounts"].Items()) {
        if (Str(mount["name"]) == Str(volume["name"]) &&
            Str(mount["mountPath"]) == "/etc/elfdeploy/config" && volume["configMap"]) {
          config_map = Str(volume["configMap"]["name"]);
        }
      }
    }
    ASSERT_FALSE(config_map.empty()) << name << " mounts no ConfigMap at /etc/elfdeploy/config";
    const View cm = rendered_->Find("ConfigMap", config_map);
    ASSERT_TRUE(cm) << name << ": ConfigMap " << config_map << " is not rendered";
    View config;
    try {
      config = View(YAML::Load(Str(cm["data"]["config.yaml"])));
    } catch (const YAML::Exception& e) {
      FAIL() << name << " config.yaml: " << e.what();
    }
    ASSERT_TRUE(config.IsMap()) << name;
    const int metrics = spec ? spec->metrics : kAgentMetricsPort;
    EXPECT_EQ(Str(config["server"]["metrics_addr"]), absl::StrCat("0.0.0.0:", metrics)) << name;
    if (spec != nullptr) {
      EXPECT_EQ(Str(config["server"]["grpc_addr"]), absl::StrCat("0.0.0.0:", spec->grpc)) << name;
    } else {
      EXPECT_FALSE(Str(config["agent"]["watcher_addr"]).empty());
      EXPECT_GT(AddrPort(Str(config["agent"]["watcher_addr"])), 0);
    }
    ForEachScalar(config, "", [&](const std::string& key, const View& value) {
      const std::string v = Str(value);
      const std::string leaf = key.substr(key.rfind('.') + 1);
      // Peers by Service DNS name, on their gRPC port.
      if (absl::EndsWith(key, "_addr") && !absl::StartsWith(key, "server.") &&
          absl::EndsWith(v.substr(0, v.rfind(':')), ".elfdeploy.svc")) {
        const std::string service = v.substr(0, v.find('.'));
        bool found = false;
        for (const ServiceSpec& s : Services()) {
          if (s.Name() == service && s.grpc == AddrPort(v)) found = true;
        }
        EXPECT_TRUE(found) << name << " " << key << ": " << v;
        if (!GetParam().agent) {
          EXPECT_TRUE(rendered_->Find("Service", service)) << name << " " << key << ": " << v;
        }
      } else if (absl::EndsWith(key, "_addr") && !absl::StartsWith(key, "server.")) {
        EXPECT_TRUE(GetParam().agent) << name << " " << key << " is not a Service name: " << v;
      }
      // The root file system is read-only: data and cache dirs are on writable emptyDirs or
      // PersistentVolumeClaims; credential files come from Secret volumes.
      if (absl::EndsWith(key, "_dir")) {
        const View mount = MountFor(c, v);
        ASSERT_TRUE(mount) << name << " " << key << ": nothing mounted at " << v;
        EXPECT_FALSE(True(mount["readOnly"])) << name << " " << key << ": " << v;
        const View volume = Volume(pod, Str(mount["name"]));
        EXPECT_TRUE(volume["emptyDir"] || volume["persistentVolumeClaim"])
            << name << " " << key << ": " << v;
      }
      if (absl::EndsWith(key, "_file") || key == "git.ssh_key") {
        const View mount = MountFor(c, v);
        ASSERT_TRUE(mount) << name << " " << key << ": nothing mounted at " << v;
        EXPECT_TRUE(Volume(pod, Str(mount["name"]))["secret"]) << name << " " << key << ": " << v;
      }
      // Secret values never live in a ConfigMap.
      if (!absl::EndsWith(leaf, "_file") && leaf != "ssh_key") {
        static const std::regex kSecretKey("password|passphrase|token|secret", std::regex::icase);
        EXPECT_FALSE(std::regex_search(leaf, kSecretKey)) << name << " config sets " << key;
      }
    });
  }
}

TEST_P(K8sManifestsTest, VolumesAndSecretsResolve) {
  std::set<std::string> secrets;
  for (const View& w : rendered_->Workloads()) {
    const std::string name = Str(w["metadata"]["name"]);
    const View pod = w["spec"]["template"]["spec"];
    std::set<std::string> volumes;
    for (const View& volume : pod["volumes"].Items()) {
      volumes.insert(Str(volume["name"]));
      if (volume["configMap"]) {
        EXPECT_TRUE(rendered_->Find("ConfigMap", Str(volume["configMap"]["name"])))
            << name << " volume " << Str(volume["name"]);
      }
      if (volume["persistentVolumeClaim"]) {
        EXPECT_TRUE(rendered_->Find("PersistentVolumeClaim",
                                    Str(volume["persistentVolumeClaim"]["claimName"])))
            << name << " volume " << Str(volume["name"]);
      }
      if (volume["secret"]) secrets.insert(Str(volume["secret"]["secretName"]));
    }
    for (const View& c : Containers(w)) {
      for (const View& mount : c["volumeMounts"].Items()) {
        EXPECT_TRUE(volumes.count(Str(mount["name"]))) << name << " mounts " << Str(mount["name"]);
      }
      for (const View& env : c["env"].Items()) {
        if (env["valueFrom"]["secretKeyRef"]) {
          secrets.insert(Str(env["valueFrom"]["secretKeyRef"]["name"]));
        }
        static const std::regex kSecretName("PASSWORD|PASSPHRASE|TOKEN|SECRET|_KEY$");
        if (std::regex_search(Str(env["name"]), kSecretName)) {
          EXPECT_FALSE(env["value"]) << name << " sets " << Str(env["name"]) << " literally";
        }
      }
      for (const View& from : c["envFrom"].Items()) {
        if (from["secretRef"]) secrets.insert(Str(from["secretRef"]["name"]));
      }
    }
  }
  // Every Secret is one the user creates by a name README documents.
  const std::string readme = ReadFile(K8sDir() / "README.md");
  for (const std::string& secret : secrets) {
    EXPECT_TRUE(DocumentedSecrets().count(secret)) << "undocumented Secret " << secret;
    EXPECT_TRUE(absl::StrContains(readme, "create secret") && absl::StrContains(readme, secret))
        << "deploy/k8s/README.md does not tell how to create " << secret;
  }
  if (GetParam().agent) {
    EXPECT_TRUE(secrets.count("elfdeploy-agent-token"));
  } else {
    EXPECT_TRUE(secrets.count("elfdeploy-watcher-agent-tokens"));
    EXPECT_TRUE(secrets.count("elfdeploy-registry-auth"));
    EXPECT_TRUE(secrets.count("elfdeploy-git-credentials"));
  }
}

TEST_P(K8sManifestsTest, StatefulServicesRunOneReplica) {
  if (GetParam().agent) {
    // The agent keeps its unacknowledged events in memory only; one agent per cluster.
    EXPECT_THAT(rendered_->OfKind("PersistentVolumeClaim"), IsEmpty());
    const View agent = rendered_->Find("Deployment", "elfdeploy-agent");
    ASSERT_TRUE(agent);
    EXPECT_EQ(Int(agent["spec"]["replicas"]), 1);
    EXPECT_EQ(Str(agent["spec"]["strategy"]["type"]), "Recreate");
    return;
  }
  for (const std::string component : {"orchestrator", "cluster-watcher"}) {
    const View w = rendered_->Find("Deployment", "elfdeploy-" + component);
    ASSERT_TRUE(w) << component;
    EXPECT_EQ(Int(w["spec"]["replicas"]), 1) << component;
    EXPECT_EQ(Str(w["spec"]["strategy"]["type"]), "Recreate") << component;
    std::string claim;
    for (const View& volume : w["spec"]["template"]["spec"]["volumes"].Items()) {
      if (Str(volume["name"]) == "data") claim = Str(volume["persistentVolumeClaim"]["claimName"]);
    }
    const View pvc = rendered_->Find("PersistentVolumeClaim", claim);
    ASSERT_TRUE(pvc) << component << " has no data PersistentVolumeClaim";
    EXPECT_THAT(Strings(pvc["spec"]["accessModes"]), Contains("ReadWriteOnce"));
  }
  // Service accounts of the five services carry no API token: they do not call Kubernetes.
  for (const View& w : rendered_->Workloads()) {
    EXPECT_TRUE(False(w["spec"]["template"]["spec"]["automountServiceAccountToken"]))
        << Str(w["metadata"]["name"]);
  }
}

TEST_P(K8sManifestsTest, NoSecretValuesInTheOutput) {
  for (const View& doc : rendered_->docs) {
    EXPECT_NE(Str(doc["kind"]), "Secret") << "Secret " << Str(doc["metadata"]["name"])
                                          << " is rendered; Secrets are created by the user";
    EXPECT_FALSE(doc["data"] && Str(doc["kind"]) != "ConfigMap")
        << Str(doc["kind"]) << " " << Str(doc["metadata"]["name"]) << " carries data";
  }
  // Strings that look like credentials.
  static const std::vector<std::pair<std::string, std::regex>>* kPatterns =
      new std::vector<std::pair<std::string, std::regex>>{
          {"PEM block", std::regex("-----BEGIN [A-Z ]+-----")},
          {"AWS access key", std::regex("AKIA[0-9A-Z]{16}")},
          {"GitHub token", std::regex("gh[pousr]_[A-Za-z0-9]{20,}")},
          {"GitLab token", std::regex("glpat-[A-Za-z0-9_-]{20}")},
          {"Slack token", std::regex("xox[abpr]-[A-Za-z0-9-]+")},
          {"JWT", std::regex("eyJ[A-Za-z0-9_-]{10,}\\.[A-Za-z0-9_-]{10,}")},
          {"docker auth", std::regex("\"auths?\"\\s*:")},
          {"bearer token", std::regex("[Bb]earer [A-Za-z0-9._~+/-]{8,}")},
          {"password in a URL", std::regex("://[^/\\s:@]+:[^/\\s@]+@")},
      };
  for (const auto& [what, pattern] : *kPatterns) {
    std::smatch match;
    EXPECT_FALSE(std::regex_search(rendered_->text, match, pattern))
        << what << " in the output: " << match.str();
  }
  // A YAML key of a secret with a value, in a manifest or in a config a ConfigMap holds.
  static const std::regex* kAssignment = new std::regex(
      "^\\s*(- )?\"?([a-z_]*_)?(password|passphrase|token|secret|api_?key)\"?\\s*:\\s*\\S",
      std::regex::icase);
  for (absl::string_view line : absl::StrSplit(rendered_->text, '\n')) {
    EXPECT_FALSE(std::regex_search(std::string(line), *kAssignment)) << "secret value: " << line;
  }
  // Long random-looking words (base64 or hex keys): upper case, lower case and digits mixed.
  for (absl::string_view word : absl::StrSplit(
           rendered_->text, absl::ByAnyChar(" \t\n\"',:;()[]{}<>@#.|\\"), absl::SkipEmpty())) {
    if (word.size() < 32) continue;
    bool upper = false, lower = false, digit = false;
    for (char ch : word) {
      upper |= absl::ascii_isupper(static_cast<unsigned char>(ch));
      lower |= absl::ascii_islower(static_cast<unsigned char>(ch));
      digit |= absl::ascii_isdigit(static_cast<unsigned char>(ch));
    }
    EXPECT_FALSE(upper && lower && digit) << "looks like a key: " << word;
  }
}

// ClusterRole rules as (apiGroup, resource, resourceNames, verb) tuples.
using Grant = std::tuple<std::string, std::string, std::string, std::string>;

std::set<Grant> Grants(const View& role) {
  std::set<Grant> out;
  for (const View& rule : role["rules"].Items()) {
    const std::string names = absl::StrJoin(Strings(rule["resourceNames"]), ",");
    for (const std::string& group : Strings(rule["apiGroups"])) {
      for (const std::string& resource : Strings(rule["resources"])) {
        for (const std::string& verb : Strings(rule["verbs"])) {
          out.emplace(group, resource, names, verb);
        }
      }
    }
  }
  return out;
}

TEST_P(K8sManifestsTest, RbacIsExactAndHasNoWildcard) {
  std::vector<View> roles = rendered_->OfKind("ClusterRole");
  for (const View& role : rendered_->OfKind("Role")) roles.push_back(role);
  for (const View& role : roles) {
    for (const View& rule : role["rules"].Items()) {
      for (const char* key : {"apiGroups", "resources", "verbs", "resourceNames"}) {
        EXPECT_THAT(Strings(rule[key]), ::testing::Not(Contains("*")))
            << Str(role["metadata"]["name"]) << " " << key;
      }
      EXPECT_FALSE(rule["nonResourceURLs"]) << Str(role["metadata"]["name"]);
    }
    EXPECT_FALSE(role["aggregationRule"]) << Str(role["metadata"]["name"]);
  }
  if (!GetParam().agent) {
    EXPECT_THAT(roles, IsEmpty()) << "the five services do not call the Kubernetes API";
    EXPECT_THAT(rendered_->OfKind("ClusterRoleBinding"), IsEmpty());
    EXPECT_THAT(rendered_->OfKind("RoleBinding"), IsEmpty());
    return;
  }
  ASSERT_EQ(roles.size(), 1u);
  EXPECT_EQ(Str(roles[0]["metadata"]["name"]), "elfdeploy-agent");
  // What agent/agent.cc (informers) and agent/requests.cc (GetLogs, Refresh, ApplyApplication,
  // EnsureImagePullSecret) call: GET, list, watch, POST and merge PATCH; never PUT or DELETE.
  const std::set<Grant> expected = {
      {"", "pods", "", "get"},
      {"", "pods", "", "list"},
      {"", "pods", "", "watch"},
      {"", "pods/log", "", "get"},
      {"", "events", "", "get"},
      {"", "events", "", "list"},
      {"", "events", "", "watch"},
      {"apps", "deployments", "", "get"},
      {"apps", "deployments", "", "list"},
      {"apps", "deployments", "", "watch"},
      {"argoproj.io", "applications", "", "get"},
      {"argoproj.io", "applications", "", "list"},
      {"argoproj.io", "applications", "", "watch"},
      {"argoproj.io", "applications", "", "create"},
      {"argoproj.io", "applications", "", "patch"},
      {"", "secrets", "", "create"},
      {"", "secrets", "regcred", "get"},
      {"", "secrets", "regcred", "patch"},
      {"", "namespaces", "", "get"},
      {"", "namespaces", "", "create"},
  };
  EXPECT_EQ(Grants(roles[0]), expected);

  std::vector<View> bindings = rendered_->OfKind("ClusterRoleBinding");
  ASSERT_EQ(bindings.size(), 1u);
  EXPECT_EQ(Str(bindings[0]["roleRef"]["kind"]), "ClusterRole");
  EXPECT_EQ(Str(bindings[0]["roleRef"]["name"]), "elfdeploy-agent");
  ASSERT_EQ(bindings[0]["subjects"].size(), 1u);
  EXPECT_EQ(Str(bindings[0]["subjects"].At(0)["kind"]), "ServiceAccount");
  EXPECT_EQ(Str(bindings[0]["subjects"].At(0)["name"]), "elfdeploy-agent");
  EXPECT_EQ(Str(bindings[0]["subjects"].At(0)["namespace"]), "argocd");
  const View agent = rendered_->Find("Deployment", "elfdeploy-agent");
  ASSERT_TRUE(agent);
  EXPECT_EQ(Str(agent["spec"]["template"]["spec"]["serviceAccountName"]), "elfdeploy-agent");
  EXPECT_TRUE(rendered_->Find("ServiceAccount", "elfdeploy-agent"));
  EXPECT_EQ(Int(agent["spec"]["replicas"]), 1);
}

INSTANTIATE_TEST_SUITE_P(Kustomizations, K8sManifestsTest, ::testing::ValuesIn(Targets()),
                         [](const ::testing::TestParamInfo<Target>& info) {
                           std::string name;
                           for (char c : info.param.dir) {
                             if (absl::ascii_isalnum(static_cast<unsigned char>(c))) name += c;
                           }
                           return name;
                         });

// ---------------------------------------------------------------------------------------------
// Overlay specifics
// ---------------------------------------------------------------------------------------------

class OverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveKubectl()) GTEST_SKIP() << "kubectl is not installed at " << kKubectl;
  }
};

std::string Image(const View& workload) {
  return Str(workload["spec"]["template"]["spec"]["containers"].At(0)["image"]);
}

TEST_F(OverlayTest, DevRunsOneSmallReplicaOfDevImages) {
  const Rendered& dev = Render("overlays/dev");
  ASSERT_EQ(dev.exit_code, 0) << dev.text;
  const Rendered& base = Render("base");
  ASSERT_EQ(base.exit_code, 0) << base.text;
  for (const ServiceSpec& s : Services()) {
    const View w = dev.Find("Deployment", s.Name());
    ASSERT_TRUE(w) << s.Name();
    EXPECT_EQ(Int(w["spec"]["replicas"]), 1) << s.Name();
    EXPECT_EQ(Image(w), s.Name() + ":dev");
    const View b = base.Find("Deployment", s.Name());
    auto memory_limit = [](const View& x) {
      return Quantity(
          Str(x["spec"]["template"]["spec"]["containers"].At(0)["resources"]["limits"]["memory"]));
    };
    EXPECT_LE(memory_limit(w), memory_limit(b)) << s.Name();
  }
}

TEST_F(OverlayTest, ProductionPinsImagesAndKeepsReplicasAvailable) {
  const Rendered& prod = Render("overlays/production");
  ASSERT_EQ(prod.exit_code, 0) << prod.text;
  const Rendered& dev = Render("overlays/dev");
  ASSERT_EQ(dev.exit_code, 0) << dev.text;
  int scaled = 0;
  for (const ServiceSpec& s : Services()) {
    const View w = prod.Find("Deployment", s.Name());
    ASSERT_TRUE(w) << s.Name();
    // Registry and tag from kustomize `images:`: a registry host, a path, a release tag.
    const std::string image = Image(w);
    EXPECT_THAT(image, ::testing::MatchesRegex("[a-z0-9.-]+\\.[a-z]+(:[0-9]+)?/.+/" + s.Name() +
                                               ":[0-9]+\\.[0-9]+\\.[0-9]+"))
        << s.Name();
    const View d = dev.Find("Deployment", s.Name());
    for (const char* section : {"requests", "limits"}) {
      for (const char* resource : {"cpu", "memory"}) {
        auto get = [&](const View& x) {
          return Quantity(Str(
              x["spec"]["template"]["spec"]["containers"].At(0)["resources"][section][resource]));
        };
        EXPECT_GT(get(w), get(d)) << s.Name() << " " << section << "." << resource;
      }
    }
    if (Int(w["spec"]["replicas"]) > 1) {
      ++scaled;
      const View pdb = prod.Find("PodDisruptionBudget", s.Name());
      ASSERT_TRUE(pdb) << s.Name();
      EXPECT_EQ(Int(pdb["spec"]["minAvailable"]), 1) << s.Name();
    }
  }
  EXPECT_GE(scaled, 1) << "production scales the stateless services";
}

TEST_F(OverlayTest, SameClusterAgentDialsTheWatcherService) {
  const Rendered& r = Render("overlays/argocd-agent");
  ASSERT_EQ(r.exit_code, 0) << r.text;
  const std::vector<View> maps = r.OfKind("ConfigMap");
  ASSERT_EQ(maps.size(), 1u);
  const View config(YAML::Load(Str(maps[0]["data"]["config.yaml"])));
  EXPECT_EQ(Str(config["agent"]["watcher_addr"]), "elfdeploy-cluster-watcher.elfdeploy.svc:7404");
  // The agent base dials a remote watcher through TLS with a pinned CA.
  const Rendered& remote = Render("agent");
  ASSERT_EQ(remote.exit_code, 0) << remote.text;
  const View remote_config(
      YAML::Load(Str(remote.OfKind("ConfigMap").at(0)["data"]["config.yaml"])));
  EXPECT_FALSE(True(remote_config["agent"]["insecure"]));
  EXPECT_FALSE(Str(remote_config["agent"]["ca_file"]).empty());
}

}  // namespace
}  // namespace elfdeploy
