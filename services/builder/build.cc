#include "services/builder/build.h"

#include <archive.h>
#include <archive_entry.h>
#include <git2.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "services/builder/dockerfile.h"
#include "services/builder/layer.h"
#include "services/common/log.h"
#include "services/common/oci/copy.h"
#include "services/common/oci/reference.h"

namespace elfdeploy::builder {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kCreatedEpochFormat[] = "%Y-%m-%dT%H:%M:%SZ";

absl::Status LineError(const Instruction& in, absl::string_view message,
                       absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  return absl::Status(code, absl::StrCat("Dockerfile:", in.line, ": ", in.keyword, ": ", message));
}

absl::Status AtLine(const Instruction& in, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("Dockerfile:", in.line, ": ", in.keyword, ": ",
                                                  status.message()));
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes through a temporary file and rename.
absl::Status WriteAtomically(const std::string& path, absl::string_view data) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::string temp = absl::StrCat(path, ".tmp-", getpid(), "-", std::hash<std::string>()(path));
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) return absl::InternalError(absl::StrCat(temp, ": write failed"));
  }
  fs::rename(temp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

std::string Sha256Hex(absl::string_view data) { return oci::Digest::Sha256Of(data).hex(); }

// Docker layer media types become their OCI equivalents (same bytes).
std::string OciLayerType(const std::string& media_type) {
  if (media_type == oci::kDockerLayerGzip || media_type.empty()) return oci::kOciLayerGzip;
  if (media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") {
    return "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
  }
  return media_type;
}

// Joins an image path onto a working directory: absolute paths stay, relative ones are resolved.
std::string ImagePath(const std::string& workdir, const std::string& path) {
  if (absl::StartsWith(path, "/")) return CleanPath(path);
  return CleanPath(absl::StrCat(workdir.empty() ? "/" : workdir, "/", path));
}

uint32_t NormalMode(LayerEntry::Type type, uint32_t mode) {
  if (type == LayerEntry::Type::kDirectory) return 0755;
  if (type == LayerEntry::Type::kSymlink) return 0777;
  return (mode & 0111) != 0 ? 0755 : 0644;
}

bool IsArchive(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[265] = {};
  in.read(head, sizeof(head));
  std::streamsize n = in.gcount();
  if (n >= 2 && static_cast<unsigned char>(head[0]) == 0x1f &&
      static_cast<unsigned char>(head[1]) == 0x8b) {
    return true;  // gzip
  }
  if (n >= 3 && head[0] == 'B' && head[1] == 'Z' && head[2] == 'h') return true;
  if (n >= 6 && std::memcmp(head,
                            "\xfd"
                            "7zXZ\0",
                            6) == 0)
    return true;
  return n >= 262 && std::memcmp(head + 257, "ustar", 5) == 0;
}

// Entries of a local tar archive (ADD extracts them), relative paths below `dest`.
absl::StatusOr<std::vector<LayerEntry>> ArchiveEntries(const std::string& path,
                                                       const std::string& dest, uint32_t uid,
                                                       uint32_t gid,
                                                       std::optional<uint32_t> chmod) {
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  std::vector<LayerEntry> out;
  if (archive_read_open_filename(a, path.c_str(), 1 << 16) != ARCHIVE_OK) {
    std::string error = archive_error_string(a) == nullptr ? "" : archive_error_string(a);
    archive_read_free(a);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable archive: ", error));
  }
  archive_entry* entry = nullptr;
  absl::Status status;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
    std::string name = CleanPath(archive_entry_pathname(entry));
    if (name == ".") continue;
    if (absl::StartsWith(name, "/") || name == ".." || absl::StartsWith(name, "../")) {
      status = absl::PermissionDeniedError(
          absl::StrCat(path, ": archive entry ", name, " would leave the destination"));
      break;
    }
    LayerEntry e;
    e.path = CleanPath(absl::StrCat(dest, "/", name)).substr(1);
    e.uid = uid;
    e.gid = gid;
    mode_t type = archive_entry_filetype(entry);
    if (type == AE_IFDIR) {
      e.type = LayerEntry::Type::kDirectory;
    } else if (type == AE_IFLNK) {
      e.type = LayerEntry::Type::kSymlink;
      e.link_target = archive_entry_symlink(entry);
    } else if (type == AE_IFREG) {
      e.type = LayerEntry::Type::kFile;
      int64_t size = archive_entry_size(entry);
      e.content.resize(static_cast<size_t>(size));
      if (size > 0 && archive_read_data(a, e.content.data(), e.content.size()) != size) {
        status = absl::DataLossError(absl::StrCat(path, ": truncated entry ", name));
        break;
      }
      e.size = size;
    } else {
      status = absl::InvalidArgumentError(
          absl::StrCat(path, ": archive entry ", name, " is a device, FIFO or hard link"));
      break;
    }
    e.mode = chmod.value_or(NormalMode(e.type, archive_entry_perm(entry)));
    out.push_back(std::move(e));
  }
  archive_read_free(a);
  if (!status.ok()) return status;
  return out;
}

// Applies layer blobs in order into `root` (whiteouts honoured), for COPY --from.
absl::Status ExtractLayers(const oci::OciLayout& store, const std::vector<oci::Descriptor>& layers,
                           const std::string& root) {
  for (const oci::Descriptor& layer : layers) {
    archive* a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, store.BlobPath(layer.digest).c_str(), 1 << 16) !=
        ARCHIVE_OK) {
      archive_read_free(a);
      return absl::DataLossError(absl::StrCat("layer ", layer.digest.ToString(), " unreadable"));
    }
    archive* disk = archive_write_disk_new();
    // Entry names are checked above; the target paths are absolute by construction.
    archive_write_disk_set_options(disk, ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                             ARCHIVE_EXTRACT_SECURE_NODOTDOT);
    archive_entry* entry = nullptr;
    absl::Status status;
    while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
      std::string name = CleanPath(archive_entry_pathname(entry));
      if (absl::StartsWith(name, "/") || absl::StartsWith(name, "..")) continue;
      std::string base = fs::path(name).filename().string();
      std::string parent = fs::path(name).parent_path().string();
      std::error_code ec;
      if (base == ".wh..wh..opq") {
        for (const auto& child : fs::directory_iterator(fs::path(root) / parent, ec)) {
          fs::remove_all(child.path(), ec);
        }
        continue;
      }
      if (absl::StartsWith(base, ".wh.")) {
        fs::remove_all(fs::path(root) / parent / base.substr(4), ec);
        continue;
      }
      mode_t type = archive_entry_filetype(entry);
      if (type != AE_IFDIR && type != AE_IFREG && type != AE_IFLNK) continue;
      std::string target = (fs::path(root) / name).string();
      archive_entry_set_pathname(entry, target.c_str());
      if (archive_write_header(disk, entry) != ARCHIVE_OK) continue;
      const void* buffer;
      size_t size;
      la_int64_t offset;
      while (archive_read_data_block(a, &buffer, &size, &offset) == ARCHIVE_OK) {
        archive_write_data_block(disk, buffer, size, offset);
      }
      archive_write_finish_entry(disk);
    }
    archive_write_free(disk);
    archive_read_free(a);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// The git origin and HEAD commit of the repository holding `dir`, if any.
std::pair<std::string, std::string> GitSource(const std::string& dir) {
  static const int init = git_libgit2_init();
  (void)init;
  git_repository* repo = nullptr;
  std::pair<std::string, std::string> out;
  if (git_repository_open_ext(&repo, dir.c_str(), 0, nullptr) != 0) return out;
  git_oid oid;
  if (git_reference_name_to_id(&oid, repo, "HEAD") == 0) {
    char hex[GIT_OID_HEXSZ + 1] = {};
    git_oid_tostr(hex, sizeof(hex), &oid);
    out.second = hex;
  }
  // The URL is read from the config: git_remote_lookup leaks in libgit2 1.5 (insteadOf matching).
  git_config* config = nullptr;
  const char* url = nullptr;
  if (git_repository_config_snapshot(&config, repo) == 0 &&
      git_config_get_string(&url, config, "remote.origin.url") == 0 && url != nullptr) {
    // Credentials in a remote URL never reach the image.
    std::string clean = url;
    size_t scheme = clean.find("://");
    size_t at = clean.find('@', scheme == std::string::npos ? 0 : scheme + 3);
    size_t slash = clean.find('/', scheme == std::string::npos ? 0 : scheme + 3);
    if (scheme != std::string::npos && at != std::string::npos && at < slash) {
      clean.erase(scheme + 3, at - scheme - 2);
    }
    out.first = clean;
  }
  git_config_free(config);
  git_repository_free(repo);
  return out;
}

// Runs argv, calling `on_line` for each output line (stdout and stderr merged).
absl::StatusOr<int> RunProcess(const std::vector<std::string>& argv,
                               const std::function<void(const std::string&)>& on_line) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return absl::InternalError("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  std::string pending;
  char buffer[4096];
  ssize_t n;
  while ((n = read(pipe_fds[0], buffer, sizeof(buffer))) > 0) {
    pending.append(buffer, static_cast<size_t>(n));
    size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      if (on_line) on_line(pending.substr(0, std::min<size_t>(newline, 8192)));
      pending.erase(0, newline + 1);
    }
  }
  if (!pending.empty() && on_line) on_line(pending.substr(0, 8192));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool InPath(const std::string& program) {
  if (absl::StrContains(program, '/')) return access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path == nullptr ? "/usr/bin:/bin" : path, ':')) {
    if (access(absl::StrCat(dir, "/", program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

// The image a stage is building.
struct ImageState {
  Json config;
  std::vector<oci::Descriptor> layers;
  std::string chain;  // cache chain key: changes with every instruction and input
  std::vector<std::string> shell = {"/bin/sh", "-c"};
  std::map<std::string, std::string> args;  // ARGs visible in the stage
  bool cmd_set = false;                     // CMD given in this stage

  Json& Run() { return config["config"]; }
  std::vector<std::string> Env() const {
    std::vector<std::string> env;
    auto c = config.find("config");
    if (c != config.end() && c->contains("Env") && (*c)["Env"].is_array()) {
      for (const Json& e : (*c)["Env"]) env.push_back(e.get<std::string>());
    }
    return env;
  }
  std::optional<std::string> Lookup(absl::string_view name) const {
    for (const std::string& e : Env()) {
      size_t eq = e.find('=');
      if (eq != std::string::npos && absl::string_view(e).substr(0, eq) == name) {
        return e.substr(eq + 1);
      }
    }
    auto arg = args.find(std::string(name));
    if (arg != args.end()) return arg->second;
    return std::nullopt;
  }
  void SetEnv(const std::string& key, const std::string& value) {
    Json env = Json::array();
    bool replaced = false;
    for (const std::string& e : Env()) {
      if (absl::StartsWith(e, key + "=")) {
        env.push_back(absl::StrCat(key, "=", value));
        replaced = true;
      } else {
        env.push_back(e);
      }
    }
    if (!replaced) env.push_back(absl::StrCat(key, "=", value));
    Run()["Env"] = env;
  }
  std::string WorkDir() const {
    auto c = config.find("config");
    return c != config.end() ? c->value("WorkingDir", "") : "";
  }
};

class Builder::Run {
 public:
  Run(Builder& builder, const BuildParams& params, const BuildObserver& observer, std::string id)
      : b_(builder), params_(params), observer_(observer), id_(std::move(id)) {}

  ~Run() {
    std::error_code ec;
    for (const std::string& dir : temp_dirs_) fs::remove_all(dir, ec);
  }

  absl::StatusOr<BuildOutput> Execute() {
    if (params_.tags.empty()) return absl::InvalidArgumentError("tags: at least one is required");
    static const std::regex kRefName("^[A-Za-z0-9_.-]+(?:[:/@+][A-Za-z0-9_.-]+)*$");
    for (const std::string& tag : params_.tags) {
      if (!std::regex_match(tag, kRefName)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tag \"", tag, "\" is not a valid OCI ref name"));
      }
    }
    if (params_.context_dir.empty() || !absl::StartsWith(params_.context_dir, "/")) {
      return absl::InvalidArgumentError("context_dir must be an absolute directory");
    }
    absl::StatusOr<BuildContext> context =
        BuildContext::Open(params_.context_dir, b_.options_.context);
    if (!context.ok()) return context.status();
    context_.emplace(*std::move(context));
    epoch_ = params_.source_date_epoch.value_or(b_.options_.source_date_epoch);
    created_ =
        absl::FormatTime(kCreatedEpochFormat, absl::FromUnixSeconds(epoch_), absl::UTCTimeZone());

    std::string dockerfile_rel =
        CleanPath(params_.dockerfile.empty() ? "Dockerfile" : params_.dockerfile);
    if (absl::StartsWith(dockerfile_rel, "/") || absl::StartsWith(dockerfile_rel, "..")) {
      return absl::PermissionDeniedError(
          absl::StrCat("dockerfile ", params_.dockerfile, " is outside the build context"));
    }
    std::string dockerfile_path = absl::StrCat(context_->root(), "/", dockerfile_rel);
    char* real = realpath(dockerfile_path.c_str(), nullptr);
    std::string resolved = real == nullptr ? "" : real;
    std::free(real);
    if (resolved.empty()) {
      return absl::NotFoundError(absl::StrCat("Dockerfile ", dockerfile_path, " not found"));
    }
    if (!absl::StartsWith(resolved, context_->root() + "/")) {
      return absl::PermissionDeniedError("the Dockerfile resolves outside the build context");
    }
    absl::StatusOr<Dockerfile> dockerfile = ParseDockerfile(ReadText(resolved));
    if (!dockerfile.ok()) return dockerfile.status();
    escape_ = dockerfile->escape;
    absl::StatusOr<BuildStructure> structure = SplitStages(*dockerfile, params_.build_args);
    if (!structure.ok()) return structure.status();
    structure_ = *std::move(structure);

    // Build args the Dockerfile never declares are reported, as docker does.
    std::set<std::string> declared;
    for (const auto& [name, value] : structure_.global_args) declared.insert(name);
    for (const Stage& stage : structure_.stages) {
      for (const Instruction& in : stage.instructions) {
        if (in.keyword != "ARG") continue;
        absl::StatusOr<std::vector<std::pair<std::string, std::optional<std::string>>>> kv =
            ParseKeyValues(
                in, [](absl::string_view) { return std::nullopt; }, escape_);
        if (kv.ok()) {
          for (const auto& [name, value] : *kv) declared.insert(name);
        }
      }
    }
    for (const auto& [name, value] : params_.build_args) {
      if (declared.count(name) == 0 && observer_.warning) {
        observer_.warning(0, absl::StrCat("build arg ", name, " is not declared by any ARG"));
      }
    }

    int target = static_cast<int>(structure_.stages.size()) - 1;
    if (!params_.target.empty()) {
      target = StageIndex(absl::AsciiStrToLower(params_.target));
      if (target < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("target stage ", params_.target, " not found"));
      }
    }
    std::vector<bool> needed(structure_.stages.size(), false);
    MarkNeeded(target, needed);
    for (size_t i = 0; i < needed.size(); ++i) {
      if (needed[i]) total_steps_ += 1 + static_cast<int>(structure_.stages[i].instructions.size());
    }
    if (observer_.started) observer_.started(id_, total_steps_, resolved);

    states_.resize(structure_.stages.size());
    for (size_t i = 0; i < structure_.stages.size(); ++i) {
      if (!needed[i]) continue;
      absl::StatusOr<ImageState> state = RunStage(structure_.stages[i]);
      if (!state.ok()) return state.status();
      states_[i] = *std::move(state);
    }
    absl::StatusOr<BuildOutput> output = Commit(*states_[target]);
    b_.SaveFileDigests();
    return output;
  }

 private:
  int StageIndex(const std::string& name) const {
    for (const Stage& stage : structure_.stages) {
      if (stage.name == name) return stage.index;
    }
    int index = -1;
    if (absl::SimpleAtoi(name, &index) && index >= 0 &&
        index < static_cast<int>(structure_.stages.size())) {
      return index;
    }
    return -1;
  }

  void MarkNeeded(int index, std::vector<bool>& needed) const {
    if (needed[index]) return;
    needed[index] = true;
    const Stage& stage = structure_.stages[index];
    int base = StageIndex(stage.base);
    if (base >= 0 && base < index) MarkNeeded(base, needed);
    for (const Instruction& in : stage.instructions) {
      for (const std::string& flag : in.flags) {
        if (!absl::StartsWith(flag, "--from=")) continue;
        int from = StageIndex(absl::AsciiStrToLower(flag.substr(7)));
        if (from >= 0 && from < index) MarkNeeded(from, needed);
      }
    }
  }

  void StepStarted(const Stage& stage, const Instruction* in) {
    ++step_;
    step_start_ = absl::Now();
    if (observer_.step_started) {
      observer_.step_started(step_, total_steps_,
                             stage.name.empty() ? absl::StrCat(stage.index) : stage.name,
                             in == nullptr ? stage.line : in->line,
                             in == nullptr ? absl::StrCat("FROM ", stage.base) : in->original);
    }
  }

  void StepDone(BuildObserver::Cache cache, const std::string& layer, int64_t bytes) {
    if (observer_.step_completed) {
      observer_.step_completed(step_, cache, layer, bytes, absl::Now() - step_start_);
    }
  }

  void History(ImageState& state, const std::string& created_by, bool empty_layer) {
    Json entry = {{"created", created_}, {"created_by", created_by}};
    if (empty_layer) entry["empty_layer"] = true;
    state.config["history"].push_back(entry);
  }

  // Advances the cache chain with an instruction that changes only the config.
  void Chain(ImageState& state, const std::string& what) {
    state.chain = Sha256Hex(absl::StrCat(state.chain, "\n", what));
  }

  absl::StatusOr<ImageState> RunStage(const Stage& stage) {
    StepStarted(stage, nullptr);
    absl::StatusOr<ImageState> base = BaseState(stage);
    if (!base.ok()) return base.status();
    ImageState state = *std::move(base);
    StepDone(BuildObserver::Cache::kNotApplicable, "", 0);
    // Global ARG defaults reach a stage only through an ARG instruction inside it.
    for (const Instruction& in : stage.instructions) {
      StepStarted(stage, &in);
      absl::Status status = Apply(stage, in, state);
      if (!status.ok()) return status;
    }
    return state;
  }

  absl::StatusOr<ImageState> BaseState(const Stage& stage) {
    ImageState state;
    if (stage.base == "scratch") {
      state.config = {{"architecture", "amd64"},
                      {"os", "linux"},
                      {"config", Json::object()},
                      {"rootfs", {{"type", "layers"}, {"diff_ids", Json::array()}}},
                      {"history", Json::array()}};
      state.chain = "scratch";
      return state;
    }
    int from = StageIndex(absl::AsciiStrToLower(stage.base));
    if (from >= 0 && from < stage.index && states_[from].has_value()) {
      ImageState copy = *states_[from];
      copy.args.clear();
      copy.cmd_set = false;
      return copy;
    }
    return PullImage(stage.base, stage);
  }

  // Pulls `reference` into the store (blobs already there are not fetched again).
  absl::StatusOr<ImageState> PullImage(const std::string& reference, const Stage& stage) {
    if (b_.options_.registry == nullptr) {
      return absl::FailedPreconditionError("no registry client configured for FROM images");
    }
    absl::StatusOr<oci::ImageReference> ref = oci::ParseImageReference(reference);
    if (!ref.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Dockerfile:", stage.line, ": FROM: ", ref.status().message()));
    }
    if (ref->tag.empty() && ref->digest.empty()) ref->tag = "latest";
    oci::TransportReference source{oci::TransportReference::Kind::kDocker, *ref, "", ""};
    std::string base_ref =
        absl::StrCat("elfdeploy-base/", Sha256Hex(ref->ToString()).substr(0, 16));
    oci::TransportReference dest{
        oci::TransportReference::Kind::kOciLayout, {}, b_.options_.store_dir, base_ref};
    oci::CopyObserver copy_observer;
    std::string docker_ref = absl::StrCat("docker://", ref->ToString());
    copy_observer.on_blob = [this, &docker_ref](const oci::BlobEvent& event) {
      if (observer_.pull)
        observer_.pull(docker_ref, event.blob, event.action == oci::BlobAction::kSkipped);
    };
    absl::StatusOr<oci::CopyResult> pulled =
        oci::CopyImage(*b_.options_.registry, source, dest, oci::CopyOptions(), copy_observer);
    if (!pulled.ok()) {
      return absl::Status(pulled.status().code(),
                          absl::StrCat("Dockerfile:", stage.line, ": FROM ", reference, ": ",
                                       pulled.status().message()));
    }
    absl::StatusOr<std::string> manifest_bytes = b_.store_.ReadBlob(pulled->manifest_digest);
    if (!manifest_bytes.ok()) return manifest_bytes.status();
    absl::StatusOr<oci::Manifest> manifest = oci::ParseManifest(*manifest_bytes, reference);
    if (!manifest.ok()) return manifest.status();
    absl::StatusOr<std::string> config_bytes = b_.store_.ReadBlob(manifest->config.digest);
    if (!config_bytes.ok()) return config_bytes.status();
    ImageState state;
    state.config = Json::parse(*config_bytes, nullptr, false);
    if (!state.config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("FROM ", reference, ": image config is not JSON"));
    }
    if (!state.config.contains("config") || !state.config["config"].is_object()) {
      state.config["config"] = Json::object();
    }
    if (!state.config.contains("history") || !state.config["history"].is_array()) {
      state.config["history"] = Json::array();
    }
    for (const oci::Descriptor& layer : manifest->layers) {
      oci::Descriptor d = layer;
      d.media_type = OciLayerType(layer.media_type);
      state.layers.push_back(d);
    }
    state.chain = pulled->manifest_digest.ToString();
    return state;
  }

  Lookup EnvLookup(const ImageState& state) const {
    return [&state](absl::string_view name) { return state.Lookup(name); };
  }

  absl::Status Apply(const Stage& stage, const Instruction& in, ImageState& state) {
    const std::string& k = in.keyword;
    if (k == "COPY" || k == "ADD") return CopyLike(stage, in, state);
    if (k == "RUN") return RunStep(in, state);
    if (k == "HEALTHCHECK" || k == "ONBUILD") {
      return LineError(in, absl::StrCat(k,
                                        " is not part of the OCI image config and cannot be "
                                        "honoured; use Kubernetes probes in k8s/deployment.yaml"));
    }
    absl::Status status = ApplyConfig(in, state);
    if (!status.ok()) return status;
    Chain(state, in.original);
    History(state, in.original, true);
    StepDone(BuildObserver::Cache::kNotApplicable, "", 0);
    return absl::OkStatus();
  }

  absl::Status ApplyConfig(const Instruction& in, ImageState& state) {
    const std::string& k = in.keyword;
    Json& run = state.Run();
    if (k == "ARG" || k == "ENV" || k == "LABEL") {
      absl::StatusOr<std::vector<std::pair<std::string, std::optional<std::string>>>> pairs =
          ParseKeyValues(in, EnvLookup(state), escape_);
      if (!pairs.ok()) return pairs.status();
      for (const auto& [key, value] : *pairs) {
        if (k == "ARG") {
          auto given = params_.build_args.find(key);
          std::optional<std::string> global;
          for (const auto& [name, default_value] : structure_.global_args) {
            if (name == key) global = default_value;
          }
          if (given != params_.build_args.end()) {
            state.args[key] = given->second;
          } else if (value.has_value()) {
            state.args[key] = *value;
          } else if (global.has_value()) {
            state.args[key] = *global;
          } else {
            state.args[key] = "";
          }
        } else if (k == "ENV") {
          state.SetEnv(key, value.value_or(""));
        } else {
          run["Labels"][key] = value.value_or("");
        }
      }
      return absl::OkStatus();
    }
    if (k == "WORKDIR" || k == "USER" || k == "STOPSIGNAL" || k == "MAINTAINER") {
      absl::StatusOr<std::string> word = ProcessWord(in.args, EnvLookup(state), escape_);
      if (!word.ok()) return AtLine(in, word.status());
      if (word->empty()) return LineError(in, "needs a value");
      if (k == "WORKDIR") run["WorkingDir"] = ImagePath(state.WorkDir(), *word);
      if (k == "USER") run["User"] = *word;
      if (k == "STOPSIGNAL") run["StopSignal"] = *word;
      if (k == "MAINTAINER") state.config["author"] = *word;
      return absl::OkStatus();
    }
    if (k == "EXPOSE" || k == "VOLUME") {
      std::vector<std::string> words;
      if (in.json) {
        words = in.json_args;
      } else {
        absl::StatusOr<std::vector<std::string>> split =
            ProcessWords(in.args, EnvLookup(state), escape_);
        if (!split.ok()) return AtLine(in, split.status());
        words = *split;
      }
      if (words.empty()) return LineError(in, "needs at least one value");
      for (const std::string& word : words) {
        if (k == "VOLUME") {
          run["Volumes"][ImagePath(state.WorkDir(), word)] = Json::object();
          continue;
        }
        std::string port = word;
        std::string proto = "tcp";
        if (size_t slash = word.find('/'); slash != std::string::npos) {
          port = word.substr(0, slash);
          proto = absl::AsciiStrToLower(word.substr(slash + 1));
        }
        int number = 0;
        if (!absl::SimpleAtoi(port, &number) || number < 1 || number > 65535 ||
            (proto != "tcp" && proto != "udp" && proto != "sctp")) {
          return LineError(in, absl::StrCat("\"", word, "\" is not a port[/tcp|udp|sctp]"));
        }
        run["ExposedPorts"][absl::StrCat(number, "/", proto)] = Json::object();
      }
      return absl::OkStatus();
    }
    if (k == "CMD" || k == "ENTRYPOINT" || k == "SHELL") {
      std::vector<std::string> command;
      if (in.json) {
        command = in.json_args;
      } else if (k == "SHELL") {
        return LineError(in, "takes a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]");
      } else {
        command = state.shell;
        command.push_back(in.args);
      }
      if (k == "SHELL") {
        if (command.empty()) return LineError(in, "needs a shell");
        state.shell = command;
        run["Shell"] = command;
      } else {
        run[k == "CMD" ? "Cmd" : "Entrypoint"] = command;
        if (k == "CMD") state.cmd_set = true;
        // As docker does, ENTRYPOINT clears a CMD inherited from the base image.
        if (k == "ENTRYPOINT" && !state.cmd_set) run.erase("Cmd");
      }
      return absl::OkStatus();
    }
    if (k == "FROM") return LineError(in, "FROM inside a stage");
    return LineError(in, "unsupported instruction");
  }

  absl::StatusOr<std::pair<uint32_t, uint32_t>> Owner(
      const Instruction& in, const std::map<std::string, std::string>& flags,
      const ImageState& state) {
    auto chown = flags.find("chown");
    if (chown == flags.end()) return std::make_pair(0u, 0u);
    absl::StatusOr<std::string> value = ProcessWord(chown->second, EnvLookup(state), escape_);
    if (!value.ok()) return AtLine(in, value.status());
    std::vector<std::string> parts = absl::StrSplit(*value, ':');
    uint32_t ids[2] = {0, 0};
    for (size_t i = 0; i < 2; ++i) {
      std::string part = i < parts.size() ? parts[i] : parts[0];
      if (part == "root") continue;
      if (!absl::SimpleAtoi(part, &ids[i])) {
        return LineError(in, absl::StrCat("--chown=", *value,
                                          ": user and group names need the image's /etc/passwd; "
                                          "give numeric uid:gid"));
      }
    }
    if (parts.size() > 2)
      return LineError(in, absl::StrCat("--chown=", *value, " is not uid[:gid]"));
    return std::make_pair(ids[0], ids[1]);
  }

  // COPY and ADD: files from the context (or another stage) become one reproducible layer.
  absl::Status CopyLike(const Stage& stage, const Instruction& in, ImageState& state) {
    bool add = in.keyword == "ADD";
    absl::StatusOr<std::map<std::string, std::string>> flags =
        ParseFlags(in, add ? std::vector<std::string>{"chown", "chmod", "link"}
                           : std::vector<std::string>{"from", "chown", "chmod", "link"});
    if (!flags.ok()) return flags.status();
    std::vector<std::string> words;
    if (in.json) {
      words = in.json_args;
    } else {
      absl::StatusOr<std::vector<std::string>> split =
          ProcessWords(in.args, EnvLookup(state), escape_);
      if (!split.ok()) return AtLine(in, split.status());
      words = *split;
    }
    if (words.size() < 2) return LineError(in, "needs at least one source and a destination");
    std::string dest_word = words.back();
    words.pop_back();
    std::string dest = ImagePath(state.WorkDir(), dest_word);
    bool dest_is_dir = absl::EndsWith(dest_word, "/") || dest_word == ".";
    absl::StatusOr<std::pair<uint32_t, uint32_t>> owner = Owner(in, *flags, state);
    if (!owner.ok()) return owner.status();
    std::optional<uint32_t> chmod;
    if (auto c = flags->find("chmod"); c != flags->end()) {
      uint32_t mode = 0;
      if (c->second.empty() || c->second.size() > 4 ||
          c->second.find_first_not_of("01234567") != std::string::npos ||
          !absl::numbers_internal::safe_strtou32_base(c->second, &mode, 8)) {
        return LineError(in, absl::StrCat("--chmod=", c->second, " is not an octal mode"));
      }
      chmod = mode;
    }

    // Where sources come from: the context, or the file system of a stage or image.
    const BuildContext* source = &*context_;
    std::optional<BuildContext> rootfs;
    std::string from_key;
    if (auto from = flags->find("from"); from != flags->end()) {
      absl::StatusOr<std::string> name = ProcessWord(from->second, EnvLookup(state), escape_);
      if (!name.ok()) return AtLine(in, name.status());
      absl::StatusOr<std::pair<std::string, std::string>> fs_root = StageRootfs(stage, in, *name);
      if (!fs_root.ok()) return fs_root.status();
      ContextOptions options = b_.options_.context;
      options.symlinks_as_links = true;
      absl::StatusOr<BuildContext> opened = BuildContext::Open(fs_root->first, options);
      if (!opened.ok()) return opened.status();
      rootfs.emplace(*std::move(opened));
      source = &*rootfs;
      from_key = fs_root->second;
    }

    std::vector<SourceFile> matched;
    for (const std::string& word : words) {
      if (add && (absl::StartsWith(word, "http://") || absl::StartsWith(word, "https://") ||
                  absl::StartsWith(word, "git@"))) {
        return LineError(in, absl::StrCat("remote source ", word,
                                          " is not supported; put the file in the build context"));
      }
      std::string path = word;
      if (rootfs.has_value())
        path = absl::StrCat(".", absl::StartsWith(word, "/") ? "" : "/", word);
      absl::StatusOr<std::vector<SourceFile>> found = source->Match(path);
      if (!found.ok()) return AtLine(in, found.status());
      matched.insert(matched.end(), found->begin(), found->end());
    }
    if (matched.size() > 1 && !absl::EndsWith(dest_word, "/")) {
      return LineError(in,
                       "with more than one source the destination must be a directory and "
                       "end with a /");
    }

    // The layer's entries, keyed by image path; parents of the destination are created.
    std::map<std::string, LayerEntry> entries;
    auto add_dir = [&](const std::string& image_path) {
      for (std::string p = image_path; p.size() > 1 && p != ".";
           p = p.substr(0, std::max<size_t>(p.rfind('/'), 1))) {
        std::string rel = p.substr(1);
        if (entries.count(rel) == 0) {
          LayerEntry dir;
          dir.path = rel;
          dir.type = LayerEntry::Type::kDirectory;
          dir.mode = chmod.value_or(0755);
          dir.uid = owner->first;
          dir.gid = owner->second;
          entries[rel] = dir;
        }
      }
    };
    auto add_file = [&](const SourceFile& file, const std::string& image_path) -> absl::Status {
      add_dir(fs::path(image_path).parent_path().string());
      LayerEntry e;
      e.path = image_path.substr(1);
      e.type = file.type;
      e.mode = chmod.value_or(NormalMode(file.type, file.mode));
      e.uid = owner->first;
      e.gid = owner->second;
      if (file.type == LayerEntry::Type::kFile) {
        e.source_file = file.abs_path;
        e.size = file.size;
        e.source_mtime_ns = file.mtime_ns;
        e.source_inode = file.inode;
        if (absl::Status s = source->Charge(file.size); !s.ok()) return s;
      } else if (file.type == LayerEntry::Type::kSymlink) {
        e.link_target = file.link_target;
      }
      entries[e.path] = e;
      return absl::OkStatus();
    };
    for (const SourceFile& file : matched) {
      if (file.type == LayerEntry::Type::kDirectory) {
        add_dir(dest);
        absl::StatusOr<std::vector<SourceFile>> tree = source->Walk(file);
        if (!tree.ok()) return AtLine(in, tree.status());
        for (const SourceFile& child : *tree) {
          std::string rel = file.rel_path == "." ? child.rel_path
                                                 : child.rel_path.substr(file.rel_path.size() + 1);
          absl::Status s = add_file(child, CleanPath(absl::StrCat(dest, "/", rel)));
          if (!s.ok()) return AtLine(in, s);
        }
        continue;
      }
      if (add && file.type == LayerEntry::Type::kFile && IsArchive(file.abs_path)) {
        add_dir(dest);
        absl::StatusOr<std::vector<LayerEntry>> extracted =
            ArchiveEntries(file.abs_path, dest, owner->first, owner->second, chmod);
        if (!extracted.ok()) return AtLine(in, extracted.status());
        for (LayerEntry& e : *extracted) {
          add_dir(fs::path("/" + e.path).parent_path().string());
          entries[e.path] = std::move(e);
        }
        continue;
      }
      std::string target =
          (dest_is_dir || matched.size() > 1)
              ? CleanPath(absl::StrCat(dest, "/", fs::path(file.rel_path).filename().string()))
              : dest;
      if (target == "/") return LineError(in, "cannot replace / with a file");
      absl::Status s = add_file(file, target);
      if (!s.ok()) return AtLine(in, s);
    }

    // The cache key covers every entry's metadata and content digest.
    std::string manifest =
        absl::StrCat(state.chain, "\n", in.keyword, " ", absl::StrJoin(in.flags, " "), " ", dest,
                     "\n", from_key, "\n");
    std::vector<LayerEntry> list;
    for (auto& [path, e] : entries) {
      std::string content;
      if (e.type == LayerEntry::Type::kFile) {
        if (!e.source_file.empty()) {
          absl::StatusOr<oci::Digest> digest = b_.FileDigest(e);
          if (!digest.ok()) return AtLine(in, digest.status());
          if (e.source_file.empty()) source_bytes_read_ += e.size;  // it had to be read
          content = digest->ToString();
        } else {
          content = Sha256Hex(e.content);
        }
      }
      absl::StrAppend(&manifest, path, " ", static_cast<int>(e.type), " ", e.mode, " ", e.uid, ":",
                      e.gid, " ", e.size, " ", content, " ", e.link_target, "\n");
      list.push_back(std::move(e));
    }
    return AddLayer(in, state, Sha256Hex(manifest), std::move(list));
  }

  // Appends a layer: from the cache when `key` is known and its blob is in the store, else written.
  absl::Status AddLayer(const Instruction& in, ImageState& state, const std::string& key,
                        std::vector<LayerEntry> entries) {
    std::optional<std::string> cached = params_.no_cache ? std::nullopt : b_.CacheGet(key);
    Json hit = cached.has_value() ? Json::parse(*cached, nullptr, false) : Json();
    oci::Descriptor layer;
    std::string diff_id;
    BuildObserver::Cache outcome = BuildObserver::Cache::kMiss;
    int64_t written = 0;
    if (hit.is_object()) {
      absl::StatusOr<oci::Digest> digest = oci::Digest::Parse(hit.value("digest", ""));
      int64_t size = hit.value("size", int64_t{-1});
      if (digest.ok() && b_.store_.HasBlob(*digest, size)) {
        layer = {oci::kOciLayerGzip, *digest, size, std::nullopt, {}, {}};
        diff_id = hit.value("diff_id", "");
        outcome = BuildObserver::Cache::kHit;
      }
    }
    if (outcome != BuildObserver::Cache::kHit) {
      LayerOptions options;
      options.mtime = epoch_;
      options.compression_level = b_.options_.compression_level;
      for (const LayerEntry& e : entries) {
        if (!e.source_file.empty()) source_bytes_read_ += e.size;  // read by the tar writer
      }
      absl::StatusOr<LayerResult> result = WriteLayer(std::move(entries), options, b_.store_);
      if (!result.ok()) return AtLine(in, result.status());
      layer = {oci::kOciLayerGzip, result->digest, result->size, std::nullopt, {}, {}};
      diff_id = result->diff_id.ToString();
      written = result->size;
      b_.CachePut(
          key, Json{{"digest", layer.digest.ToString()}, {"size", layer.size}, {"diff_id", diff_id}}
                   .dump());
    }
    state.layers.push_back(layer);
    state.config["rootfs"]["type"] = "layers";
    state.config["rootfs"]["diff_ids"].push_back(diff_id);
    state.chain = Sha256Hex(absl::StrCat(key, "\n", diff_id));
    History(state, in.original, false);
    StepDone(outcome, layer.digest.ToString(), written);
    return absl::OkStatus();
  }

  // The file system of the stage or image `name`, extracted into a temporary directory, and a
  // key that identifies its content for the cache.
  absl::StatusOr<std::pair<std::string, std::string>> StageRootfs(const Stage& stage,
                                                                  const Instruction& in,
                                                                  const std::string& name) {
    const ImageState* image = nullptr;
    std::optional<ImageState> pulled;
    int index = StageIndex(absl::AsciiStrToLower(name));
    if (index >= 0) {
      if (index >= stage.index || !states_[index].has_value()) {
        return LineError(in, absl::StrCat("--from=", name,
                                          " names a stage that is not built before "
                                          "this one"));
      }
      image = &*states_[index];
    } else {
      absl::StatusOr<ImageState> state = PullImage(name, stage);
      if (!state.ok()) return state.status();
      pulled = *std::move(state);
      image = &*pulled;
    }
    std::string dir =
        absl::StrCat(b_.options_.store_dir, "/tmp/", id_, "-rootfs-", rootfs_count_++);
    temp_dirs_.push_back(dir);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("create ", dir, ": ", ec.message()));
    if (absl::Status s = ExtractLayers(b_.store_, image->layers, dir); !s.ok())
      return AtLine(in, s);
    return std::make_pair(dir, image->chain);
  }

  // Writes the current state as an image in the store and returns its manifest descriptor.
  absl::StatusOr<oci::Descriptor> WriteImage(const ImageState& state) {
    std::string config_bytes = state.config.dump();
    absl::StatusOr<oci::Digest> config_digest = b_.store_.WriteBlob(config_bytes);
    if (!config_digest.ok()) return config_digest.status();
    oci::Manifest manifest;
    manifest.media_type = oci::kOciManifest;
    manifest.config = {oci::kOciConfig,
                       *config_digest,
                       static_cast<int64_t>(config_bytes.size()),
                       std::nullopt,
                       {},
                       {}};
    manifest.layers = state.layers;
    std::string manifest_bytes = oci::SerializeManifest(manifest);
    absl::StatusOr<oci::Digest> manifest_digest = b_.store_.WriteBlob(manifest_bytes);
    if (!manifest_digest.ok()) return manifest_digest.status();
    return oci::Descriptor{oci::kOciManifest,
                           *manifest_digest,
                           static_cast<int64_t>(manifest_bytes.size()),
                           std::nullopt,
                           {},
                           {}};
  }

  // RUN goes to the engine: the current image is handed to buildah, the command runs in it, and
  // the layer it commits is taken back into the store.
  absl::Status RunStep(const Instruction& in, ImageState& state) {
    const std::string& engine = b_.options_.run_engine;
    if (engine.empty() || !InPath(engine)) {
      return LineError(in,
                       absl::StrCat("RUN needs a build engine and ",
                                    engine.empty() ? std::string("none is configured")
                                                   : absl::StrCat("\"", engine, "\" was not found"),
                                    " (builder.run_engine); build without RUN or install buildah"),
                       absl::StatusCode::kFailedPrecondition);
    }
    absl::StatusOr<std::map<std::string, std::string>> flags = ParseFlags(in, {});
    if (!flags.ok()) return flags.status();
    std::vector<std::string> command = in.json ? in.json_args : state.shell;
    if (!in.json) command.push_back(in.args);

    // ARGs are visible to RUN as environment variables, as with docker.
    std::string key =
        Sha256Hex(absl::StrCat(state.chain, "\nRUN ", absl::StrJoin(command, "\x1f"), "\n",
                               absl::StrJoin(state.args, ",", absl::PairFormatter("="))));
    std::optional<std::string> cached = params_.no_cache ? std::nullopt : b_.CacheGet(key);
    if (cached.has_value()) {
      Json hit = Json::parse(*cached, nullptr, false);
      absl::StatusOr<oci::Digest> digest =
          oci::Digest::Parse(hit.is_object() ? hit.value("digest", "") : "");
      int64_t size = hit.is_object() ? hit.value("size", int64_t{-1}) : -1;
      if (digest.ok() && b_.store_.HasBlob(*digest, size)) {
        state.layers.push_back({oci::kOciLayerGzip, *digest, size, std::nullopt, {}, {}});
        state.config["rootfs"]["diff_ids"].push_back(hit.value("diff_id", ""));
        state.chain = Sha256Hex(absl::StrCat(key, "\n", hit.value("diff_id", "")));
        History(state, in.original, false);
        StepDone(BuildObserver::Cache::kHit, digest->ToString(), 0);
        return absl::OkStatus();
      }
    }

    std::string run_ref = absl::StrCat("elfdeploy-run/", id_, "-", step_);
    absl::StatusOr<oci::Descriptor> image = WriteImage(state);
    if (!image.ok()) return image.status();
    if (absl::Status s = b_.store_.Tag(run_ref, *image); !s.ok()) return s;
    std::string work = absl::StrCat(b_.options_.store_dir, "/tmp/", id_, "-run-", step_);
    temp_dirs_.push_back(work);
    std::vector<std::string> base = {engine};
    base.insert(base.end(), b_.options_.run_engine_args.begin(), b_.options_.run_engine_args.end());
    base.insert(base.end(), {"--root", work + "/root", "--runroot", work + "/runroot"});
    std::string container = absl::StrCat("elfdeploy-", id_, "-", step_);
    auto engine_cmd = [&](std::vector<std::string> args) {
      std::vector<std::string> argv = base;
      argv.insert(argv.end(), args.begin(), args.end());
      return argv;
    };
    std::string transcript;
    auto keep = [&transcript](const std::string& line) {
      absl::StrAppend(&transcript, line, "\n");
      if (transcript.size() > 4096) transcript.erase(0, transcript.size() - 4096);
    };
    auto fail = [&](absl::string_view what, int code) {
      return LineError(in, absl::StrCat(what, " failed (exit ", code, "): ", transcript),
                       absl::StatusCode::kFailedPrecondition);
    };
    // buildah names an image pulled from an OCI layout after the layout's path, and refuses
    // upper-case names: it is given the store through a lower-case link.
    std::string link = absl::StrCat("/tmp/elfdeploy-oci-", id_, "-", step_);
    std::error_code ec;
    fs::remove(link, ec);
    fs::create_directory_symlink(fs::absolute(b_.options_.store_dir), link, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", link, ": ", ec.message()));
    absl::StatusOr<int> code =
        RunProcess(engine_cmd({"from", "--quiet", "--pull-never", "--name", container,
                               absl::StrCat("oci:", link, ":", run_ref)}),
                   keep);
    fs::remove(link, ec);
    if (!code.ok()) return code.status();
    if (*code != 0) return fail(absl::StrCat(engine, " from"), *code);

    std::vector<std::string> run = {"run", "--isolation", "chroot"};
    for (const auto& [name, value] : state.args) {
      if (!state.Lookup(name).has_value() || state.Lookup(name) == value) {
        run.insert(run.end(), {"--env", absl::StrCat(name, "=", value)});
      }
    }
    run.push_back(container);
    run.push_back("--");
    run.insert(run.end(), command.begin(), command.end());
    transcript.clear();
    code = RunProcess(engine_cmd(run), [&](const std::string& line) {
      keep(line);
      if (observer_.log) observer_.log(step_, false, line);
    });
    if (!code.ok()) return code.status();
    if (*code != 0) {
      return LineError(in, absl::StrCat("the command returned a non-zero code: ", *code),
                       absl::StatusCode::kFailedPrecondition);
    }
    std::string out = work + "/out";
    transcript.clear();
    code = RunProcess(engine_cmd({"commit", "--quiet", "--format", "oci", container,
                                  absl::StrCat("oci:", out, ":run")}),
                      keep);
    if (!code.ok()) return code.status();
    if (*code != 0) return fail(absl::StrCat(engine, " commit"), *code);
    RunProcess(engine_cmd({"rm", container}), nullptr).IgnoreError();
    b_.store_.Untag(run_ref).IgnoreError();

    // The engine's image is our image plus its new layer(s).
    absl::StatusOr<oci::OciLayout> committed = oci::OciLayout::Open(out);
    if (!committed.ok()) return committed.status();
    absl::StatusOr<oci::Descriptor> top = committed->Resolve("run");
    if (!top.ok()) return top.status();
    absl::StatusOr<std::string> manifest_bytes = committed->ReadBlob(top->digest);
    if (!manifest_bytes.ok()) return manifest_bytes.status();
    absl::StatusOr<oci::Manifest> manifest = oci::ParseManifest(*manifest_bytes, out);
    if (!manifest.ok()) return manifest.status();
    absl::StatusOr<std::string> config_bytes = committed->ReadBlob(manifest->config.digest);
    if (!config_bytes.ok()) return config_bytes.status();
    Json config = Json::parse(*config_bytes, nullptr, false);
    if (!config.is_object() || manifest->layers.size() < state.layers.size()) {
      return LineError(in, "the engine's image lost layers", absl::StatusCode::kInternal);
    }
    std::vector<std::string> diff_ids;
    for (const Json& d : config["rootfs"]["diff_ids"]) diff_ids.push_back(d.get<std::string>());
    int64_t written = 0;
    std::string last_digest;
    std::string last_diff;
    for (size_t i = state.layers.size(); i < manifest->layers.size(); ++i) {
      const oci::Descriptor& layer = manifest->layers[i];
      absl::StatusOr<std::string> bytes = committed->ReadBlob(layer.digest);
      if (!bytes.ok()) return bytes.status();
      absl::StatusOr<oci::Digest> stored = b_.store_.WriteBlob(*bytes, layer.digest);
      if (!stored.ok()) return stored.status();
      oci::Descriptor d = layer;
      d.media_type = OciLayerType(layer.media_type);
      state.layers.push_back(d);
      std::string diff = i < diff_ids.size() ? diff_ids[i] : "";
      state.config["rootfs"]["diff_ids"].push_back(diff);
      written += layer.size;
      last_digest = layer.digest.ToString();
      last_diff = diff;
    }
    if (!last_digest.empty()) {
      b_.CachePut(
          key,
          Json{{"digest", last_digest}, {"size", state.layers.back().size}, {"diff_id", last_diff}}
              .dump());
    }
    state.chain = Sha256Hex(absl::StrCat(key, "\n", last_diff));
    History(state, in.original, last_digest.empty());
    StepDone(BuildObserver::Cache::kMiss, last_digest, written);
    return absl::OkStatus();
  }

  absl::StatusOr<BuildOutput> Commit(ImageState state) {
    Json& run = state.Run();
    auto [source, revision] = GitSource(context_->root());
    if (!source.empty() && !run["Labels"].contains("org.opencontainers.image.source")) {
      run["Labels"]["org.opencontainers.image.source"] = source;
    }
    if (!revision.empty() && !run["Labels"].contains("org.opencontainers.image.revision")) {
      run["Labels"]["org.opencontainers.image.revision"] = revision;
    }
    for (const auto& [key, value] : params_.labels) run["Labels"][key] = value;
    if (run.contains("Labels") && run["Labels"].empty()) run.erase("Labels");
    state.config["created"] = created_;
    state.config["architecture"] = "amd64";
    state.config["os"] = "linux";
    absl::StatusOr<oci::Descriptor> manifest = WriteImage(state);
    if (!manifest.ok()) return manifest.status();
    for (const std::string& tag : params_.tags) {
      if (absl::Status s = b_.store_.Tag(tag, *manifest); !s.ok()) return s;
    }
    BuildOutput output;
    output.manifest = *manifest;
    std::string config_bytes = state.config.dump();
    output.config = {oci::kOciConfig,
                     oci::Digest::Sha256Of(config_bytes),
                     static_cast<int64_t>(config_bytes.size()),
                     std::nullopt,
                     {},
                     {}};
    output.layers = state.layers;
    output.size = manifest->size + output.config.size;
    for (const oci::Descriptor& layer : state.layers) output.size += layer.size;
    output.layout_reference =
        absl::StrCat("oci:", b_.options_.store_dir, ":", params_.tags.front());
    output.tags = params_.tags;
    output.source_url = source;
    output.source_revision = revision;
    output.created_epoch = epoch_;
    output.source_bytes_read = source_bytes_read_;
    return output;
  }

  Builder& b_;
  const BuildParams& params_;
  const BuildObserver& observer_;
  std::string id_;
  std::optional<BuildContext> context_;
  int64_t epoch_ = 0;
  std::string created_;
  char escape_ = '\\';
  BuildStructure structure_;
  std::vector<std::optional<ImageState>> states_;
  int total_steps_ = 0;
  int step_ = 0;
  absl::Time step_start_;
  int rootfs_count_ = 0;
  int64_t source_bytes_read_ = 0;
  std::vector<std::string> temp_dirs_;
};

Builder::Builder(BuilderOptions options, oci::OciLayout store)
    : options_(std::move(options)), store_(std::move(store)) {}

Builder::~Builder() { SaveFileDigests(); }

absl::StatusOr<std::unique_ptr<Builder>> Builder::Create(BuilderOptions options) {
  absl::StatusOr<oci::OciLayout> store = oci::OciLayout::OpenOrCreate(options.store_dir);
  if (!store.ok()) return store.status();
  std::unique_ptr<Builder> builder(new Builder(std::move(options), *std::move(store)));
  Json files = Json::parse(ReadText(absl::StrCat(builder->options_.store_dir, "/cache/files.json")),
                           nullptr, false);
  if (files.is_object()) {
    absl::MutexLock lock(&builder->mu_);
    for (const auto& [path, stamp] : files.items()) {
      if (!stamp.is_array() || stamp.size() != 4) continue;
      builder->file_digests_[path] =
          FileStamp{stamp[0].get<int64_t>(), stamp[1].get<int64_t>(), stamp[2].get<uint64_t>(),
                    stamp[3].get<std::string>()};
    }
  }
  return builder;
}

absl::StatusOr<BuildOutput> Builder::Build(const BuildParams& params,
                                           const BuildObserver& observer) {
  std::string id;
  int position = -1;
  {
    absl::MutexLock lock(&mu_);
    if (running_ >= options_.max_parallel_builds) position = waiting_;
    ++waiting_;
  }
  if (position >= 0 && observer.queued) observer.queued(position);  // not under the lock
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Builder* b) { return b->running_ < b->options_.max_parallel_builds; }, this));
    --waiting_;
    ++running_;
    id = absl::StrCat(getpid(), "-", ++next_build_);
  }
  absl::StatusOr<BuildOutput> output;
  {
    Run run(*this, params, observer, id);
    output = run.Execute();
  }
  absl::MutexLock lock(&mu_);
  --running_;
  return output;
}

absl::StatusOr<oci::Digest> Builder::FileDigest(LayerEntry& entry) {
  const std::string path = entry.source_file;  // a copy: the entry's is cleared below
  {
    absl::MutexLock lock(&mu_);
    auto it = file_digests_.find(path);
    if (it != file_digests_.end() && it->second.size == entry.size &&
        it->second.mtime_ns == entry.source_mtime_ns && it->second.inode == entry.source_inode) {
      return oci::Digest::Parse(it->second.digest);
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::string content(static_cast<size_t>(entry.size), '\0');
  in.read(content.data(), entry.size);
  if (in.gcount() != entry.size || in.peek() != std::char_traits<char>::eof()) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " changed while the build read it (listed with ", entry.size, " bytes)"));
  }
  oci::Digest digest = oci::Digest::Sha256Of(content);
  entry.content = std::move(content);
  entry.source_file.clear();
  absl::MutexLock lock(&mu_);
  file_digests_[path] =
      FileStamp{entry.size, entry.source_mtime_ns, entry.source_inode, digest.ToString()};
  file_digests_dirty_ = true;
  return digest;
}

void Builder::SaveFileDigests() {
  Json files = Json::object();
  {
    absl::MutexLock lock(&mu_);
    if (!file_digests_dirty_) return;
    for (const auto& [path, stamp] : file_digests_) {
      files[path] = Json::array({stamp.size, stamp.mtime_ns, stamp.inode, stamp.digest});
    }
    file_digests_dirty_ = false;
  }
  absl::Status status =
      WriteAtomically(absl::StrCat(options_.store_dir, "/cache/files.json"), files.dump());
  if (!status.ok()) log::Warning("cannot save the file digest cache", {{"error", status}});
}

std::optional<std::string> Builder::CacheGet(const std::string& key) {
  std::string path = absl::StrCat(options_.store_dir, "/cache/layers/", key);
  std::ifstream in(path);
  if (!in) return std::nullopt;
  return ReadText(path);
}

void Builder::CachePut(const std::string& key, const std::string& value) {
  absl::Status status =
      WriteAtomically(absl::StrCat(options_.store_dir, "/cache/layers/", key), value);
  if (!status.ok()) log::Warning("cannot save a cache entry", {{"error", status}});
}

}  // namespace elfdeploy::builder
