#include "services/common/oci/registry_client.h"

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "services/common/http_client.h"

namespace elfdeploy::oci {

bool IsLoopbackRegistry(absl::string_view domain) {
  absl::string_view host = domain;
  if (absl::StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') - 1);
    return host == "::1";
  }
  host = host.substr(0, host.find(':'));
  return host == "localhost" || absl::StartsWith(host, "127.");
}

AuthChallenge ParseAuthChallenge(absl::string_view header) {
  AuthChallenge challenge;
  header = absl::StripLeadingAsciiWhitespace(header);
  size_t space = header.find(' ');
  challenge.scheme = std::string(header.substr(0, space));
  if (space == absl::string_view::npos) return challenge;
  absl::string_view rest = header.substr(space + 1);
  while (!rest.empty()) {
    rest = absl::StripLeadingAsciiWhitespace(rest);
    size_t eq = rest.find('=');
    if (eq == absl::string_view::npos) break;
    std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(rest.substr(0, eq)));
    rest = rest.substr(eq + 1);
    std::string value;
    if (absl::ConsumePrefix(&rest, "\"")) {
      size_t i = 0;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        value.push_back(rest[i]);
      }
      rest = rest.substr(std::min(i + 1, rest.size()));
    } else {
      size_t end = rest.find(',');
      value = std::string(absl::StripAsciiWhitespace(rest.substr(0, end)));
      rest = end == absl::string_view::npos ? "" : rest.substr(end);
    }
    challenge.params[key] = value;
    absl::ConsumePrefix(&rest, ",");
  }
  return challenge;
}

namespace {

constexpr char kUserAgent[] = "elfdeploy-registry-sync/0.1";
constexpr absl::Duration kRefusalMemory = absl::Seconds(30);

// A pool of HTTP clients so that concurrent calls each reuse their own connections.
class ClientPool {
 public:
  explicit ClientPool(HttpClientOptions options) : options_(std::move(options)) {}

  class Lease {
   public:
    Lease(ClientPool* pool, std::unique_ptr<HttpClient> client)
        : pool_(pool), client_(std::move(client)) {}
    ~Lease() { pool_->Return(std::move(client_)); }
    HttpClient* operator->() { return client_.get(); }

   private:
    ClientPool* pool_;
    std::unique_ptr<HttpClient> client_;
  };

  Lease Acquire() {
    absl::MutexLock lock(&mu_);
    if (free_.empty()) return Lease(this, std::make_unique<HttpClient>(options_));
    std::unique_ptr<HttpClient> client = std::move(free_.back());
    free_.pop_back();
    return Lease(this, std::move(client));
  }

 private:
  void Return(std::unique_ptr<HttpClient> client) {
    absl::MutexLock lock(&mu_);
    free_.push_back(std::move(client));
  }

  HttpClientOptions options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<HttpClient>> free_ ABSL_GUARDED_BY(mu_);
};

std::string RepoScope(const std::string& path, bool push) {
  return absl::StrCat("repository:", path, push ? ":pull,push" : ":pull");
}

// The "errors" of a registry error body, as "CODE: message; ...".
std::string RegistryErrors(const std::string& body) {
  nlohmann::json json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("errors") ||
      !json["errors"].is_array()) {
    return "";
  }
  std::vector<std::string> parts;
  for (const auto& error : json["errors"]) {
    if (!error.is_object()) continue;
    parts.push_back(absl::StrCat(error.value("code", "UNKNOWN"), ": ", error.value("message", "")));
  }
  return absl::StrJoin(parts, "; ");
}

class RegistryClient : public Registry {
 public:
  explicit RegistryClient(RegistryClientOptions options)
      : options_(std::move(options)), pool_(MakeHttpOptions(options_)) {}

  absl::StatusOr<ManifestData> GetManifest(const ImageReference& ref) override {
    std::string path = absl::StrCat("/v2/", ref.path, "/manifests/", ref.Reference());
    HttpRequest request = MakeRequest("GET", path);
    request.headers.emplace_back("Accept", kManifestAccept);
    absl::StatusOr<HttpResponse> response =
        Send(ref.domain, RepoScope(ref.path, false), std::move(request), true);
    if (!response.ok()) return response.status();
    if (response->status != 200) return ErrorFor(*response, "GET", ref.domain, path);
    ManifestData manifest;
    manifest.bytes = std::move(response->body);
    manifest.digest = Digest::Sha256Of(manifest.bytes);
    if (!ref.digest.empty() && manifest.digest.ToString() != ref.digest) {
      return absl::DataLossError(absl::StrCat("manifest ", ref.ToString(), ": content digest is ",
                                              manifest.digest.ToString()));
    }
    manifest.media_type = response->Header("content-type");
    manifest.media_type = manifest.media_type.substr(0, manifest.media_type.find(';'));
    if (!IsIndexMediaType(manifest.media_type) && !IsManifestMediaType(manifest.media_type)) {
      absl::StatusOr<std::string> detected = DetectManifestMediaType(manifest.bytes);
      if (!detected.ok()) return detected.status();
      manifest.media_type = *detected;
    }
    return manifest;
  }

  absl::StatusOr<Descriptor> HeadManifest(const ImageReference& ref) override {
    std::string path = absl::StrCat("/v2/", ref.path, "/manifests/", ref.Reference());
    HttpRequest request = MakeRequest("HEAD", path);
    request.headers.emplace_back("Accept", kManifestAccept);
    absl::StatusOr<HttpResponse> response =
        Send(ref.domain, RepoScope(ref.path, false), std::move(request), true);
    if (!response.ok()) return response.status();
    if (response->status != 200) return ErrorFor(*response, "HEAD", ref.domain, path);
    absl::StatusOr<Digest> digest = Digest::Parse(response->Header("docker-content-digest"));
    if (!digest.ok()) {
      // Without the header the body must be fetched to know the digest.
      absl::StatusOr<ManifestData> manifest = GetManifest(ref);
      if (!manifest.ok()) return manifest.status();
      return Descriptor{manifest->media_type,
                        manifest->digest,
                        static_cast<int64_t>(manifest->bytes.size()),
                        std::nullopt,
                        {},
                        {}};
    }
    Descriptor d;
    d.digest = *digest;
    d.media_type = response->Header("content-type");
    d.media_type = d.media_type.substr(0, d.media_type.find(';'));
    absl::SimpleAtoi(response->Header("content-length"), &d.size);
    return d;
  }

  absl::Status PutManifest(const ImageReference& ref, const ManifestData& manifest) override {
    std::string path = absl::StrCat("/v2/", ref.path, "/manifests/", ref.Reference());
    HttpRequest request = MakeRequest("PUT", path);
    request.headers.emplace_back("Content-Type", manifest.media_type);
    request.body = manifest.bytes;
    absl::StatusOr<HttpResponse> response =
        Send(ref.domain, RepoScope(ref.path, true), std::move(request), true);
    if (!response.ok()) return response.status();
    if (response->status != 201 && response->status != 200) {
      return ErrorFor(*response, "PUT", ref.domain, path);
    }
    std::string stored = response->Header("docker-content-digest");
    if (!stored.empty() && stored != manifest.digest.ToString()) {
      return absl::DataLossError(absl::StrCat("registry stored manifest ", ref.ToString(), " as ",
                                              stored, ", expected ", manifest.digest.ToString()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> BlobExists(const ImageReference& repo, const Digest& digest) override {
    std::string path = absl::StrCat("/v2/", repo.path, "/blobs/", digest.ToString());
    absl::StatusOr<HttpResponse> response =
        Send(repo.domain, RepoScope(repo.path, true), MakeRequest("HEAD", path), true);
    if (!response.ok()) return response.status();
    if (response->status == 200) return true;
    if (response->status == 404) return false;
    return ErrorFor(*response, "HEAD", repo.domain, path);
  }

  absl::StatusOr<bool> MountBlob(const ImageReference& repo, const Digest& digest,
                                 const std::string& from_path) override {
    std::string path = absl::StrCat("/v2/", repo.path, "/blobs/uploads/?mount=", digest.ToString(),
                                    "&from=", from_path);
    std::string scope = absl::StrCat(RepoScope(repo.path, true), " ", RepoScope(from_path, false));
    absl::StatusOr<HttpResponse> response =
        Send(repo.domain, scope, MakeRequest("POST", path), true);
    if (!response.ok()) return response.status();
    if (response->status == 201) return true;
    if (response->status == 202) {
      // The registry started an upload instead; cancel it, the caller uploads afresh.
      std::string location = response->Header("location");
      if (!location.empty()) {
        Send(repo.domain, RepoScope(repo.path, true),
             MakeRequest("DELETE", "", ResolveLocation(repo.domain, location)), false)
            .IgnoreError();
      }
      return false;
    }
    return ErrorFor(*response, "POST", repo.domain, path);
  }

  absl::Status PushBlob(const ImageReference& repo, const Descriptor& blob,
                        const std::string& file) override {
    absl::Status last;
    for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
      last = UploadOnce(repo, blob, file);
      if (last.ok() || !IsRetryable(last)) return last;
      if (attempt < options_.max_attempts) options_.sleep(Backoff(attempt));
    }
    return last;
  }

  absl::Status UploadBlob(const ImageReference& repo, const Descriptor& blob,
                          const std::function<int64_t(char*, size_t)>& reader) override {
    return UploadOnce(repo, blob, "", reader);
  }

  absl::Status ReadBlob(const ImageReference& repo, const Descriptor& blob,
                        const std::function<bool(absl::string_view)>& sink) override {
    std::string path = absl::StrCat("/v2/", repo.path, "/blobs/", blob.digest.ToString());
    HttpRequest request = MakeRequest("GET", path);
    request.body_sink = sink;
    absl::StatusOr<HttpResponse> response =
        Send(repo.domain, RepoScope(repo.path, false), std::move(request), false);
    if (!response.ok()) return response.status();
    if (response->status != 200) return ErrorFor(*response, "GET", repo.domain, path);
    return absl::OkStatus();
  }

  absl::Status FetchBlob(const ImageReference& repo, const Descriptor& blob,
                         OciLayout& layout) override {
    std::string path = absl::StrCat("/v2/", repo.path, "/blobs/", blob.digest.ToString());
    absl::Status last;
    for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
      absl::StatusOr<std::unique_ptr<BlobWriter>> writer = layout.NewBlobWriter();
      if (!writer.ok()) return writer.status();
      absl::Status write_status;
      HttpRequest request = MakeRequest("GET", path);
      BlobWriter* w = writer->get();
      request.body_sink = [w, &write_status](absl::string_view chunk) {
        write_status = w->Write(chunk);
        return write_status.ok();
      };
      // Transport errors are retried here, with a fresh writer, not by Send.
      absl::StatusOr<HttpResponse> response =
          Send(repo.domain, RepoScope(repo.path, false), std::move(request), false);
      if (!write_status.ok()) return write_status;
      if (response.ok() && response->status == 200) {
        last = w->Commit(blob.digest, blob.size);
        if (last.ok()) return last;
        // A short or corrupt body is refused; a truncated transfer is worth another try.
        if (w->bytes_written() >= blob.size) return last;
      } else if (response.ok()) {
        return ErrorFor(*response, "GET", repo.domain, path);
      } else {
        last = response.status();
        if (!IsRetryable(last)) return last;
      }
      if (attempt < options_.max_attempts) options_.sleep(Backoff(attempt));
    }
    return last;
  }

  absl::StatusOr<std::vector<std::string>> ListTags(const ImageReference& repo) override {
    std::vector<std::string> tags;
    std::string path = absl::StrCat("/v2/", repo.path, "/tags/list?n=1000");
    while (!path.empty()) {
      absl::StatusOr<HttpResponse> response =
          Send(repo.domain, RepoScope(repo.path, false), MakeRequest("GET", path), true);
      if (!response.ok()) return response.status();
      if (response->status != 200) return ErrorFor(*response, "GET", repo.domain, path);
      nlohmann::json json = nlohmann::json::parse(response->body, nullptr, false);
      if (json.is_discarded() || !json.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat("GET ", path, ": tag list is not JSON"));
      }
      if (json.contains("tags") && json["tags"].is_array()) {
        for (const auto& tag : json["tags"]) {
          if (tag.is_string()) tags.push_back(tag.get<std::string>());
        }
      }
      // Link: </v2/<name>/tags/list?n=1000&last=x>; rel="next"
      std::string link = response->Header("link");
      path.clear();
      if (absl::StrContains(link, "rel=\"next\"") && link.find('<') != std::string::npos) {
        path = link.substr(link.find('<') + 1, link.find('>') - link.find('<') - 1);
      }
    }
    return tags;
  }

 private:
  struct HostState {
    std::string base_url;  // "https://host" once known
    bool skip_verify = false;
    AuthChallenge challenge;  // empty scheme: anonymous so far
    // Set when the registry refused the configured credentials: requests fail at once until
    // refused_until, instead of each asking again with the same wrong password.
    std::string refused;
    absl::Time refused_until;
  };
  struct Token {
    std::string value;
    absl::Time expires;
  };

  static HttpClientOptions MakeHttpOptions(const RegistryClientOptions& options) {
    HttpClientOptions http;
    http.ca_file = options.ca_file;
    http.ca_extends_system_store = true;  // as Docker treats a registry's certs.d CA
    http.timeout = absl::ZeroDuration();
    http.low_speed_timeout = absl::Seconds(60);
    return http;
  }

  // `url` empty means the registry's base URL + `path`, resolved when sent.
  static HttpRequest MakeRequest(const std::string& method, const std::string& path,
                                 const std::string& url = "") {
    HttpRequest request;
    request.method = method;
    request.url = url.empty() ? path : url;
    request.headers.emplace_back("User-Agent", kUserAgent);
    return request;
  }

  bool IsInsecure(const std::string& domain) const {
    return std::find(options_.insecure_registries.begin(), options_.insecure_registries.end(),
                     domain) != options_.insecure_registries.end();
  }

  static bool IsRetryable(const absl::Status& status) {
    return status.code() == absl::StatusCode::kUnavailable ||
           status.code() == absl::StatusCode::kDeadlineExceeded ||
           status.code() == absl::StatusCode::kResourceExhausted;
  }

  absl::Duration Backoff(int attempt) {
    absl::Duration base = options_.initial_backoff * (1 << std::min(attempt - 1, 10));
    base = std::min(base, options_.max_backoff);
    thread_local std::mt19937 random(std::random_device{}());
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    return base * jitter(random);
  }

  // The base URL of `domain`: https, or plain http when https cannot be spoken there and the
  // registry is loopback or configured insecure.
  absl::StatusOr<HostState> Host(const std::string& domain) {
    {
      absl::MutexLock lock(&mu_);
      auto it = hosts_.find(domain);
      if (it != hosts_.end() && !it->second.base_url.empty()) return it->second;
    }
    // One probe at a time: concurrent first requests wait for its answer instead of probing too.
    absl::MutexLock probing(&probe_mu_);
    {
      absl::MutexLock lock(&mu_);
      auto it = hosts_.find(domain);
      if (it != hosts_.end() && !it->second.base_url.empty()) return it->second;
    }
    bool insecure = IsInsecure(domain);
    bool may_use_http = insecure || IsLoopbackRegistry(domain);
    HostState state;
    state.skip_verify = insecure;
    state.base_url = absl::StrCat("https://", domain);
    HttpRequest probe = MakeRequest("GET", "", absl::StrCat(state.base_url, "/v2/"));
    probe.skip_tls_verify = insecure;
    absl::StatusOr<HttpResponse> response = pool_.Acquire()->Do(probe);
    if (!response.ok()) {
      if (!may_use_http) {
        return absl::UnavailableError(absl::StrCat(
            "registry ", domain, " unreachable over https: ", response.status().message(),
            " (plain http is only used for localhost, 127.0.0.0/8 and registries "
            "configured as insecure)"));
      }
      state.base_url = absl::StrCat("http://", domain);
      probe.url = absl::StrCat(state.base_url, "/v2/");
      absl::StatusOr<HttpResponse> plain = pool_.Acquire()->Do(probe);
      // A registry answers /v2/ with 200 or 401; anything else (e.g. a TLS server's 400 to
      // plain http) means https was right and its error is the one to report.
      if (plain.ok() && plain->status != 200 && plain->status != 401) {
        return absl::UnavailableError(absl::StrCat(
            "registry ", domain, " unreachable over https: ", response.status().message()));
      }
      if (!plain.ok()) {
        return absl::UnavailableError(
            absl::StrCat("registry ", domain, " unreachable: https: ", response.status().message(),
                         "; http: ", plain.status().message()));
      }
    }
    absl::MutexLock lock(&mu_);
    HostState& stored = hosts_[domain];
    stored.base_url = state.base_url;
    stored.skip_verify = state.skip_verify;
    return stored;
  }

  // The Authorization header for `scope` on `domain` given what the registry asked for.
  absl::StatusOr<std::string> AuthHeader(const std::string& domain, const std::string& scope,
                                         bool refresh) {
    AuthChallenge challenge;
    {
      absl::MutexLock lock(&mu_);
      const HostState& state = hosts_[domain];
      if (!state.refused.empty() && absl::Now() < state.refused_until) {
        return absl::UnauthenticatedError(state.refused);
      }
      challenge = hosts_[domain].challenge;
      if (!refresh && absl::EqualsIgnoreCase(challenge.scheme, "bearer")) {
        auto token = tokens_.find(absl::StrCat(domain, " ", scope));
        if (token != tokens_.end() && token->second.expires > absl::Now()) {
          return absl::StrCat("Bearer ", token->second.value);
        }
      }
    }
    std::optional<RegistryCredential> credential = options_.credentials.Find(domain);
    if (challenge.scheme.empty()) return std::string();
    if (absl::EqualsIgnoreCase(challenge.scheme, "basic")) {
      if (!credential.has_value()) {
        return absl::UnauthenticatedError(
            absl::StrCat("registry ", domain, " requires credentials and none are configured"));
      }
      return absl::StrCat("Basic ", Base64UserPassword(*credential));
    }
    if (!absl::EqualsIgnoreCase(challenge.scheme, "bearer")) {
      return absl::UnauthenticatedError(absl::StrCat(
          "registry ", domain, " asks for unsupported auth scheme ", challenge.scheme));
    }
    return FetchToken(domain, scope, challenge, credential);
  }

  static std::string Base64UserPassword(const RegistryCredential& credential) {
    std::string out;
    absl::Base64Escape(absl::StrCat(credential.username, ":", credential.password.Reveal()), &out);
    return out;
  }

  absl::StatusOr<std::string> FetchToken(const std::string& domain, const std::string& scope,
                                         const AuthChallenge& challenge,
                                         const std::optional<RegistryCredential>& credential) {
    auto realm = challenge.params.find("realm");
    if (realm == challenge.params.end() || realm->second.empty()) {
      return absl::UnauthenticatedError(
          absl::StrCat("registry ", domain, " sent a Bearer challenge without a realm"));
    }
    std::string url = realm->second;
    std::vector<std::string> query;
    if (auto service = challenge.params.find("service"); service != challenge.params.end()) {
      query.push_back(absl::StrCat("service=", UrlEncode(service->second)));
    }
    for (absl::string_view s : absl::StrSplit(scope, ' ', absl::SkipEmpty())) {
      query.push_back(absl::StrCat("scope=", UrlEncode(s)));
    }
    if (!query.empty()) {
      absl::StrAppend(&url, absl::StrContains(url, '?') ? "&" : "?", absl::StrJoin(query, "&"));
    }
    HttpRequest request = MakeRequest("GET", "", url);
    if (credential.has_value()) {
      request.username = credential->username;
      request.password = credential->password.Reveal();
    }
    absl::StatusOr<HttpResponse> response = pool_.Acquire()->Do(request);
    if (!response.ok()) return response.status();
    if (options_.on_response) options_.on_response(static_cast<int>(response->status));
    if (response->status == 401 || response->status == 403) {
      absl::Status refused = absl::UnauthenticatedError(absl::StrCat(
          "token server ", realm->second, " refused ",
          credential.has_value() ? absl::StrCat("the credentials of ", credential->username)
                                 : std::string("anonymous access"),
          " for ", domain, " (HTTP ", response->status, ")"));
      absl::MutexLock lock(&mu_);
      hosts_[domain].refused = std::string(refused.message());
      hosts_[domain].refused_until = absl::Now() + kRefusalMemory;
      return refused;
    }
    if (response->status != 200) {
      return absl::UnavailableError(
          absl::StrCat("token server ", realm->second, " answered HTTP ", response->status));
    }
    nlohmann::json json = nlohmann::json::parse(response->body, nullptr, false);
    std::string token;
    if (json.is_object()) token = json.value("token", json.value("access_token", ""));
    if (token.empty()) {
      return absl::UnauthenticatedError(
          absl::StrCat("token server ", realm->second, " returned no token"));
    }
    int64_t expires_in = json.is_object() ? json.value("expires_in", int64_t{60}) : 60;
    absl::MutexLock lock(&mu_);
    tokens_[absl::StrCat(domain, " ", scope)] =
        Token{token, absl::Now() + absl::Seconds(std::max<int64_t>(expires_in - 10, 1))};
    return absl::StrCat("Bearer ", token);
  }

  static std::string UrlEncode(absl::string_view s) {
    std::string out;
    for (unsigned char c : s) {
      if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        out.push_back(static_cast<char>(c));
      } else {
        absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
      }
    }
    return out;
  }

  std::string ResolveLocation(const std::string& domain, const std::string& location) {
    if (absl::StartsWith(location, "http://") || absl::StartsWith(location, "https://")) {
      return location;
    }
    absl::StatusOr<HostState> host = Host(domain);
    return absl::StrCat(host.ok() ? host->base_url : std::string(), location);
  }

  // Sends `request` (its url a path when it does not start with http) with auth, retrying
  // connection errors (when `retry_transport`), 5xx and 429. A 401 is answered once with fresh
  // credentials; a second 401 is the caller's answer.
  absl::StatusOr<HttpResponse> Send(const std::string& domain, const std::string& scope,
                                    HttpRequest request, bool retry_transport) {
    absl::StatusOr<HostState> host = Host(domain);
    for (int attempt = 1; !host.ok() && retry_transport && IsRetryable(host.status()) &&
                          attempt < options_.max_attempts;
         ++attempt) {
      options_.sleep(Backoff(attempt));
      host = Host(domain);
    }
    if (!host.ok()) return host.status();
    if (!absl::StartsWith(request.url, "http")) {
      request.url = absl::StrCat(host->base_url, request.url.empty() ? "/v2/" : request.url);
    }
    request.skip_tls_verify = host->skip_verify;
    const std::vector<std::pair<std::string, std::string>> headers = request.headers;
    bool refreshed = false;
    absl::StatusOr<HttpResponse> response;
    for (int attempt = 1;; ++attempt) {
      absl::StatusOr<std::string> auth = AuthHeader(domain, scope, false);
      if (!auth.ok()) return auth.status();
      request.headers = headers;
      if (!auth->empty()) request.headers.emplace_back("Authorization", *auth);
      response = pool_.Acquire()->Do(request);
      bool last_attempt = attempt >= options_.max_attempts;
      if (!response.ok()) {
        if (!retry_transport || last_attempt || !IsRetryable(response.status())) return response;
        options_.sleep(Backoff(attempt));
        continue;
      }
      if (options_.on_response) options_.on_response(static_cast<int>(response->status));
      if (response->status == 401 && !refreshed) {
        AuthChallenge challenge = ParseAuthChallenge(response->Header("www-authenticate"));
        {
          absl::MutexLock lock(&mu_);
          hosts_[domain].challenge = challenge;
        }
        refreshed = true;
        absl::StatusOr<std::string> fresh = AuthHeader(domain, scope, true);
        if (!fresh.ok()) return fresh.status();
        --attempt;
        continue;
      }
      if ((response->status == 429 || response->status >= 500) && !last_attempt) {
        absl::Duration wait = Backoff(attempt);
        int64_t retry_after = 0;
        if (absl::SimpleAtoi(response->Header("retry-after"), &retry_after) && retry_after >= 0) {
          wait = std::min(absl::Seconds(retry_after), options_.max_backoff * 6);
        }
        options_.sleep(wait);
        continue;
      }
      return response;
    }
  }

  absl::Status ErrorFor(const HttpResponse& response, const std::string& method,
                        const std::string& domain, const std::string& path) {
    std::string detail = RegistryErrors(response.body);
    std::string message = absl::StrCat(method, " ", domain, path, ": HTTP ", response.status,
                                       detail.empty() ? "" : absl::StrCat(" ", detail));
    switch (response.status) {
      case 401: {
        AuthChallenge challenge = ParseAuthChallenge(response.Header("www-authenticate"));
        auto error = challenge.params.find("error");
        if (error != challenge.params.end() && error->second == "insufficient_scope") {
          return absl::PermissionDeniedError(absl::StrCat(message, " (insufficient scope)"));
        }
        std::optional<RegistryCredential> credential = options_.credentials.Find(domain);
        std::string refused = absl::StrCat(
            message, credential.has_value()
                         ? absl::StrCat(" (credentials of ", credential->username, " refused)")
                         : std::string(" (no credentials configured)"));
        if (credential.has_value() && absl::EqualsIgnoreCase(challenge.scheme, "basic")) {
          absl::MutexLock lock(&mu_);
          hosts_[domain].refused = refused;
          hosts_[domain].refused_until = absl::Now() + kRefusalMemory;
        }
        return absl::UnauthenticatedError(refused);
      }
      case 403:
        return absl::PermissionDeniedError(message);
      case 404:
        return absl::NotFoundError(message);
      case 429:
        return absl::ResourceExhaustedError(message);
      case 400:
        if (absl::StrContains(detail, "DIGEST_INVALID")) return absl::DataLossError(message);
        if (absl::StrContains(detail, "MANIFEST_BLOB_UNKNOWN")) {
          return absl::FailedPreconditionError(message);
        }
        return absl::InvalidArgumentError(message);
      default:
        if (response.status >= 500) return absl::UnavailableError(message);
        return absl::UnknownError(message);
    }
  }

  // One upload session; the bytes come from `file` or, when it is empty, from `reader`.
  absl::Status UploadOnce(const ImageReference& repo, const Descriptor& blob,
                          const std::string& file,
                          const std::function<int64_t(char*, size_t)>& reader = {}) {
    auto set_body = [&](HttpRequest& request, int64_t offset, int64_t length) {
      if (file.empty()) {
        request.body_reader = reader;
      } else {
        request.body_file = file;
        request.body_offset = offset;
      }
      request.body_length = length;
    };
    std::string scope = RepoScope(repo.path, true);
    std::string start = absl::StrCat("/v2/", repo.path, "/blobs/uploads/");
    absl::StatusOr<HttpResponse> response =
        Send(repo.domain, scope, MakeRequest("POST", start), true);
    if (!response.ok()) return response.status();
    if (response->status != 202) return ErrorFor(*response, "POST", repo.domain, start);
    std::string location = ResolveLocation(repo.domain, response->Header("location"));

    int64_t offset = 0;
    if (options_.chunk_size > 0) {
      while (offset < blob.size) {
        int64_t length = std::min(options_.chunk_size, blob.size - offset);
        HttpRequest patch = MakeRequest("PATCH", "", location);
        patch.headers.emplace_back("Content-Type", "application/octet-stream");
        patch.headers.emplace_back("Content-Range", absl::StrCat(offset, "-", offset + length - 1));
        set_body(patch, offset, length);
        response = Send(repo.domain, scope, std::move(patch), false);
        if (!response.ok()) return response.status();
        if (response->status != 202) return ErrorFor(*response, "PATCH", repo.domain, start);
        location = ResolveLocation(repo.domain, response->Header("location"));
        offset += length;
      }
    }
    std::string put_url = absl::StrCat(location, absl::StrContains(location, '?') ? "&" : "?",
                                       "digest=", blob.digest.ToString());
    HttpRequest put = MakeRequest("PUT", "", put_url);
    put.headers.emplace_back("Content-Type", "application/octet-stream");
    if (offset < blob.size) set_body(put, offset, blob.size - offset);
    response = Send(repo.domain, scope, std::move(put), false);
    if (!response.ok()) return response.status();
    if (response->status != 201) return ErrorFor(*response, "PUT", repo.domain, start);
    return absl::OkStatus();
  }

  RegistryClientOptions options_;
  ClientPool pool_;
  absl::Mutex probe_mu_;
  absl::Mutex mu_;
  std::map<std::string, HostState> hosts_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Token> tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<Registry> NewRegistryClient(RegistryClientOptions options) {
  return std::make_unique<RegistryClient>(std::move(options));
}

}  // namespace elfdeploy::oci
