#include "services/orchestrator/rollout_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <random>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/message_differencer.h"
#include "services/common/proto_time.h"

namespace elfdeploy::orchestrator {
namespace {

constexpr int kSchemaVersion = 1;
constexpr int kBusyTimeoutMs = 5000;
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr absl::string_view kTokenVersion = "1";

// Schema v1. Rollouts are serialized Rollout messages plus the columns queries need; `ord` is
// the creation order (ties of create_ns). Events are serialized WatchRolloutResponse messages.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE rollouts (
  ord INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  request_id TEXT,
  state INTEGER NOT NULL,
  create_ns INTEGER NOT NULL,
  last_sequence INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE UNIQUE INDEX rollouts_request_id ON rollouts(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX rollouts_create ON rollouts(create_ns DESC, ord DESC);
CREATE INDEX rollouts_state ON rollouts(state, create_ns);
CREATE TABLE rollout_apps (
  rollout_id TEXT NOT NULL REFERENCES rollouts(id),
  app TEXT NOT NULL,
  PRIMARY KEY (rollout_id, app)
) WITHOUT ROWID;
CREATE INDEX rollout_apps_app ON rollout_apps(app);
CREATE TABLE events (
  rollout_id TEXT NOT NULL REFERENCES rollouts(id),
  sequence INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (rollout_id, sequence)
) WITHOUT ROWID;
PRAGMA user_version = 1;
)sql";

// A prepared statement, finalized on destruction.
class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(stmt_); }

  sqlite3_stmt* get() const { return stmt_; }
  sqlite3_stmt** out() { return &stmt_; }

  void Bind(int index, absl::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int index, const std::string& blob) {
    sqlite3_bind_blob(stmt_, index, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  }
  void Bind(int index, int64_t value) { sqlite3_bind_int64(stmt_, index, value); }
  void BindNull(int index) { sqlite3_bind_null(stmt_, index); }

  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const auto* data = sqlite3_column_text(stmt_, column);
    return data == nullptr ? std::string()
                           : std::string(reinterpret_cast<const char*>(data),
                                         static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  template <typename Message>
  bool Parse(int column, Message* message) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    return message->ParseFromArray(data, sqlite3_column_bytes(stmt_, column));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

absl::Status SqliteError(const std::string& path, sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("rollout store ", path, ": ", what, ": ",
                                          db == nullptr ? "out of memory" : sqlite3_errmsg(db)));
}

absl::Status Prepare(const std::string& path, sqlite3* db, absl::string_view sql, Stmt* stmt) {
  if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), stmt->out(), nullptr) !=
      SQLITE_OK) {
    return SqliteError(path, db, absl::StrCat("prepare `", sql, "`"));
  }
  return absl::OkStatus();
}

// Steps a statement that returns no rows.
absl::Status Run(const std::string& path, sqlite3* db, Stmt& stmt, absl::string_view what) {
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqliteError(path, db, what);
  return absl::OkStatus();
}

absl::Status Exec(const std::string& path, sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return SqliteError(path, db, absl::StrCat("exec `", sql, "`"));
  }
  return absl::OkStatus();
}

// BEGIN IMMEDIATE ... COMMIT; rolls back unless committed.
class Transaction {
 public:
  Transaction(const std::string& path, sqlite3* db) : path_(path), db_(db) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status Begin() {
    absl::Status status = Exec(path_, db_, "BEGIN IMMEDIATE");
    open_ = status.ok();
    return status;
  }
  absl::Status Commit() {
    absl::Status status = Exec(path_, db_, "COMMIT");
    if (status.ok()) open_ = false;
    return status;
  }

 private:
  const std::string& path_;
  sqlite3* db_;
  bool open_ = false;
};

absl::Status DataLoss(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat("rollout store ", path, ": corrupt ", what));
}

void ClearCredentials(v1::RegistryCredentials* credentials) {
  if (credentials->has_basic()) credentials->mutable_basic()->clear_password();
  if (credentials->source_case() == v1::RegistryCredentials::kIdentityToken) {
    credentials->set_identity_token("");
  }
}

void ClearCredentials(v1::GitCredentials* credentials) {
  if (credentials->has_basic()) credentials->mutable_basic()->clear_password();
  if (credentials->has_ssh_key()) credentials->mutable_ssh_key()->clear_passphrase();
}

void ClearEventSecrets(v1::WatchRolloutResponse* event) {
  if (event->has_state() && event->state().has_rollout()) {
    ClearRequestSecrets(event->mutable_state()->mutable_rollout()->mutable_request());
  }
}

// Nanoseconds since the epoch, saturated to int64.
int64_t ToNanos(const google::protobuf::Timestamp& time) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (time.seconds() >= kMax / 1'000'000'000) return kMax;
  if (time.seconds() <= std::numeric_limits<int64_t>::min() / 1'000'000'000) {
    return std::numeric_limits<int64_t>::min();
  }
  return time.seconds() * 1'000'000'000 + time.nanos();
}

std::vector<std::string> AppNames(const v1::Rollout& rollout) {
  std::vector<std::string> names;
  for (const v1::AppRollout& app : rollout.apps()) names.push_back(app.name());
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

// FNV-1a of the filters, so a page token is only accepted with the filters it was made for.
uint64_t FilterFingerprint(const std::vector<int>& states, const v1::ListRolloutsRequest& request) {
  std::string key = absl::StrCat(absl::StrJoin(states, ","), "|", request.app(), "|",
                                 request.has_created_after() ? ToNanos(request.created_after()) : 0,
                                 "|", request.has_created_after());
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : key) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

struct PageToken {
  int64_t create_ns = 0;
  int64_t ord = 0;
};

std::string EncodeToken(const PageToken& token, uint64_t fingerprint) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(kTokenVersion, ".", token.create_ns, ".", token.ord, ".", fingerprint));
}

absl::StatusOr<PageToken> DecodeToken(const std::string& encoded, uint64_t fingerprint) {
  const absl::Status bad = absl::InvalidArgumentError("invalid page_token");
  std::string raw;
  if (!absl::WebSafeBase64Unescape(encoded, &raw)) return bad;
  std::vector<absl::string_view> parts = absl::StrSplit(raw, '.');
  PageToken token;
  uint64_t token_fingerprint = 0;
  if (parts.size() != 4 || parts[0] != kTokenVersion ||
      !absl::SimpleAtoi(parts[1], &token.create_ns) || !absl::SimpleAtoi(parts[2], &token.ord) ||
      !absl::SimpleAtoi(parts[3], &token_fingerprint)) {
    return bad;
  }
  if (token_fingerprint != fingerprint) {
    return absl::InvalidArgumentError("page_token was issued for different filters");
  }
  return token;
}

int64_t ClampToInt64(uint64_t value) {
  return static_cast<int64_t>(
      std::min<uint64_t>(value, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
}

absl::Status CheckId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("rollout id is empty");
  return absl::OkStatus();
}

}  // namespace

bool IsTerminal(v1::RolloutState state) {
  switch (state) {
    case v1::ROLLOUT_STATE_SUCCEEDED:
    case v1::ROLLOUT_STATE_FAILED:
    case v1::ROLLOUT_STATE_TIMED_OUT:
    case v1::ROLLOUT_STATE_CANCELLED:
      return true;
    default:
      return false;
  }
}

void ClearRequestSecrets(v1::DeployRequest* request) {
  if (request->has_registry()) {
    v1::RegistryTarget* registry = request->mutable_registry();
    if (registry->has_credentials()) ClearCredentials(registry->mutable_credentials());
    if (registry->has_pull_credentials()) ClearCredentials(registry->mutable_pull_credentials());
  }
  if (request->has_gitops() && request->gitops().has_credentials()) {
    ClearCredentials(request->mutable_gitops()->mutable_credentials());
  }
}

struct RolloutStore::Row {
  v1::Rollout rollout;
  v1::RolloutState state = v1::ROLLOUT_STATE_UNSPECIFIED;
  uint64_t last_sequence = 0;
};

absl::StatusOr<std::unique_ptr<RolloutStore>> RolloutStore::Open(RolloutStoreOptions options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  if (!options.now) options.now = absl::Now;
  std::error_code error;
  std::filesystem::create_directories(options.data_dir, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("rollout store: cannot create ", options.data_dir, ": ", error.message()));
  }
  std::string path = (std::filesystem::path(options.data_dir) / "rollouts.db").string();
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    absl::Status status = SqliteError(path, db, "open");
    sqlite3_close_v2(db);
    return status;
  }
  std::unique_ptr<RolloutStore> store(new RolloutStore(std::move(options), std::move(path), db));
  {
    absl::MutexLock lock(&store->mu_);
    if (absl::Status status = store->Init(); !status.ok()) return status;
  }
  return store;
}

RolloutStore::RolloutStore(RolloutStoreOptions options, std::string path, sqlite3* db)
    : options_(std::move(options)), path_(std::move(path)), db_(db) {}

RolloutStore::~RolloutStore() { sqlite3_close_v2(db_); }

absl::Status RolloutStore::Init() {
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  {
    Stmt stmt;
    if (absl::Status s = Prepare(path_, db_, "PRAGMA journal_mode=WAL", &stmt); !s.ok()) return s;
    if (sqlite3_step(stmt.get()) != SQLITE_ROW) return SqliteError(path_, db_, "journal_mode");
    if (std::string mode = stmt.Text(0); mode != "wal") {
      return absl::InternalError(
          absl::StrCat("rollout store ", path_, ": WAL journal mode unavailable (got ", mode, ")"));
    }
  }
  // FULL: a transaction is on disk (WAL fsynced) when COMMIT returns, so a recorded stage
  // survives power loss too, not only a process kill; rollouts write a few records per second.
  if (absl::Status s = Exec(path_, db_, "PRAGMA synchronous=FULL"); !s.ok()) return s;
  if (absl::Status s = Exec(path_, db_, "PRAGMA foreign_keys=ON"); !s.ok()) return s;

  Transaction txn(path_, db_);
  if (absl::Status s = txn.Begin(); !s.ok()) return s;
  Stmt stmt;
  if (absl::Status s = Prepare(path_, db_, "PRAGMA user_version", &stmt); !s.ok()) return s;
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return SqliteError(path_, db_, "user_version");
  const int64_t version = stmt.Int(0);
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout store ", path_, ": schema version ", version,
                     " is newer than this orchestrator's (", kSchemaVersion, ")"));
  }
  if (version == 0) {
    if (absl::Status s = Exec(path_, db_, kSchemaV1); !s.ok()) return s;
  }
  return txn.Commit();
}

std::string RolloutStore::NewId(absl::Time now) {
  std::random_device random;
  const uint64_t bits = (static_cast<uint64_t>(random()) << 32) ^ random();
  return absl::StrCat("r-", absl::FormatTime("%Y%m%d-%H%M%S", now, absl::UTCTimeZone()), "-",
                      absl::Hex(bits & 0xffffffffffffull, absl::kZeroPad12));
}

absl::StatusOr<RolloutStore::Row> RolloutStore::LoadRow(const std::string& id) const {
  Stmt stmt;
  if (absl::Status s = Prepare(
          path_, db_, "SELECT state, last_sequence, record FROM rollouts WHERE id = ?", &stmt);
      !s.ok()) {
    return s;
  }
  stmt.Bind(1, id);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("rollout ", id, " not found"));
  if (rc != SQLITE_ROW) return SqliteError(path_, db_, "read rollout");
  Row row;
  row.state = static_cast<v1::RolloutState>(stmt.Int(0));
  row.last_sequence = static_cast<uint64_t>(stmt.Int(1));
  if (!stmt.Parse(2, &row.rollout)) return DataLoss(path_, absl::StrCat("rollout ", id));
  return row;
}

absl::StatusOr<v1::Rollout> RolloutStore::FindByRequestId(const std::string& request_id,
                                                          bool* found) const {
  *found = false;
  Stmt stmt;
  if (absl::Status s =
          Prepare(path_, db_, "SELECT id, record FROM rollouts WHERE request_id = ?", &stmt);
      !s.ok()) {
    return s;
  }
  stmt.Bind(1, request_id);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return v1::Rollout();
  if (rc != SQLITE_ROW) return SqliteError(path_, db_, "read rollout by request_id");
  v1::Rollout rollout;
  if (!stmt.Parse(1, &rollout)) return DataLoss(path_, absl::StrCat("rollout ", stmt.Text(0)));
  *found = true;
  return rollout;
}

absl::Status RolloutStore::ReplaceApps(const v1::Rollout& rollout) {
  Stmt del;
  if (absl::Status s = Prepare(path_, db_, "DELETE FROM rollout_apps WHERE rollout_id = ?", &del);
      !s.ok()) {
    return s;
  }
  del.Bind(1, rollout.id());
  if (absl::Status s = Run(path_, db_, del, "delete rollout apps"); !s.ok()) return s;
  Stmt insert;
  if (absl::Status s =
          Prepare(path_, db_, "INSERT INTO rollout_apps (rollout_id, app) VALUES (?, ?)", &insert);
      !s.ok()) {
    return s;
  }
  for (const std::string& app : AppNames(rollout)) {
    sqlite3_reset(insert.get());
    insert.Bind(1, rollout.id());
    insert.Bind(2, app);
    if (absl::Status s = Run(path_, db_, insert, "insert rollout app"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<v1::Rollout, bool>> RolloutStore::Create(
    const v1::DeployRequest& request, std::vector<v1::AppRollout> apps) {
  v1::DeployRequest clean = request;
  ClearRequestSecrets(&clean);
  const absl::Time now = options_.now();

  absl::MutexLock lock(&mu_);
  Transaction txn(path_, db_);
  if (absl::Status s = txn.Begin(); !s.ok()) return s;
  if (!clean.request_id().empty()) {
    bool found = false;
    absl::StatusOr<v1::Rollout> existing = FindByRequestId(clean.request_id(), &found);
    if (!existing.ok()) return existing.status();
    if (found) {
      if (!google::protobuf::util::MessageDifferencer::Equals(existing->request(), clean)) {
        return absl::AlreadyExistsError(absl::StrCat("request_id ", clean.request_id(),
                                                     " was used for rollout ", existing->id(),
                                                     " with a different request"));
      }
      return std::make_pair(*std::move(existing), false);
    }
  }

  v1::Rollout rollout;
  for (int attempt = 0;; ++attempt) {
    rollout.set_id(NewId(now));
    absl::StatusOr<Row> row = LoadRow(rollout.id());
    if (absl::IsNotFound(row.status())) break;
    if (!row.ok()) return row.status();
    if (attempt == 10) return absl::InternalError("rollout store: cannot draw a unique id");
  }
  rollout.set_correlation_id(clean.correlation_id().empty() ? rollout.id()
                                                            : clean.correlation_id());
  *rollout.mutable_request() = std::move(clean);
  rollout.set_state(v1::ROLLOUT_STATE_PENDING);
  for (v1::AppRollout& app : apps) *rollout.add_apps() = std::move(app);
  *rollout.mutable_create_time() = ToTimestamp(now);
  *rollout.mutable_update_time() = ToTimestamp(now);

  Stmt insert;
  if (absl::Status s = Prepare(path_, db_,
                               "INSERT INTO rollouts (id, request_id, state, create_ns, "
                               "last_sequence, record) VALUES (?, ?, ?, ?, 0, ?)",
                               &insert);
      !s.ok()) {
    return s;
  }
  insert.Bind(1, rollout.id());
  if (rollout.request().request_id().empty()) {
    insert.BindNull(2);
  } else {
    insert.Bind(2, rollout.request().request_id());
  }
  insert.Bind(3, static_cast<int64_t>(rollout.state()));
  insert.Bind(4, absl::ToUnixNanos(now));
  insert.BindBlob(5, rollout.SerializeAsString());
  if (absl::Status s = Run(path_, db_, insert, "insert rollout"); !s.ok()) return s;
  if (absl::Status s = ReplaceApps(rollout); !s.ok()) return s;
  if (absl::Status s = txn.Commit(); !s.ok()) return s;
  live_[rollout.id()] = 0;
  return std::make_pair(std::move(rollout), true);
}

absl::StatusOr<std::vector<v1::WatchRolloutResponse>> RolloutStore::Update(
    const v1::Rollout& rollout, std::vector<v1::WatchRolloutResponse> events) {
  if (absl::Status s = CheckId(rollout.id()); !s.ok()) return s;
  for (const v1::WatchRolloutResponse& event : events) {
    if (event.event_case() == v1::WatchRolloutResponse::EVENT_NOT_SET) {
      return absl::InvalidArgumentError("event without payload");
    }
    if (event.has_progress()) {
      return absl::InvalidArgumentError("progress events are not stored");
    }
  }
  const absl::Time now = options_.now();

  absl::MutexLock lock(&mu_);
  Transaction txn(path_, db_);
  if (absl::Status s = txn.Begin(); !s.ok()) return s;
  absl::StatusOr<Row> stored = LoadRow(rollout.id());
  if (!stored.ok()) return stored.status();
  if (IsTerminal(stored->state)) {
    return absl::FailedPreconditionError(absl::StrCat("rollout ", rollout.id(), " is already ",
                                                      v1::RolloutState_Name(stored->state),
                                                      "; it cannot change"));
  }

  v1::Rollout next = rollout;
  next.set_correlation_id(stored->rollout.correlation_id());
  *next.mutable_request() = stored->rollout.request();
  *next.mutable_create_time() = stored->rollout.create_time();
  *next.mutable_update_time() = ToTimestamp(now);
  if (next.state() != v1::ROLLOUT_STATE_PENDING && !next.has_start_time()) {
    *next.mutable_start_time() = ToTimestamp(now);
  }
  if (IsTerminal(next.state()) && !next.has_end_time()) *next.mutable_end_time() = ToTimestamp(now);

  uint64_t sequence = stored->last_sequence;
  Stmt insert;
  if (absl::Status s = Prepare(
          path_, db_, "INSERT INTO events (rollout_id, sequence, event) VALUES (?, ?, ?)", &insert);
      !s.ok()) {
    return s;
  }
  for (v1::WatchRolloutResponse& event : events) {
    event.set_sequence(++sequence);
    event.set_rollout_id(rollout.id());
    if (!event.has_event_time()) *event.mutable_event_time() = ToTimestamp(now);
    if (event.has_state() && event.state().has_rollout()) {
      // The rollout after the change, as stored: with the times filled in here.
      v1::Rollout* after = event.mutable_state()->mutable_rollout();
      *after->mutable_create_time() = next.create_time();
      *after->mutable_update_time() = next.update_time();
      if (next.has_start_time()) *after->mutable_start_time() = next.start_time();
      if (next.has_end_time()) *after->mutable_end_time() = next.end_time();
      after->set_last_sequence(sequence);
    }
    ClearEventSecrets(&event);
    sqlite3_reset(insert.get());
    insert.Bind(1, rollout.id());
    insert.Bind(2, ClampToInt64(sequence));
    insert.BindBlob(3, event.SerializeAsString());
    if (absl::Status s = Run(path_, db_, insert, "insert event"); !s.ok()) return s;
  }
  next.set_last_sequence(sequence);

  Stmt update;
  if (absl::Status s = Prepare(path_, db_,
                               "UPDATE rollouts SET state = ?, last_sequence = ?, record = ? "
                               "WHERE id = ?",
                               &update);
      !s.ok()) {
    return s;
  }
  update.Bind(1, static_cast<int64_t>(next.state()));
  update.Bind(2, ClampToInt64(sequence));
  update.BindBlob(3, next.SerializeAsString());
  update.Bind(4, rollout.id());
  if (absl::Status s = Run(path_, db_, update, "update rollout"); !s.ok()) return s;
  if (AppNames(next) != AppNames(stored->rollout)) {
    if (absl::Status s = ReplaceApps(next); !s.ok()) return s;
  }
  if (absl::Status s = txn.Commit(); !s.ok()) return s;

  if (IsTerminal(next.state())) {
    live_.erase(rollout.id());
  } else {
    live_[rollout.id()] = sequence;
  }
  return events;
}

absl::StatusOr<v1::Rollout> RolloutStore::Get(const std::string& id) const {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Row> row = LoadRow(id);
  if (!row.ok()) return row.status();
  return std::move(row->rollout);
}

absl::StatusOr<v1::ListRolloutsResponse> RolloutStore::List(
    const v1::ListRolloutsRequest& request) const {
  if (request.page_size() < 0 || request.page_size() > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be between 0 and ", kMaxPageSize));
  }
  const int page_size = request.page_size() == 0 ? kDefaultPageSize : request.page_size();
  std::vector<int> states;
  bool any_state = request.states().empty();
  for (int state : request.states()) {
    if (!v1::RolloutState_IsValid(state)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown rollout state ", state));
    }
    if (state == v1::ROLLOUT_STATE_UNSPECIFIED) any_state = true;
    states.push_back(state);
  }
  std::sort(states.begin(), states.end());
  states.erase(std::unique(states.begin(), states.end()), states.end());
  if (any_state) states.clear();
  if (request.has_created_after()) {
    const auto& t = request.created_after();
    if (t.nanos() < 0 || t.nanos() > 999'999'999) {
      return absl::InvalidArgumentError("created_after.nanos out of range");
    }
  }
  const uint64_t fingerprint = FilterFingerprint(states, request);
  PageToken after;
  const bool has_token = !request.page_token().empty();
  if (has_token) {
    absl::StatusOr<PageToken> token = DecodeToken(request.page_token(), fingerprint);
    if (!token.ok()) return token.status();
    after = *token;
  }

  std::string sql = "SELECT r.ord, r.create_ns, r.record FROM rollouts r WHERE 1";
  if (!states.empty()) {
    absl::StrAppend(&sql, " AND r.state IN (", absl::StrJoin(states, ","), ")");
  }
  if (!request.app().empty()) {
    absl::StrAppend(&sql,
                    " AND EXISTS (SELECT 1 FROM rollout_apps a WHERE a.rollout_id = r.id "
                    "AND a.app = :app)");
  }
  if (request.has_created_after()) absl::StrAppend(&sql, " AND r.create_ns >= :after");
  if (has_token) {
    absl::StrAppend(&sql, " AND (r.create_ns < :tns OR (r.create_ns = :tns AND r.ord < :tord))");
  }
  absl::StrAppend(&sql, " ORDER BY r.create_ns DESC, r.ord DESC LIMIT :limit");

  absl::MutexLock lock(&mu_);
  Stmt stmt;
  if (absl::Status s = Prepare(path_, db_, sql, &stmt); !s.ok()) return s;
  auto bind = [&](const char* name, auto value) {
    if (int index = sqlite3_bind_parameter_index(stmt.get(), name); index > 0) {
      stmt.Bind(index, value);
    }
  };
  bind(":app", absl::string_view(request.app()));
  bind(":after", request.has_created_after() ? ToNanos(request.created_after()) : int64_t{0});
  bind(":tns", after.create_ns);
  bind(":tord", after.ord);
  bind(":limit", static_cast<int64_t>(page_size) + 1);

  v1::ListRolloutsResponse response;
  PageToken last;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    if (response.rollouts_size() == page_size) {
      response.set_next_page_token(EncodeToken(last, fingerprint));
      break;
    }
    last.ord = stmt.Int(0);
    last.create_ns = stmt.Int(1);
    if (!stmt.Parse(2, response.add_rollouts())) {
      return DataLoss(path_, absl::StrCat("rollout #", last.ord));
    }
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError(path_, db_, "list rollouts");
  return response;
}

absl::StatusOr<std::vector<v1::WatchRolloutResponse>> RolloutStore::Events(const std::string& id,
                                                                           uint64_t after) const {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  Stmt exists;
  if (absl::Status s = Prepare(path_, db_, "SELECT 1 FROM rollouts WHERE id = ?", &exists);
      !s.ok()) {
    return s;
  }
  exists.Bind(1, id);
  const int found = sqlite3_step(exists.get());
  if (found == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("rollout ", id, " not found"));
  if (found != SQLITE_ROW) return SqliteError(path_, db_, "read rollout");

  Stmt stmt;
  if (absl::Status s = Prepare(path_, db_,
                               "SELECT sequence, event FROM events WHERE rollout_id = ? AND "
                               "sequence > ? ORDER BY sequence",
                               &stmt);
      !s.ok()) {
    return s;
  }
  stmt.Bind(1, id);
  stmt.Bind(2, ClampToInt64(after));
  std::vector<v1::WatchRolloutResponse> events;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    if (!stmt.Parse(1, &events.emplace_back())) {
      return DataLoss(path_, absl::StrCat("event ", stmt.Int(0), " of rollout ", id));
    }
  }
  if (rc != SQLITE_DONE) return SqliteError(path_, db_, "read events");
  return events;
}

bool RolloutStore::WaitForEvents(const std::string& id, uint64_t after, absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto has_event = [&]() -> bool {
    auto it = live_.find(id);
    if (it != live_.end()) return it->second > after;
    absl::StatusOr<Row> row = LoadRow(id);
    return row.ok() && row->last_sequence > after;
  };
  if (live_.find(id) == live_.end()) {
    absl::StatusOr<Row> row = LoadRow(id);
    if (!row.ok()) return false;
    if (row->last_sequence > after) return true;
    if (IsTerminal(row->state)) return false;
    live_.emplace(id, row->last_sequence);
  }
  // Leaves live_ only when the rollout turns terminal: the condition then reads the database.
  auto ready = [&]() -> bool {
    auto it = live_.find(id);
    return it == live_.end() || it->second > after;
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  return has_event();
}

absl::StatusOr<std::vector<v1::Rollout>> RolloutStore::Unfinished() const {
  absl::MutexLock lock(&mu_);
  Stmt stmt;
  if (absl::Status s =
          Prepare(path_, db_,
                  absl::StrCat("SELECT id, record FROM rollouts WHERE state NOT IN (",
                               v1::ROLLOUT_STATE_SUCCEEDED, ", ", v1::ROLLOUT_STATE_FAILED, ", ",
                               v1::ROLLOUT_STATE_TIMED_OUT, ", ", v1::ROLLOUT_STATE_CANCELLED,
                               ") ORDER BY create_ns, ord"),
                  &stmt);
      !s.ok()) {
    return s;
  }
  std::vector<v1::Rollout> rollouts;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    if (!stmt.Parse(1, &rollouts.emplace_back())) {
      return DataLoss(path_, absl::StrCat("rollout ", stmt.Text(0)));
    }
  }
  if (rc != SQLITE_DONE) return SqliteError(path_, db_, "list unfinished rollouts");
  return rollouts;
}

}  // namespace elfdeploy::orchestrator
