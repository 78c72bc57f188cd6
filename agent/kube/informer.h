#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/kube/client.h"
#include "simdjson.h"

namespace elfdeploy::agent {

enum class Change { kAdded, kModified, kDeleted };

struct InformerOptions {
  // Collection path, e.g. "/api/v1/namespaces/apps/pods" or "/api/v1/pods" (all namespaces).
  std::string path;
  std::string label_selector = {};
  // Items per list page (limit/continue).
  int64_t page_size = 100;
  // timeoutSeconds of each watch request; the watch is then resumed from the last version.
  absl::Duration watch_timeout = absl::Minutes(5);
  // Reconnect backoff: doubles from initial to max, with full jitter.
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
};

// Why an informer went back to the API server, for metrics.
enum class Restart { kExpired, kError, kTimeout };

struct InformerHandler {
  // An object changed. `object` is the API's JSON (for deletions found by a relist: the last
  // state seen). Called on the informer's thread, in order.
  std::function<void(Change, simdjson::dom::element object)> on_change;
  // A (re)list is complete and every object it holds has been reported: the store of the caller
  // now matches the server at `resource_version`.
  std::function<void(const std::string& resource_version)> on_synced;
  // The informer lists or watches again (after an expired version, an error, or a watch's end).
  std::function<void(Restart, const absl::Status&)> on_restart;
};

// List-then-watch of one collection, the way client-go's reflector does it: a paginated list,
// then a watch from the list's resourceVersion with bookmarks; a watch that ends is resumed from
// the last version seen; 410 Gone (at the start or as an ERROR event) leads to a relist whose
// differences from what was reported are the only changes reported (no phantom adds or deletes);
// errors are retried with backoff and jitter. Keeps each object's resourceVersion and, to report
// deletions found by a relist, its last state as returned by `trim`.
class Informer {
 public:
  // `trim` serializes what the caller needs of an object (JSON text); it must keep metadata.name,
  // namespace, uid and resourceVersion. By default the whole object is kept.
  Informer(KubeClient& client, InformerOptions options, InformerHandler handler,
           std::function<std::string(simdjson::dom::element)> trim = nullptr);

  // Runs until `cancelled` returns true (checked at least once a second).
  void Run(const std::function<bool()>& cancelled);

  // Objects currently known (tests, metrics).
  size_t size() const { return known_.size(); }

 private:
  struct Known {
    std::string resource_version;
    // The trimmed last state, serialized: a few hundred bytes where the parsed form takes
    // kilobytes, for thousands of objects; parsed only for a deletion found by a relist.
    std::string last;
  };

  // Lists everything (all pages) and reports the differences; the list's resourceVersion.
  absl::StatusOr<std::string> Relist(const std::function<bool()>& cancelled);
  // Watches from `*resource_version` until the stream ends; updates it as events arrive.
  absl::Status WatchFrom(std::string* resource_version, const std::function<bool()>& cancelled);
  // `key`: Key(object), which the caller has computed.
  void Apply(Change change, simdjson::dom::element object, const std::string& key);
  // Sleeps for the next backoff unless cancelled; false when cancelled.
  bool Backoff(int* failures, const std::function<bool()>& cancelled);

  KubeClient& client_;
  const InformerOptions options_;
  const InformerHandler handler_;
  const std::function<std::string(simdjson::dom::element)> trim_;
  // "namespace/name" -> what was last reported.
  absl::flat_hash_map<std::string, Known> known_;
};

}  // namespace elfdeploy::agent
