#pragma once

#include <cstddef>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace elfdeploy::publisher {

// Finds the end of receive-pack's report in its answer to a push, as the bytes arrive. With
// side-band-64k (which libgit2 always asks for) the report travels in channel 1 and ends with its
// own flush-pkt; the answer as a whole ends with a second flush that receive-pack sends only
// after its post-receive hooks and `gc --auto` have run.
class PushReportScanner {
 public:
  // Scans the next bytes of the answer. When they complete the report, returns how many of them
  // run up to the end of the side-band packet that completes it; otherwise all of them. After
  // the report it goes on to the answer's closing flush (ended()).
  size_t Feed(absl::string_view data);

  // The report is in; whatever follows is the server's tail (hook output, the closing flush).
  bool complete() const { return complete_; }
  // After the report, the answer's closing flush came (or something no tail can follow).
  bool ended() const { return ended_; }
  // The answer is not a side-band stream this scanner follows (a plain report, an error, the
  // closing flush already): libgit2 reads it whole, as it would without the scanner.
  bool passthrough() const { return passthrough_; }

 private:
  // Position in one pkt-line stream: the header being read, then the payload's remaining bytes.
  struct Packets {
    char header[4] = {};
    int header_len = 0;
    size_t remaining = 0;
  };
  // Takes header bytes from `data` at `*at`; returns the pkt length once the header is whole, -1
  // while it is not, -2 when it is not four hex digits.
  static int ReadHeader(Packets& packets, absl::string_view data, size_t* at);
  // Scans channel-1 payload bytes; sets inner_done_ at the report's flush.
  void FeedReport(absl::string_view payload);

  Packets outer_;
  int channel_ = -1;  // of the outer packet being read; -1 before its first payload byte
  Packets inner_;
  bool inner_done_ = false;
  bool complete_ = false;
  bool ended_ = false;
  bool passthrough_ = false;
};

// Registers libgit2's own git://, http(s):// and ssh:// transports with one change: a push
// returns as soon as receive-pack's report is complete, instead of after the server's
// post-receive hooks and `gc --auto` (~3 ms of a one-app publish against git daemon here, and as
// long as a hook takes elsewhere). The rest of the answer is still read to its end, on a thread
// of its own, so the server's hooks never write into a closed connection. Registered once per
// process, after git_libgit2_init; a no-op for libgit2 other than 1.5, whose transports are the
// ones wrapped. Errors the server sends after its report no longer fail the push (the refs
// moved already), and its hooks' output is not shown.
void UseEarlyPushReports();

// Waits until the tails of every finished push have been read and their connections closed.
// False when `timeout` passed first (a server still running a hook).
bool AwaitPushTails(absl::Duration timeout);

}  // namespace elfdeploy::publisher
