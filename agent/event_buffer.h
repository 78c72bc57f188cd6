#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/agent_link.pb.h"

namespace elfdeploy::agent {

// Events ready to send: the body of an AgentEventBatch in wire format (each event serialized once,
// when it was pushed), so a batch goes out without copying or re-encoding messages.
struct EncodedEvents {
  std::string body;
  size_t count = 0;
  uint64_t last_sequence = 0;

  bool empty() const { return count == 0; }
  // The events, parsed back (tests and diagnostics).
  std::vector<v1::AgentEvent> Decode() const;
};

// The agent's unacknowledged events, in sequence order. Sequences start at 1 and strictly
// increase. Past `bound` events, a new event of an object replaces that object's older pending
// event (its sequence becomes a gap), so the latest state of every object is kept while memory
// stays near the bound; events of distinct objects are never dropped. Thread-safe.
class EventBuffer {
 public:
  explicit EventBuffer(size_t bound) : bound_(bound) {}

  // Assigns the next sequence to `event` and keeps it until acked. `key` names the object
  // ("kind/namespace/name"); empty for events that must never be coalesced (snapshot_complete).
  uint64_t Push(const std::string& key, v1::AgentEvent event);

  // Up to `max` events with a sequence greater than `after`, in order; waits until there is one,
  // `deadline` passes, or `wake` is called (then possibly none). With a `linger`, once there is
  // one it waits up to that long for `max` (fewer, larger batches under load).
  EncodedEvents Next(uint64_t after, size_t max, absl::Time deadline,
                     absl::Duration linger = absl::ZeroDuration());
  // Ends a Next that is waiting.
  void Wake();

  // Drops every event up to `sequence` (cumulative ack).
  void Ack(uint64_t sequence);

  // Oldest unacked sequence, 0 when none; last assigned sequence, 0 when none.
  uint64_t first_unacked() const;
  uint64_t last_sequence() const;
  size_t size() const;
  uint64_t coalesced() const;

 private:
  struct Entry {
    std::string key;
    std::string encoded;  // the serialized AgentEvent
  };

  const size_t bound_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, Entry> events_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, uint64_t> latest_ ABSL_GUARDED_BY(mu_);  // key -> sequence
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t coalesced_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wakes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace elfdeploy::agent
