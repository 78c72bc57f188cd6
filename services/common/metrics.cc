#include "services/common/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "services/common/grpc_status.h"

namespace elfdeploy {
namespace {

using grpc::experimental::InterceptionHookPoints;

const char* RpcTypeName(grpc::experimental::ServerRpcInfo::Type type) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  switch (type) {
    case Type::UNARY:
      return "unary";
    case Type::CLIENT_STREAMING:
      return "client_stream";
    case Type::SERVER_STREAMING:
      return "server_stream";
    case Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unary";
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(grpc::experimental::ServerRpcInfo* info, GrpcServerMetrics* metrics)
      : metrics_(metrics), start_(std::chrono::steady_clock::now()) {
    absl::string_view full = info->method() == nullptr ? "" : info->method();
    absl::ConsumePrefix(&full, "/");
    size_t slash = full.find('/');
    service_ = std::string(full.substr(0, slash));
    method_ = slash == absl::string_view::npos ? "" : std::string(full.substr(slash + 1));
    type_ = RpcTypeName(info->type());
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      metrics_->started().Add(Labels()).Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      metrics_->msg_received().Add(Labels()).Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      metrics_->msg_sent().Add(Labels()).Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      prometheus::Labels labels = Labels();
      std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
      metrics_->handling_seconds()
          .Add(labels, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                               0.5, 1, 2.5, 5, 10})
          .Observe(elapsed.count());
      labels["grpc_code"] = GrpcCodeName(status.error_code());
      metrics_->handled().Add(labels).Increment();
    }
    methods->Proceed();
  }

 private:
  prometheus::Labels Labels() const {
    return {{"grpc_type", type_}, {"grpc_service", service_}, {"grpc_method", method_}};
  }

  GrpcServerMetrics* metrics_;
  std::chrono::steady_clock::time_point start_;
  std::string service_;
  std::string method_;
  std::string type_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(info, metrics_);
  }

 private:
  GrpcServerMetrics* metrics_;
};

prometheus::MetricFamily Single(const std::string& name, const std::string& help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry)
    : started_(prometheus::BuildCounter()
                   .Name("grpc_server_started_total")
                   .Help("Total number of RPCs started on the server.")
                   .Register(registry)),
      handled_(prometheus::BuildCounter()
                   .Name("grpc_server_handled_total")
                   .Help("Total number of RPCs completed on the server, regardless of success or "
                         "failure.")
                   .Register(registry)),
      msg_received_(prometheus::BuildCounter()
                        .Name("grpc_server_msg_received_total")
                        .Help("Total number of RPC stream messages received on the server.")
                        .Register(registry)),
      msg_sent_(prometheus::BuildCounter()
                    .Name("grpc_server_msg_sent_total")
                    .Help("Total number of gRPC stream messages sent by the server.")
                    .Register(registry)),
      handling_seconds_(prometheus::BuildHistogram()
                            .Name("grpc_server_handling_seconds")
                            .Help("Histogram of response latency (seconds) of gRPC that had been "
                                  "application-level handled by the server.")
                            .Register(registry)) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcServerMetrics::MakeInterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> families;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));

  // /proc/self/stat: fields after the parenthesised command name, starting at field 3 (state).
  std::string stat = ReadFile("/proc/self/stat");
  size_t close_paren = stat.rfind(')');
  if (close_paren != std::string::npos) {
    std::vector<absl::string_view> f =
        absl::StrSplit(absl::string_view(stat).substr(close_paren + 2), ' ', absl::SkipEmpty());
    // f[0] is field 3; utime=14, stime=15, starttime=22, vsize=23, rss=24.
    double utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    if (f.size() > 21 && absl::SimpleAtod(f[11], &utime) && absl::SimpleAtod(f[12], &stime) &&
        absl::SimpleAtod(f[19], &start) && absl::SimpleAtod(f[20], &vsize) &&
        absl::SimpleAtod(f[21], &rss)) {
      families.push_back(Single("process_cpu_seconds_total",
                                "Total user and system CPU time spent in seconds.",
                                prometheus::MetricType::Counter, (utime + stime) / ticks));
      families.push_back(Single("process_resident_memory_bytes", "Resident memory size in bytes.",
                                prometheus::MetricType::Gauge, rss * page));
      families.push_back(Single("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                prometheus::MetricType::Gauge, vsize));
      double boot_time = 0;
      for (absl::string_view line : absl::StrSplit(ReadFile("/proc/stat"), '\n')) {
        if (absl::ConsumePrefix(&line, "btime ")) absl::SimpleAtod(line, &boot_time);
      }
      families.push_back(Single("process_start_time_seconds",
                                "Start time of the process since unix epoch in seconds.",
                                prometheus::MetricType::Gauge, boot_time + start / ticks));
    }
  }

  std::error_code ec;
  double open_fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++open_fds;
  }
  families.push_back(Single("process_open_fds", "Number of open file descriptors.",
                            prometheus::MetricType::Gauge, open_fds));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    families.push_back(Single("process_max_fds", "Maximum number of open file descriptors.",
                              prometheus::MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
  }
  return families;
}

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Start(
    const std::string& bind_address) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(bind_address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics address ", bind_address, " cannot be served: ", e.what()));
  }
  std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics address ", bind_address, " is not bound"));
  }
  std::string host = bind_address.substr(0, bind_address.rfind(':'));
  return std::unique_ptr<MetricsExposer>(
      new MetricsExposer(std::move(exposer), absl::StrCat(host, ":", ports.front())));
}

void MetricsExposer::Register(std::weak_ptr<prometheus::Collectable> collectable) {
  exposer_->RegisterCollectable(collectable);
}

}  // namespace elfdeploy
