// Issue 8 item 8: one Deploy of N apps (20 by default) end to end with the real binaries —
// builder, registry-sync, manifest-publisher, cluster-watcher, agent, orchestrator — on a real
// registry and git daemon, with elfdeploy-kubesim as the cluster. Prints each stage's time (from
// the rollout record), the orchestration overhead (wall time of the rollout minus the time in
// which some app was in a stage: the gaps the orchestrator itself adds), and the delay from the
// GitOps commit being pushed to the orchestrator observing Argo CD synced to it; and whether each
// meets its target. Exits non-zero only when something fails to run.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "services/common/proto_time.h"
#include "tests/bench/bench_util.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/stack.h"

ABSL_FLAG(int, apps, 20, "apps deployed in the one rollout (3 of every 4 teams, the rest MCPs)");
ABSL_FLAG(std::string, settle, "1s", "orchestrator.settle: how long an app must stay ready");

namespace elfdeploy::testing {
namespace {

// `apps` app folders under `root` in the seed's layout, each a small server on the base image.
absl::Status WriteApps(const std::string& root, int apps) {
  for (int i = 0; i < apps; ++i) {
    const bool team = i % 4 != 3;
    const std::string name = absl::StrFormat("%s-%02d", team ? "team" : "mcp", i + 1);
    const std::string dir = absl::StrCat(root, team ? "/teams/" : "/mcps/", name);
    const int port = 8100 + i;
    std::string dockerfile = absl::StrCat(
        "ARG BASE\nFROM ${BASE}\nWORKDIR /app\nCOPY requirements.txt ./\nCOPY server.py ./\n"
        "ENV PORT=",
        port, "\nEXPOSE ", port, "\nCMD [\"python3\", \"server.py\"]\n");
    std::string deployment = absl::StrCat(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ", name,
        "\n  labels:\n    app: ", name, "\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n",
        "      app: ", name, "\n  template:\n    metadata:\n      labels:\n        app: ", name,
        "\n    spec:\n      containers:\n        - name: ", name,
        "\n          image: elf-automations/", name, ":latest\n          ports:\n",
        "            - containerPort: ", port, "\n");
    std::string server(16 * 1024, '#');  // a 16 KiB source file per app
    absl::StrAppend(&server, "\nprint('", name, "')\n");
    for (const auto& [path, content] :
         std::vector<std::pair<std::string, std::string>>{{"Dockerfile", dockerfile},
                                                          {"k8s/deployment.yaml", deployment},
                                                          {"requirements.txt", "a2a-sdk\n"},
                                                          {"server.py", server}}) {
      if (absl::Status s = WriteFile(absl::StrCat(dir, "/", path), content); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

struct Interval {
  absl::Time start;
  absl::Time end;
};

// Total length of the union of `intervals`.
absl::Duration Covered(std::vector<Interval> intervals) {
  std::sort(intervals.begin(), intervals.end(),
            [](const Interval& a, const Interval& b) { return a.start < b.start; });
  absl::Duration total;
  std::optional<Interval> run;
  for (const Interval& i : intervals) {
    if (run && i.start <= run->end) {
      run->end = std::max(run->end, i.end);
      continue;
    }
    if (run) total += run->end - run->start;
    run = i;
  }
  if (run) total += run->end - run->start;
  return total;
}

int Main(const char* argv0) {
  const int apps = absl::GetFlag(FLAGS_apps);
  const std::string settle = absl::GetFlag(FLAGS_settle);
  std::printf("command: %s --apps=%d --settle=%s\n", argv0, apps, settle.c_str());
  std::printf(
      "machine: %u cpus; registry, git daemon, kubesim, the five services and the agent all on "
      "it\n\n",
      std::thread::hardware_concurrency());

  absl::StatusOr<std::unique_ptr<Stack>> stack =
      Stack::Start({.dir_prefix = "deploy-bench-",
                    .base_layer_sizes = {4096},
                    .base_seed = 7,
                    .kubesim_flags = {"--container_start_delay=100ms"},
                    .orchestrator_env = {{"ELFDEPLOY_ORCHESTRATOR_SETTLE", settle}}});
  if (!stack.ok()) {
    std::fprintf(stderr, "FAILED: %s\n", stack.status().ToString().c_str());
    return 1;
  }
  const std::string source = (*stack)->dir().Join("apps");
  if (absl::Status s = WriteApps(source, apps); !s.ok()) {
    std::fprintf(stderr, "FAILED: %s\n", s.ToString().c_str());
    return 1;
  }
  v1::DeployRequest request;
  request.set_source_dir(source);
  (*request.mutable_build_args())["BASE"] =
      absl::StrCat((*stack)->registry().host(), "/elf/python-base:3.11");
  request.mutable_verify()->set_skip_discovery(true);
  request.mutable_destination()->set_no_image_pull_secret(true);

  grpc::ClientContext context;
  v1::DeployResponse deployed;
  grpc::Status status = (*stack)->stub().Deploy(&context, request, &deployed);
  if (!status.ok()) {
    std::fprintf(stderr, "FAILED: Deploy: %s\n", status.error_message().c_str());
    return 1;
  }
  if (absl::StatusOr<v1::WatchRolloutResponse> last =
          (*stack)->Follow(deployed.rollout().id(), nullptr, absl::Hours(1));
      !last.ok()) {
    std::fprintf(stderr, "FAILED: %s\n", last.status().ToString().c_str());
    return 1;
  }
  grpc::ClientContext get_context;
  v1::GetRolloutRequest get;
  get.set_id(deployed.rollout().id());
  v1::GetRolloutResponse got;
  if (grpc::Status s = (*stack)->stub().GetRollout(&get_context, get, &got); !s.ok()) {
    std::fprintf(stderr, "FAILED: GetRollout: %s\n", s.error_message().c_str());
    return 1;
  }
  const v1::Rollout& rollout = got.rollout();
  if (rollout.state() != v1::ROLLOUT_STATE_SUCCEEDED) {
    std::fprintf(stderr, "FAILED: the rollout ended %s: %s\n",
                 v1::RolloutState_Name(rollout.state()).c_str(), rollout.message().c_str());
    return 1;
  }

  // Per stage: each app's time in it. The critical path: the intervals in which some app was
  // building or pushing, the one publish (from the last push to the commit being pushed; an app's
  // PUBLISHING before that is waiting for the others), and each app's SYNCING and VERIFYING.
  std::map<v1::Stage, std::vector<double>> per_stage;
  std::vector<Interval> busy;
  absl::Time last_push = absl::InfinitePast();
  absl::Time published = absl::InfinitePast();  // PUBLISHING's last end: the commit pushed
  for (const v1::AppRollout& app : rollout.apps()) {
    for (const v1::StageTiming& t : app.stage_timings()) {
      if (!t.has_end_time() || t.stage() == v1::STAGE_SUCCEEDED) continue;
      Interval i{FromTimestamp(t.start_time()), FromTimestamp(t.end_time())};
      per_stage[t.stage()].push_back(absl::ToDoubleSeconds(i.end - i.start));
      if (t.stage() == v1::STAGE_PUBLISHING) {
        last_push = std::max(last_push, i.start);
        published = std::max(published, i.end);
      } else {
        busy.push_back(i);
      }
    }
  }
  busy.push_back({last_push, published});
  absl::Duration sync_delay;  // commit pushed -> VERIFYING (synced seen) of the slowest app
  for (const v1::AppRollout& app : rollout.apps()) {
    for (const v1::StageTiming& t : app.stage_timings()) {
      if (t.stage() == v1::STAGE_VERIFYING) {
        sync_delay = std::max(sync_delay, FromTimestamp(t.start_time()) - published);
      }
    }
  }
  const absl::Duration total =
      FromTimestamp(rollout.end_time()) - FromTimestamp(rollout.create_time());
  const absl::Duration covered = Covered(busy);
  const double overhead =
      absl::ToDoubleSeconds(total - covered) / std::max(1e-9, absl::ToDoubleSeconds(total));

  std::printf("%-12s %6s %10s %10s %10s\n", "stage", "apps", "p50 s", "max s", "sum s");
  for (auto& [stage, seconds] : per_stage) {
    std::printf("%-12s %6zu %10.2f %10.2f %10.2f\n", v1::Stage_Name(stage).c_str() + 6,
                seconds.size(), Median(seconds), *std::max_element(seconds.begin(), seconds.end()),
                [&] {
                  double sum = 0;
                  for (double s : seconds) sum += s;
                  return sum;
                }());
  }
  auto verdict = [](bool pass) { return pass ? "PASS" : "MISS"; };
  std::printf("\n%-52s %10s %10s %6s\n", "scenario", "measured", "target", "result");
  std::printf("%-52s %9.2fs\n",
              absl::StrCat("Deploy of ", apps, " apps, accepted -> SUCCEEDED").c_str(),
              absl::ToDoubleSeconds(total));
  std::printf("%-52s %9.2fs\n", "critical path (build+push, publish, sync, verify)",
              absl::ToDoubleSeconds(covered));
  std::printf("%-52s %9.2f%% %10s %6s\n", "orchestration overhead (the rest)", overhead * 100,
              "<= 5%", verdict(overhead <= 0.05));
  std::printf("%-52s %9.2fs %10s %6s\n", "commit pushed -> sync to it observed (slowest app)",
              absl::ToDoubleSeconds(sync_delay), "<= 1 s", verdict(sync_delay <= absl::Seconds(1)));
  std::printf(
      "\ncommit %s; verification polls every 500 ms; settle %s (each app must stay ready "
      "that long, part of VERIFYING)\n",
      rollout.commit().c_str(), settle.c_str());
  return 0;
}

}  // namespace
}  // namespace elfdeploy::testing

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return elfdeploy::testing::Main(argv[0]);
}
