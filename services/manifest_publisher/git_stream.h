#pragma once

namespace elfdeploy::publisher {

// Makes libgit2 open its plain TCP connections (git://, http://, and the sockets under https://
// and ssh://) with TCP_NODELAY and a write buffer flushed before every read. libgit2's own sockets
// leave Nagle on, and a push writes its command and its pack in separate small writes, so every
// push waited out the server's delayed ACK (~40 ms); without Nagle, the buffer keeps a pack from
// leaving as thousands of tiny packets. Registered once per process, after git_libgit2_init; a
// no-op for libgit2 other than 1.5, whose ssh transport reads the socket through the internal
// layout mirrored here.
void UseNoDelaySockets();

}  // namespace elfdeploy::publisher
