#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/kubesim/store.h"

// Churn mode of elfdeploy-kubesim, for the agent's event-rate benchmark: a namespace full of pods
// that keep changing at a steady rate.
namespace elfdeploy::kubesim {

struct ChurnOptions {
  // Pods created at Start.
  int pods = 0;
  // Changes per second once they exist; 0 = none.
  double rate = 0;
  // Created when missing.
  std::string namespace_ = "churn";
  // Same seed, same pod names and the same sequence of changes.
  uint64_t seed = 1;
  // spec.nodeName of the pods: another node than the kubelet's, so that it leaves them alone.
  std::string node_name = "kubesim-churn";
  std::function<absl::Time()> now = absl::Now;
};

// Creates `pods` Running pods "churn-<5 chars>" in the namespace, then modifies one of them
// `rate` times per second from its own thread: three changes out of four bump the annotation
// kubesim.elfdeploy.dev/churn (a counter per pod, a MODIFIED event with a metadata change), the
// fourth flips the pod's readiness (status.conditions Ready/ContainersReady and the container's
// ready flag). Pacing catches up after short stalls but never bursts more than a second's worth.
class ChurnSim {
 public:
  ChurnSim(ObjectStore& store, ChurnOptions options);
  // Stops.
  ~ChurnSim();
  ChurnSim(const ChurnSim&) = delete;
  ChurnSim& operator=(const ChurnSim&) = delete;

  // Creates the namespace and the pods (pods that already exist are reused) and starts changing
  // them. FAILED_PRECONDITION when already started; the store's error otherwise.
  absl::Status Start();
  // Stops changing; the pods stay. Idempotent.
  void Stop();

  // Changes made so far.
  int64_t changes() const { return changes_.load(); }
  // The pods' names, in creation order (valid after Start).
  const std::vector<std::string>& pod_names() const { return names_; }

 private:
  void Run();
  // Applies change number `n`.
  absl::Status Change(uint64_t n);

  ObjectStore& store_;
  const ChurnOptions options_;
  std::vector<std::string> names_;
  std::vector<int64_t> counters_;
  std::vector<bool> ready_;
  std::atomic<int64_t> changes_{0};
  absl::Mutex mu_;
  absl::CondVar stop_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ = false;
  std::thread thread_;
};

}  // namespace elfdeploy::kubesim
