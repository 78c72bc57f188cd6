#include "agent/event_buffer.h"

#include <utility>

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
  events_.emplace(sequence, Entry{key, std::move(event)});
  return sequence;
}

std::vector<v1::AgentEvent> EventBuffer::Next(uint64_t after, size_t max, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  uint64_t wakes = wakes_;
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return wakes_ != wakes || events_.upper_bound(after) != events_.end();
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  std::vector<v1::AgentEvent> out;
  for (auto it = events_.upper_bound(after); it != events_.end() && out.size() < max; ++it) {
    out.push_back(it->second.event);
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
