#pragma once

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace elfdeploy {

// The go-grpc-prometheus server metrics, recorded by an interceptor for every RPC:
// grpc_server_started_total, grpc_server_handled_total, grpc_server_msg_received_total,
// grpc_server_msg_sent_total (labels grpc_type, grpc_service, grpc_method[, grpc_code]) and the
// grpc_server_handling_seconds histogram.
class GrpcServerMetrics {
 public:
  explicit GrpcServerMetrics(prometheus::Registry& registry);

  // An interceptor factory for grpc::ServerBuilder; the metrics must outlive the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeInterceptorFactory();

  prometheus::Family<prometheus::Counter>& started() { return started_; }
  prometheus::Family<prometheus::Counter>& handled() { return handled_; }
  prometheus::Family<prometheus::Counter>& msg_received() { return msg_received_; }
  prometheus::Family<prometheus::Counter>& msg_sent() { return msg_sent_; }
  prometheus::Family<prometheus::Histogram>& handling_seconds() { return handling_seconds_; }

 private:
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Counter>& msg_received_;
  prometheus::Family<prometheus::Counter>& msg_sent_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
};

// process_* metrics as the Prometheus client libraries export them, read from /proc/self at
// scrape time: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_start_time_seconds, process_open_fds, process_max_fds.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// Serves every registered collectable at http://<bind_address>/metrics. Port 0 picks a free port.
class MetricsExposer {
 public:
  // Fails with UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(const std::string& bind_address);

  void Register(std::weak_ptr<prometheus::Collectable> collectable);
  // "host:port" with the port actually bound.
  const std::string& address() const { return address_; }

 private:
  MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer, std::string address)
      : exposer_(std::move(exposer)), address_(std::move(address)) {}

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace elfdeploy
