#include "tests/support/service_process.h"

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/common/http_client.h"

namespace elfdeploy::testing {

std::string BinaryPath(absl::string_view name) {
  return absl::StrCat(ELFDEPLOY_BIN_DIR, "/", name);
}
std::string BufPath() { return ELFDEPLOY_BUF; }
std::string PromtoolPath() { return ELFDEPLOY_PROMTOOL; }

std::string LogfmtValue(absl::string_view line, absl::string_view key) {
  std::string needle = absl::StrCat(" ", key, "=");
  size_t pos = line.find(needle);
  if (pos == absl::string_view::npos) return "";
  absl::string_view rest = line.substr(pos + needle.size());
  if (absl::ConsumePrefix(&rest, "\"")) return std::string(rest.substr(0, rest.find('"')));
  return std::string(rest.substr(0, rest.find(' ')));
}

absl::Status WriteKubeconfig(const std::string& path, absl::string_view server) {
  return WriteFile(path, absl::StrCat("apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
                                      "clusters: [{name: sim, cluster: {server: \"",
                                      server,
                                      "\"}}]\nusers: [{name: sim, user: {}}]\n"
                                      "contexts: [{name: sim, context: {cluster: sim, user: "
                                      "sim}}]\n"));
}

namespace {

absl::StatusOr<std::string> CheckHealthOver(const std::string& grpc_addr,
                                            const std::string& service,
                                            std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto channel = grpc::CreateChannel(grpc_addr, credentials);
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Health/Check at ", grpc_addr, ": ", status.error_message()));
  }
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

}  // namespace

absl::StatusOr<std::string> CheckHealth(const std::string& grpc_addr, const std::string& service) {
  return CheckHealthOver(grpc_addr, service, grpc::InsecureChannelCredentials());
}

absl::StatusOr<std::string> CheckHealthTls(const std::string& grpc_addr, const std::string& ca_file,
                                           const std::string& client_cert_file,
                                           const std::string& client_key_file) {
  absl::StatusOr<std::string> ca = ReadFile(ca_file);
  if (!ca.ok()) return ca.status();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = *ca;
  if (!client_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(client_cert_file);
    absl::StatusOr<std::string> key = ReadFile(client_key_file);
    if (!cert.ok()) return cert.status();
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return CheckHealthOver(grpc_addr, "", grpc::SslCredentials(ssl));
}

absl::StatusOr<std::unique_ptr<ServiceProcess>> ServiceProcess::Start(
    ServiceProcessOptions options) {
  std::unique_ptr<ServiceProcess> service(new ServiceProcess());
  absl::StatusOr<TempDir> dir = TempDir::Create(absl::StrCat(options.binary, "-"));
  if (!dir.ok()) return dir.status();
  service->dir_.emplace(*std::move(dir));

  ProcessOptions process;
  process.argv = {BinaryPath(options.binary)};
  if (options.grpc) process.argv.push_back("--grpc_addr=127.0.0.1:0");
  process.argv.push_back("--metrics_addr=127.0.0.1:0");
  for (std::string& arg : options.args) process.argv.push_back(std::move(arg));
  process.env = std::move(options.env);
  process.log_path = service->dir_->Join("log");
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(std::move(process));
  if (!child.ok()) return child.status();
  service->process_ = *std::move(child);

  std::string line;
  if (absl::Status s =
          service->process_->WaitForLogLine("msg=serving", options.start_timeout, &line);
      !s.ok()) {
    return s;
  }
  service->grpc_addr_ = LogfmtValue(line, "grpc_addr");
  service->metrics_addr_ = LogfmtValue(line, "metrics_addr");
  if (!options.grpc) return service;

  absl::Time deadline = absl::Now() + options.start_timeout;
  absl::StatusOr<std::string> health;
  while (absl::Now() < deadline) {
    health = options.tls_ca_file.empty()
                 ? CheckHealth(service->grpc_addr_)
                 : CheckHealthTls(service->grpc_addr_, options.tls_ca_file,
                                  options.tls_client_cert_file, options.tls_client_key_file);
    if (health.ok() && *health == "SERVING") return service;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(options.binary, " did not report SERVING: ",
                   health.ok() ? *health : health.status().ToString(), "\n", Tail(service->Log())));
}

absl::StatusOr<double> MetricValue(absl::string_view exposition, absl::string_view name,
                                   const std::map<std::string, std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, name)) continue;
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' ')) continue;  // a longer name
    absl::string_view label_text;
    if (rest[0] == '{') {
      size_t close = rest.find('}');
      if (close == absl::string_view::npos) continue;
      label_text = rest.substr(1, close - 1);
      rest = rest.substr(close + 1);
    }
    bool all = true;
    for (const auto& [key, value] : labels) {
      if (!absl::StrContains(label_text, absl::StrCat(key, "=\"", value, "\""))) all = false;
    }
    if (!all) continue;
    double value = 0;
    std::vector<absl::string_view> parts =
        absl::StrSplit(absl::StripAsciiWhitespace(rest), ' ', absl::SkipEmpty());
    if (parts.empty() || !absl::SimpleAtod(parts[0], &value)) continue;
    return value;
  }
  return absl::NotFoundError(absl::StrCat("no sample of ", name, " with the given labels"));
}

absl::StatusOr<std::string> ScrapeMetrics(const std::string& metrics_addr) {
  HttpClient client;
  absl::StatusOr<HttpResponse> response =
      client.Get(absl::StrCat("http://", metrics_addr, "/metrics"));
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return absl::UnavailableError(absl::StrCat("/metrics answered ", response->status));
  }
  return response->body;
}

}  // namespace elfdeploy::testing
