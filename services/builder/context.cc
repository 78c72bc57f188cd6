#include "services/builder/context.h"

#include <dirent.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace elfdeploy::builder {
namespace {

bool HasWildcard(absl::string_view s) { return s.find_first_of("*?[") != absl::string_view::npos; }

std::string Join(const std::string& a, const std::string& b) {
  if (a.empty() || a == ".") return b;
  return absl::StrCat(a, "/", b);
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot be listed"));
  std::vector<std::string> names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

absl::StatusOr<BuildContext> BuildContext::Open(const std::string& dir, ContextOptions options) {
  char* real = realpath(dir.c_str(), nullptr);
  if (real == nullptr)
    return absl::NotFoundError(absl::StrCat("build context ", dir, " not found"));
  std::string root = real;
  std::free(real);
  struct stat st {};
  if (stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("build context ", dir, " is not a directory"));
  }
  std::optional<DockerIgnore> ignore;
  std::ifstream in(absl::StrCat(root, "/.dockerignore"));
  if (in) {
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<DockerIgnore> parsed = DockerIgnore::Parse(text.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(".dockerignore: ", parsed.status().message()));
    }
    ignore = *std::move(parsed);
  }
  return BuildContext(std::move(root), options, std::move(ignore));
}

absl::StatusOr<SourceFile> BuildContext::Stat(const std::string& rel_path, bool follow,
                                              bool parent_verified) const {
  std::string abs = rel_path == "." ? root_ : absl::StrCat(root_, "/", rel_path);
  // Every directory on the way must resolve inside the context (the root is canonical).
  if (!parent_verified) {
    std::string parent = rel_path == "." ? root_ : abs.substr(0, abs.rfind('/'));
    char* real_parent = realpath(parent.c_str(), nullptr);
    if (real_parent == nullptr) return absl::NotFoundError(absl::StrCat(rel_path, ": not found"));
    std::string resolved_parent = real_parent;
    std::free(real_parent);
    if (resolved_parent != root_ && !absl::StartsWith(resolved_parent, root_ + "/")) {
      return absl::PermissionDeniedError(
          absl::StrCat(rel_path, ": a symlink leads outside the build context"));
    }
  }
  struct stat st {};
  if (lstat(abs.c_str(), &st) != 0)
    return absl::NotFoundError(absl::StrCat(rel_path, ": not found"));
  SourceFile file;
  file.rel_path = rel_path;
  file.abs_path = abs;
  if (S_ISLNK(st.st_mode) && options_.symlinks_as_links) {
    std::string link(4096, '\0');
    ssize_t n = readlink(abs.c_str(), link.data(), link.size());
    link.resize(n > 0 ? static_cast<size_t>(n) : 0);
    file.type = LayerEntry::Type::kSymlink;
    file.link_target = link;
    file.mode = 0777;
    return file;
  }
  if (S_ISLNK(st.st_mode)) {
    char* real = realpath(abs.c_str(), nullptr);
    std::string target = real == nullptr ? "" : real;
    std::free(real);
    if (target.empty() || (target != root_ && !absl::StartsWith(target, root_ + "/"))) {
      return absl::PermissionDeniedError(
          absl::StrCat(rel_path, ": symlink points outside the build context (or nowhere)"));
    }
    if (follow) {
      if (lstat(target.c_str(), &st) != 0) {
        return absl::NotFoundError(absl::StrCat(rel_path, ": not found"));
      }
      file.abs_path = target;
    } else {
      std::string link(4096, '\0');
      ssize_t n = readlink(abs.c_str(), link.data(), link.size());
      link.resize(n > 0 ? static_cast<size_t>(n) : 0);
      file.type = LayerEntry::Type::kSymlink;
      file.link_target = link;
      file.mode = 0777;
      return file;
    }
  }
  if (S_ISDIR(st.st_mode)) {
    file.type = LayerEntry::Type::kDirectory;
  } else if (S_ISREG(st.st_mode)) {
    file.type = LayerEntry::Type::kFile;
    if (st.st_size > options_.max_file_size) {
      return absl::InvalidArgumentError(absl::StrCat(rel_path, ": ", st.st_size,
                                                     " bytes is over the source size limit of ",
                                                     options_.max_file_size));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(rel_path, ": device files, FIFOs and sockets cannot be copied"));
  }
  file.mode = st.st_mode & 07777;
  file.size = st.st_size;
  file.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  file.inode = st.st_ino;
  return file;
}

absl::StatusOr<std::vector<SourceFile>> BuildContext::Match(const std::string& source) const {
  if (absl::StartsWith(source, "/")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "source ", source, " is an absolute path; sources are relative to the build context"));
  }
  std::string clean = CleanPath(source);
  if (clean == ".." || absl::StartsWith(clean, "../")) {
    return absl::PermissionDeniedError(
        absl::StrCat("source ", source, " is outside the build context"));
  }
  std::vector<std::string> paths = {"."};
  if (clean != ".") {
    for (absl::string_view component : absl::StrSplit(clean, '/')) {
      std::vector<std::string> next;
      for (const std::string& base : paths) {
        if (!HasWildcard(component)) {
          next.push_back(Join(base, std::string(component)));
          continue;
        }
        std::string dir = base == "." ? root_ : absl::StrCat(root_, "/", base);
        absl::StatusOr<std::vector<std::string>> names = ListDir(dir);
        if (!names.ok()) continue;
        std::string pattern(component);
        for (const std::string& name : *names) {
          if (fnmatch(pattern.c_str(), name.c_str(), FNM_PATHNAME) == 0) {
            next.push_back(Join(base, name));
          }
        }
      }
      paths = std::move(next);
    }
  }
  std::vector<SourceFile> matches;
  for (const std::string& path : paths) {
    if (ignore_.has_value() && path != "." && ignore_->Excluded(path)) continue;
    absl::StatusOr<SourceFile> file = Stat(path, /*follow=*/true);
    if (!file.ok()) {
      if (file.status().code() == absl::StatusCode::kNotFound && HasWildcard(clean)) continue;
      if (file.status().code() == absl::StatusCode::kNotFound) {
        return absl::NotFoundError(absl::StrCat(
            "source ", source, " not found in the build context (or excluded by .dockerignore)"));
      }
      return file.status();
    }
    matches.push_back(*std::move(file));
  }
  if (matches.empty()) {
    return absl::NotFoundError(
        absl::StrCat("source ", source,
                     " matches nothing in the build context (or all of it is excluded by "
                     ".dockerignore)"));
  }
  return matches;
}

absl::StatusOr<std::vector<SourceFile>> BuildContext::Walk(const SourceFile& dir) const {
  std::vector<SourceFile> out;
  std::vector<std::string> pending = {dir.rel_path};
  while (!pending.empty()) {
    std::string current = pending.back();
    pending.pop_back();
    std::string abs = current == "." ? root_ : absl::StrCat(root_, "/", current);
    absl::StatusOr<std::vector<std::string>> names = ListDir(abs);
    if (!names.ok()) return names.status();
    for (const std::string& name : *names) {
      std::string rel = Join(current, name);
      bool ignored = ignore_.has_value() && ignore_->Excluded(rel);
      absl::StatusOr<SourceFile> file = Stat(rel, /*follow=*/false, /*parent_verified=*/true);
      if (ignored) {
        // An excluded directory is still entered when a "!" pattern may re-include its content.
        if (file.ok() && file->type == LayerEntry::Type::kDirectory &&
            ignore_->MayHaveExceptionsUnder(rel)) {
          pending.push_back(rel);
        }
        continue;
      }
      if (!file.ok()) return file.status();
      if (file->type == LayerEntry::Type::kDirectory) pending.push_back(rel);
      out.push_back(*std::move(file));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const SourceFile& a, const SourceFile& b) { return a.rel_path < b.rel_path; });
  return out;
}

absl::Status BuildContext::Charge(int64_t bytes) const {
  charged_ += bytes;
  if (charged_ > options_.max_total_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the build read more than ", options_.max_total_size,
                     " bytes from its context (the configured limit)"));
  }
  return absl::OkStatus();
}

}  // namespace elfdeploy::builder
