#include "services/common/oci/layout.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace elfdeploy::oci {
namespace {

namespace fs = std::filesystem;
constexpr char kLayoutFile[] = "oci-layout";
constexpr char kLayoutContent[] = R"({"imageLayoutVersion":"1.0.0"})";

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::stringstream data;
  data << in.rdbuf();
  return data.str();
}

// Writes `data` to `path` through a temporary file and rename, so readers never see half a file.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data) {
  static std::atomic<uint64_t> counter{0};
  std::string temp = absl::StrCat(path, ".tmp-", getpid(), "-", counter.fetch_add(1));
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat(temp, ": write failed"));
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec) {
    fs::remove(temp, ec);
    return absl::InternalError(absl::StrCat("rename to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// index.json is read, changed and replaced as a whole: one writer at a time in this process.
absl::Mutex& IndexMutex() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

}  // namespace

BlobWriter::~BlobWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

absl::Status BlobWriter::Write(absl::string_view data) {
  if (file_ == nullptr) return absl::FailedPreconditionError("blob writer is closed");
  if (std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
    return absl::InternalError(absl::StrCat(temp_path_, ": write failed"));
  }
  hasher_.Update(data);
  size_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::Status BlobWriter::Commit(const Digest& expected, int64_t expected_size) {
  if (file_ == nullptr) return absl::FailedPreconditionError("blob writer is closed");
  bool flushed = std::fflush(file_) == 0;
  std::fclose(file_);
  file_ = nullptr;
  if (!flushed) return absl::InternalError(absl::StrCat(temp_path_, ": write failed"));
  Digest actual = hasher_.Finish();
  if (expected_size >= 0 && expected_size != size_) {
    return absl::DataLossError(absl::StrCat("blob ", expected.ToString(), ": expected ",
                                            expected_size, " bytes, got ", size_));
  }
  if (!expected.empty() && actual != expected) {
    return absl::DataLossError(
        absl::StrCat("blob ", expected.ToString(), ": content digest is ", actual.ToString()));
  }
  std::string final_path = absl::StrCat(blobs_dir_, "/", actual.algorithm(), "/", actual.hex());
  if (::rename(temp_path_.c_str(), final_path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename to ", final_path, " failed"));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::StatusOr<OciLayout> OciLayout::Open(const std::string& dir) {
  absl::StatusOr<std::string> layout = ReadWholeFile(absl::StrCat(dir, "/", kLayoutFile));
  if (!layout.ok()) {
    return absl::NotFoundError(absl::StrCat(dir, " is not an OCI image layout (no oci-layout)"));
  }
  nlohmann::json json = nlohmann::json::parse(*layout, nullptr, false);
  if (json.is_discarded() || !json.is_object() || json.value("imageLayoutVersion", "") != "1.0.0") {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/oci-layout: imageLayoutVersion must be 1.0.0"));
  }
  std::error_code ec;
  fs::create_directories(absl::StrCat(dir, "/blobs/sha256"), ec);
  return OciLayout(dir);
}

absl::StatusOr<OciLayout> OciLayout::OpenOrCreate(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(absl::StrCat(dir, "/", kLayoutFile), ec)) {
    fs::create_directories(absl::StrCat(dir, "/blobs/sha256"), ec);
    if (ec) return absl::InternalError(absl::StrCat("create ", dir, ": ", ec.message()));
    if (!fs::exists(absl::StrCat(dir, "/index.json"), ec)) {
      Index empty;
      empty.media_type = kOciIndex;
      if (absl::Status s =
              WriteFileAtomically(absl::StrCat(dir, "/index.json"), SerializeIndex(empty));
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = WriteFileAtomically(absl::StrCat(dir, "/", kLayoutFile), kLayoutContent);
        !s.ok()) {
      return s;
    }
  }
  return Open(dir);
}

std::string OciLayout::BlobPath(const Digest& digest) const {
  return absl::StrCat(dir_, "/blobs/", digest.algorithm(), "/", digest.hex());
}

bool OciLayout::HasBlob(const Digest& digest, int64_t size) const {
  std::error_code ec;
  auto file_size = fs::file_size(BlobPath(digest), ec);
  return !ec && (size < 0 || static_cast<int64_t>(file_size) == size);
}

absl::StatusOr<std::string> OciLayout::ReadBlob(const Digest& digest) const {
  absl::StatusOr<std::string> data = ReadWholeFile(BlobPath(digest));
  if (!data.ok()) {
    return absl::NotFoundError(absl::StrCat("blob ", digest.ToString(), " not in ", dir_));
  }
  if (Digest::Sha256Of(*data) != digest) {
    return absl::DataLossError(absl::StrCat("blob ", digest.ToString(), " in ", dir_,
                                            " is corrupt (content digest differs)"));
  }
  return data;
}

absl::StatusOr<Digest> OciLayout::WriteBlob(absl::string_view data, const Digest& expected) {
  absl::StatusOr<std::unique_ptr<BlobWriter>> writer = NewBlobWriter();
  if (!writer.ok()) return writer.status();
  if (absl::Status s = (*writer)->Write(data); !s.ok()) return s;
  Digest digest = expected.empty() ? Digest::Sha256Of(data) : expected;
  if (absl::Status s = (*writer)->Commit(digest, static_cast<int64_t>(data.size())); !s.ok()) {
    return s;
  }
  return digest;
}

absl::StatusOr<std::unique_ptr<BlobWriter>> OciLayout::NewBlobWriter() {
  std::string blobs = absl::StrCat(dir_, "/blobs");
  std::string temp = absl::StrCat(blobs, "/.upload-XXXXXX");
  int fd = mkstemp(temp.data());
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create a temporary file in ", blobs));
  std::FILE* file = fdopen(fd, "wb");
  return std::unique_ptr<BlobWriter>(new BlobWriter(blobs, temp, file));
}

absl::StatusOr<Index> OciLayout::ReadIndex() const {
  std::string path = absl::StrCat(dir_, "/index.json");
  absl::StatusOr<std::string> data = ReadWholeFile(path);
  if (!data.ok()) return data.status();
  return ParseIndex(*data, path);
}

absl::StatusOr<Descriptor> OciLayout::Resolve(absl::string_view ref) const {
  absl::StatusOr<Index> index = ReadIndex();
  if (!index.ok()) return index.status();
  if (ref.empty()) {
    if (index->manifests.size() == 1) return index->manifests.front();
    return absl::InvalidArgumentError(absl::StrCat("oci:", dir_, " holds ", index->manifests.size(),
                                                   " images; name one as oci:<dir>:<ref>"));
  }
  std::vector<std::string> names;
  for (const Descriptor& d : index->manifests) {
    auto name = d.annotations.find(kRefNameAnnotation);
    if (name == d.annotations.end()) continue;
    if (name->second == ref) return d;
    names.push_back(name->second);
  }
  return absl::NotFoundError(
      absl::StrCat("oci:", dir_, ":", ref,
                   " not found (refs: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

absl::Status OciLayout::Untag(absl::string_view ref) {
  absl::MutexLock lock(&IndexMutex());
  absl::StatusOr<Index> index = ReadIndex();
  if (!index.ok()) return index.status();
  std::vector<Descriptor> kept;
  for (Descriptor& d : index->manifests) {
    auto name = d.annotations.find(kRefNameAnnotation);
    if (name != d.annotations.end() && name->second == ref) continue;
    kept.push_back(std::move(d));
  }
  index->manifests = std::move(kept);
  return WriteFileAtomically(absl::StrCat(dir_, "/index.json"), SerializeIndex(*index));
}

absl::Status OciLayout::Tag(absl::string_view ref, Descriptor descriptor) {
  if (!HasBlob(descriptor.digest, descriptor.size)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot name ", descriptor.digest.ToString(),
                                                      " in ", dir_, ": its blob is missing"));
  }
  absl::MutexLock lock(&IndexMutex());
  absl::StatusOr<Index> index = ReadIndex();
  if (!index.ok()) return index.status();
  std::vector<Descriptor> kept;
  for (Descriptor& d : index->manifests) {
    auto name = d.annotations.find(kRefNameAnnotation);
    if (name != d.annotations.end() && name->second == ref) continue;
    kept.push_back(std::move(d));
  }
  descriptor.annotations[kRefNameAnnotation] = std::string(ref);
  kept.push_back(std::move(descriptor));
  index->manifests = std::move(kept);
  return WriteFileAtomically(absl::StrCat(dir_, "/index.json"), SerializeIndex(*index));
}

}  // namespace elfdeploy::oci
