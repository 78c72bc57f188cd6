// elfctl: the command-line client of the orchestrator and cluster-watcher. Parsing and rendering
// live in elfctl_lib; this file makes the gRPC calls.
#include <grpcpp/grpcpp.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/cluster_watcher.grpc.pb.h"
#include "elfdeploy/v1/orchestrator.grpc.pb.h"
#include "services/common/client_tls.h"
#include "services/common/proto_time.h"
#include "services/elfctl/options.h"
#include "services/elfctl/render.h"

namespace elfdeploy::elfctl {
namespace {

constexpr int kMaxWatchRetries = 10;
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(250);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
constexpr absl::Duration kRedrawInterval = absl::Milliseconds(100);

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int RpcError(absl::string_view rpc, const grpc::Status& status) {
  std::cerr << "elfctl: " << rpc << ": " << CodeName(status.error_code()) << ": "
            << status.error_message() << std::endl;
  return kExitRpc;
}

int UsageError(absl::string_view message) {
  std::cerr << "elfctl: " << message << "\nRun 'elfctl --help' for usage." << std::endl;
  return kExitUsage;
}

void Out(absl::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

int PrintJson(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = ToJson(message);
  if (!json.ok()) {
    std::cerr << "elfctl: " << json.status().message() << std::endl;
    return kExitRpc;
  }
  Out(*json);
  return kExitOk;
}

class Client {
 public:
  static absl::StatusOr<Client> Create(const Options& options) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        ClientCredentials({.ca_file = options.tls_ca_file,
                           .cert_file = options.tls_cert_file,
                           .key_file = options.tls_key_file});
    if (!credentials.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--tls_*: ", credentials.status().message()));
    }
    return Client(options, *std::move(credentials));
  }

  v1::OrchestratorService::Stub& orchestrator() {
    if (orchestrator_ == nullptr) {
      orchestrator_ = v1::OrchestratorService::NewStub(
          grpc::CreateChannel(options_.orchestrator, credentials_));
    }
    return *orchestrator_;
  }

  v1::ClusterWatcherService::Stub& cluster_watcher() {
    if (cluster_watcher_ == nullptr) {
      cluster_watcher_ = v1::ClusterWatcherService::NewStub(
          grpc::CreateChannel(options_.cluster_watcher, credentials_));
    }
    return *cluster_watcher_;
  }

  // A context with the unary deadline (--timeout).
  std::unique_ptr<grpc::ClientContext> Unary() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
    return context;
  }

 private:
  Client(const Options& options, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : options_(options), credentials_(std::move(credentials)) {}

  Options options_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::unique_ptr<v1::OrchestratorService::Stub> orchestrator_;
  std::unique_ptr<v1::ClusterWatcherService::Stub> cluster_watcher_;
};

// Events of WatchRollout handed from the watching thread to the rendering one.
struct WatchFeed {
  absl::Mutex mu;
  std::deque<v1::WatchRolloutResponse> events ABSL_GUARDED_BY(mu);
  std::deque<std::string> notices ABSL_GUARDED_BY(mu);
  bool done ABSL_GUARDED_BY(mu) = false;
  grpc::Status status ABSL_GUARDED_BY(mu);

  bool Ready() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return done || !events.empty() || !notices.empty();
  }
};

bool Retriable(const grpc::Status& status) {
  return status.ok() || status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::ABORTED;
}

// Follows rollout `id` to its terminal event, re-watching after the last sequence seen when the
// stream breaks (bounded retries with backoff; the orchestrator may restart).
void Watch(v1::OrchestratorService::Stub& stub, const std::string& id, WatchFeed* feed) {
  uint64_t last_sequence = 0;
  int failures = 0;
  absl::Duration backoff = kFirstBackoff;
  while (true) {
    grpc::ClientContext context;
    v1::WatchRolloutRequest request;
    request.set_id(id);
    request.set_from_sequence(last_sequence);
    std::unique_ptr<grpc::ClientReader<v1::WatchRolloutResponse>> reader =
        stub.WatchRollout(&context, request);
    bool progressed = false;
    bool terminal = false;
    v1::WatchRolloutResponse event;
    while (reader->Read(&event)) {
      if (event.sequence() > 0) {
        if (event.sequence() <= last_sequence) continue;
        last_sequence = event.sequence();
      }
      progressed = true;
      terminal = terminal || (event.has_state() && IsTerminal(event.state().state()));
      absl::MutexLock lock(&feed->mu);
      feed->events.push_back(std::move(event));
      event.Clear();
    }
    grpc::Status status = reader->Finish();
    if (terminal || !Retriable(status)) {
      absl::MutexLock lock(&feed->mu);
      feed->status = terminal ? grpc::Status::OK : status;
      feed->done = true;
      return;
    }
    if (status.ok()) {
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream ended before the rollout did");
    }
    if (progressed) {
      failures = 0;
      backoff = kFirstBackoff;
    }
    if (++failures > kMaxWatchRetries) {
      absl::MutexLock lock(&feed->mu);
      feed->status = status;
      feed->done = true;
      return;
    }
    {
      absl::MutexLock lock(&feed->mu);
      feed->notices.push_back(absl::StrCat("watch interrupted (", CodeName(status.error_code()),
                                           ": ", status.error_message(),
                                           "); watching again from sequence ", last_sequence,
                                           " in ", absl::FormatDuration(backoff)));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

struct TerminalSize {
  int columns = 0;  // 0: unknown
  int rows = 0;
};

TerminalSize GetTerminalSize() {
  struct winsize size {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) != 0) return {};
  return {size.ws_col, size.ws_row};
}

// `frame` cut to what a terminal of `size` shows without scrolling, so that it can be redrawn.
std::string FitFrame(const std::string& frame, TerminalSize size) {
  if (size.rows < 2) return frame;
  size_t end = 0;
  for (int line = 0; line < size.rows - 1; ++line) {
    end = frame.find('\n', end);
    if (end == std::string::npos) return frame;
    ++end;
  }
  return frame.substr(0, end);
}

int CountLines(absl::string_view text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

int RunDeploy(const Options& options, Client& client) {
  absl::StatusOr<v1::DeployRequest> request = BuildDeployRequest(options);
  if (!request.ok()) return UsageError(request.status().message());
  v1::DeployResponse deployed;
  grpc::Status status = client.orchestrator().Deploy(client.Unary().get(), *request, &deployed);
  if (!status.ok()) return RpcError("Deploy", status);
  const v1::Rollout& started = deployed.rollout();
  const bool json = options.output == OutputFormat::kJson;
  if (options.detach) {
    if (json) return PrintJson(started);
    Out(absl::StrCat(started.id(), "\n"));
    return kExitOk;
  }

  const bool live = !json && isatty(STDOUT_FILENO) == 1;
  if (!json && !live) Out(absl::StrCat("rollout ", started.id(), " started\n"));
  LiveView view(started, absl::Now());
  PlainEventPrinter printer(IsSet(started.create_time()) ? FromTimestamp(started.create_time())
                                                         : absl::Now());
  WatchFeed feed;
  std::thread watcher([&] { Watch(client.orchestrator(), started.id(), &feed); });

  v1::Rollout final_rollout;
  int drawn_lines = 0;
  absl::Time last_draw = absl::InfinitePast();
  grpc::Status watch_status;
  while (true) {
    std::deque<v1::WatchRolloutResponse> events;
    std::deque<std::string> notices;
    bool done = false;
    feed.mu.LockWhenWithTimeout(absl::Condition(&feed, &WatchFeed::Ready),
                                live ? kRedrawInterval : absl::Seconds(1));
    events.swap(feed.events);
    notices.swap(feed.notices);
    done = feed.done;
    watch_status = feed.status;
    feed.mu.Unlock();

    const absl::Time now = absl::Now();
    for (const v1::WatchRolloutResponse& event : events) {
      view.SetNotice("");
      view.Apply(event, now);
      if (event.has_state() && IsTerminal(event.state().state()) &&
          !event.state().rollout().id().empty()) {
        final_rollout = event.state().rollout();
      }
      if (!json && !live) Out(printer.Line(event, now));
    }
    for (const std::string& notice : notices) {
      if (live) {
        view.SetNotice(notice);
      } else {
        std::cerr << "elfctl: " << notice << std::endl;
      }
    }
    if (live && (done || now - last_draw >= kRedrawInterval)) {
      const TerminalSize size = GetTerminalSize();
      const std::string frame =
          FitFrame(view.Frame(now, size.columns > 1 ? size.columns - 1 : 0), size);
      Out(absl::StrCat(RedrawPrefix(drawn_lines), frame));
      drawn_lines = CountLines(frame);
      last_draw = now;
    }
    if (done) break;
  }
  watcher.join();
  if (!watch_status.ok()) return RpcError("WatchRollout", watch_status);

  if (final_rollout.id().empty() || !IsTerminal(final_rollout.state())) {
    v1::GetRolloutRequest get;
    get.set_id(started.id());
    v1::GetRolloutResponse got;
    status = client.orchestrator().GetRollout(client.Unary().get(), get, &got);
    if (!status.ok()) return RpcError("GetRollout", status);
    final_rollout = got.rollout();
  }
  if (json) {
    if (int code = PrintJson(final_rollout); code != kExitOk) return code;
  } else {
    Out(absl::StrCat("\n", RenderRolloutStatus(final_rollout, absl::Now(), absl::LocalTimeZone()),
                     "\n", RenderSummaryLine(final_rollout)));
  }
  return ExitCodeForState(final_rollout.state());
}

int RunStatus(const Options& options, Client& client) {
  std::string id = options.rollout_id;
  if (id.empty()) {
    v1::ListRolloutsRequest list;
    list.set_page_size(1);
    v1::ListRolloutsResponse listed;
    grpc::Status status = client.orchestrator().ListRollouts(client.Unary().get(), list, &listed);
    if (!status.ok()) return RpcError("ListRollouts", status);
    if (listed.rollouts().empty()) {
      std::cerr << "elfctl: no rollouts yet" << std::endl;
      return kExitFailed;
    }
    id = listed.rollouts(0).id();
  }
  v1::GetRolloutRequest request;
  request.set_id(id);
  v1::GetRolloutResponse response;
  grpc::Status status = client.orchestrator().GetRollout(client.Unary().get(), request, &response);
  if (!status.ok()) return RpcError("GetRollout", status);
  if (options.output == OutputFormat::kJson) return PrintJson(response.rollout());
  Out(RenderRolloutStatus(response.rollout(), absl::Now(), absl::LocalTimeZone()));
  return kExitOk;
}

int RunRollouts(const Options& options, Client& client) {
  v1::ListRolloutsResponse all;
  v1::ListRolloutsRequest request;
  for (v1::RolloutState state : options.states) request.add_states(state);
  request.set_app(options.app);
  while (all.rollouts_size() < options.limit) {
    request.set_page_size(std::min(options.limit - all.rollouts_size(), 1000));
    v1::ListRolloutsResponse page;
    grpc::Status status = client.orchestrator().ListRollouts(client.Unary().get(), request, &page);
    if (!status.ok()) return RpcError("ListRollouts", status);
    for (v1::Rollout& rollout : *page.mutable_rollouts()) {
      if (all.rollouts_size() >= options.limit) break;
      *all.add_rollouts() = std::move(rollout);
    }
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (options.output == OutputFormat::kJson) return PrintJson(all);
  if (all.rollouts().empty()) {
    Out("no rollouts found\n");
    return kExitOk;
  }
  Out(RenderRolloutList({all.rollouts().begin(), all.rollouts().end()}, absl::Now(),
                        absl::LocalTimeZone()));
  return kExitOk;
}

int RunCancel(const Options& options, Client& client) {
  v1::CancelRolloutRequest request;
  request.set_id(options.rollout_id);
  request.set_reason(options.reason);
  v1::CancelRolloutResponse response;
  grpc::Status status =
      client.orchestrator().CancelRollout(client.Unary().get(), request, &response);
  if (!status.ok()) return RpcError("CancelRollout", status);
  if (options.output == OutputFormat::kJson) return PrintJson(response.rollout());
  const v1::Rollout& rollout = response.rollout();
  std::string line = absl::StrCat("rollout ", rollout.id(), " ", StateName(rollout.state()));
  if (!rollout.message().empty()) absl::StrAppend(&line, ": ", rollout.message());
  Out(line + "\n");
  return kExitOk;
}

int RunDiagnose(const Options& options, Client& client) {
  v1::DiagnoseRequest request;
  request.set_app(options.app);
  request.set_namespace_(options.namespace_);
  request.set_cluster(options.cluster);
  v1::DiagnoseResponse response;
  grpc::Status status = client.cluster_watcher().Diagnose(client.Unary().get(), request, &response);
  if (!status.ok()) return RpcError("Diagnose", status);
  const int code = response.findings().empty() ? kExitOk : kExitFailed;
  if (options.output == OutputFormat::kJson) {
    const int printed = PrintJson(response);
    return printed != kExitOk ? printed : code;
  }
  Out(RenderDiagnosis(response, options.app));
  return code;
}

int Run(int argc, char** argv) {
  Environment env;
  if (const char* value = std::getenv("ELFDEPLOY_ORCHESTRATOR")) env.orchestrator = value;
  if (const char* value = std::getenv("ELFDEPLOY_CLUSTER_WATCHER")) env.cluster_watcher = value;
  absl::StatusOr<Options> options = ParseArgs(std::vector<std::string>(argv + 1, argv + argc), env);
  if (!options.ok()) return UsageError(options.status().message());
  if (options->command == Command::kHelp) {
    if (options->help_topic.empty()) {
      Out(Usage());
    } else {
      absl::StatusOr<std::string> help = CommandHelp(options->help_topic);
      if (!help.ok()) return UsageError(help.status().message());
      Out(*help);
    }
    return kExitOk;
  }
  absl::StatusOr<Client> client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status().message());
  switch (options->command) {
    case Command::kDeploy:
      return RunDeploy(*options, *client);
    case Command::kStatus:
      return RunStatus(*options, *client);
    case Command::kDiagnose:
      return RunDiagnose(*options, *client);
    case Command::kRollouts:
      return RunRollouts(*options, *client);
    case Command::kCancel:
      return RunCancel(*options, *client);
    case Command::kHelp:
      break;
  }
  return kExitOk;
}

}  // namespace
}  // namespace elfdeploy::elfctl

int main(int argc, char** argv) { return elfdeploy::elfctl::Run(argc, argv); }
