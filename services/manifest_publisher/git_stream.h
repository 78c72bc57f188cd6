#pragma once

#include "absl/time/time.h"

namespace elfdeploy::publisher {

// Makes libgit2 open its plain TCP connections (git://, http://, and the sockets under https://
// and ssh://) with TCP_NODELAY and a write buffer flushed before every read. libgit2's own sockets
// leave Nagle on, and a push writes its command and its pack in separate small writes, so every
// push waited out the server's delayed ACK (~40 ms); without Nagle, the buffer keeps a pack from
// leaving as thousands of tiny packets. Registered once per process, after git_libgit2_init; a
// no-op for libgit2 other than 1.5, whose ssh transport reads the socket through the internal
// layout mirrored here.
void UseNoDelaySockets();

// While one lives, a read on this thread from a socket of UseNoDelaySockets fails when nothing
// arrives for `silence`. (ssh is not covered: libssh2 reads its socket itself.)
class SocketReadDeadline {
 public:
  explicit SocketReadDeadline(absl::Duration silence);
  ~SocketReadDeadline();
  SocketReadDeadline(const SocketReadDeadline&) = delete;
  SocketReadDeadline& operator=(const SocketReadDeadline&) = delete;

 private:
  absl::Duration previous_;
};

}  // namespace elfdeploy::publisher
