#include "agent/event_buffer.h"

#include <algorithm>
#include <utility>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace elfdeploy::agent {

uint64_t EventBuffer::Push(const std::string& key, v1::AgentEvent event) {
  absl::MutexLock lock(&mu_);
  uint64_t sequence = next_++;
  event.set_sequence(sequence);
  if (!key.empty()) {
    auto previous = latest_.find(key);
    if (previous != latest_.end()) {
      if (events_.size() >= bound_) {
        events_.erase(previous->second);
        ++coalesced_;
      }
      previous->second = sequence;
    } else {
      latest_.emplace(key, sequence);
    }
  }
  events_.emplace(sequence, Entry{key, event.SerializeAsString()});
  return sequence;
}

std::vector<v1::AgentEvent> EncodedEvents::Decode() const {
  v1::AgentEventBatch batch;
  if (!batch.ParseFromString(body)) return {};
  return {batch.events().begin(), batch.events().end()};
}

EncodedEvents EventBuffer::Next(uint64_t after, size_t max, absl::Time deadline,
                                absl::Duration linger) {
  absl::MutexLock lock(&mu_);
  uint64_t wakes = wakes_;
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return wakes_ != wakes || events_.upper_bound(after) != events_.end();
  };
  const bool some = mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (some && linger > absl::ZeroDuration() && wakes_ == wakes) {
    // Counts sequences, coalesced gaps included: a batch may go out a little short of `max`.
    auto full = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return wakes_ != wakes || next_ - 1 - std::min(after, next_ - 1) >= max;
    };
    mu_.AwaitWithTimeout(absl::Condition(&full), linger);
  }
  // Each event is field `events` (length-delimited) of AgentEventBatch.
  constexpr uint32_t kEventsTag = (v1::AgentEventBatch::kEventsFieldNumber << 3) | 2;
  EncodedEvents out;
  {
    google::protobuf::io::StringOutputStream raw(&out.body);
    google::protobuf::io::CodedOutputStream coded(&raw);
    for (auto it = events_.upper_bound(after); it != events_.end() && out.count < max; ++it) {
      coded.WriteTag(kEventsTag);
      coded.WriteVarint32(static_cast<uint32_t>(it->second.encoded.size()));
      coded.WriteString(it->second.encoded);
      ++out.count;
      out.last_sequence = it->first;
    }
  }
  return out;
}

void EventBuffer::Wake() {
  absl::MutexLock lock(&mu_);
  ++wakes_;
}

void EventBuffer::Ack(uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  for (auto it = events_.begin(); it != events_.end() && it->first <= sequence;) {
    if (!it->second.key.empty()) {
      auto latest = latest_.find(it->second.key);
      if (latest != latest_.end() && latest->second == it->first) latest_.erase(latest);
    }
    it = events_.erase(it);
  }
}

uint64_t EventBuffer::first_unacked() const {
  absl::MutexLock lock(&mu_);
  return events_.empty() ? 0 : events_.begin()->first;
}

uint64_t EventBuffer::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return next_ - 1;
}

size_t EventBuffer::size() const {
  absl::MutexLock lock(&mu_);
  return events_.size();
}

uint64_t EventBuffer::coalesced() const {
  absl::MutexLock lock(&mu_);
  return coalesced_;
}

}  // namespace elfdeploy::agent
