#include "services/common/http_client.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace elfdeploy {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct BodyTarget {
  CURL* curl;
  std::string* buffer;
  const std::function<bool(absl::string_view)>* sink;
  bool aborted = false;
};

// Bodies of 2xx responses go to the sink when there is one; error bodies stay in the response.
size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  auto* target = static_cast<BodyTarget*>(user);
  long status = 0;
  curl_easy_getinfo(target->curl, CURLINFO_RESPONSE_CODE, &status);
  if (*target->sink && status >= 200 && status < 300) {
    if (!(*target->sink)(absl::string_view(data, size * count))) {
      target->aborted = true;
      return 0;
    }
  } else {
    target->buffer->append(data, size * count);
  }
  return size * count;
}

struct BodySource {
  std::function<int64_t(char*, size_t)> read;
  int64_t left = 0;
};

size_t ReadBody(char* buffer, size_t size, size_t count, void* user) {
  auto* source = static_cast<BodySource*>(user);
  size_t want = std::min<size_t>(size * count, static_cast<size_t>(source->left));
  if (want == 0) return 0;
  int64_t got = source->read(buffer, want);
  if (got <= 0) return CURL_READFUNC_ABORT;  // the body ended early or was aborted
  source->left -= got;
  return static_cast<size_t>(got);
}

int Progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* cancelled = static_cast<const std::function<bool()>*>(user);
  return (*cancelled)() ? 1 : 0;
}

// Trust anchors, parsed once per process for each configuration and shared by every connection.
// OpenSSL 3 spends ~40 ms of CPU parsing the system bundle, and Debian's libcurl, built with a CA
// directory, does not cache it: every new TLS connection used to pay that again.
class TrustStores {
 public:
  static TrustStores& Get() {
    static auto* stores = new TrustStores;
    return *stores;
  }

  // The store `options` describe; owned here and kept for the life of the process. A CA file is
  // read again when its size or modification time changes.
  absl::StatusOr<X509_STORE*> For(const HttpClientOptions& options) {
    std::string key;
    if (!options.ca_file.empty()) {
      struct stat st = {};
      if (stat(options.ca_file.c_str(), &st) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("CA file ", options.ca_file, ": ", std::strerror(errno)));
      }
      key = absl::StrCat(options.ca_file, "\n", st.st_size, "\n", st.st_mtim.tv_sec, ".",
                         st.st_mtim.tv_nsec);
    }
    absl::StrAppend(&key, "\n", options.ca_pem, "\n", options.ca_extends_system_store);
    absl::MutexLock lock(&mu_);
    auto it = stores_.find(key);
    if (it != stores_.end()) return it->second;
    absl::StatusOr<X509_STORE*> store = Build(options);
    if (!store.ok()) return store.status();
    stores_.emplace(std::move(key), *store);
    return *store;
  }

 private:
  static absl::StatusOr<X509_STORE*> Build(const HttpClientOptions& options) {
    std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> store(X509_STORE_new(), &X509_STORE_free);
    if (store == nullptr) return absl::ResourceExhaustedError("X509_STORE_new failed");
    bool system =
        (options.ca_file.empty() && options.ca_pem.empty()) || options.ca_extends_system_store;
    // OpenSSL's defaults (SSL_CERT_FILE / SSL_CERT_DIR when set): the same system bundle and
    // directory libcurl would use.
    if (system) X509_STORE_set_default_paths(store.get());
    ERR_clear_error();
    if (!options.ca_file.empty() &&
        X509_STORE_load_file(store.get(), options.ca_file.c_str()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("CA file ", options.ca_file, ": no PEM certificate could be read"));
    }
    if (!options.ca_pem.empty()) {
      std::unique_ptr<BIO, int (*)(BIO*)> bio(
          BIO_new_mem_buf(options.ca_pem.data(), static_cast<int>(options.ca_pem.size())),
          &BIO_free);
      STACK_OF(X509_INFO)* infos = PEM_X509_INFO_read_bio(bio.get(), nullptr, nullptr, nullptr);
      int added = 0;
      for (int i = 0; infos != nullptr && i < sk_X509_INFO_num(infos); ++i) {
        X509_INFO* info = sk_X509_INFO_value(infos, i);
        if (info->x509 != nullptr && X509_STORE_add_cert(store.get(), info->x509) == 1) ++added;
      }
      sk_X509_INFO_pop_free(infos, X509_INFO_free);
      ERR_clear_error();
      if (added == 0) return absl::InvalidArgumentError("CA PEM holds no certificate");
    }
    return store.release();
  }

  absl::Mutex mu_;
  std::map<std::string, X509_STORE*> stores_ ABSL_GUARDED_BY(mu_);
};

CURLcode AttachTrustStore(CURL*, void* ssl_ctx, void* store) {
  SSL_CTX_set1_cert_store(static_cast<SSL_CTX*>(ssl_ctx), static_cast<X509_STORE*>(store));
  return CURLE_OK;
}

// A PEM held in memory, for CURLOPT_*_BLOB options (libcurl copies it).
curl_blob Blob(const std::string& pem) {
  return curl_blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
}

size_t WriteHeader(char* data, size_t size, size_t count, void* user) {
  auto* response = static_cast<HttpResponse*>(user);
  absl::string_view line(data, size * count);
  if (absl::StartsWith(line, "HTTP/")) {
    response->headers.clear();  // a new response (redirect, 100-continue) starts
    return size * count;
  }
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    response->headers[name] = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return size * count;
}

}  // namespace

std::string HttpResponse::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

HttpClient::HttpClient(HttpClientOptions options) : options_(std::move(options)) {
  GlobalInit();
  curl_ = curl_easy_init();
}

HttpClient::~HttpClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

absl::StatusOr<HttpResponse> HttpClient::Get(const std::string& url) {
  HttpRequest request;
  request.url = url;
  return Do(request);
}

absl::StatusOr<HttpResponse> HttpClient::Do(const HttpRequest& request) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_easy_reset(curl);  // keeps the connection cache
  HttpResponse response;
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.timeout)));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, options_.follow_redirects ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
  BodyTarget target{curl, &response.body, &request.body_sink};
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &target);
  if (options_.low_speed_timeout > absl::ZeroDuration()) {
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                     static_cast<long>(absl::ToInt64Seconds(options_.low_speed_timeout)));
  }
  // Larger transfer buffers: fewer callbacks and syscalls for multi-megabyte blobs.
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 256L * 1024);
  curl_easy_setopt(curl, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response);
  bool verify = !options_.insecure_skip_verify && !request.skip_tls_verify;
  if (verify && absl::StartsWithIgnoreCase(request.url, "https://")) {
    absl::StatusOr<X509_STORE*> store = TrustStores::Get().For(options_);
    if (!store.ok()) return store.status();
    curl_easy_setopt(curl, CURLOPT_CAINFO, nullptr);
    curl_easy_setopt(curl, CURLOPT_CAPATH, nullptr);
    // libcurl's own store cache would pin the first store a handle saw over later ones.
    curl_easy_setopt(curl, CURLOPT_CA_CACHE_TIMEOUT, 0L);
    if (curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, AttachTrustStore) != CURLE_OK) {
      return absl::FailedPreconditionError(
          "this libcurl is not built with OpenSSL; elfdeploy needs libcurl4 (OpenSSL flavour)");
    }
    curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, *store);
  }
  if (!options_.client_cert_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, options_.client_cert_file.c_str());
  }
  if (!options_.client_key_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLKEY, options_.client_key_file.c_str());
  }
  curl_blob cert = Blob(options_.client_cert_pem);
  curl_blob key = Blob(options_.client_key_pem);
  if (!options_.client_cert_pem.empty()) curl_easy_setopt(curl, CURLOPT_SSLCERT_BLOB, &cert);
  if (!options_.client_key_pem.empty()) curl_easy_setopt(curl, CURLOPT_SSLKEY_BLOB, &key);
  if (request.cancelled) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, Progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &request.cancelled);
  }
  if (options_.insecure_skip_verify || request.skip_tls_verify) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!request.username.empty() || !request.password.empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl, CURLOPT_USERNAME, request.username.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, request.password.c_str());
  }
  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> body_file(nullptr, &std::fclose);
  BodySource source;
  if (!request.body_file.empty()) {
    body_file.reset(std::fopen(request.body_file.c_str(), "rb"));
    if (body_file == nullptr ||
        fseeko(body_file.get(), static_cast<off_t>(request.body_offset), SEEK_SET) != 0) {
      return absl::NotFoundError(absl::StrCat(request.body_file, ": cannot be read"));
    }
    std::FILE* file = body_file.get();
    source.read = [file](char* buffer, size_t max) -> int64_t {
      return static_cast<int64_t>(std::fread(buffer, 1, max, file));
    };
  } else if (request.body_reader) {
    source.read = request.body_reader;
  }
  if (source.read) {
    source.left = request.body_length;
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, ReadBody);
    curl_easy_setopt(curl, CURLOPT_READDATA, &source);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body_length));
  } else if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
             request.method == "PATCH") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
  }
  curl_slist* headers = nullptr;
  for (const auto& [name, value] : request.headers) {
    headers = curl_slist_append(headers, absl::StrCat(name, ": ", value).c_str());
  }
  // libcurl adds "Expect: 100-continue" to large bodies; registries do not need the round trip.
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  if (target.aborted) {
    return absl::AbortedError(absl::StrCat(request.method, " ", request.url, ": body rejected"));
  }
  if (code == CURLE_ABORTED_BY_CALLBACK) {
    return absl::CancelledError(absl::StrCat(request.method, " ", request.url, ": cancelled"));
  }
  if (code != CURLE_OK) {
    std::string message =
        absl::StrCat(request.method, " ", request.url, ": ", curl_easy_strerror(code));
    if (code == CURLE_OPERATION_TIMEDOUT) return absl::DeadlineExceededError(message);
    return absl::UnavailableError(message);
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

}  // namespace elfdeploy
