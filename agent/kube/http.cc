#include "agent/kube/http.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace elfdeploy::agent {
namespace {

// A stream (watch) with no bytes for this long is taken for dead; API servers end watches after
// their timeoutSeconds and send bookmarks well before.
constexpr absl::Duration kStreamIdleTimeout = absl::Minutes(10);
constexpr absl::Duration kCancelPoll = absl::Milliseconds(200);

template <typename T, void (*Free)(T*)>
struct OpenSslDeleter {
  void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, OpenSslDeleter<X509, X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY, EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO, BIO_free_all>>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// A readable path holding `pem` that lives as long as the returned descriptor (a memfd: the PEM
// never touches the disk). The CA is loaded from it so that only it is trusted, not the system
// store besides.
absl::StatusOr<int> MemoryFile(const std::string& pem) {
  int fd = memfd_create("elfdeploy-kube-ca", MFD_CLOEXEC);
  if (fd < 0) return absl::InternalError("memfd_create failed");
  size_t written = 0;
  while (written < pem.size()) {
    ssize_t n = write(fd, pem.data() + written, pem.size() - written);
    if (n <= 0) {
      close(fd);
      return absl::InternalError("writing the CA to a memfd failed");
    }
    written += static_cast<size_t>(n);
  }
  return fd;
}

void SetTimeout(absl::Duration d, const std::function<void(time_t, time_t)>& set) {
  const int64_t usec = absl::ToInt64Microseconds(d);
  set(static_cast<time_t>(usec / 1000000), static_cast<time_t>(usec % 1000000));
}

absl::Status TransportError(const std::string& what, httplib::Error error) {
  return absl::UnavailableError(absl::StrCat(what, ": ", httplib::to_string(error)));
}

}  // namespace

KubeHttp::KubeHttp(std::unique_ptr<httplib::ClientImpl> client, int ca_fd)
    : client_(std::move(client)), ca_fd_(ca_fd) {}

KubeHttp::~KubeHttp() {
  client_.reset();
  if (ca_fd_ >= 0) close(ca_fd_);
}

absl::StatusOr<std::unique_ptr<KubeHttp>> KubeHttp::Create(const KubeHttpOptions& options) {
  absl::string_view rest = options.server;
  bool tls = false;
  if (absl::ConsumePrefix(&rest, "https://")) {
    tls = true;
  } else if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("server ", options.server, ": must start with https:// or http://"));
  }
  rest = absl::StripSuffix(rest, "/");
  if (rest.empty() || absl::StrContains(rest, '/')) {
    return absl::InvalidArgumentError(
        absl::StrCat("server ", options.server, ": expected scheme://host[:port]"));
  }
  std::string host(rest);
  int port = tls ? 443 : 80;
  size_t colon = rest.rfind(':');
  if (colon != absl::string_view::npos && rest.find(']', colon) == absl::string_view::npos) {
    if (!absl::SimpleAtoi(rest.substr(colon + 1), &port) || port <= 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("server ", options.server, ": bad port"));
    }
    host = std::string(rest.substr(0, colon));
  }
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }

  std::unique_ptr<httplib::ClientImpl> client;
  int ca_fd = -1;
  if (!tls) {
    client = std::make_unique<httplib::ClientImpl>(host, port);
  } else {
    std::unique_ptr<httplib::SSLClient> ssl;
    if (!options.client_cert_pem.empty() || !options.client_key_pem.empty()) {
      BioPtr cert_bio = MemoryBio(options.client_cert_pem);
      BioPtr key_bio = MemoryBio(options.client_key_pem);
      X509Ptr cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
      KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
      if (cert == nullptr || key == nullptr) {
        return absl::InvalidArgumentError("the client certificate or key is not valid PEM");
      }
      ssl = std::make_unique<httplib::SSLClient>(host, port, cert.get(), key.get());
    } else if (!options.client_cert_file.empty() || !options.client_key_file.empty()) {
      ssl = std::make_unique<httplib::SSLClient>(host, port, options.client_cert_file,
                                                 options.client_key_file);
    } else {
      ssl = std::make_unique<httplib::SSLClient>(host, port);
    }
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          "TLS setup failed (the client certificate and key do not load or do not match)");
    }
    if (options.insecure_skip_verify) {
      ssl->enable_server_certificate_verification(false);
    } else if (!options.ca_pem.empty()) {
      BioPtr bio = MemoryBio(options.ca_pem);
      if (X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) == nullptr) {
        return absl::InvalidArgumentError("the CA data holds no PEM certificate");
      }
      absl::StatusOr<int> fd = MemoryFile(options.ca_pem);
      if (!fd.ok()) return fd.status();
      ca_fd = *fd;  // loaded at the first connection
      ssl->set_ca_cert_path(absl::StrCat("/proc/self/fd/", ca_fd));
    } else if (!options.ca_file.empty()) {
      ssl->set_ca_cert_path(options.ca_file);
    }
    client = std::move(ssl);
  }
  SetTimeout(options.connect_timeout,
             [&](time_t s, time_t us) { client->set_connection_timeout(s, us); });
  const absl::Duration read =
      options.read_timeout > absl::ZeroDuration() ? options.read_timeout : kStreamIdleTimeout;
  SetTimeout(read, [&](time_t s, time_t us) { client->set_read_timeout(s, us); });
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);
  client->set_follow_location(false);
  client->set_decompress(true);
  return std::unique_ptr<KubeHttp>(new KubeHttp(std::move(client), ca_fd));
}

absl::StatusOr<KubeHttpResponse> KubeHttp::Do(const std::string& method, const std::string& path,
                                              const Headers& headers,
                                              const std::string& content_type,
                                              const std::string& body) {
  httplib::Request request;
  request.method = method;
  request.path = path;
  for (const auto& [name, value] : headers) request.headers.emplace(name, value);
  if (!content_type.empty()) request.headers.emplace("Content-Type", content_type);
  request.body = body;
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  if (!client_->send(request, response, error)) {
    return TransportError(absl::StrCat(method, " ", path), error);
  }
  return KubeHttpResponse{response.status, std::move(response.body)};
}

absl::StatusOr<KubeHttpResponse> KubeHttp::Stream(
    const std::string& path, const Headers& headers,
    const std::function<bool(absl::string_view)>& sink, const std::function<bool()>& cancelled) {
  httplib::Request request;
  request.method = "GET";
  request.path = path;
  for (const auto& [name, value] : headers) request.headers.emplace(name, value);
  KubeHttpResponse out;
  bool sink_stopped = false;
  request.response_handler = [&](const httplib::Response& response) {
    out.status = response.status;
    return true;
  };
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    if (out.status < 200 || out.status >= 300) {
      out.body.append(data, size);
      return true;
    }
    if (!sink(absl::string_view(data, size))) {
      sink_stopped = true;
      return false;
    }
    return true;
  };
  SetTimeout(kStreamIdleTimeout, [&](time_t s, time_t us) { client_->set_read_timeout(s, us); });

  // Cancellation while the stream is idle: shut the socket down from beside the reader.
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  bool was_cancelled = false;
  std::thread canceller;
  if (cancelled) {
    canceller = std::thread([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (!done) {
        if (done_cv.wait_for(lock, absl::ToChronoMilliseconds(kCancelPoll), [&] { return done; })) {
          break;
        }
        if (cancelled()) {
          was_cancelled = true;
          client_->stop();
          break;
        }
      }
    });
  }
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  const bool sent = client_->send(request, response, error);
  if (canceller.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    done_cv.notify_all();
    canceller.join();
  }
  if (was_cancelled) return absl::CancelledError(absl::StrCat("GET ", path, ": cancelled"));
  if (sink_stopped) return absl::AbortedError(absl::StrCat("GET ", path, ": stopped"));
  if (!sent) return TransportError(absl::StrCat("GET ", path), error);
  if (out.status == 0) out.status = response.status;
  return out;
}

}  // namespace elfdeploy::agent
