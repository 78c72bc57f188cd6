#include "services/manifest_publisher/git_stream.h"

#include <git2.h>
#include <git2/sys/stream.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/time/clock.h"

namespace elfdeploy::publisher {
namespace {

// Starts with the layout of libgit2 1.5's git_socket_stream (src/libgit2/streams/socket.h): its
// ssh transport takes the descriptor from `socket` through that struct, whoever made the stream.
struct SocketStream {
  git_stream parent;
  char* host;
  char* port;
  int socket;
  // Writes are gathered here and sent when it fills, before any read and on close: libgit2 writes
  // a pack a few bytes at a time, and without Nagle each write would be a packet.
  std::string pending;
};

constexpr size_t kWriteBuffer = 64 << 10;

// Set by SocketReadDeadline; infinite otherwise.
thread_local absl::Duration read_silence = absl::InfiniteDuration();

SocketStream* Self(git_stream* stream) { return reinterpret_cast<SocketStream*>(stream); }

int Fail(const std::string& message) {
  git_error_set_str(GIT_ERROR_NET, message.c_str());
  return -1;
}

int Connect(git_stream* stream) {
  SocketStream* self = Self(stream);
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  int rc = getaddrinfo(self->host, self->port, &hints, &addresses);
  if (rc != 0) {
    return Fail(std::string("failed to resolve address for ") + self->host + ": " +
                gai_strerror(rc));
  }
  std::string error = "no address";
  for (addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    int rc_connect;
    do {
      rc_connect = connect(fd, a->ai_addr, a->ai_addrlen);
    } while (rc_connect != 0 && errno == EINTR);
    if (rc_connect == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      self->socket = fd;
      freeaddrinfo(addresses);
      return 0;
    }
    error = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(addresses);
  return Fail(std::string("failed to connect to ") + self->host + ": " + error);
}

int Flush(SocketStream* self) {
  size_t sent = 0;
  while (sent < self->pending.size()) {
    ssize_t n =
        send(self->socket, self->pending.data() + sent, self->pending.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      self->pending.clear();
      return Fail(std::string("could not write to socket: ") + std::strerror(errno));
    }
    sent += static_cast<size_t>(n);
  }
  self->pending.clear();
  return 0;
}

ssize_t Read(git_stream* stream, void* data, size_t len) {
  if (Flush(Self(stream)) < 0) return -1;
  // Acknowledge at once: git's servers write without TCP_NODELAY, so a small write that follows
  // another (receive-pack's report after its sideband header) waits for this side's ACK, which
  // the kernel would otherwise delay.
  int one = 1;
  setsockopt(Self(stream)->socket, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
  if (read_silence != absl::InfiniteDuration()) {
    const absl::Time deadline = absl::Now() + read_silence;
    pollfd readable = {Self(stream)->socket, POLLIN, 0};
    int ready;
    do {
      const int64_t wait = absl::ToInt64Milliseconds(absl::Ceil(
          std::max(deadline - absl::Now(), absl::ZeroDuration()), absl::Milliseconds(1)));
      ready = poll(&readable, 1, static_cast<int>(std::min<int64_t>(wait, INT_MAX)));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) {
      return Fail("nothing to read from socket for " + absl::FormatDuration(read_silence));
    }
  }
  ssize_t n;
  do {
    n = recv(Self(stream)->socket, data, len, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) Fail(std::string("could not read from socket: ") + std::strerror(errno));
  return n;
}

ssize_t Write(git_stream* stream, const char* data, size_t len, int /*flags*/) {
  SocketStream* self = Self(stream);
  self->pending.append(data, len);
  if (self->pending.size() >= kWriteBuffer && Flush(self) < 0) return -1;
  return static_cast<ssize_t>(len);
}

int Close(git_stream* stream) {
  SocketStream* self = Self(stream);
  int flushed = self->socket >= 0 ? Flush(self) : 0;
  if (self->socket >= 0 && close(self->socket) != 0) {
    self->socket = -1;
    return Fail(std::string("could not close socket: ") + std::strerror(errno));
  }
  self->socket = -1;
  return flushed;
}

void Free(git_stream* stream) {
  SocketStream* self = Self(stream);
  std::free(self->host);
  std::free(self->port);
  delete self;
}

int NewStream(git_stream** out, const char* host, const char* port) {
  auto* self = new SocketStream{};
  self->parent.version = GIT_STREAM_VERSION;
  self->parent.connect = Connect;
  self->parent.read = Read;
  self->parent.write = Write;
  self->parent.close = Close;
  self->parent.free = Free;
  self->host = strdup(host);
  self->port = strdup(port);
  self->socket = -1;
  self->pending.reserve(kWriteBuffer);
  *out = &self->parent;
  return 0;
}

}  // namespace

SocketReadDeadline::SocketReadDeadline(absl::Duration silence) : previous_(read_silence) {
  read_silence = silence;
}

SocketReadDeadline::~SocketReadDeadline() { read_silence = previous_; }

void UseNoDelaySockets() {
  static std::once_flag once;
  std::call_once(once, [] {
    int major = 0, minor = 0, patch = 0;
    if (git_libgit2_version(&major, &minor, &patch) != 0 || major != 1 || minor != 5) return;
    git_stream_registration registration = {};
    registration.version = GIT_STREAM_VERSION;
    registration.init = NewStream;
    git_stream_register(GIT_STREAM_STANDARD, &registration);
  });
}

}  // namespace elfdeploy::publisher
