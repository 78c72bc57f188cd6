// Times one multi-layer image copied by registry-sync (one Copy RPC to the running service) and by
// `skopeo copy` (one process per copy): OCI layout -> registry and registry -> registry, each into
// an empty destination (cold) and again into the same destination (warm). Prints the medians, the
// ratio of each pair and whether it meets the targets of issue 3 item 7 (cold <= 0.6x skopeo's
// time, warm <= 0.3x, a warm copy uploads 0 bytes). Exits non-zero only when a copy fails or
// lands with the wrong digest.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "elfdeploy/v1/registry_sync.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/bench/bench_util.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/oci_image.h"
#include "tests/support/service_process.h"

ABSL_FLAG(int, layers, 6, "layers in the test image");
ABSL_FLAG(int, layer_mb, 20, "MiB of random content in each layer");
ABSL_FLAG(int, repeat, 3, "timed copies per tool and scenario; the table shows medians");

namespace elfdeploy::testing {
namespace {

constexpr char kLayoutRef[] = "bench";
constexpr char kRepo[] = "bench/app:v1";
constexpr double kColdTarget = 0.6;
constexpr double kWarmTarget = 0.3;

std::string Docker(const RegistryFixture& registry) {
  return absl::StrCat("docker://", registry.host(), "/", kRepo);
}

struct CopyRun {
  double seconds = 0;
  std::string digest;
  int64_t bytes_uploaded = 0;  // as registry-sync reports it
  double server_seconds = 0;   // registry-sync's own measure of the copy
};

// One Copy RPC, timed from the call to the stream's result event.
absl::StatusOr<CopyRun> SyncCopy(v1::RegistrySyncService::Stub& stub, const std::string& source,
                                 const std::string& destination) {
  v1::CopyRequest request;
  request.set_source(source);
  request.set_destination(destination);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  CopyRun run;
  bool finished = false;
  Clock::time_point start = Clock::now();
  std::unique_ptr<grpc::ClientReader<v1::CopyResponse>> reader = stub.Copy(&context, request);
  v1::CopyResponse response;
  while (reader->Read(&response)) {
    if (!response.has_result()) continue;
    run.seconds = SecondsSince(start);
    const v1::CopyResult& result = response.result();
    run.digest = result.manifest_digest();
    run.bytes_uploaded = result.bytes_transferred();
    run.server_seconds = static_cast<double>(result.duration().seconds()) +
                         static_cast<double>(result.duration().nanos()) / 1e9;
    finished = true;
  }
  grpc::Status status = reader->Finish();
  std::string what = absl::StrCat("registry-sync Copy ", source, " -> ", destination);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat(what, ": ", status.error_message()));
  }
  if (!finished) return absl::InternalError(absl::StrCat(what, ": the stream had no result"));
  return run;
}

// `skopeo copy` with a blob-info cache of its own. As root, skopeo keeps that cache (which
// repositories of which registry hold which blob, used to mount instead of upload) in
// /var/lib/containers/cache, shared by every run on the machine. `_CONTAINERS_ROOTLESS_UID`
// makes containers/image use the per-user location under `XDG_DATA_HOME` instead, here a fresh
// directory per copy: skopeo starts each copy knowing no more than registry-sync does.
absl::StatusOr<CopyRun> SkopeoCopy(const std::string& source, const std::string& destination,
                                   bool source_is_registry) {
  absl::StatusOr<TempDir> dir = TempDir::Create("registry-bench-skopeo-");
  if (!dir.ok()) return dir.status();
  std::vector<std::string> argv = {"skopeo", "--command-timeout=10m", "copy",
                                   "--dest-tls-verify=false"};
  if (source_is_registry) argv.push_back("--src-tls-verify=false");
  argv.insert(argv.end(), {"--digestfile", dir->Join("digest"), source, destination});
  Env env = {{"_CONTAINERS_ROOTLESS_UID", "65534"}, {"XDG_DATA_HOME", dir->Join("data")}};
  std::string log_path = dir->Join("log");
  absl::StatusOr<Exit> exited = RunTimed(argv, env, log_path);
  if (!exited.ok()) return exited.status();
  std::string output = ReadFile(log_path).value_or("");
  if (exited->code != 0) {
    return absl::UnknownError(
        absl::StrCat(absl::StrJoin(argv, " "), ": exit code ", exited->code, "\n", Tail(output)));
  }
  CopyRun run;
  run.seconds = exited->seconds;
  run.digest = std::string(absl::StripAsciiWhitespace(ReadFile(dir->Join("digest")).value_or("")));
  return run;
}

// The digest `skopeo inspect` sees at `reference`.
absl::StatusOr<std::string> SkopeoInspectDigest(const std::string& reference) {
  ProcessOptions options;
  options.argv = {"skopeo", "inspect", "--tls-verify=false", reference};
  absl::StatusOr<CommandResult> result = RunCommand(std::move(options), absl::Seconds(60));
  if (!result.ok()) return result.status();
  size_t brace = result->output.find('{');
  nlohmann::json json = nlohmann::json::parse(
      brace == std::string::npos ? "" : result->output.substr(brace), nullptr, false);
  if (result->exit_code != 0 || !json.is_object() || !json.contains("Digest") ||
      !json["Digest"].is_string()) {
    return absl::UnknownError(absl::StrCat("skopeo inspect ", reference, ":\n", result->output));
  }
  return json["Digest"].get<std::string>();
}

absl::StatusOr<std::string> SkopeoVersion() {
  absl::StatusOr<CommandResult> result = RunCommand({.argv = {"skopeo", "--version"}});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) return absl::UnknownError(result->output);
  return std::string(absl::StripAsciiWhitespace(result->output));
}

// Blob uploads a registry completed (PUT .../blobs/uploads/... answered 201), counted in its log.
int UploadsInLog(absl::string_view log) {
  int uploads = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "http.request.method=PUT") &&
        absl::StrContains(line, "/blobs/uploads/") &&
        absl::StrContains(line, "http.response.status=201")) {
      ++uploads;
    }
  }
  return uploads;
}

// User + system CPU seconds a process has used so far; 0 when it cannot be read.
double CpuSeconds(pid_t pid) {
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char line[1024] = {};
  size_t n = std::fread(line, 1, sizeof(line) - 1, f);
  std::fclose(f);
  // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
  absl::string_view rest(line, n);
  size_t close = rest.rfind(')');
  if (close == absl::string_view::npos) return 0;
  std::vector<absl::string_view> fields =
      absl::StrSplit(rest.substr(close + 2), ' ', absl::SkipEmpty());
  if (fields.size() < 13) return 0;
  long long utime = 0, stime = 0;
  if (!absl::SimpleAtoi(fields[11], &utime) || !absl::SimpleAtoi(fields[12], &stime)) return 0;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// User + system CPU seconds of this process's children that have been waited for.
double ChildrenCpuSeconds() {
  rusage usage = {};
  getrusage(RUSAGE_CHILDREN, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct ToolStats {
  std::vector<double> seconds = {};
  std::vector<double> registry_cpu = {};  // CPU seconds both registries spent serving the copy
  std::vector<double> client_cpu = {};    // CPU seconds the copying tool itself spent
  int max_uploads = 0;                    // from the destination registry's log
};

struct Scenario {
  std::string name = {};
  bool from_registry = false;
  bool warm = false;
  ToolStats sync = {};
  ToolStats skopeo = {};
  int64_t sync_max_bytes = 0;
  bool inspected = false;
};

class Bench {
 public:
  Bench(int layers, int layer_mb, int repeat)
      : layers_(layers), layer_mb_(layer_mb), repeat_(repeat) {}

  absl::Status Setup() {
    absl::StatusOr<TempDir> dir = TempDir::Create("registry-bench-");
    if (!dir.ok()) return dir.status();
    dir_.emplace(*std::move(dir));
    std::vector<int64_t> sizes(static_cast<size_t>(layers_), int64_t{layer_mb_} << 20);
    Clock::time_point start = Clock::now();
    absl::StatusOr<TestImage> image = WriteTestImage(dir_->Join("layout"), kLayoutRef, sizes, 7);
    if (!image.ok()) return image.status();
    image_ = *std::move(image);
    std::printf(
        "image: %d layers of %d MiB random content, %lld bytes in %d blobs, manifest %s "
        "(written in %.1f s)\n",
        layers_, layer_mb_, static_cast<long long>(image_.total_bytes), layers_ + 1,
        image_.manifest_digest.ToString().c_str(), SecondsSince(start));

    absl::StatusOr<std::unique_ptr<ServiceProcess>> service =
        ServiceProcess::Start({.binary = "elfdeploy-registry-sync"});
    if (!service.ok()) return service.status();
    service_ = *std::move(service);
    auto channel = grpc::CreateChannel(service_->grpc_addr(), grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError(absl::StrCat("no channel to ", service_->grpc_addr()));
    }
    stub_ = v1::RegistrySyncService::NewStub(channel);
    std::printf("registry-sync: %s at %s, default config, one Copy RPC per copy\n",
                BinaryPath("elfdeploy-registry-sync").c_str(), service_->grpc_addr().c_str());
    absl::StatusOr<std::string> skopeo = SkopeoVersion();
    if (!skopeo.ok()) return skopeo.status();
    std::printf("skopeo: %s, one process per copy, each with an empty blob-info cache\n",
                skopeo->c_str());

    absl::StatusOr<std::unique_ptr<RegistryFixture>> source = RegistryFixture::Start({});
    if (!source.ok()) return source.status();
    source_ = *std::move(source);
    absl::StatusOr<CopyRun> seeded = SyncCopy(*stub_, Layout(), Docker(*source_));
    if (!seeded.ok()) return seeded.status();
    if (absl::Status s = CheckDigest("seeding the source registry", seeded->digest); !s.ok()) {
      return s;
    }
    std::printf("source registry for registry -> registry: %s\n\n", Docker(*source_).c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::Status Run() {
    scenarios_ = {{.name = "layout -> registry, cold"},
                  {.name = "layout -> registry, warm", .warm = true},
                  {.name = "registry -> registry, cold", .from_registry = true},
                  {.name = "registry -> registry, warm", .from_registry = true, .warm = true}};
    for (int rep = 0; rep < repeat_; ++rep) {
      for (size_t cold = 0; cold < scenarios_.size(); cold += 2) {
        absl::StatusOr<std::unique_ptr<RegistryFixture>> for_sync = RegistryFixture::Start({});
        if (!for_sync.ok()) return for_sync.status();
        absl::StatusOr<std::unique_ptr<RegistryFixture>> for_skopeo = RegistryFixture::Start({});
        if (!for_skopeo.ok()) return for_skopeo.status();
        for (size_t i : {cold, cold + 1}) {
          if (absl::Status s = Measure(scenarios_[i], rep, **for_sync, **for_skopeo); !s.ok()) {
            return s;
          }
        }
      }
    }
    return absl::OkStatus();
  }

  void PrintTable() const {
    std::printf("\n%-28s %14s %10s %6s %7s %6s  %-28s %s\n", "scenario", "registry-sync", "skopeo",
                "ratio", "target", "result", "uploaded by registry-sync", "uploaded by skopeo");
    for (const Scenario& s : scenarios_) {
      double ours = Median(s.sync.seconds);
      double theirs = Median(s.skopeo.seconds);
      double ratio = ours / theirs;
      double target = s.warm ? kWarmTarget : kColdTarget;
      bool pass =
          ratio <= target && (!s.warm || (s.sync_max_bytes == 0 && s.sync.max_uploads == 0));
      std::string ours_uploaded = absl::StrFormat("%d blobs, %lld bytes", s.sync.max_uploads,
                                                  static_cast<long long>(s.sync_max_bytes));
      std::printf("%-28s %12.3f s %8.3f s %6.2f %7s %6s  %-28s %d blobs\n", s.name.c_str(), ours,
                  theirs, ratio, absl::StrFormat("<= %.1f", target).c_str(), pass ? "PASS" : "MISS",
                  ours_uploaded.c_str(), s.skopeo.max_uploads);
    }
    // The registries' own work bounds any client: a copy cannot end sooner than the CPU the
    // registries spent on it spread over every core, even if the client itself cost nothing.
    long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("\n%-28s %18s %18s %14s %18s %18s\n", "scenario", "registries' CPU", "",
                "floor ratio", "client CPU", "");
    std::printf("%-28s %18s %18s %14s %18s %18s\n", "", "registry-sync", "skopeo", "",
                "registry-sync", "skopeo");
    for (const Scenario& s : scenarios_) {
      double ours = Median(s.sync.registry_cpu);
      double theirs = Median(s.skopeo.registry_cpu);
      double floor_seconds = std::min(ours, theirs) / static_cast<double>(cores);
      std::printf("%-28s %16.3f s %16.3f s %14.2f %16.3f s %16.3f s\n", s.name.c_str(), ours,
                  theirs, floor_seconds / Median(s.skopeo.seconds), Median(s.sync.client_cpu),
                  Median(s.skopeo.client_cpu));
    }
    std::printf(
        "\nseconds: median of %d copies, each after sync(2), which tool goes first alternating\n"
        "ratio: registry-sync / skopeo; a warm PASS also needs registry-sync to upload nothing\n"
        "uploaded: most in one copy; blobs from the destination registry's log, bytes from "
        "registry-sync's result\n"
        "registries' CPU: user+system seconds the destination (and source) registry used during "
        "the copy, median\n"
        "floor ratio: the smaller registries' CPU / %ld cores / skopeo's time -- the ratio a "
        "client that cost nothing would reach\n"
        "client CPU: user+system seconds of the registry-sync service, or of the skopeo process, "
        "during the copy, median\n",
        repeat_, cores);
  }

 private:
  std::string Layout() const { return absl::StrCat("oci:", dir_->Join("layout"), ":", kLayoutRef); }

  absl::Status CheckDigest(absl::string_view what, const std::string& digest) const {
    if (digest == image_.manifest_digest.ToString()) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(what, ": manifest digest ", digest, ", expected ",
                                            image_.manifest_digest.ToString()));
  }

  // One timed copy per tool, each into its own registry; the tool that goes first alternates.
  absl::Status Measure(Scenario& scenario, int rep, const RegistryFixture& sync_registry,
                       const RegistryFixture& skopeo_registry) {
    std::string source = scenario.from_registry ? Docker(*source_) : Layout();
    for (int turn = 0; turn < 2; ++turn) {
      bool sync_turn = (turn + rep) % 2 == 0;
      const RegistryFixture& registry = sync_turn ? sync_registry : skopeo_registry;
      ToolStats& stats = sync_turn ? scenario.sync : scenario.skopeo;
      std::string label = absl::StrFormat("[%d/%d] %-28s %-13s", rep + 1, repeat_, scenario.name,
                                          sync_turn ? "registry-sync" : "skopeo");
      size_t log_offset = registry.ReadLog().size();
      ::sync();
      auto registries_cpu = [&] {
        double cpu = CpuSeconds(registry.pid());
        if (scenario.from_registry) cpu += CpuSeconds(source_->pid());
        return cpu;
      };
      auto client_cpu = [&] {
        return sync_turn ? CpuSeconds(service_->process().pid()) : ChildrenCpuSeconds();
      };
      double cpu_before = registries_cpu();
      double client_before = client_cpu();
      absl::StatusOr<CopyRun> run =
          sync_turn ? SyncCopy(*stub_, source, Docker(registry))
                    : SkopeoCopy(source, Docker(registry), scenario.from_registry);
      if (!run.ok()) return run.status();
      stats.registry_cpu.push_back(registries_cpu() - cpu_before);
      stats.client_cpu.push_back(client_cpu() - client_before);
      if (absl::Status s = CheckDigest(label, run->digest); !s.ok()) return s;
      std::string log = registry.ReadLog();
      int uploads = UploadsInLog(absl::string_view(log).substr(std::min(log_offset, log.size())));
      stats.seconds.push_back(run->seconds);
      stats.max_uploads = std::max(stats.max_uploads, uploads);
      if (sync_turn) {
        scenario.sync_max_bytes = std::max(scenario.sync_max_bytes, run->bytes_uploaded);
        std::printf("%s %7.3f s  %d blobs uploaded, %lld bytes (server-side %.3f s)\n",
                    label.c_str(), run->seconds, uploads,
                    static_cast<long long>(run->bytes_uploaded), run->server_seconds);
      } else {
        std::printf("%s %7.3f s  %d blobs uploaded\n", label.c_str(), run->seconds, uploads);
        if (!scenario.inspected) {
          absl::StatusOr<std::string> seen = SkopeoInspectDigest(Docker(registry));
          if (!seen.ok()) return seen.status();
          if (absl::Status s =
                  CheckDigest(absl::StrCat("skopeo inspect ", Docker(registry)), *seen);
              !s.ok()) {
            return s;
          }
          scenario.inspected = true;
        }
      }
      std::fflush(stdout);
    }
    return absl::OkStatus();
  }

  int layers_;
  int layer_mb_;
  int repeat_;
  std::optional<TempDir> dir_;
  TestImage image_;
  std::unique_ptr<ServiceProcess> service_;
  std::unique_ptr<v1::RegistrySyncService::Stub> stub_;
  std::unique_ptr<RegistryFixture> source_;
  std::vector<Scenario> scenarios_;
};

int Main(const char* argv0) {
  int layers = absl::GetFlag(FLAGS_layers);
  int layer_mb = absl::GetFlag(FLAGS_layer_mb);
  int repeat = absl::GetFlag(FLAGS_repeat);
  if (layers < 1 || layer_mb < 1 || repeat < 1) {
    std::fprintf(stderr, "--layers, --layer_mb and --repeat must be at least 1\n");
    return 2;
  }
  std::string command =
      absl::StrFormat("%s --layers=%d --layer_mb=%d --repeat=%d", argv0, layers, layer_mb, repeat);
  std::printf("command: %s\n", command.c_str());
  std::printf("machine: %u cpus\n", std::thread::hardware_concurrency());
  if (layers < 5 || (int64_t{layers} * layer_mb << 20) < 100'000'000) {
    std::printf("note: below issue 3 item 7's image (>= 5 layers, >= 100 MB)\n");
  }
  Bench bench(layers, layer_mb, repeat);
  return RunAndReport(bench, command);
}

}  // namespace
}  // namespace elfdeploy::testing

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return elfdeploy::testing::Main(argv[0]);
}
