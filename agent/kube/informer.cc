#include "agent/kube/informer.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/log.h"

namespace elfdeploy::agent {
namespace {

using Element = simdjson::dom::element;

// The string at `object[first][second]`, or "" when there is none.
std::string_view StringAt(Element object, std::string_view first, std::string_view second) {
  std::string_view value;
  return object[first][second].get(value) == simdjson::SUCCESS ? value : std::string_view();
}

std::string Key(Element object) {
  std::string_view ns = StringAt(object, "metadata", "namespace");
  std::string_view name = StringAt(object, "metadata", "name");
  return absl::StrCat(absl::string_view(ns.data(), ns.size()), "/",
                      absl::string_view(name.data(), name.size()));
}

std::string ResourceVersion(Element object) {
  return std::string(StringAt(object, "metadata", "resourceVersion"));
}

// Percent-encodes a query value.
std::string Escape(const std::string& value) {
  std::string out;
  for (unsigned char c : value) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

}  // namespace

Informer::Informer(KubeClient& client, InformerOptions options, InformerHandler handler,
                   std::function<std::string(Element)> trim)
    : client_(client),
      options_(std::move(options)),
      handler_(std::move(handler)),
      trim_(std::move(trim)) {}

void Informer::Apply(Change change, Element object, const std::string& key) {
  if (change == Change::kDeleted) {
    known_.erase(key);
  } else {
    Known& known = known_[key];
    known.resource_version = ResourceVersion(object);
    known.last = trim_ ? trim_(object) : simdjson::minify(object);
  }
  if (handler_.on_change) handler_.on_change(change, object);
}

absl::StatusOr<std::string> Informer::Relist(const std::function<bool()>& cancelled) {
  // Page by page: each item is compared with what was reported as it arrives, so memory holds one
  // page, not the whole collection; deletions are known once the last page is in.
  absl::flat_hash_set<std::string> listed;
  std::string continue_token;
  std::string resource_version;
  simdjson::dom::parser parser;
  do {
    std::string path = absl::StrCat(options_.path, "?limit=", options_.page_size);
    if (!options_.label_selector.empty()) {
      absl::StrAppend(&path, "&labelSelector=", Escape(options_.label_selector));
    }
    if (!continue_token.empty()) absl::StrAppend(&path, "&continue=", Escape(continue_token));
    absl::StatusOr<std::string> text = client_.GetText(path);
    if (absl::IsOutOfRange(text.status()) && !continue_token.empty()) {
      // The continue token expired between pages: start the list over.
      listed.clear();
      continue_token.clear();
      continue;
    }
    if (!text.ok()) return text.status();
    Element page;
    if (parser.parse(*text).get(page) != simdjson::SUCCESS || !page.is_object()) {
      return absl::DataLossError(absl::StrCat("GET ", path, ": the list is not a JSON object"));
    }
    resource_version = std::string(StringAt(page, "metadata", "resourceVersion"));
    continue_token = std::string(StringAt(page, "metadata", "continue"));
    simdjson::dom::array items;
    if (page["items"].get(items) == simdjson::SUCCESS) {
      for (Element item : items) {
        std::string key = Key(item);
        listed.insert(key);
        auto known = known_.find(key);
        if (known == known_.end()) {
          Apply(Change::kAdded, item, key);
        } else if (known->second.resource_version != ResourceVersion(item)) {
          Apply(Change::kModified, item, key);
        }
      }
    }
    if (cancelled()) return absl::CancelledError("cancelled");
  } while (!continue_token.empty());

  std::vector<std::string> gone;
  for (const auto& [key, known] : known_) {
    if (!listed.contains(key)) gone.push_back(key);
  }
  std::sort(gone.begin(), gone.end());  // reported in a stable order
  for (const std::string& key : gone) {
    Element last;
    if (parser.parse(known_[key].last).get(last) != simdjson::SUCCESS) {
      known_.erase(key);  // cannot happen: it was serialized from a parsed object
      continue;
    }
    Apply(Change::kDeleted, last, key);
  }
  if (handler_.on_synced) handler_.on_synced(resource_version);
  return resource_version;
}

absl::Status Informer::WatchFrom(std::string* resource_version,
                                 const std::function<bool()>& cancelled) {
  std::string path = absl::StrCat(
      options_.path,
      "?watch=1&allowWatchBookmarks=true&resourceVersion=", Escape(*resource_version),
      "&timeoutSeconds=", std::max<int64_t>(1, absl::ToInt64Seconds(options_.watch_timeout)));
  if (!options_.label_selector.empty()) {
    absl::StrAppend(&path, "&labelSelector=", Escape(options_.label_selector));
  }
  absl::Status expired;
  absl::Status watched = client_.Watch(
      path,
      [&](std::string_view type, Element object) {
        if (type == "BOOKMARK") {
          std::string rv = ResourceVersion(object);
          if (!rv.empty()) *resource_version = rv;
          return true;
        }
        if (type == "ERROR") {
          int64_t code = 0;
          if (object["code"].get(code) != simdjson::SUCCESS) code = 0;
          std::string_view text;
          std::string message(object["message"].get(text) == simdjson::SUCCESS ? text : "");
          expired = code == 410
                        ? absl::OutOfRangeError(message)
                        : absl::UnavailableError(absl::StrCat("watch error ", code, ": ", message));
          return false;
        }
        Change change = type == "ADDED"      ? Change::kAdded
                        : type == "MODIFIED" ? Change::kModified
                                             : Change::kDeleted;
        if (type != "ADDED" && type != "MODIFIED" && type != "DELETED") return true;
        std::string rv = ResourceVersion(object);
        // A watch never reports an object as added twice: an ADDED for a known object is a
        // modification from our side.
        const std::string key = Key(object);
        if (change == Change::kAdded && known_.contains(key)) change = Change::kModified;
        if (change == Change::kDeleted && !known_.contains(key)) {
          if (!rv.empty()) *resource_version = rv;
          return true;
        }
        Apply(change, object, key);
        if (!rv.empty()) *resource_version = rv;
        return true;
      },
      cancelled);
  if (!expired.ok()) return expired;
  return watched;
}

bool Informer::Backoff(int* failures, const std::function<bool()>& cancelled) {
  thread_local std::mt19937_64 random{std::random_device{}()};
  absl::Duration cap = options_.initial_backoff * (1 << std::min(*failures, 16));
  cap = std::min(cap, options_.max_backoff);
  ++*failures;
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  absl::Time until = absl::Now() + cap * jitter(random);
  while (absl::Now() < until) {
    if (cancelled()) return false;
    absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
  }
  return !cancelled();
}

void Informer::Run(const std::function<bool()>& cancelled) {
  int failures = 0;
  std::string resource_version;
  bool need_list = true;
  while (!cancelled()) {
    if (need_list) {
      absl::StatusOr<std::string> listed = Relist(cancelled);
      if (absl::IsCancelled(listed.status())) return;
      if (!listed.ok()) {
        log::Warning("kubernetes list failed; retrying",
                     {{"path", options_.path}, {"error", listed.status()}});
        if (handler_.on_restart) handler_.on_restart(Restart::kError, listed.status());
        if (!Backoff(&failures, cancelled)) return;
        continue;
      }
      resource_version = *listed;
      need_list = false;
    }
    absl::Status watched = WatchFrom(&resource_version, cancelled);
    if (cancelled()) return;
    if (watched.ok()) {
      failures = 0;
      if (handler_.on_restart) handler_.on_restart(Restart::kTimeout, watched);
      continue;
    }
    if (absl::IsOutOfRange(watched)) {
      log::Info("kubernetes watch expired (410 Gone); listing again",
                {{"path", options_.path}, {"error", watched}});
      if (handler_.on_restart) handler_.on_restart(Restart::kExpired, watched);
      need_list = true;
      continue;
    }
    log::Warning(
        "kubernetes watch failed; resuming",
        {{"path", options_.path}, {"resource_version", resource_version}, {"error", watched}});
    if (handler_.on_restart) handler_.on_restart(Restart::kError, watched);
    if (!Backoff(&failures, cancelled)) return;
  }
}

}  // namespace elfdeploy::agent
