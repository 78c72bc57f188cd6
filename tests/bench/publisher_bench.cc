// Times seed-like apps (teams and mcps, each a Deployment YAML with comments and the image
// elf-automations/<name>:latest) published into an empty GitOps repository in one commit, then one
// app's digest changed and published again (--changes times), by the manifest publisher (one
// Publish RPC to the running service) and by the seed's way: a bash script that writes the same
// files (sed rewrites the image line, printf and cat write the Service, the kustomizations and the
// Applications) and runs `git add`, `git commit` and `git push` with the git CLI. Prints the
// medians, the speed-ups and whether they meet the targets of issue 5 item 9 (>= 20x the script's
// time for the 500-app publish, >= 5x for the one-app change). Both tools push over git:// to fresh
// bare repositories of the same git daemon and keep their state between the publishes: the script
// its working copy (cloned before, untimed), the publisher its cache. Exits non-zero only when a
// publish fails or the remote does not hold what it should.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <linux/magic.h>
#include <spawn.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "elfdeploy/v1/manifest_publisher.grpc.pb.h"
#include "tests/bench/bench_util.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

ABSL_FLAG(int, apps, 500, "apps in the GitOps tree (3 of 5 in group teams, the rest in mcps)");
ABSL_FLAG(std::string, service_log, "",
          "append the publisher service's log (ELFDEPLOY_LOG_LEVEL applies) to this file");
ABSL_FLAG(int, repeat, 3,
          "repetitions, each from an empty repository: one full publish per tool, then --changes "
          "one-app changes; the table shows medians");
ABSL_FLAG(int, changes, 5,
          "one-app changes per tool and repetition, each a new digest of the same app");
ABSL_FLAG(std::string, work_dir, "",
          "directory for the git daemon's repositories, the publisher's cache, the script's "
          "working copy and every temporary file (TMPDIR); empty: /dev/shm when it is a writable "
          "tmpfs, else $TMPDIR or /tmp");

namespace elfdeploy::testing {
namespace {

constexpr char kPrefix[] = "elf-automations";
constexpr char kNamespace[] = "elf-automations";
constexpr char kRegistry[] = "127.0.0.1:5000";
constexpr char kBranch[] = "main";
constexpr double kFullTarget = 20;
constexpr double kOneAppTarget = 5;

constexpr absl::string_view kTeamWords[] = {
    "executive", "marketing", "sales",   "engineering", "research", "support",
    "finance",   "legal",     "product", "design",      "strategy", "security",
    "data",      "growth",    "content", "operations",  "quality",  "partners",
};
constexpr absl::string_view kMcpWords[] = {
    "github", "slack",  "postgres", "redis",   "jira",       "notion", "drive",
    "search", "memory", "browser",  "weather", "filesystem", "maps",   "calendar",
};

constexpr char kDeploymentTemplate[] = R"(# $NAME: $WHAT, made by make-deployable-$KIND
# Generated from the $KIND spec; edit the spec, not this file.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $NAME
  labels:
    app: $NAME
    elf-automations/group: $GROUP
spec:
  replicas: 1
  selector:
    matchLabels:
      app: $NAME
  template:
    metadata:
      labels:
        app: $NAME
    spec:
      containers:
        - name: $NAME
          image: elf-automations/$NAME:latest
          imagePullPolicy: IfNotPresent
          ports:
            - containerPort: $PORT
          env:
            - name: ELF_NAME
              value: "$NAME"
            - name: LOG_LEVEL
              value: "INFO"
          resources:
            requests:
              cpu: 100m
              memory: 256Mi
            limits:
              cpu: 500m
              memory: 512Mi
          livenessProbe:
            httpGet:
              path: /health
              port: $PORT
            initialDelaySeconds: 10
)";

// Scenario 1: the seed's way for every app in the list, from scratch. Arguments: working copy,
// source dir (<group>/<app>/deployment.yaml), app list ("group name image port" lines), repository
// URL for the Applications, commit message.
constexpr char kFullScript[] = R"(set -euo pipefail
wc=$1 src=$2 list=$3 repo_url=$4 message=$5
cd "$wc"
root=elf-automations
while read -r group name image port; do
  dir=$root/manifests/$group/$name
  mkdir -p "$dir"
  sed "s#image: elf-automations/$name:latest#image: $image#" "$src/$group/$name/deployment.yaml" >"$dir/deployment.yaml"
  printf 'apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: elf-automations\n  labels:\n    app: %s\nspec:\n  selector:\n    app: %s\n  ports:\n    - name: port-%s\n      port: %s\n      targetPort: %s\n      protocol: TCP\n' \
    "$name" "$name" "$name" "$port" "$port" "$port" >"$dir/service.yaml"
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\n  - service.yaml\n' >"$dir/kustomization.yaml"
done <"$list"
mkdir -p "$root/applications"
for group_dir in "$root"/manifests/*/; do
  group_dir=${group_dir%/}
  group=${group_dir##*/}
  {
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n'
    for app_dir in "$group_dir"/*/; do
      app_dir=${app_dir%/}
      printf '  - %s\n' "${app_dir##*/}"
    done
  } >"$group_dir/kustomization.yaml"
  cat >"$root/applications/$group-app.yaml" <<EOF
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: elf-$group
  namespace: argocd
spec:
  project: default
  source:
    repoURL: $repo_url
    targetRevision: main
    path: $group_dir
  destination:
    server: https://kubernetes.default.svc
    namespace: elf-automations
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
    syncOptions:
      - CreateNamespace=true
EOF
done
git add -A
git commit -qm "$message"
git push -q origin main
)";

// Scenario 2: one app's image. Arguments: working copy, source dir, group, app, image, message.
constexpr char kOneScript[] = R"(set -euo pipefail
wc=$1 src=$2 group=$3 name=$4 image=$5 message=$6
cd "$wc"
sed "s#image: elf-automations/$name:latest#image: $image#" "$src/$group/$name/deployment.yaml" >"elf-automations/manifests/$group/$name/deployment.yaml"
git add -A
git commit -qm "$message"
git push -q origin main
)";

// splitmix64: the same stream on every platform and standard library.
uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

struct App {
  std::string name;
  std::string group;
  int port = 0;
  std::string deployment;  // the app's k8s/deployment.yaml

  std::string Dir() const { return absl::StrCat(kPrefix, "/manifests/", group, "/", name); }
  std::string DeploymentPath() const { return absl::StrCat(Dir(), "/deployment.yaml"); }

  // The digest of the app's image in `generation`: 64 hex digits, fixed per name and generation.
  std::string Digest(int generation) const {
    uint64_t state = 0xcbf29ce484222325;
    for (char c : name) state = (state ^ static_cast<unsigned char>(c)) * 0x100000001b3;
    state ^= static_cast<uint64_t>(generation);
    std::string hex;
    for (int i = 0; i < 4; ++i) absl::StrAppend(&hex, absl::Hex(SplitMix(state), absl::kZeroPad16));
    return hex;
  }

  std::string Image(int generation) const {
    return absl::StrCat(kRegistry, "/elf-automations/", name, ":bench@sha256:", Digest(generation));
  }
};

std::vector<App> SeedApps(int count) {
  std::vector<App> apps;
  for (int i = 0; i < count; ++i) {
    bool team = i % 5 < 3;
    App app;
    app.group = team ? "teams" : "mcps";
    app.name = team ? absl::StrFormat("%s-team-%03d", kTeamWords[i % std::size(kTeamWords)], i)
                    : absl::StrFormat("%s-mcp-%03d", kMcpWords[i % std::size(kMcpWords)], i);
    app.port = team ? 8090 : 3000 + i % 10;
    app.deployment =
        absl::StrReplaceAll(kDeploymentTemplate, {{"$NAME", app.name},
                                                  {"$GROUP", app.group},
                                                  {"$WHAT", team ? "an AI team" : "an MCP server"},
                                                  {"$KIND", team ? "team" : "mcp"},
                                                  {"$PORT", absl::StrCat(app.port)}});
    apps.push_back(std::move(app));
  }
  return apps;
}

// `git <args>` against the fixture; its output, or an error on a non-zero exit.
absl::StatusOr<std::string> Git(const GitDaemonFixture& git, const std::vector<std::string>& args,
                                const std::string& cwd = "") {
  absl::StatusOr<CommandResult> result = git.Git(args, cwd);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("git ", absl::StrJoin(args, " "), ": exit code ",
                                            result->exit_code, "\n", Tail(result->output)));
  }
  return result->output;
}

absl::StatusOr<std::string> Version(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> result = RunCommand({.argv = argv});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::FailedPreconditionError(absl::StrCat(absl::StrJoin(argv, " "), ": exit code ",
                                                      result->exit_code, "\n", result->output));
  }
  return std::string(absl::StripAsciiWhitespace(result->output));
}

struct Scenario {
  std::string name;
  double target = 0;
  std::vector<double> publisher = {};
  std::vector<double> baseline = {};
};

// One repetition's state of each tool: its remote and what it keeps between the scenarios.
struct Repetition {
  int rep = 0;
  std::optional<TempDir> dir;
  std::string publisher_repo;
  std::string baseline_repo;
  std::unique_ptr<ServiceProcess> service;
  std::unique_ptr<v1::ManifestPublisherService::Stub> stub;
  std::string publisher_head;
};

class Bench {
 public:
  Bench(int apps, int repeat, int changes) : app_count_(apps), repeat_(repeat), changes_(changes) {}

  absl::Status Setup() {
    absl::StatusOr<std::string> git = Version({"git", "--version"});
    if (!git.ok()) return git.status();
    absl::StatusOr<std::string> bash = Version({"bash", "-c", "echo ${BASH_VERSION}"});
    if (!bash.ok()) return bash.status();
    absl::StatusOr<TempDir> dir = TempDir::Create("publisher-bench-");
    if (!dir.ok()) return dir.status();
    dir_.emplace(*std::move(dir));
    apps_ = SeedApps(app_count_);
    int64_t yaml_bytes = 0;
    std::string list;
    for (const App& app : apps_) {
      yaml_bytes += static_cast<int64_t>(app.deployment.size());
      ++group_sizes_[app.group];
      absl::StrAppend(&list, app.group, " ", app.name, " ", app.Image(0), " ", app.port, "\n");
      if (absl::Status s = WriteFile(
              dir_->Join(absl::StrCat("src/", app.group, "/", app.name, "/deployment.yaml")),
              app.deployment);
          !s.ok()) {
        return s;
      }
    }
    const std::pair<absl::string_view, absl::string_view> files[] = {
        {"apps.txt", list}, {"full.sh", kFullScript}, {"one.sh", kOneScript}};
    for (const auto& [name, content] : files) {
      if (absl::Status s = WriteFile(dir_->Join(name), content); !s.ok()) return s;
    }
    absl::StatusOr<std::unique_ptr<GitDaemonFixture>> daemon = GitDaemonFixture::Start();
    if (!daemon.ok()) return daemon.status();
    git_ = *std::move(daemon);
    changed_ = &apps_[apps_.size() / 2];

    std::vector<std::string> groups;
    for (const auto& [group, size] : group_sizes_) groups.push_back(absl::StrCat(size, " ", group));
    std::printf(
        "apps: %zu (%s), each a commented Deployment YAML with image elf-automations/<name>:latest "
        "(%lld bytes in all); one-app change: %s\n",
        apps_.size(), absl::StrJoin(groups, ", ").c_str(), static_cast<long long>(yaml_bytes),
        changed_->name.c_str());
    std::printf(
        "publisher: %s, default config but publisher.cache_dir; one service and cache per "
        "repetition, kept between its publishes; one Publish RPC per publish\n",
        BinaryPath("elfdeploy-manifest-publisher").c_str());
    std::printf(
        "baseline: bash %s, %s; a working copy cloned per repetition (untimed) and kept; "
        "scripts full.sh and one.sh in %s (kept with ELFDEPLOY_KEEP_TEMP=1)\n",
        bash->c_str(), git->c_str(), dir_->path().c_str());
    std::printf(
        "remote: git daemon at 127.0.0.1:%d, a fresh bare repository per tool and "
        "repetition\n\n",
        git_->port());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::Status Run() {
    scenarios_ = {{.name = absl::StrCat(apps_.size(), "-app publish"), .target = kFullTarget},
                  {.name = "one-app change", .target = kOneAppTarget}};
    for (int rep = 0; rep < repeat_; ++rep) {
      absl::StatusOr<Repetition> state = Prepare(rep);
      if (!state.ok()) return state.status();
      for (int step = 0; step <= changes_; ++step) {
        for (int turn = 0; turn < 2; ++turn) {
          bool publisher = (turn + rep + step) % 2 == 0;
          absl::Status s =
              publisher ? MeasurePublisher(*state, step) : MeasureBaseline(*state, step);
          if (!s.ok()) return s;
        }
        if (step == 0) {
          if (absl::Status s = CompareTrees(*state); !s.ok()) return s;
        }
      }
      if (rep == repeat_ - 1) {
        if (absl::Status s = CheckMovedHead(*state); !s.ok()) return s;
      }
      if (std::string path = absl::GetFlag(FLAGS_service_log); !path.empty()) {
        std::FILE* f = std::fopen(path.c_str(), "a");
        if (f == nullptr) return absl::InternalError(absl::StrCat("cannot open ", path));
        std::string log = state->service->Log();
        std::fwrite(log.data(), 1, log.size(), f);
        std::fclose(f);
      }
    }
    return absl::OkStatus();
  }

  void PrintTable() const {
    std::printf("\n%-18s %12s %12s %9s %8s %6s\n", "scenario", "publisher", "baseline", "speed-up",
                "target", "result");
    for (const Scenario& s : scenarios_) {
      double ours = Median(s.publisher);
      double theirs = Median(s.baseline);
      double speedup = theirs / ours;
      std::printf("%-18s %10.3f s %10.3f s %8.1fx %8s %6s\n", s.name.c_str(), ours, theirs, speedup,
                  absl::StrFormat(">= %.0fx", s.target).c_str(),
                  speedup >= s.target ? "PASS" : "MISS");
    }
    std::printf(
        "\nseconds: median of %d full publishes and of %d one-app changes (%d per repetition); "
        "publisher: Publish RPC round trip (service running, cache kept from the %d-app "
        "publish); baseline: bash script, spawn to exit (working copy kept); each after sync(2), "
        "which tool goes first alternating\n"
        "speed-up: baseline / publisher; every publish checked on the remote: one more commit "
        "(git rev-list --count), the new digest in the changed deployment.yaml (git show), the "
        "one-app change touching only that file, and both tools' trees holding the same paths\n",
        repeat_, repeat_ * changes_, changes_, static_cast<int>(apps_.size()));
  }

 private:
  // Step 0 publishes every app; step k > 0 is the k-th one-app change (image generation k).
  static int ScenarioOf(int step) { return step == 0 ? 0 : 1; }

  std::vector<const App*> StepApps(int step) const {
    if (step > 0) return {changed_};
    std::vector<const App*> apps;
    for (const App& app : apps_) apps.push_back(&app);
    return apps;
  }

  std::string Message(int step) const {
    return step == 0 ? absl::StrCat("Deploy ", apps_.size(), " apps")
                     : absl::StrCat("Deploy ", changed_->name, " (change ", step, ")");
  }

  absl::StatusOr<Repetition> Prepare(int rep) {
    Repetition state;
    state.rep = rep;
    absl::StatusOr<TempDir> dir = TempDir::Create("publisher-bench-rep-");
    if (!dir.ok()) return dir.status();
    state.dir.emplace(*std::move(dir));
    state.publisher_repo = absl::StrCat("publisher-", rep);
    state.baseline_repo = absl::StrCat("baseline-", rep);
    for (const std::string& name : {state.publisher_repo, state.baseline_repo}) {
      if (absl::StatusOr<std::string> path = git_->CreateBareRepo(name); !path.ok()) {
        return path.status();
      }
    }
    std::string wc = state.dir->Join("wc");
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"clone", "-q", git_->url(state.baseline_repo), wc},
          {"-C", wc, "symbolic-ref", "HEAD", "refs/heads/main"},
          {"-C", wc, "config", "user.name", "elf-automations seed"},
          {"-C", wc, "config", "user.email", "seed@elf-automations.invalid"}}) {
      if (absl::StatusOr<std::string> out = Git(*git_, args); !out.ok()) return out.status();
    }
    absl::StatusOr<std::unique_ptr<ServiceProcess>> service = ServiceProcess::Start(
        {.binary = "elfdeploy-manifest-publisher",
         .env = {{"ELFDEPLOY_PUBLISHER_CACHE_DIR", state.dir->Join("cache")}}});
    if (!service.ok()) return service.status();
    state.service = *std::move(service);
    auto channel =
        grpc::CreateChannel(state.service->grpc_addr(), grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError(absl::StrCat("no channel to ", state.service->grpc_addr()));
    }
    state.stub = v1::ManifestPublisherService::NewStub(channel);
    return state;
  }

  v1::PublishRequest Request(const std::vector<const App*>& apps, int generation,
                             const std::string& url, const std::string& correlation_id) const {
    v1::PublishRequest request;
    for (const App* app : apps) {
      v1::AppManifest* out = request.add_apps();
      out->set_name(app->name);
      out->set_group(app->group);
      out->set_image(app->Image(generation));
      out->set_deployment_yaml(app->deployment);
    }
    request.mutable_target()->set_url(url);
    request.mutable_target()->set_branch(kBranch);
    request.mutable_target()->set_path_prefix(kPrefix);
    request.mutable_destination()->set_namespace_(kNamespace);
    request.set_correlation_id(correlation_id);
    return request;
  }

  // One Publish RPC, timed from the call to its response; the server's own time from the
  // elfdeploy_publish_seconds histogram.
  absl::StatusOr<v1::PublishResponse> Publish(Repetition& state, const v1::PublishRequest& request,
                                              double* seconds, double* server_seconds) {
    auto publish_sum = [&state]() -> double {
      absl::StatusOr<std::string> metrics = ScrapeMetrics(state.service->metrics_addr());
      if (!metrics.ok()) return 0;
      return MetricValue(*metrics, "elfdeploy_publish_seconds_sum").value_or(0);
    };
    double before = publish_sum();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    v1::PublishResponse response;
    Clock::time_point start = Clock::now();
    grpc::Status status = state.stub->Publish(&context, request, &response);
    *seconds = SecondsSince(start);
    if (!status.ok()) {
      return absl::Status(
          static_cast<absl::StatusCode>(status.error_code()),
          absl::StrCat("Publish: ", status.error_message(), "\n", Tail(state.service->Log())));
    }
    *server_seconds = publish_sum() - before;
    return response;
  }

  std::string Label(const Repetition& state, int step, const char* tool) const {
    std::string scenario = scenarios_[ScenarioOf(step)].name;
    if (step > 0) absl::StrAppend(&scenario, " ", step);
    return absl::StrFormat("[%d/%d] %-18s %-9s", state.rep + 1, repeat_, scenario, tool);
  }

  absl::Status MeasurePublisher(Repetition& state, int step) {
    const int scenario = ScenarioOf(step);
    std::string label = Label(state, step, "publisher");
    v1::PublishRequest request = Request(StepApps(step), step, git_->url(state.publisher_repo),
                                         absl::StrCat("bench-", state.rep, "-", step));
    request.set_message(Message(step));
    ::sync();
    double seconds = 0;
    double server_seconds = 0;
    absl::StatusOr<v1::PublishResponse> response =
        Publish(state, request, &seconds, &server_seconds);
    if (!response.ok()) {
      return absl::Status(response.status().code(),
                          absl::StrCat(label, ": ", response.status().message()));
    }
    std::vector<std::string> problems;
    if (response->no_op()) problems.push_back("no commit (no_op)");
    if (response->parent_commit() != state.publisher_head) {
      problems.push_back(absl::StrCat("parent ", response->parent_commit(), ", the remote had \"",
                                      state.publisher_head, "\""));
    }
    size_t expected_files = scenario == 0 ? 3 * apps_.size() + 2 * group_sizes_.size() : 1;
    if (static_cast<size_t>(response->changed_files_size()) != expected_files) {
      problems.push_back(absl::StrCat(response->changed_files_size(), " changed files, expected ",
                                      expected_files));
    }
    if (!problems.empty()) {
      return absl::DataLossError(absl::StrCat(label, ": ", absl::StrJoin(problems, "; ")));
    }
    absl::StatusOr<std::string> head = CheckRemote(label, state.publisher_repo, step);
    if (!head.ok()) return head.status();
    if (*head != response->commit()) {
      return absl::DataLossError(absl::StrCat(label, ": the remote's main is ", *head,
                                              ", Publish answered ", response->commit()));
    }
    state.publisher_head = *head;
    scenarios_[scenario].publisher.push_back(seconds);
    std::printf(
        "%s %8.3f s  %d files changed, %d push attempt(s), commit %.12s (server-side %.3f s)\n",
        label.c_str(), seconds, response->changed_files_size(), response->push_attempts(),
        response->commit().c_str(), server_seconds);
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::Status MeasureBaseline(Repetition& state, int step) {
    const int scenario = ScenarioOf(step);
    std::string label = Label(state, step, "baseline");
    std::vector<std::string> argv = {"bash", dir_->Join(scenario == 0 ? "full.sh" : "one.sh"),
                                     state.dir->Join("wc"), dir_->Join("src")};
    if (scenario == 0) {
      argv.insert(argv.end(),
                  {dir_->Join("apps.txt"), git_->url(state.baseline_repo), Message(step)});
    } else {
      argv.insert(argv.end(),
                  {changed_->group, changed_->name, changed_->Image(step), Message(step)});
    }
    Env env = {{"GIT_CONFIG_NOSYSTEM", "1"},
               {"HOME", git_->home()},
               {"XDG_CONFIG_HOME", git_->home()},
               {"GIT_TERMINAL_PROMPT", "0"}};
    std::string log_path = state.dir->Join(absl::StrCat("baseline-", scenario, ".log"));
    ::sync();
    absl::StatusOr<Exit> exited = RunTimed(argv, env, log_path);
    if (!exited.ok()) return exited.status();
    if (exited->code != 0) {
      return absl::UnknownError(absl::StrCat(label, ": ", absl::StrJoin(argv, " "), ": exit code ",
                                             exited->code, "\n",
                                             Tail(ReadFile(log_path).value_or(""))));
    }
    absl::StatusOr<std::string> head = CheckRemote(label, state.baseline_repo, step);
    if (!head.ok()) return head.status();
    scenarios_[scenario].baseline.push_back(exited->seconds);
    std::printf("%s %8.3f s  commit %.12s\n", label.c_str(), exited->seconds, head->c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  // Checks the remote after `step`: step + 1 commits on main, the changed app's deployment.yaml
  // with the step's digest and its comments, and for a one-app change, no other file touched.
  // Returns main's commit.
  absl::StatusOr<std::string> CheckRemote(const std::string& label, const std::string& repo,
                                          int step) {
    std::string git_dir = git_->repo_path(repo);
    std::vector<std::string> problems;
    absl::StatusOr<std::string> count =
        Git(*git_, {"--git-dir", git_dir, "rev-list", "--count", kBranch});
    if (!count.ok()) return count.status();
    if (absl::StripAsciiWhitespace(*count) != absl::StrCat(step + 1)) {
      problems.push_back(absl::StrCat("main has ", absl::StripAsciiWhitespace(*count),
                                      " commits, expected ", step + 1));
    }
    absl::StatusOr<std::string> deployment =
        Git(*git_,
            {"--git-dir", git_dir, "show", absl::StrCat(kBranch, ":", changed_->DeploymentPath())});
    if (!deployment.ok()) return deployment.status();
    if (!absl::StrContains(*deployment, absl::StrCat("@sha256:", changed_->Digest(step)))) {
      problems.push_back(
          absl::StrCat(changed_->DeploymentPath(), " lacks the digest ", changed_->Digest(step)));
    }
    if (step > 0 &&
        absl::StrContains(*deployment, absl::StrCat("@sha256:", changed_->Digest(step - 1)))) {
      problems.push_back(absl::StrCat(changed_->DeploymentPath(), " still has the old digest"));
    }
    if (!absl::StrContains(*deployment, absl::StrCat("# ", changed_->name, ": "))) {
      problems.push_back(absl::StrCat(changed_->DeploymentPath(), " lost its comment"));
    }
    if (step > 0) {
      absl::StatusOr<std::string> diff =
          Git(*git_, {"--git-dir", git_dir, "diff", "--name-only", "main~1", "main"});
      if (!diff.ok()) return diff.status();
      if (absl::StripAsciiWhitespace(*diff) != changed_->DeploymentPath()) {
        problems.push_back(
            absl::StrCat("the commit changed ",
                         absl::StrJoin(absl::StrSplit(*diff, '\n', absl::SkipEmpty()), ", ")));
      }
    }
    absl::StatusOr<std::string> head = Git(*git_, {"--git-dir", git_dir, "rev-parse", kBranch});
    if (!head.ok()) return head.status();
    if (!problems.empty()) {
      return absl::DataLossError(absl::StrCat(label, ": ", absl::StrJoin(problems, "; ")));
    }
    return std::string(absl::StripAsciiWhitespace(*head));
  }

  absl::StatusOr<std::set<std::string>> TreePaths(const std::string& repo) const {
    absl::StatusOr<std::string> listing =
        Git(*git_, {"--git-dir", git_->repo_path(repo), "ls-tree", "-r", "--name-only", kBranch});
    if (!listing.ok()) return listing.status();
    std::set<std::string> paths;
    for (absl::string_view line : absl::StrSplit(*listing, '\n', absl::SkipEmpty())) {
      paths.emplace(line);
    }
    return paths;
  }

  // After the full publish both remotes hold the same paths: 3 files per app, a kustomization and
  // an Application per group.
  absl::Status CompareTrees(const Repetition& state) const {
    absl::StatusOr<std::set<std::string>> ours = TreePaths(state.publisher_repo);
    if (!ours.ok()) return ours.status();
    absl::StatusOr<std::set<std::string>> theirs = TreePaths(state.baseline_repo);
    if (!theirs.ok()) return theirs.status();
    size_t expected = 3 * apps_.size() + 2 * group_sizes_.size();
    if (*ours == *theirs && ours->size() == expected) return absl::OkStatus();
    std::vector<std::string> only_ours;
    std::vector<std::string> only_theirs;
    std::set_difference(ours->begin(), ours->end(), theirs->begin(), theirs->end(),
                        std::back_inserter(only_ours));
    std::set_difference(theirs->begin(), theirs->end(), ours->begin(), ours->end(),
                        std::back_inserter(only_theirs));
    only_ours.resize(std::min<size_t>(only_ours.size(), 5));
    only_theirs.resize(std::min<size_t>(only_theirs.size(), 5));
    return absl::DataLossError(
        absl::StrCat("trees after the full publish: publisher ", ours->size(), " paths, baseline ",
                     theirs->size(), ", expected ", expected,
                     "; only the publisher's: ", absl::StrJoin(only_ours, ", "),
                     "; only the baseline's: ", absl::StrJoin(only_theirs, ", ")));
  }

  // Untimed: a commit pushed by someone else to the publisher's remote, then another digest for
  // the changed app. The publisher must build on that commit and keep its file.
  absl::Status CheckMovedHead(Repetition& state) {
    std::string clone = state.dir->Join("other-writer");
    std::string notes = absl::StrCat(kPrefix, "/NOTES.md");
    if (absl::StatusOr<std::string> out =
            Git(*git_, {"clone", "-q", git_->url(state.publisher_repo), clone});
        !out.ok()) {
      return out.status();
    }
    if (absl::Status s = WriteFile(absl::StrCat(clone, "/", notes), "Edited by hand.\n"); !s.ok()) {
      return s;
    }
    for (const std::vector<std::string>& args : {std::vector<std::string>{"add", "-A"},
                                                 {"commit", "-qm", "Notes"},
                                                 {"push", "-q", "origin", "HEAD:main"}}) {
      if (absl::StatusOr<std::string> out = Git(*git_, args, clone); !out.ok()) return out.status();
    }
    absl::StatusOr<std::string> moved =
        Git(*git_, {"--git-dir", git_->repo_path(state.publisher_repo), "rev-parse", kBranch});
    if (!moved.ok()) return moved.status();
    std::string moved_head(absl::StripAsciiWhitespace(*moved));
    v1::PublishRequest request =
        Request({changed_}, changes_ + 1, git_->url(state.publisher_repo), "bench-moved-head");
    double seconds = 0;
    double server_seconds = 0;
    absl::StatusOr<v1::PublishResponse> response =
        Publish(state, request, &seconds, &server_seconds);
    if (!response.ok()) return response.status();
    std::vector<std::string> problems;
    if (response->parent_commit() != moved_head) {
      problems.push_back(
          absl::StrCat("parent ", response->parent_commit(), ", expected ", moved_head));
    }
    absl::StatusOr<std::string> kept =
        Git(*git_, {"--git-dir", git_->repo_path(state.publisher_repo), "show",
                    absl::StrCat(kBranch, ":", notes)});
    if (!kept.ok()) problems.push_back(absl::StrCat(notes, " is gone"));
    absl::StatusOr<std::string> deployment =
        Git(*git_, {"--git-dir", git_->repo_path(state.publisher_repo), "show",
                    absl::StrCat(kBranch, ":", changed_->DeploymentPath())});
    if (!deployment.ok()) return deployment.status();
    if (!absl::StrContains(*deployment, changed_->Digest(changes_ + 1))) {
      problems.push_back("the new digest is missing");
    }
    if (!problems.empty()) {
      return absl::DataLossError(
          absl::StrCat("publish after the remote moved: ", absl::StrJoin(problems, "; ")));
    }
    std::printf(
        "moved remote head: a commit pushed with the git CLI, then one app published: parent is "
        "that commit, its file kept (%.3f s, %d push attempt(s))\n",
        seconds, response->push_attempts());
    return absl::OkStatus();
  }

  int app_count_;
  int repeat_;
  int changes_;
  std::optional<TempDir> dir_;
  std::vector<App> apps_;
  std::map<std::string, int> group_sizes_;
  const App* changed_ = nullptr;
  std::unique_ptr<GitDaemonFixture> git_;
  std::vector<Scenario> scenarios_;
};

int Main(const char* argv0) {
  int apps = absl::GetFlag(FLAGS_apps);
  int repeat = absl::GetFlag(FLAGS_repeat);
  int changes = absl::GetFlag(FLAGS_changes);
  std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  if (work_dir.empty()) work_dir = DefaultWorkDir();
  if (apps < 2 || repeat < 1 || changes < 1) {
    std::fprintf(stderr, "--apps must be at least 2, --repeat and --changes at least 1\n");
    return 2;
  }
  if (setenv("TMPDIR", work_dir.c_str(), 1) != 0) {
    std::fprintf(stderr, "setenv TMPDIR: %s\n", strerror(errno));
    return 2;
  }
  std::string command = absl::StrFormat("%s --apps=%d --repeat=%d --changes=%d --work_dir=%s",
                                        argv0, apps, repeat, changes, work_dir);
  std::printf("command: %s\n", command.c_str());
  std::printf("machine: %u cpus; work dir %s (%s), TMPDIR for everything\n",
              std::thread::hardware_concurrency(), work_dir.c_str(), FileSystem(work_dir).c_str());
  if (apps < 500) std::printf("note: below issue 5 item 9's 500 apps\n");
  Bench bench(apps, repeat, changes);
  return RunAndReport(bench, command);
}

}  // namespace
}  // namespace elfdeploy::testing

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return elfdeploy::testing::Main(argv[0]);
}
