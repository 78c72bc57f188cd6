#include "services/builder/layer.h"

#include <libdeflate.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace elfdeploy::builder {
namespace {

constexpr size_t kBlock = 512;

void PutOctal(std::string& header, size_t offset, size_t width, uint64_t value) {
  std::string digits = absl::StrFormat("%0*o", static_cast<int>(width - 1), value);
  header.replace(offset, digits.size(), digits);
}

void PutString(std::string& header, size_t offset, size_t width, absl::string_view value) {
  header.replace(offset, std::min(width, value.size()), value.data(),
                 std::min(width, value.size()));
}

std::string Header(absl::string_view name, char type, uint32_t mode, uint32_t uid, uint32_t gid,
                   uint64_t size, int64_t mtime, absl::string_view link, absl::string_view prefix) {
  std::string header(kBlock, '\0');
  PutString(header, 0, 100, name);
  PutOctal(header, 100, 8, mode);
  PutOctal(header, 108, 8, uid);
  PutOctal(header, 116, 8, gid);
  PutOctal(header, 124, 12, size);
  PutOctal(header, 136, 12, static_cast<uint64_t>(mtime));
  header[156] = type;
  PutString(header, 157, 100, link);
  header.replace(257, 8,
                 std::string("ustar\0"
                             "00",
                             8));
  PutOctal(header, 329, 8, 0);  // devmajor
  PutOctal(header, 337, 8, 0);  // devminor
  PutString(header, 345, 155, prefix);
  std::memset(header.data() + 148, ' ', 8);
  unsigned checksum = 0;
  for (unsigned char c : header) checksum += c;
  std::string sum = absl::StrFormat("%06o", checksum);
  header.replace(148, 6, sum);
  header[154] = '\0';
  header[155] = ' ';
  return header;
}

void Pad(std::string* out) { out->append((kBlock - out->size() % kBlock) % kBlock, '\0'); }

// A PAX record "<len> key=value\n", where len counts the whole record.
std::string PaxRecord(absl::string_view key, absl::string_view value) {
  size_t base = key.size() + value.size() + 3;
  size_t length = base + std::to_string(base).size();
  if (std::to_string(length).size() != std::to_string(base).size()) ++length;
  return absl::StrCat(length, " ", key, "=", value, "\n");
}

// Appends headers for `name`: ustar when it fits (splitting into prefix/name), else a PAX header.
void AppendHeader(std::string* out, const std::string& name, char type, const LayerEntry& e,
                  uint64_t size, int64_t mtime) {
  absl::string_view link = e.link_target;
  bool long_link = link.size() > 100;
  std::string short_name = name;
  std::string prefix;
  bool needs_pax = long_link;
  if (name.size() > 100) {
    size_t split = name.rfind('/', std::min<size_t>(name.size() - 1, 155));
    if (split != std::string::npos && split <= 155 && name.size() - split - 1 <= 100 && split > 0) {
      prefix = name.substr(0, split);
      short_name = name.substr(split + 1);
    } else {
      needs_pax = true;
    }
  }
  if (needs_pax) {
    std::string records;
    if (name.size() > 100) records += PaxRecord("path", name);
    if (long_link) records += PaxRecord("linkpath", link);
    out->append(Header("PaxHeaders/entry", 'x', 0644, 0, 0, records.size(), mtime, "", ""));
    out->append(records);
    Pad(out);
    short_name = name.substr(0, 100);
    prefix.clear();
  }
  out->append(
      Header(short_name, type, e.mode, e.uid, e.gid, size, mtime, link.substr(0, 100), prefix));
}

struct Member {
  std::string compressed;
};

}  // namespace

absl::StatusOr<std::string> BuildTar(std::vector<LayerEntry> entries, int64_t mtime) {
  std::sort(entries.begin(), entries.end(),
            [](const LayerEntry& a, const LayerEntry& b) { return a.path < b.path; });
  std::string out;
  for (size_t i = 0; i < entries.size(); ++i) {
    const LayerEntry& e = entries[i];
    if (i > 0 && entries[i - 1].path == e.path) {
      return absl::InvalidArgumentError(absl::StrCat("layer has two entries for ", e.path));
    }
    switch (e.type) {
      case LayerEntry::Type::kDirectory:
        AppendHeader(&out, e.path + "/", '5', e, 0, mtime);
        break;
      case LayerEntry::Type::kSymlink:
        AppendHeader(&out, e.path, '2', e, 0, mtime);
        break;
      case LayerEntry::Type::kFile: {
        if (e.source_file.empty()) {
          AppendHeader(&out, e.path, '0', e, e.content.size(), mtime);
          out.append(e.content);
        } else {
          std::ifstream in(e.source_file, std::ios::binary | std::ios::ate);
          if (!in) return absl::NotFoundError(absl::StrCat(e.source_file, ": cannot be read"));
          int64_t size = static_cast<int64_t>(in.tellg());
          if (size != e.size) {
            return absl::FailedPreconditionError(absl::StrCat(e.source_file,
                                                              " changed while the build read it (",
                                                              e.size, " -> ", size, " bytes)"));
          }
          AppendHeader(&out, e.path, '0', e, static_cast<uint64_t>(size), mtime);
          size_t at = out.size();
          out.resize(at + static_cast<size_t>(size));
          in.seekg(0);
          in.read(out.data() + at, size);
          if (!in) return absl::InternalError(absl::StrCat(e.source_file, ": read failed"));
        }
        Pad(&out);
        break;
      }
    }
  }
  out.append(2 * kBlock, '\0');
  return out;
}

absl::StatusOr<LayerResult> WriteLayer(std::vector<LayerEntry> entries, const LayerOptions& options,
                                       oci::OciLayout& layout) {
  absl::StatusOr<std::string> tar = BuildTar(std::move(entries), options.mtime);
  if (!tar.ok()) return tar.status();
  LayerResult result;
  result.tar_size = static_cast<int64_t>(tar->size());

  size_t chunk = std::max<size_t>(options.chunk_size, 64 << 10);
  size_t count = std::max<size_t>(1, (tar->size() + chunk - 1) / chunk);
  std::vector<Member> members(count);
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  auto work = [&] {
    libdeflate_compressor* compressor = libdeflate_alloc_compressor(options.compression_level);
    if (compressor == nullptr) {
      failed = true;
      return;
    }
    for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      size_t begin = i * chunk;
      size_t length = std::min(chunk, tar->size() - begin);
      std::string& out = members[i].compressed;
      out.resize(libdeflate_gzip_compress_bound(compressor, length));
      size_t n =
          libdeflate_gzip_compress(compressor, tar->data() + begin, length, out.data(), out.size());
      if (n == 0) failed = true;
      out.resize(n);
    }
    libdeflate_free_compressor(compressor);
  };
  int threads = options.threads > 0
                    ? options.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(count));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  oci::Sha256 diff_hasher;
  diff_hasher.Update(*tar);  // overlaps with the workers
  work();
  for (std::thread& t : pool) t.join();
  if (failed) return absl::InternalError("gzip compression failed");
  result.diff_id = diff_hasher.Finish();

  absl::StatusOr<std::unique_ptr<oci::BlobWriter>> writer = layout.NewBlobWriter();
  if (!writer.ok()) return writer.status();
  oci::Sha256 hasher;
  for (const Member& m : members) {
    hasher.Update(m.compressed);
    if (absl::Status s = (*writer)->Write(m.compressed); !s.ok()) return s;
    result.size += static_cast<int64_t>(m.compressed.size());
  }
  result.digest = hasher.Finish();
  if (absl::Status s = (*writer)->Commit(result.digest, result.size); !s.ok()) return s;
  return result;
}

}  // namespace elfdeploy::builder
