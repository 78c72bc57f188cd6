// Times one RUN-free app (a generated tree of Python-like source files) built into a compressed
// OCI layout by the builder (one Build RPC to the running service) and by `buildah bud` followed
// by `buildah push oci:...` (vfs storage, chroot isolation), each from an empty store (cold) and
// again unchanged (rebuild). Prints the medians, the speed-ups and whether they meet the targets
// of issue 4 item 11 (>= 5x buildah's time cold, >= 50x on the unchanged rebuild). Exits non-zero
// only when a build fails or a check fails. Everything lives on tmpfs by default: on ext4, inode
// allocation slows down after many recent deletions (the kernel's recently_deleted() scan), which
// buildah's vfs storage triggers itself (about 10^4 files copied and removed per build), so its
// times there depend on what ran in the minutes before.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <linux/magic.h>
#include <spawn.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
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
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "elfdeploy/v1/builder.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/bench/bench_util.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

ABSL_FLAG(int, files, 2500, "Python modules in the generated app");
ABSL_FLAG(int, mb, 60, "MiB of source text in those modules");
ABSL_FLAG(int, repeat, 3, "timed cold builds and rebuilds per tool; the table shows medians");
ABSL_FLAG(std::string, work_dir, "",
          "directory for the app, both tools' stores and their temporary files (TMPDIR); empty: "
          "/dev/shm when it is a writable tmpfs, else $TMPDIR or /tmp");

namespace elfdeploy::testing {
namespace {

constexpr char kTag[] = "app:bench";
constexpr char kBuildahRef[] = "app";
constexpr double kColdTarget = 5;
constexpr double kRebuildTarget = 50;
constexpr int kPackages = 16;
constexpr int kSubpackages = 8;
constexpr uint64_t kSeed = 0x5eed'b1d5'0000'0004;

constexpr char kDockerfile[] =
    "FROM scratch\n"
    "COPY requirements.txt /app/\n"
    "COPY src/ /app/src/\n"
    "WORKDIR /app\n"
    "ENV PYTHONUNBUFFERED=1\n"
    "CMD [\"python\",\"-m\",\"app\"]\n";

constexpr char kRequirements[] =
    "fastapi==0.110.0\n"
    "uvicorn[standard]==0.29.0\n"
    "pydantic==2.6.4\n"
    "httpx==0.27.0\n"
    "sqlalchemy==2.0.29\n"
    "redis==5.0.3\n"
    "structlog==24.1.0\n"
    "prometheus-client==0.20.0\n";

constexpr absl::string_view kWords[] = {
    "user",      "account",  "order",   "item",   "price",      "total",    "config",   "client",
    "request",   "response", "session", "token",  "cache",      "queue",    "event",    "handler",
    "record",    "value",    "key",     "name",   "path",       "file",     "data",     "result",
    "status",    "error",    "message", "count",  "index",      "limit",    "offset",   "page",
    "batch",     "task",     "job",     "worker", "state",      "context",  "payload",  "header",
    "body",      "query",    "filter",  "field",  "schema",     "model",    "table",    "row",
    "column",    "node",     "edge",    "graph",  "tree",       "parent",   "child",    "source",
    "target",    "buffer",   "stream",  "chunk",  "size",       "length",   "width",    "height",
    "style",     "layout",   "view",    "label",  "text",       "line",     "parser",   "symbol",
    "scope",     "module",   "loader",  "plugin", "registry",   "service",  "manager",  "factory",
    "builder",   "adapter",  "router",  "route",  "endpoint",   "server",   "socket",   "channel",
    "timeout",   "retry",    "backoff", "delay",  "interval",   "deadline", "lock",     "signal",
    "metric",    "counter",  "sample",  "report", "summary",    "invoice",  "customer", "product",
    "inventory", "shipment", "address", "region", "currency",   "amount",   "balance",  "ledger",
    "entry",     "audit",    "policy",  "rule",   "permission", "role",     "group",    "member",
    "owner",     "profile",  "email",   "phone",  "timestamp",  "version",
};
constexpr size_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);

constexpr absl::string_view kStdlib[] = {
    "os",          "sys",     "json",     "logging",   "typing",    "dataclasses",
    "collections", "asyncio", "datetime", "functools", "itertools", "pathlib",
    "re",          "time",    "uuid",     "hashlib",   "enum",      "contextlib",
};
constexpr size_t kStdlibCount = sizeof(kStdlib) / sizeof(kStdlib[0]);

constexpr absl::string_view kExceptions[] = {"ValueError", "KeyError", "RuntimeError", "TypeError",
                                             "LookupError"};

double Seconds(const google::protobuf::Duration& d) {
  return static_cast<double>(d.seconds()) + static_cast<double>(d.nanos()) / 1e9;
}

// splitmix64: the same stream on every platform and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }
  bool Percent(size_t p) { return Below(100) < p; }
  double Unit() {
    return static_cast<double>(Next() >> 11) / static_cast<double>(uint64_t{1} << 53);
  }

 private:
  uint64_t state_;
};

// Python-looking modules: words drawn with a skew toward the front of the vocabulary, as names in
// real code repeat, so the text compresses like source code does.
class SourceWriter {
 public:
  explicit SourceWriter(Rng& rng) : rng_(rng) {}

  std::string Module(const std::string& package, int64_t size) {
    std::string out =
        Cat({"\"\"\"", Sentence(), ".\"\"\"\n\nfrom __future__ import annotations\n\n"});
    for (size_t i = 0, n = 2 + rng_.Below(4); i < n; ++i) {
      Append(out, {"import ", std::string(kStdlib[rng_.Below(kStdlibCount)]), "\n"});
    }
    for (size_t i = 0, n = 1 + rng_.Below(4); i < n; ++i) {
      Append(out, {"from ", package, ".", Word(), " import ", Camel(), ", ", Ident(), "\n"});
    }
    Append(out, {"\nlogger = logging.getLogger(__name__)\n\n"});
    for (size_t i = 0, n = 1 + rng_.Below(4); i < n; ++i) {
      std::string name = Ident();
      for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      Append(out, {name, " = ", Literal(), "\n"});
    }
    while (static_cast<int64_t>(out.size()) < size) {
      out.append("\n\n");
      if (rng_.Percent(70)) {
        Class(out);
      } else {
        Function(out, "", false);
      }
    }
    return out;
  }

 private:
  // The parts are evaluated left to right, as in any braced list (unlike function arguments), so
  // the text is the same whichever compiler built this.
  static std::string Cat(std::initializer_list<std::string> parts) {
    std::string out;
    for (const std::string& part : parts) out += part;
    return out;
  }
  static void Append(std::string& out, std::initializer_list<std::string> parts) {
    for (const std::string& part : parts) out += part;
  }

  std::string Word() {
    size_t a = rng_.Below(kWordCount);
    size_t b = rng_.Below(kWordCount);
    return std::string(kWords[a * b / kWordCount]);
  }

  std::string Ident() { return rng_.Percent(55) ? Word() : Cat({Word(), "_", Word()}); }

  std::string Camel() {
    std::string out;
    for (size_t i = 0, n = 1 + rng_.Below(2); i < n; ++i) {
      std::string word = Word();
      word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      out += word;
    }
    return out;
  }

  std::string Sentence() {
    std::string out = Word();
    out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
    for (size_t i = 0, n = 3 + rng_.Below(7); i < n; ++i) Append(out, {" ", Word()});
    return out;
  }

  std::string Literal() {
    switch (rng_.Below(5)) {
      case 0:
        return absl::StrCat(rng_.Below(4) == 0 ? rng_.Below(10000) : rng_.Below(10));
      case 1:
        return Cat({"\"", Word(), "\""});
      case 2:
        return rng_.Percent(50) ? "None" : (rng_.Percent(50) ? "True" : "False");
      case 3:
        return Cat({absl::StrCat(rng_.Below(100)), ".", absl::StrCat(rng_.Below(10))});
      default:
        return Cat({"\"", Word(), "_", Word(), "\""});
    }
  }

  std::string Args() {
    std::vector<std::string> args;
    for (size_t i = 0, n = rng_.Below(4); i < n; ++i) {
      args.push_back(rng_.Percent(70) ? Ident() : Literal());
    }
    return absl::StrJoin(args, ", ");
  }

  std::string Expr() {
    switch (rng_.Below(9)) {
      case 0:
        return Ident();
      case 1:
        return Cat({"self.", Ident()});
      case 2:
        return Cat({Ident(), ".", Ident(), "(", Args(), ")"});
      case 3:
        return Literal();
      case 4:
        return Cat({Ident(), " + ", Literal()});
      case 5:
        return Cat({"len(", Ident(), ")"});
      case 6: {
        std::string item = Word();
        return Cat({"[", item, ".", Word(), " for ", item, " in ", Ident(), "]"});
      }
      case 7:
        return Cat({Ident(), ".get(\"", Word(), "\", ", Literal(), ")"});
      default:
        return Cat({"self._", Ident(), "(", Args(), ")"});
    }
  }

  void Statements(std::string& out, const std::string& indent, int depth, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      size_t kind = rng_.Below(depth < 2 ? 12 : 8);
      switch (kind) {
        case 0:
        case 1:
          Append(out, {indent, Ident(), " = ", Expr(), "\n"});
          break;
        case 2:
          Append(out, {indent, "self.", Ident(), " = ", Expr(), "\n"});
          break;
        case 3:
          Append(out, {indent, "# ", Sentence(), ".\n"});
          break;
        case 4:
          Append(out, {indent, "logger.debug(\"", Sentence(), ": %s\", ", Ident(), ")\n"});
          break;
        case 5:
          Append(out, {indent, Ident(), ".", Ident(), "(", Args(), ")\n"});
          break;
        case 6:
          Append(out, {indent, "assert ", Ident(), " is not None\n"});
          break;
        case 7:
          Append(out, {indent, "yield ", Expr(), "\n"});
          break;
        case 8:
          Append(out, {indent, "if ", Ident(), " is None:\n"});
          if (rng_.Percent(50)) {
            Append(out, {indent, "    raise ", std::string(kExceptions[rng_.Below(5)]), "(f\"",
                         Sentence(), ": {", Ident(), "!r}\")\n"});
          } else {
            Append(out, {indent, "    return ", Expr(), "\n"});
          }
          break;
        case 9:
          Append(out, {indent, "for ", Word(), " in ", Expr(), ":\n"});
          Statements(out, indent + "    ", depth + 1, 1 + rng_.Below(3));
          break;
        case 10:
          Append(out, {indent, "try:\n"});
          Statements(out, indent + "    ", depth + 1, 1 + rng_.Below(2));
          Append(out, {indent, "except ", std::string(kExceptions[rng_.Below(5)]), " as error:\n",
                       indent, "    logger.warning(\"", Sentence(), ": %s\", error)\n"});
          break;
        default:
          Append(out, {indent, "if ", Ident(), " ", rng_.Percent(50) ? ">" : "==", " ", Literal(),
                       ":\n"});
          Statements(out, indent + "    ", depth + 1, 1 + rng_.Below(3));
          break;
      }
    }
  }

  void Function(std::string& out, const std::string& indent, bool method) {
    if (method && rng_.Percent(15)) Append(out, {indent, "@property\n"});
    std::vector<std::string> params;
    if (method) params.push_back("self");
    for (size_t i = 0, n = rng_.Below(4); i < n; ++i) {
      params.push_back(rng_.Percent(30) ? Cat({Ident(), "=", Literal()}) : Ident());
    }
    Append(out, {indent, "def ", rng_.Percent(20) ? "_" : "", Ident(), "(",
                 absl::StrJoin(params, ", "), "):\n"});
    std::string body = indent + "    ";
    if (rng_.Percent(60)) Append(out, {body, "\"\"\"", Sentence(), ".\"\"\"\n"});
    Statements(out, body, 0, 2 + rng_.Below(9));
    Append(out, {body, "return ", Expr(), "\n"});
  }

  void Class(std::string& out) {
    Append(out,
           {"class ", Camel(), rng_.Percent(50) ? Cat({"(", Camel(), ")"}) : "", ":\n    \"\"\"",
            Sentence(), ".\"\"\"\n\n    def __init__(self, ", Ident(), ", ", Ident(), "=None):\n"});
    for (size_t i = 0, n = 2 + rng_.Below(4); i < n; ++i) {
      Append(out, {"        self.", Ident(), " = ", Expr(), "\n"});
    }
    for (size_t i = 0, n = 1 + rng_.Below(5); i < n; ++i) {
      out.append("\n");
      Function(out, "    ", true);
    }
  }

  Rng& rng_;
};

struct SourceTree {
  int modules = 0;
  int files = 0;  // everything in the context, the Dockerfile included
  int64_t module_bytes = 0;
  int64_t bytes = 0;
};

// `modules` modules of about `bytes` in total (sizes vary 1:7), under src/app/pkg_NN/sub_NN/, with
// package files, requirements.txt and the Dockerfile; the same bytes on every run.
absl::StatusOr<SourceTree> WriteSourceTree(const std::string& dir, int modules, int64_t bytes) {
  Rng rng(kSeed);
  SourceWriter writer(rng);
  SourceTree tree;
  auto write = [&tree, &dir](const std::string& rel, absl::string_view content) {
    tree.bytes += static_cast<int64_t>(content.size());
    ++tree.files;
    return WriteFile(absl::StrCat(dir, "/", rel), content);
  };
  if (absl::Status s = write("Dockerfile", kDockerfile); !s.ok()) return s;
  if (absl::Status s = write("requirements.txt", kRequirements); !s.ok()) return s;
  if (absl::Status s = write("src/app/__init__.py", "\"\"\"The benchmark app.\"\"\"\n"); !s.ok()) {
    return s;
  }
  if (absl::Status s = write("src/app/__main__.py",
                             "from app.pkg_00.sub_00 import mod_0000\n\nmod_0000.main()\n");
      !s.ok()) {
    return s;
  }
  for (int p = 0; p < kPackages; ++p) {
    for (int s = -1; s < kSubpackages; ++s) {
      std::string package = s < 0 ? absl::StrFormat("app.pkg_%02d", p)
                                  : absl::StrFormat("app.pkg_%02d.sub_%02d", p, s);
      std::string rel = absl::StrCat("src/", absl::StrReplaceAll(package, {{".", "/"}}));
      if (absl::Status st = write(absl::StrCat(rel, "/__init__.py"),
                                  absl::StrCat("\"\"\"Package ", package, ".\"\"\"\n"));
          !st.ok()) {
        return st;
      }
    }
  }
  std::vector<double> weights;
  double weight_sum = 0;
  for (int i = 0; i < modules; ++i) {
    weights.push_back(0.25 + 1.5 * rng.Unit());
    weight_sum += weights.back();
  }
  for (int i = 0; i < modules; ++i) {
    int p = i % kPackages;
    int s = (i / kPackages) % kSubpackages;
    std::string package = absl::StrFormat("app.pkg_%02d.sub_%02d", p, s);
    auto size = static_cast<int64_t>(static_cast<double>(bytes) * weights[i] / weight_sum);
    std::string content = writer.Module(package, size);
    tree.module_bytes += static_cast<int64_t>(content.size());
    ++tree.modules;
    std::string rel = absl::StrFormat("src/app/pkg_%02d/sub_%02d/mod_%04d.py", p, s, i);
    if (absl::Status st = write(rel, content); !st.ok()) return st;
  }
  return tree;
}

absl::StatusOr<std::string> VersionOf(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> result = RunCommand({.argv = argv});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::FailedPreconditionError(absl::StrCat(absl::StrJoin(argv, " "), ": exit code ",
                                                      result->exit_code, "\n", result->output));
  }
  return std::string(absl::StripAsciiWhitespace(result->output));
}

struct Image {
  std::string digest;
  std::vector<int64_t> layer_sizes;
  int64_t LayerBytes() const {
    int64_t total = 0;
    for (int64_t size : layer_sizes) total += size;
    return total;
  }
};

// What `skopeo inspect` (and --raw, for the layer sizes) reports for `reference`.
absl::StatusOr<Image> SkopeoInspect(const std::string& reference) {
  Image image;
  for (bool raw : {false, true}) {
    ProcessOptions options;
    options.argv = {"skopeo", "inspect"};
    if (raw) options.argv.push_back("--raw");
    options.argv.push_back(reference);
    absl::StatusOr<CommandResult> result = RunCommand(std::move(options), absl::Seconds(60));
    if (!result.ok()) return result.status();
    size_t brace = result->output.find('{');
    nlohmann::json json = nlohmann::json::parse(
        brace == std::string::npos ? "" : result->output.substr(brace), nullptr, false);
    bool valid = result->exit_code == 0 && json.is_object();
    if (valid && !raw) {
      valid = json.contains("Digest") && json["Digest"].is_string();
      if (valid) image.digest = json["Digest"].get<std::string>();
    }
    if (valid && raw) {
      valid = json.contains("layers") && json["layers"].is_array();
      for (const nlohmann::json& layer : valid ? json["layers"] : nlohmann::json::array()) {
        if (!layer.contains("size") || !layer["size"].is_number_integer()) valid = false;
        if (valid) image.layer_sizes.push_back(layer["size"].get<int64_t>());
      }
    }
    if (!valid) {
      return absl::DataLossError(absl::StrCat("skopeo inspect", raw ? " --raw " : " ", reference,
                                              ":\n", Tail(result->output)));
    }
  }
  return image;
}

struct Step {
  std::string instruction;
  v1::CacheResult cache = v1::CACHE_RESULT_UNSPECIFIED;
  int64_t bytes = 0;
  double seconds = 0;
};

struct ElfBuild {
  double seconds = 0;
  double server_seconds = 0;
  std::string digest;
  std::string layout_reference;
  int64_t bytes_written = 0;
  int cached_layers = 0;
  int layers = 0;
  std::map<int, Step> steps;
};

// One Build RPC, timed from the call to the stream's result event.
absl::StatusOr<ElfBuild> ElfdeployBuild(v1::BuilderService::Stub& stub,
                                        const std::string& context_dir) {
  v1::BuildRequest request;
  request.set_context_dir(context_dir);
  request.set_dockerfile("Dockerfile");
  request.add_tags(kTag);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  ElfBuild build;
  bool finished = false;
  Clock::time_point start = Clock::now();
  std::unique_ptr<grpc::ClientReader<v1::BuildResponse>> reader = stub.Build(&context, request);
  v1::BuildResponse response;
  while (reader->Read(&response)) {
    if (response.has_step_started()) {
      build.steps[response.step_started().step()].instruction =
          response.step_started().instruction();
    } else if (response.has_step_completed()) {
      const v1::BuildStepCompleted& done = response.step_completed();
      Step& step = build.steps[done.step()];
      step.cache = done.cache();
      step.bytes = done.bytes_written();
      step.seconds = Seconds(done.duration());
    } else if (response.has_result()) {
      build.seconds = SecondsSince(start);
      const v1::BuildResult& result = response.result();
      build.server_seconds = Seconds(result.duration());
      build.digest = result.manifest_digest();
      build.layout_reference = result.layout_reference();
      build.bytes_written = result.bytes_written();
      build.cached_layers = result.cached_layers();
      build.layers = result.layers_size();
      finished = true;
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Build ", context_dir, ": ", status.error_message()));
  }
  if (!finished) return absl::InternalError(absl::StrCat("Build ", context_dir, ": no result"));
  return build;
}

struct BuildahBuild {
  double seconds = 0;
  double bud_seconds = 0;
  double push_seconds = 0;
  int cache_hits = 0;
  std::string digest;
  std::string layout_reference;
};

// `buildah bud` then `buildah push oci:<out>:app`, each a process timed from spawn to exit.
class Buildah {
 public:
  explicit Buildah(const TempDir& dir)
      : dir_(dir),
        global_({"buildah", "--storage-driver", "vfs", "--root", dir.Join("root"), "--runroot",
                 dir.Join("runroot")}) {}

  absl::StatusOr<BuildahBuild> Build(const std::string& context_dir, const std::string& out) {
    BuildahBuild build;
    std::vector<std::string> bud = global_;
    bud.insert(bud.end(), {"bud", "--isolation", "chroot", "--layers", "-t", kTag, "-f",
                           absl::StrCat(context_dir, "/Dockerfile"), context_dir});
    absl::StatusOr<std::string> log = Run(bud, &build.bud_seconds);
    if (!log.ok()) return log.status();
    for (absl::string_view line : absl::StrSplit(*log, '\n')) {
      if (absl::StrContains(line, "Using cache")) ++build.cache_hits;
    }
    build.layout_reference = absl::StrCat("oci:", out, ":", kBuildahRef);
    std::string digest_file = dir_.Join(absl::StrCat("digest-", ++pushes_));
    std::vector<std::string> push = global_;
    push.insert(push.end(), {"push", "--digestfile", digest_file, kTag, build.layout_reference});
    if (absl::StatusOr<std::string> pushed = Run(push, &build.push_seconds); !pushed.ok()) {
      return pushed.status();
    }
    build.seconds = build.bud_seconds + build.push_seconds;
    build.digest = std::string(absl::StripAsciiWhitespace(ReadFile(digest_file).value_or("")));
    return build;
  }

 private:
  absl::StatusOr<std::string> Run(const std::vector<std::string>& argv, double* seconds) {
    std::string log_path = dir_.Join("log");
    absl::StatusOr<Exit> exited = RunTimed(argv, {}, log_path);
    if (!exited.ok()) return exited.status();
    std::string output = ReadFile(log_path).value_or("");
    if (exited->code != 0) {
      return absl::UnknownError(
          absl::StrCat(absl::StrJoin(argv, " "), ": exit code ", exited->code, "\n", Tail(output)));
    }
    *seconds = exited->seconds;
    return output;
  }

  const TempDir& dir_;
  std::vector<std::string> global_;
  int pushes_ = 0;
};

struct Scenario {
  std::string name;
  double target = 0;
  std::vector<double> elfdeploy = {};
  std::vector<double> buildah = {};
};

class Bench {
 public:
  Bench(int files, int mb, int repeat) : files_(files), mb_(mb), repeat_(repeat) {}

  absl::Status Setup() {
    absl::StatusOr<std::string> buildah = VersionOf({"buildah", "--version"});
    if (!buildah.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("buildah does not work here: ", buildah.status().message()));
    }
    absl::StatusOr<std::string> skopeo = VersionOf({"skopeo", "--version"});
    if (!skopeo.ok()) return skopeo.status();
    absl::StatusOr<TempDir> dir = TempDir::Create("builder-bench-");
    if (!dir.ok()) return dir.status();
    dir_.emplace(*std::move(dir));
    Clock::time_point start = Clock::now();
    absl::StatusOr<SourceTree> tree = WriteSourceTree(Context(), files_, int64_t{mb_} << 20);
    if (!tree.ok()) return tree.status();
    tree_ = *tree;
    std::printf(
        "app: %d files, %lld bytes (%d Python modules, %lld bytes), FROM scratch, 2 COPYs, no RUN "
        "(written in %.1f s)\n",
        tree_.files, static_cast<long long>(tree_.bytes), tree_.modules,
        static_cast<long long>(tree_.module_bytes), SecondsSince(start));
    std::printf(
        "elfdeploy: %s, default config but builder.store_dir, one service per cold "
        "store, one Build RPC per build\n",
        BinaryPath("elfdeploy-builder").c_str());
    std::printf("buildah: %s, vfs storage, chroot isolation, --layers; bud + push oci: per build\n",
                buildah->c_str());
    std::printf("skopeo: %s\n\n", skopeo->c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::Status Run() {
    scenarios_ = {{.name = "cold", .target = kColdTarget},
                  {.name = "unchanged rebuild", .target = kRebuildTarget}};
    for (int rep = 0; rep < repeat_; ++rep) {
      for (int turn = 0; turn < 2; ++turn) {
        absl::Status s = (turn + rep) % 2 == 0 ? MeasureElfdeploy(rep) : MeasureBuildah(rep);
        if (!s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  void PrintTable() const {
    std::printf("\nimages (skopeo inspect):\n");
    PrintImage("elfdeploy", elf_image_);
    PrintImage("buildah", buildah_image_);
    std::printf("\nelfdeploy steps (median s over %d builds):\n", repeat_);
    std::printf("  %-4s %-34s %9s %9s\n", "step", "instruction", "cold", "rebuild");
    for (const auto& [step, times] : step_seconds_) {
      std::printf("  %-4d %-34s %9.3f %9.3f\n", step, step_names_.at(step).c_str(),
                  Median(times[0]), Median(times[1]));
    }
    std::printf("\n%-18s %12s %12s %9s %8s %6s\n", "scenario", "elfdeploy", "buildah", "speed-up",
                "target", "result");
    for (const Scenario& s : scenarios_) {
      double ours = Median(s.elfdeploy);
      double theirs = Median(s.buildah);
      double speedup = theirs / ours;
      std::printf("%-18s %10.3f s %10.3f s %8.1fx %8s %6s\n", s.name.c_str(), ours, theirs, speedup,
                  absl::StrFormat(">= %.0fx", s.target).c_str(),
                  speedup >= s.target ? "PASS" : "MISS");
    }
    std::printf(
        "\nseconds: median of %d; elfdeploy: Build RPC to its result event (service already "
        "running); buildah: bud + push processes, spawn to exit; each after sync(2), which tool "
        "goes first alternating\n"
        "cold: empty store and cache (new elfdeploy store and service; new buildah root, runroot "
        "and layout); rebuild: the same again, buildah pushing into a new layout\n"
        "speed-up: buildah / elfdeploy; every elfdeploy rebuild wrote 0 bytes with every layer "
        "step a cache hit and the cold build's manifest digest\n",
        repeat_);
  }

 private:
  std::string Context() const { return dir_->Join("context"); }

  void PrintImage(const char* tool, const Image& image) const {
    std::vector<std::string> sizes;
    for (int64_t size : image.layer_sizes) sizes.push_back(absl::StrCat(size));
    std::printf("  %-10s %s: %zu layers, %lld compressed bytes (%s; app bytes / that = %.2f)\n",
                tool, image.digest.c_str(), image.layer_sizes.size(),
                static_cast<long long>(image.LayerBytes()), absl::StrJoin(sizes, " + ").c_str(),
                static_cast<double>(tree_.bytes) / static_cast<double>(image.LayerBytes()));
  }

  absl::Status MeasureElfdeploy(int rep) {
    absl::StatusOr<TempDir> dir = TempDir::Create("builder-bench-elfdeploy-");
    if (!dir.ok()) return dir.status();
    std::string config = dir->Join("builder.yaml");
    if (absl::Status s =
            WriteFile(config, absl::StrCat("builder:\n  store_dir: ", dir->Join("store"), "\n"));
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::unique_ptr<ServiceProcess>> service = ServiceProcess::Start(
        {.binary = "elfdeploy-builder", .args = {absl::StrCat("--config=", config)}});
    if (!service.ok()) return service.status();
    auto channel = grpc::CreateChannel((*service)->grpc_addr(), grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError(absl::StrCat("no channel to ", (*service)->grpc_addr()));
    }
    std::unique_ptr<v1::BuilderService::Stub> stub = v1::BuilderService::NewStub(channel);
    std::string cold_digest;
    for (int rebuild = 0; rebuild < 2; ++rebuild) {
      std::string label = absl::StrFormat("[%d/%d] %-18s %-9s", rep + 1, repeat_,
                                          scenarios_[rebuild].name, "elfdeploy");
      ::sync();
      absl::StatusOr<ElfBuild> build = ElfdeployBuild(*stub, Context());
      if (!build.ok()) {
        return absl::Status(
            build.status().code(),
            absl::StrCat(label, ": ", build.status().message(), "\n", Tail((*service)->Log())));
      }
      if (absl::Status s = CheckElfdeploy(label, *build, rebuild == 1, cold_digest); !s.ok()) {
        return s;
      }
      if (rebuild == 0) cold_digest = build->digest;
      scenarios_[rebuild].elfdeploy.push_back(build->seconds);
      const Step* slowest = nullptr;
      for (const auto& [number, step] : build->steps) {
        step_names_[number] = step.instruction;
        step_seconds_[number][rebuild].push_back(step.seconds);
        if (slowest == nullptr || step.seconds > slowest->seconds) slowest = &step;
      }
      std::printf(
          "%s %8.3f s  %lld bytes written, %d of %d layers cached (server-side %.3f s, slowest "
          "step %s %.3f s)\n",
          label.c_str(), build->seconds, static_cast<long long>(build->bytes_written),
          build->cached_layers, build->layers, build->server_seconds,
          slowest == nullptr ? "-" : slowest->instruction.c_str(),
          slowest == nullptr ? 0.0 : slowest->seconds);
      if (elf_image_.digest.empty()) {
        absl::StatusOr<Image> image = SkopeoInspect(build->layout_reference);
        if (!image.ok()) return image.status();
        if (image->digest != build->digest) {
          return absl::DataLossError(absl::StrCat("skopeo inspect ", build->layout_reference,
                                                  ": digest ", image->digest, ", the build said ",
                                                  build->digest));
        }
        elf_image_ = *std::move(image);
      }
      std::fflush(stdout);
    }
    return absl::OkStatus();
  }

  absl::Status CheckElfdeploy(const std::string& label, const ElfBuild& build, bool rebuild,
                              const std::string& cold_digest) {
    std::vector<std::string> problems;
    if (build.digest.empty()) problems.push_back("no manifest digest");
    if (!reference_digest_.empty() && build.digest != reference_digest_) {
      problems.push_back(absl::StrCat("manifest ", build.digest, " differs from the first build's ",
                                      reference_digest_));
    }
    if (rebuild && build.digest != cold_digest) {
      problems.push_back(
          absl::StrCat("manifest ", build.digest, " differs from the cold build's ", cold_digest));
    }
    if (rebuild && build.bytes_written != 0) {
      problems.push_back(absl::StrCat(build.bytes_written, " bytes written"));
    }
    if (rebuild && build.cached_layers != build.layers) {
      problems.push_back(absl::StrCat(build.cached_layers, " of ", build.layers, " layers cached"));
    }
    if (!rebuild && build.cached_layers != 0) {
      problems.push_back(absl::StrCat(build.cached_layers, " cached layers from an empty store"));
    }
    for (const auto& [number, step] : build.steps) {
      if (rebuild && step.cache == v1::CACHE_RESULT_MISS) {
        problems.push_back(
            absl::StrCat("step ", number, " (", step.instruction, ") missed the cache"));
      }
      if (!rebuild && step.cache == v1::CACHE_RESULT_HIT) {
        problems.push_back(
            absl::StrCat("step ", number, " (", step.instruction, ") hit the cache"));
      }
    }
    if (reference_digest_.empty()) reference_digest_ = build.digest;
    if (problems.empty()) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(label, ": ", absl::StrJoin(problems, "; ")));
  }

  absl::Status MeasureBuildah(int rep) {
    absl::StatusOr<TempDir> dir = TempDir::Create("builder-bench-buildah-");
    if (!dir.ok()) return dir.status();
    Buildah buildah(*dir);
    for (int rebuild = 0; rebuild < 2; ++rebuild) {
      std::string label = absl::StrFormat("[%d/%d] %-18s %-9s", rep + 1, repeat_,
                                          scenarios_[rebuild].name, "buildah");
      ::sync();
      absl::StatusOr<BuildahBuild> build =
          buildah.Build(Context(), dir->Join(absl::StrCat("layout-", rebuild)));
      if (!build.ok()) {
        return absl::Status(build.status().code(),
                            absl::StrCat(label, ": ", build.status().message()));
      }
      scenarios_[rebuild].buildah.push_back(build->seconds);
      std::printf("%s %8.3f s  bud %.3f s (%d steps from its cache), push %.3f s\n", label.c_str(),
                  build->seconds, build->bud_seconds, build->cache_hits, build->push_seconds);
      if (buildah_image_.digest.empty()) {
        absl::StatusOr<Image> image = SkopeoInspect(build->layout_reference);
        if (!image.ok()) return image.status();
        if (image->digest != build->digest) {
          return absl::DataLossError(absl::StrCat("skopeo inspect ", build->layout_reference,
                                                  ": digest ", image->digest,
                                                  ", buildah push said ", build->digest));
        }
        buildah_image_ = *std::move(image);
      }
      std::fflush(stdout);
    }
    return absl::OkStatus();
  }

  int files_;
  int mb_;
  int repeat_;
  std::optional<TempDir> dir_;
  SourceTree tree_;
  std::vector<Scenario> scenarios_;
  std::string reference_digest_;
  Image elf_image_;
  Image buildah_image_;
  std::map<int, std::string> step_names_;
  std::map<int, std::array<std::vector<double>, 2>> step_seconds_;
};

int Main(const char* argv0) {
  int files = absl::GetFlag(FLAGS_files);
  int mb = absl::GetFlag(FLAGS_mb);
  int repeat = absl::GetFlag(FLAGS_repeat);
  std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  if (work_dir.empty()) work_dir = DefaultWorkDir();
  if (files < 1 || mb < 1 || repeat < 1) {
    std::fprintf(stderr, "--files, --mb and --repeat must be at least 1\n");
    return 2;
  }
  if (setenv("TMPDIR", work_dir.c_str(), 1) != 0) {
    std::fprintf(stderr, "setenv TMPDIR: %s\n", strerror(errno));
    return 2;
  }
  std::string command = absl::StrFormat("%s --files=%d --mb=%d --repeat=%d --work_dir=%s", argv0,
                                        files, mb, repeat, work_dir);
  std::printf("command: %s\n", command.c_str());
  std::printf("machine: %u cpus; work dir %s (%s), TMPDIR for both tools\n",
              std::thread::hardware_concurrency(), work_dir.c_str(), FileSystem(work_dir).c_str());
  if (FileSystem(work_dir) == "ext4") {
    std::printf("note: on ext4, buildah's times grow with the files deleted in the last minutes\n");
  }
  if (files < 2000 || (int64_t{mb} << 20) < 50'000'000) {
    std::printf("note: below issue 4 item 11's app (>= 2,000 files, >= 50 MB)\n");
  }
  Bench bench(files, mb, repeat);
  return RunAndReport(bench, command);
}

}  // namespace
}  // namespace elfdeploy::testing

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return elfdeploy::testing::Main(argv[0]);
}
