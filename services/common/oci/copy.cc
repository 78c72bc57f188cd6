#include "services/common/oci/copy.h"

#include <atomic>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace elfdeploy::oci {
namespace {

using Kind = TransportReference::Kind;

constexpr size_t kStreamBuffer = 4 << 20;

// Where an image's parts are read from.
class Source {
 public:
  Source(Registry& registry, const TransportReference& ref) : registry_(registry), ref_(ref) {}

  absl::Status Open() {
    if (ref_.kind == Kind::kOciLayout) {
      absl::StatusOr<OciLayout> layout = OciLayout::Open(ref_.layout_dir);
      if (!layout.ok()) return layout.status();
      layout_.emplace(*std::move(layout));
    }
    return absl::OkStatus();
  }

  // The manifest `ref` names (the tag or the layout ref), verified.
  absl::StatusOr<ManifestData> TopManifest() {
    if (ref_.kind == Kind::kDocker) return registry_.GetManifest(ref_.image);
    absl::StatusOr<Descriptor> d = layout_->Resolve(ref_.layout_ref);
    if (!d.ok()) return d.status();
    return ManifestByDescriptor(*d);
  }

  absl::StatusOr<ManifestData> ManifestByDescriptor(const Descriptor& d) {
    if (ref_.kind == Kind::kDocker) {
      ImageReference by_digest = ref_.image;
      by_digest.tag.clear();
      by_digest.digest = d.digest.ToString();
      return registry_.GetManifest(by_digest);
    }
    absl::StatusOr<std::string> bytes = layout_->ReadBlob(d.digest);
    if (!bytes.ok()) return bytes.status();
    std::string media_type = d.media_type;
    if (media_type.empty()) {
      absl::StatusOr<std::string> detected = DetectManifestMediaType(*bytes);
      if (!detected.ok()) return detected.status();
      media_type = *detected;
    }
    return ManifestData{*std::move(bytes), media_type, d.digest};
  }

  bool is_registry() const { return ref_.kind == Kind::kDocker; }
  const TransportReference& ref() const { return ref_; }
  OciLayout* layout() { return layout_.has_value() ? &*layout_ : nullptr; }

 private:
  Registry& registry_;
  const TransportReference& ref_;
  std::optional<OciLayout> layout_;
};

// A bounded byte pipe between one writer thread and one reader thread.
class BytePipe {
 public:
  explicit BytePipe(size_t capacity) : buffer_(capacity) {}

  // Blocks while the pipe is full; false once the reader has gone.
  bool Write(absl::string_view data) {
    while (!data.empty()) {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](BytePipe* p) { return p->reader_closed_ || p->size_ < p->buffer_.size(); }, this));
      if (reader_closed_) return false;
      // Up to the free space, in at most two runs around the end of the ring.
      size_t tail = (head_ + size_) % buffer_.size();
      size_t n = std::min(data.size(), buffer_.size() - size_);
      size_t first = std::min(n, buffer_.size() - tail);
      std::memcpy(buffer_.data() + tail, data.data(), first);
      std::memcpy(buffer_.data(), data.data() + first, n - first);
      size_ += n;
      data.remove_prefix(n);
    }
    return true;
  }

  // Blocks while the pipe is empty and open; bytes read, 0 at the end, -1 when the writer failed.
  int64_t Read(char* out, size_t max) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](BytePipe* p) { return p->writer_closed_ || p->size_ > 0; }, this));
    if (size_ == 0) return writer_ok_ ? 0 : -1;
    size_t n = std::min(max, size_);
    size_t first = std::min(n, buffer_.size() - head_);
    std::memcpy(out, buffer_.data() + head_, first);
    std::memcpy(out + first, buffer_.data(), n - first);
    head_ = (head_ + n) % buffer_.size();
    size_ -= n;
    return static_cast<int64_t>(n);
  }

  void CloseWrite(bool ok) {
    absl::MutexLock lock(&mu_);
    writer_closed_ = true;
    writer_ok_ = ok;
  }

  void CloseRead() {
    absl::MutexLock lock(&mu_);
    reader_closed_ = true;
  }

 private:
  absl::Mutex mu_;
  std::vector<char> buffer_;
  size_t head_ = 0;
  size_t size_ = 0;
  bool writer_closed_ = false;
  bool writer_ok_ = true;
  bool reader_closed_ = false;
};

// Runs `tasks` on at most `parallelism` threads; stops starting new ones after the first error,
// which it returns.
absl::Status RunBounded(int parallelism, std::vector<std::function<absl::Status()>> tasks) {
  std::atomic<size_t> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  auto worker = [&] {
    while (true) {
      {
        absl::MutexLock lock(&mu);
        if (!first_error.ok()) return;
      }
      size_t i = next.fetch_add(1);
      if (i >= tasks.size()) return;
      absl::Status s = tasks[i]();
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = s;
      }
    }
  };
  int threads = std::max(1, std::min<int>(parallelism, static_cast<int>(tasks.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  return first_error;
}

class Copier {
 public:
  Copier(Registry& registry, const TransportReference& source, const TransportReference& dest,
         const CopyOptions& options, const CopyObserver& observer)
      : registry_(registry),
        source_(registry, source),
        dest_(dest),
        options_(options),
        observer_(observer) {}

  absl::StatusOr<CopyResult> Run() {
    if (absl::Status s = source_.Open(); !s.ok()) return s;
    if (dest_.kind == Kind::kOciLayout) {
      absl::StatusOr<OciLayout> layout = OciLayout::OpenOrCreate(dest_.layout_dir);
      if (!layout.ok()) return layout.status();
      dest_layout_.emplace(*std::move(layout));
    }
    absl::StatusOr<ManifestData> top = source_.TopManifest();
    if (!top.ok()) return top.status();
    const Digest source_digest = top->digest;

    // The manifests to write, children before the one the tag names.
    std::vector<ManifestData> manifests;
    if (IsIndexMediaType(top->media_type)) {
      absl::StatusOr<Index> index = ParseIndex(top->bytes, source_.ref().ToString());
      if (!index.ok()) return index.status();
      std::vector<Descriptor> chosen;
      if (options_.all_platforms) {
        chosen = index->manifests;
      } else {
        absl::StatusOr<Descriptor> one = SelectPlatform(*index, options_.platform);
        if (!one.ok()) return one.status();
        chosen.push_back(*one);
      }
      for (const Descriptor& d : chosen) {
        absl::StatusOr<ManifestData> child = source_.ManifestByDescriptor(d);
        if (!child.ok()) return child.status();
        manifests.push_back(*std::move(child));
      }
      if (options_.all_platforms) manifests.push_back(*std::move(top));
    } else {
      manifests.push_back(*std::move(top));
    }

    std::vector<Descriptor> blobs;
    std::set<Digest> seen;
    for (const ManifestData& m : manifests) {
      if (!IsManifestMediaType(m.media_type)) continue;
      absl::StatusOr<Manifest> parsed = ParseManifest(m.bytes, m.digest.ToString());
      if (!parsed.ok()) return parsed.status();
      for (const Descriptor* d : {&parsed->config}) {
        if (seen.insert(d->digest).second) blobs.push_back(*d);
      }
      for (const Descriptor& layer : parsed->layers) {
        if (!layer.urls.empty()) continue;  // foreign layers stay where they are
        if (seen.insert(layer.digest).second) blobs.push_back(layer);
      }
    }

    if (source_.is_registry() && dest_.kind == Kind::kDocker) {
      absl::Status spool = OpenSpool();
      if (!spool.ok()) return spool;
    }
    if (dest_.kind == Kind::kDocker && AlreadyThere(manifests.back())) {
      // A registry accepts a manifest only when it has its blobs: nothing to move.
      for (const Descriptor& blob : blobs) Report(blob, BlobAction::kSkipped, 0);
      if (absl::Status s = WriteManifest(manifests.back(), true); !s.ok()) return s;
      return Finish(manifests.back());
    }
    if (observer_.on_plan) {
      CopyPlan plan;
      plan.source_digest = source_digest;
      plan.total_blobs = static_cast<int>(blobs.size());
      for (const Descriptor& blob : blobs) plan.total_bytes += blob.size;
      observer_.on_plan(plan);
    }
    std::vector<std::function<absl::Status()>> tasks;
    for (const Descriptor& blob : blobs) {
      tasks.push_back([this, blob] {
        if (observer_.cancelled && observer_.cancelled()) {
          return absl::CancelledError("copy cancelled");
        }
        return CopyBlob(blob);
      });
    }
    if (absl::Status s = RunBounded(options_.parallelism, std::move(tasks)); !s.ok()) return s;
    if (observer_.cancelled && observer_.cancelled()) {
      return absl::CancelledError("copy cancelled before its manifest was written");
    }

    for (size_t i = 0; i < manifests.size(); ++i) {
      bool is_top = i + 1 == manifests.size();
      if (absl::Status s = WriteManifest(manifests[i], is_top); !s.ok()) return s;
    }
    return Finish(manifests.back());
  }

  ~Copier() {
    if (!spool_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(spool_dir_, ec);
    }
  }

 private:
  CopyResult Finish(const ManifestData& written) {
    absl::MutexLock lock(&mu_);
    result_.manifest_digest = written.digest;
    result_.media_type = written.media_type;
    result_.manifest_size = static_cast<int64_t>(written.bytes.size());
    result_.destination = dest_;
    return result_;
  }

  // True when the destination repository already holds `manifest` (by digest).
  bool AlreadyThere(const ManifestData& manifest) {
    ImageReference by_digest = dest_.image;
    by_digest.tag.clear();
    by_digest.digest = manifest.digest.ToString();
    absl::StatusOr<Descriptor> present = registry_.HeadManifest(by_digest);
    return present.ok() && present->digest == manifest.digest;
  }

  absl::Status OpenSpool() {
    std::string dir = options_.spool_dir;
    if (dir.empty()) {
      std::string pattern =
          (std::filesystem::temp_directory_path() / "elfdeploy-spool-XXXXXX").string();
      if (mkdtemp(pattern.data()) == nullptr) {
        return absl::InternalError("cannot create a spool directory");
      }
      dir = pattern;
      spool_dir_ = dir;
    }
    absl::StatusOr<OciLayout> spool = OciLayout::OpenOrCreate(dir);
    if (!spool.ok()) return spool.status();
    spool_.emplace(*std::move(spool));
    return absl::OkStatus();
  }

  void Report(const Descriptor& blob, BlobAction action, int64_t bytes) {
    absl::MutexLock lock(&mu_);
    switch (action) {
      case BlobAction::kSkipped:
        ++result_.blobs_skipped;
        break;
      case BlobAction::kMounted:
        ++result_.blobs_mounted;
        break;
      default:
        ++result_.blobs_transferred;
        result_.bytes_transferred += bytes;
    }
    if (observer_.on_blob) observer_.on_blob(BlobEvent{blob, action, bytes});
  }

  absl::Status CopyBlob(const Descriptor& blob) {
    if (dest_.kind == Kind::kOciLayout) {
      if (dest_layout_->HasBlob(blob.digest, blob.size)) {
        Report(blob, BlobAction::kSkipped, 0);
        return absl::OkStatus();
      }
      absl::Status s = source_.is_registry()
                           ? registry_.FetchBlob(source_.ref().image, blob, *dest_layout_)
                           : CopyFileBlob(*source_.layout(), blob, *dest_layout_);
      if (!s.ok()) return s;
      Report(blob, source_.is_registry() ? BlobAction::kDownloaded : BlobAction::kCopied,
             blob.size);
      return absl::OkStatus();
    }
    const ImageReference& repo = dest_.image;
    absl::StatusOr<bool> exists = registry_.BlobExists(repo, blob.digest);
    if (!exists.ok()) return exists.status();
    if (*exists) {
      Report(blob, BlobAction::kSkipped, 0);
      return absl::OkStatus();
    }
    if (source_.is_registry() && source_.ref().image.domain == repo.domain &&
        source_.ref().image.path != repo.path) {
      absl::StatusOr<bool> mounted =
          registry_.MountBlob(repo, blob.digest, source_.ref().image.path);
      if (!mounted.ok()) return mounted.status();
      if (*mounted) {
        Report(blob, BlobAction::kMounted, 0);
        return absl::OkStatus();
      }
    }
    std::string file;
    if (source_.is_registry()) {
      absl::Status streamed = StreamBlob(blob);
      if (streamed.ok()) {
        Report(blob, BlobAction::kUploaded, blob.size);
        return absl::OkStatus();
      }
      if (streamed.code() == absl::StatusCode::kUnauthenticated ||
          streamed.code() == absl::StatusCode::kPermissionDenied ||
          streamed.code() == absl::StatusCode::kNotFound) {
        return streamed;
      }
      // A stream cannot be replayed: stage the blob on disk and upload it with retries.
      if (!spool_->HasBlob(blob.digest, blob.size)) {
        absl::Status s = registry_.FetchBlob(source_.ref().image, blob, *spool_);
        if (!s.ok()) return s;
      }
      file = spool_->BlobPath(blob.digest);
    } else {
      if (!source_.layout()->HasBlob(blob.digest, blob.size)) {
        return absl::NotFoundError(absl::StrCat("blob ", blob.digest.ToString(), " (", blob.size,
                                                " bytes) missing from ", source_.ref().ToString()));
      }
      file = source_.layout()->BlobPath(blob.digest);
    }
    if (absl::Status s = registry_.PushBlob(repo, blob, file); !s.ok()) return s;
    if (source_.is_registry()) {
      std::error_code ignored;
      std::filesystem::remove(file, ignored);  // the spool is a staging area, not a cache
    }
    Report(blob, BlobAction::kUploaded, blob.size);
    return absl::OkStatus();
  }

  // Pipes a blob from the source registry into an upload to the destination, hashing it on the
  // way; the destination registry also refuses content that does not match the digest.
  absl::Status StreamBlob(const Descriptor& blob) {
    BytePipe pipe(kStreamBuffer);
    absl::Status read_status;
    std::thread producer([&] {
      Sha256 hasher;
      int64_t received = 0;
      read_status = registry_.ReadBlob(source_.ref().image, blob, [&](absl::string_view chunk) {
        hasher.Update(chunk);
        received += static_cast<int64_t>(chunk.size());
        return pipe.Write(chunk);
      });
      if (read_status.ok() && (received != blob.size || hasher.Finish() != blob.digest)) {
        read_status = absl::DataLossError(absl::StrCat("blob ", blob.digest.ToString(), " from ",
                                                       source_.ref().ToString(),
                                                       " does not match its digest"));
      }
      pipe.CloseWrite(read_status.ok());
    });
    absl::Status upload = registry_.UploadBlob(
        dest_.image, blob, [&pipe](char* buffer, size_t max) { return pipe.Read(buffer, max); });
    pipe.CloseRead();
    producer.join();
    return read_status.ok() ? upload : read_status;
  }

  // Copies a blob between layouts through a verifying writer.
  static absl::Status CopyFileBlob(OciLayout& from, const Descriptor& blob, OciLayout& to) {
    std::FILE* in = std::fopen(from.BlobPath(blob.digest).c_str(), "rb");
    if (in == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("blob ", blob.digest.ToString(), " missing from ", from.dir()));
    }
    absl::StatusOr<std::unique_ptr<BlobWriter>> writer = to.NewBlobWriter();
    if (!writer.ok()) {
      std::fclose(in);
      return writer.status();
    }
    char buffer[1 << 16];
    size_t n;
    absl::Status status;
    while (status.ok() && (n = std::fread(buffer, 1, sizeof(buffer), in)) > 0) {
      status = (*writer)->Write(absl::string_view(buffer, n));
    }
    std::fclose(in);
    if (!status.ok()) return status;
    return (*writer)->Commit(blob.digest, blob.size);
  }

  absl::Status WriteManifest(const ManifestData& manifest, bool is_top) {
    if (dest_.kind == Kind::kOciLayout) {
      if (!dest_layout_->HasBlob(manifest.digest, static_cast<int64_t>(manifest.bytes.size()))) {
        absl::StatusOr<Digest> d = dest_layout_->WriteBlob(manifest.bytes, manifest.digest);
        if (!d.ok()) return d.status();
      }
      if (!is_top) return absl::OkStatus();
      Descriptor descriptor;
      descriptor.media_type = manifest.media_type;
      descriptor.digest = manifest.digest;
      descriptor.size = static_cast<int64_t>(manifest.bytes.size());
      std::string ref = dest_.layout_ref.empty() ? "latest" : dest_.layout_ref;
      return dest_layout_->Tag(ref, descriptor);
    }
    ImageReference target = dest_.image;
    if (!is_top || target.tag.empty()) {
      target.tag.clear();
      target.digest = manifest.digest.ToString();
    } else {
      target.digest.clear();
      absl::StatusOr<Descriptor> tagged = registry_.HeadManifest(target);
      if (tagged.ok() && tagged->digest == manifest.digest) return absl::OkStatus();
    }
    return registry_.PutManifest(target, manifest);
  }

  Registry& registry_;
  Source source_;
  const TransportReference& dest_;
  const CopyOptions& options_;
  const CopyObserver& observer_;
  std::optional<OciLayout> dest_layout_;
  std::optional<OciLayout> spool_;
  std::string spool_dir_;
  absl::Mutex mu_;
  CopyResult result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<CopyResult> CopyImage(Registry& registry, const TransportReference& source,
                                     const TransportReference& destination,
                                     const CopyOptions& options, const CopyObserver& observer) {
  Copier copier(registry, source, destination, options, observer);
  return copier.Run();
}

absl::StatusOr<ResolvedImage> ResolveImage(Registry& registry, const TransportReference& ref) {
  Source source(registry, ref);
  if (absl::Status s = source.Open(); !s.ok()) return s;
  absl::StatusOr<ManifestData> top = source.TopManifest();
  if (!top.ok()) return top.status();
  ResolvedImage resolved;
  resolved.descriptor.media_type = top->media_type;
  resolved.descriptor.digest = top->digest;
  resolved.descriptor.size = static_cast<int64_t>(top->bytes.size());
  if (IsIndexMediaType(top->media_type)) {
    absl::StatusOr<Index> index = ParseIndex(top->bytes, ref.ToString());
    if (!index.ok()) return index.status();
    resolved.manifests = index->manifests;
  }
  return resolved;
}

}  // namespace elfdeploy::oci
