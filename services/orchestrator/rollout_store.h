#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/orchestrator.pb.h"

struct sqlite3;

namespace elfdeploy::orchestrator {

struct RolloutStoreOptions {
  // Directory holding `rollouts.db` (and its `-wal`/`-shm` files); created when missing.
  std::string data_dir;
  // Clock for create/update/end times, event times and rollout ids.
  std::function<absl::Time()> now = absl::Now;
};

// True for SUCCEEDED, FAILED, TIMED_OUT and CANCELLED.
bool IsTerminal(v1::RolloutState state);

// Clears every inline secret of `request` (basic-auth passwords, identity tokens, SSH key
// passphrases of the registry, pull and GitOps credentials); usernames and refs are kept.
void ClearRequestSecrets(v1::DeployRequest* request);

// The durable record of rollouts and their event log, in SQLite (WAL, synchronous=FULL) at
// `<data_dir>/rollouts.db`. Every mutation is one transaction that is durable when the call
// returns, so a process killed at any point reopens with exactly the calls that returned.
// Thread-safe. One RolloutStore per data dir: it is the only writer, and WaitForEvents only sees
// updates made through this object.
//
// Errors common to every call: INTERNAL naming the database path and SQLite's message;
// DATA_LOSS when a stored record does not parse.
class RolloutStore {
 public:
  // Opens (creating when missing) `<data_dir>/rollouts.db` and its schema. INVALID_ARGUMENT for
  // an empty data_dir; FAILED_PRECONDITION for a schema newer than this code knows.
  static absl::StatusOr<std::unique_ptr<RolloutStore>> Open(RolloutStoreOptions options);

  RolloutStore(const RolloutStore&) = delete;
  RolloutStore& operator=(const RolloutStore&) = delete;
  ~RolloutStore();

  // Stores a new PENDING rollout of `request` with `apps` and returns it with true. The store
  // assigns `id` (URL-safe: "r-<utc time>-<random hex>"), `create_time`/`update_time`, and
  // `correlation_id` (the request's, else the id). The caller must clear inline secrets before
  // calling (ClearRequestSecrets); the store clears them again so none is ever written.
  // A non-empty `request.request_id()` seen before returns the stored rollout with false, or
  // ALREADY_EXISTS when that rollout's request differs (compared with secrets cleared).
  absl::StatusOr<std::pair<v1::Rollout, bool>> Create(const v1::DeployRequest& request,
                                                      std::vector<v1::AppRollout> apps);

  // In one transaction, replaces the stored rollout `rollout.id()` with `rollout` and appends
  // `events`; returns the events as stored. Kept from the stored record: id, correlation_id,
  // request, create_time. Set by the store: update_time (now), start_time (first non-PENDING
  // state, when unset), end_time (terminal state, when unset), last_sequence. Each event gets
  // rollout_id, the next sequence (from 1 per rollout) and event_time now when unset.
  // INVALID_ARGUMENT: empty id, an event without a payload or with `progress` (never stored).
  // NOT_FOUND: unknown id. FAILED_PRECONDITION: the stored rollout is terminal.
  absl::StatusOr<std::vector<v1::WatchRolloutResponse>> Update(
      const v1::Rollout& rollout, std::vector<v1::WatchRolloutResponse> events);

  // The stored rollout. INVALID_ARGUMENT: empty id; NOT_FOUND: unknown id.
  absl::StatusOr<v1::Rollout> Get(const std::string& id) const;

  // Rollouts newest first (create_time, then creation order), filtered by `states` (empty or
  // UNSPECIFIED: any), `app` (exact app name) and `created_after` (inclusive). page_size 0 means
  // 50. INVALID_ARGUMENT: page_size negative or above 1000, a page token that is malformed or
  // from other filters, an unknown state, an invalid created_after.
  absl::StatusOr<v1::ListRolloutsResponse> List(const v1::ListRolloutsRequest& request) const;

  // The stored events of rollout `id` with sequence > `after`, in order (WatchRollout replay).
  // INVALID_ARGUMENT: empty id; NOT_FOUND: unknown id.
  absl::StatusOr<std::vector<v1::WatchRolloutResponse>> Events(const std::string& id,
                                                               uint64_t after) const;

  // Blocks until rollout `id` has an event with sequence > `after` or `deadline` passes; returns
  // whether it has one. Returns false at once for an unknown id, and for a terminal rollout
  // without such an event (none will come).
  bool WaitForEvents(const std::string& id, uint64_t after, absl::Time deadline) const;

  // Rollouts not in a terminal state, oldest first (to resume after a restart).
  absl::StatusOr<std::vector<v1::Rollout>> Unfinished() const;

  // `<data_dir>/rollouts.db`.
  const std::string& path() const { return path_; }

 private:
  struct Row;

  RolloutStore(RolloutStoreOptions options, std::string path, sqlite3* db);

  absl::Status Init() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Row> LoadRow(const std::string& id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Rollout> FindByRequestId(const std::string& request_id, bool* found) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ReplaceApps(const v1::Rollout& rollout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewId(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RolloutStoreOptions options_;
  const std::string path_;
  mutable absl::Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  // Last sequence of each non-terminal rollout created, updated or waited on through this
  // object; WaitForEvents waits on it.
  mutable std::map<std::string, uint64_t, std::less<>> live_ ABSL_GUARDED_BY(mu_);
};

}  // namespace elfdeploy::orchestrator
