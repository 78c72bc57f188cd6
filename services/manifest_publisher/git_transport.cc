#include "services/manifest_publisher/git_transport.h"

#include <git2.h>
#include <git2/sys/transport.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "services/common/log.h"
#include "services/manifest_publisher/git_stream.h"

namespace elfdeploy::publisher {

int PushReportScanner::ReadHeader(Packets& packets, absl::string_view data, size_t* at) {
  while (packets.header_len < 4 && *at < data.size()) {
    packets.header[packets.header_len++] = data[(*at)++];
  }
  if (packets.header_len < 4) return -1;
  packets.header_len = 0;
  int length = 0;
  for (char c : packets.header) {
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return -2;
    length = length * 16 + digit;
  }
  return length;
}

void PushReportScanner::FeedReport(absl::string_view payload) {
  size_t at = 0;
  while (at < payload.size() && !inner_done_) {
    if (inner_.remaining == 0) {
      int length = ReadHeader(inner_, payload, &at);
      if (length == -1) return;
      if (length == 0) {
        inner_done_ = true;
      } else if (length < 4) {
        passthrough_ = true;  // not a report libgit2 will accept either; let it say so
        return;
      } else {
        inner_.remaining = static_cast<size_t>(length) - 4;
      }
      continue;
    }
    size_t take = std::min(inner_.remaining, payload.size() - at);
    at += take;
    inner_.remaining -= take;
  }
}

size_t PushReportScanner::Feed(absl::string_view data) {
  const bool was_complete = complete_;
  size_t report_end = data.size();
  size_t at = 0;
  while (at < data.size() && !ended_ && !passthrough_) {
    if (outer_.remaining == 0) {
      int length = ReadHeader(outer_, data, &at);
      if (length == -1) break;
      if (complete_ && length <= 4) {
        ended_ = true;  // the closing flush (or nothing a tail reader could follow)
        break;
      }
      // Before the report ends: a flush (the server finished already), a malformed header or a
      // packet too short to carry a band leave nothing to cut short.
      if (length <= 4) {
        passthrough_ = true;
        break;
      }
      outer_.remaining = static_cast<size_t>(length) - 4;
      channel_ = -1;
      continue;
    }
    if (channel_ < 0) {
      channel_ = static_cast<unsigned char>(data[at++]);
      --outer_.remaining;
      if (channel_ < 1 || channel_ > 3) {
        if (complete_) {
          ended_ = true;
        } else {
          passthrough_ = true;  // "unpack ok": a report without side-band
        }
        break;
      }
    }
    size_t take = std::min(outer_.remaining, data.size() - at);
    if (channel_ == 1 && !complete_) FeedReport(data.substr(at, take));
    at += take;
    outer_.remaining -= take;
    if (!complete_ && outer_.remaining == 0 && inner_done_ && !passthrough_) {
      complete_ = true;
      report_end = at;
    }
  }
  return was_complete ? data.size() : report_end;
}

namespace {

constexpr char kFlush[] = "0000";

// A server that sends nothing for this long after a push report is given up on (ssh excepted:
// libssh2 reads its socket itself).
constexpr absl::Duration kTailSilence = absl::Minutes(10);

// Reads the rest of a finished push's answer (up to its closing flush), then frees the
// connection.
void ReadTail(git_smart_subtransport_stream* stream, git_smart_subtransport* transport,
              PushReportScanner scanner) {
  SocketReadDeadline silence(kTailSilence);
  char buffer[16 << 10];
  size_t n = 0;
  int rc = 0;
  while (!scanner.ended() && (rc = stream->read(stream, buffer, sizeof buffer, &n)) == 0 && n > 0) {
    scanner.Feed(absl::string_view(buffer, n));
  }
  if (!scanner.ended()) {
    const git_error* error = rc < 0 ? git_error_last() : nullptr;
    log::Debug("git server's answer after the push report ended without its closing flush",
               {{"error", error != nullptr ? error->message : "connection closed"}});
  }
  stream->free(stream);
  transport->close(transport);
  transport->free(transport);
}

// Runs ReadTail on a thread per finished push.
class Tails {
 public:
  void Post(git_smart_subtransport_stream* stream, git_smart_subtransport* transport,
            const PushReportScanner& scanner) {
    {
      absl::MutexLock lock(&mu_);
      ++active_;
    }
    std::thread thread;
    try {
      thread = std::thread([this, stream, transport, scanner] {
        ReadTail(stream, transport, scanner);
        absl::MutexLock lock(&mu_);
        --active_;
      });
    } catch (...) {
      // No thread to spare: read it here, as libgit2 would have; nothing may unwind through
      // libgit2's frames.
      {
        absl::MutexLock lock(&mu_);
        --active_;
      }
      ReadTail(stream, transport, scanner);
      return;
    }
    thread.detach();
  }

  bool Await(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto idle = [](int* active) { return *active == 0; };
    return mu_.AwaitWithTimeout(absl::Condition(+idle, &active_), timeout);
  }

 private:
  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

Tails& TheTails() {
  static Tails* tails = new Tails;  // never destroyed: detached threads may outlive exit paths
  return *tails;
}

struct Subtransport;

// Wraps the stream of one action of libgit2's own subtransport.
struct Stream {
  git_smart_subtransport_stream parent;  // first: libgit2 hands this pointer back
  Subtransport* owner = nullptr;
  git_smart_subtransport_stream* inner = nullptr;
  bool push = false;
  bool wrote = false;  // reads after a write are the server's answer to the commands
  PushReportScanner scanner;
  size_t flush_given = 0;  // bytes of the closing flush handed to libgit2 after the report
};

// Wraps libgit2's own subtransport (git, http or ssh), created on the first action.
struct Subtransport {
  git_smart_subtransport parent;  // first: libgit2 hands this pointer back
  git_smart_subtransport_cb make_inner = nullptr;
  git_transport* owner = nullptr;
  git_smart_subtransport* inner = nullptr;
  Stream* current = nullptr;
  // A push stream whose report is in, kept open until close() hands it to the tail reader, and
  // where its scan of the answer stands.
  git_smart_subtransport_stream* finished = nullptr;
  PushReportScanner finished_scan;
};

Stream* Self(git_smart_subtransport_stream* stream) { return reinterpret_cast<Stream*>(stream); }
Subtransport* Self(git_smart_subtransport* transport) {
  return reinterpret_cast<Subtransport*>(transport);
}

int StreamRead(git_smart_subtransport_stream* stream, char* buffer, size_t size,
               size_t* bytes_read) {
  Stream* self = Self(stream);
  *bytes_read = 0;
  if (self->scanner.complete()) {
    // libgit2 reads to the answer's closing flush: it gets one now; the tail reader the real one.
    size_t n = std::min(size, sizeof kFlush - 1 - self->flush_given);
    std::memcpy(buffer, kFlush + self->flush_given, n);
    self->flush_given += n;
    *bytes_read = n;
    return 0;
  }
  int rc = self->inner->read(self->inner, buffer, size, bytes_read);
  if (rc < 0 || !self->push || !self->wrote || self->scanner.passthrough()) return rc;
  *bytes_read = self->scanner.Feed(absl::string_view(buffer, *bytes_read));
  if (*bytes_read == 0 && self->scanner.complete()) {
    return StreamRead(stream, buffer, size, bytes_read);
  }
  return rc;
}

int StreamWrite(git_smart_subtransport_stream* stream, const char* buffer, size_t len) {
  Stream* self = Self(stream);
  self->wrote = true;
  return self->inner->write(self->inner, buffer, len);
}

void StreamFree(git_smart_subtransport_stream* stream) {
  Stream* self = Self(stream);
  Subtransport* owner = self->owner;
  if (owner->current == self) owner->current = nullptr;
  if (self->scanner.complete() && !self->scanner.ended() && owner->finished == nullptr) {
    owner->finished = self->inner;
    owner->finished_scan = self->scanner;
  } else {
    self->inner->free(self->inner);
  }
  delete self;
}

// Hands a finished push's connection to the tail reader; the subtransport makes a new inner one
// should it be used again.
void ReleaseFinished(Subtransport* self) {
  TheTails().Post(self->finished, self->inner, self->finished_scan);
  self->finished = nullptr;
  self->inner = nullptr;
}

int Action(git_smart_subtransport_stream** out, git_smart_subtransport* transport, const char* url,
           git_smart_service_t action) {
  Subtransport* self = Self(transport);
  *out = nullptr;
  if (self->finished != nullptr) ReleaseFinished(self);
  if (self->inner == nullptr && self->make_inner(&self->inner, self->owner, nullptr) < 0) {
    self->inner = nullptr;
    return -1;
  }
  git_smart_subtransport_stream* inner = nullptr;
  if (int rc = self->inner->action(&inner, self->inner, url, action); rc < 0) return rc;
  // Stateful transports (git, ssh) answer RECEIVEPACK with the stream of RECEIVEPACK_LS.
  if (self->current != nullptr && self->current->inner == inner) {
    *out = &self->current->parent;
    return 0;
  }
  auto* stream = new Stream;
  stream->parent.subtransport = transport;
  stream->parent.read = StreamRead;
  stream->parent.write = StreamWrite;
  stream->parent.free = StreamFree;
  stream->owner = self;
  stream->inner = inner;
  stream->push = action == GIT_SERVICE_RECEIVEPACK_LS || action == GIT_SERVICE_RECEIVEPACK;
  self->current = stream;
  *out = &stream->parent;
  return 0;
}

int Close(git_smart_subtransport* transport) {
  Subtransport* self = Self(transport);
  if (self->finished != nullptr) {
    ReleaseFinished(self);
    return 0;
  }
  return self->inner != nullptr ? self->inner->close(self->inner) : 0;
}

void Free(git_smart_subtransport* transport) {
  Subtransport* self = Self(transport);
  if (self->finished != nullptr) {
    ReleaseFinished(self);
  } else if (self->inner != nullptr) {
    self->inner->free(self->inner);
  }
  delete self;
}

// Which of libgit2's subtransports a registration wraps.
struct InnerKind {
  git_smart_subtransport_cb make;
};

int NewSubtransport(git_smart_subtransport** out, git_transport* owner, void* param) {
  auto* self = new Subtransport;
  self->parent.action = Action;
  self->parent.close = Close;
  self->parent.free = Free;
  self->make_inner = static_cast<const InnerKind*>(param)->make;
  self->owner = owner;
  *out = &self->parent;
  return 0;
}

InnerKind kGitInner = {git_smart_subtransport_git};
InnerKind kHttpInner = {git_smart_subtransport_http};
InnerKind kSshInner = {git_smart_subtransport_ssh};
// As libgit2's own definitions (transport.c), over the wrappers.
git_smart_subtransport_definition kGit = {NewSubtransport, 0, &kGitInner};
git_smart_subtransport_definition kHttp = {NewSubtransport, 1, &kHttpInner};
git_smart_subtransport_definition kSsh = {NewSubtransport, 0, &kSshInner};

}  // namespace

void UseEarlyPushReports() {
  static std::once_flag once;
  std::call_once(once, [] {
    int major = 0, minor = 0, patch = 0;
    if (git_libgit2_version(&major, &minor, &patch) != 0 || major != 1 || minor != 5) return;
    git_transport_register("git", git_transport_smart, &kGit);
    git_transport_register("http", git_transport_smart, &kHttp);
    git_transport_register("https", git_transport_smart, &kHttp);
    if (git_libgit2_features() & GIT_FEATURE_SSH) {
      for (const char* scheme : {"ssh", "ssh+git", "git+ssh"}) {
        git_transport_register(scheme, git_transport_smart, &kSsh);
      }
    }
  });
}

bool AwaitPushTails(absl::Duration timeout) { return TheTails().Await(timeout); }

}  // namespace elfdeploy::publisher
