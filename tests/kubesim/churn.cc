#include "tests/kubesim/churn.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/common/log.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;

constexpr char kAlphanums[] = "bcdfghjklmnpqrstvwxz2456789";
constexpr char kCounterAnnotation[] = "kubesim.elfdeploy.dev/churn";

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string Timestamp(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

json ReadyConditions(bool ready, const std::string& since, const std::string& started) {
  json conditions = json::array();
  for (const char* type : {"Initialized", "Ready", "ContainersReady", "PodScheduled"}) {
    bool follows = std::string(type) == "Ready" || std::string(type) == "ContainersReady";
    json c = {{"type", type},
              {"status", !follows || ready ? "True" : "False"},
              {"lastProbeTime", nullptr},
              {"lastTransitionTime", follows ? since : started}};
    if (follows && !ready) {
      c["reason"] = "ContainersNotReady";
      c["message"] = "containers with unready status: [app]";
    }
    conditions.push_back(std::move(c));
  }
  return conditions;
}

}  // namespace

ChurnSim::ChurnSim(ObjectStore& store, ChurnOptions options)
    : store_(store), options_(std::move(options)) {}

ChurnSim::~ChurnSim() { Stop(); }

absl::Status ChurnSim::Start() {
  if (started_) return absl::FailedPreconditionError("churn is already started");
  absl::StatusOr<ObjectPtr> ns = store_.Create(
      "namespaces",
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", options_.namespace_}}}});
  if (!ns.ok() && !absl::IsAlreadyExists(ns.status())) return ns.status();
  std::string now = Timestamp(options_.now());
  std::set<std::string> taken;
  for (int i = 0; i < options_.pods; ++i) {
    std::string name;
    for (uint64_t attempt = 0; name.empty() || taken.contains(name); ++attempt) {
      uint64_t bits =
          SplitMix64(options_.seed ^ SplitMix64(static_cast<uint64_t>(i) << 16 | attempt));
      name = "churn-";
      for (int c = 0; c < 5; ++c) {
        name.push_back(kAlphanums[bits % (sizeof(kAlphanums) - 1)]);
        bits /= sizeof(kAlphanums) - 1;
      }
    }
    taken.insert(name);
    json pod = {
        {"apiVersion", "v1"},
        {"kind", "Pod"},
        {"metadata",
         {{"name", name},
          {"namespace", options_.namespace_},
          {"labels", {{"app", "churn"}}},
          {"annotations", {{kCounterAnnotation, "0"}}}}},
        {"spec",
         {{"nodeName", options_.node_name},
          {"restartPolicy", "Always"},
          {"containers", json::array({{{"name", "app"}, {"image", "kubesim.invalid/churn:1"}}})}}},
        {"status",
         {{"phase", "Running"},
          {"conditions", ReadyConditions(true, now, now)},
          {"podIP", absl::StrCat("10.245.", (i / 250) % 256, ".", i % 250 + 2)},
          {"startTime", now},
          {"containerStatuses", json::array({{{"name", "app"},
                                              {"image", "kubesim.invalid/churn:1"},
                                              {"imageID", ""},
                                              {"ready", true},
                                              {"restartCount", 0},
                                              {"started", true},
                                              {"state", {{"running", {{"startedAt", now}}}}}}})}}}};
    absl::StatusOr<ObjectPtr> created = store_.Create("pods", std::move(pod));
    if (!created.ok() && !absl::IsAlreadyExists(created.status())) return created.status();
    names_.push_back(name);
    counters_.push_back(0);
    ready_.push_back(true);
  }
  started_ = true;
  if (options_.rate > 0 && !names_.empty()) thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void ChurnSim::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    stop_cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void ChurnSim::Run() {
  absl::Duration interval = absl::Seconds(1) / options_.rate;
  absl::Time anchor = absl::Now();
  uint64_t anchor_n = 0;
  for (uint64_t n = 0;; ++n) {
    absl::Time due = anchor + interval * static_cast<double>(n - anchor_n);
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && absl::Now() < due) stop_cv_.WaitWithDeadline(&mu_, due);
      if (stopping_) return;
    }
    if (absl::Now() - due > absl::Seconds(1)) {
      // Too far behind (a stall): pace from now instead of bursting.
      anchor = absl::Now();
      anchor_n = n;
    }
    absl::Status status = Change(n);
    if (absl::IsCancelled(status)) return;
    if (!status.ok() && !absl::IsNotFound(status)) {
      log::Warning("churn change failed", {{"error", status}});
    }
    ++changes_;
  }
}

absl::Status ChurnSim::Change(uint64_t n) {
  uint64_t bits = SplitMix64(options_.seed * 0x100000001b3ull ^ SplitMix64(n));
  size_t index = bits % names_.size();
  const std::string& name = names_[index];
  if (n % 4 == 3) {
    ready_[index] = !ready_[index];
    bool ready = ready_[index];
    std::string now = Timestamp(options_.now());
    absl::StatusOr<ObjectPtr> result =
        store_.Mutate("pods", options_.namespace_, name, [&](json& pod) -> absl::Status {
          json& status = pod["status"];
          std::string started = status.value("startTime", now);
          status["conditions"] = ReadyConditions(ready, now, started);
          if (status.contains("containerStatuses") && status["containerStatuses"].is_array()) {
            for (json& container : status["containerStatuses"]) container["ready"] = ready;
          }
          return absl::OkStatus();
        });
    return result.status();
  }
  json patch = {
      {"metadata", {{"annotations", {{kCounterAnnotation, std::to_string(++counters_[index])}}}}}};
  return store_.MergePatch("pods", options_.namespace_, name, patch).status();
}

}  // namespace elfdeploy::kubesim
