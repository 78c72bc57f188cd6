#include "tests/harness/token_server.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace elfdeploy::testing {
namespace {

std::string UrlDecode(absl::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    int byte = 0;
    if (in[i] == '+') {
      out.push_back(' ');
    } else if (in[i] == '%' && i + 2 < in.size() &&
               absl::SimpleHexAtoi(in.substr(i + 1, 2), &byte)) {
      out.push_back(static_cast<char>(byte));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

HttpMessage JsonError(int status, absl::string_view code, absl::string_view message) {
  nlohmann::json body = {
      {"errors", nlohmann::json::array({{{"code", code}, {"message", message}}})}};
  HttpMessage response = MakeResponse(status, body.dump(), {{"Content-Type", "application/json"}});
  if (status == 401) response.SetHeader("WWW-Authenticate", "Basic realm=\"elfdeploy-token\"");
  return response;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenServer>> TokenServer::Start(Options options) {
  absl::StatusOr<TempDir> dir = TempDir::Create("elfdeploy-token-");
  if (!dir.ok()) return dir.status();
  std::unique_ptr<TokenServer> server(new TokenServer(std::move(options), *std::move(dir)));
  absl::Status status = server->MakeSigningCertificate();
  if (!status.ok()) return status;
  absl::StatusOr<std::unique_ptr<TcpServer>> tcp =
      TcpServer::Start([s = server.get()](HttpConnection& connection) { s->Serve(connection); });
  if (!tcp.ok()) return tcp.status();
  server->server_ = *std::move(tcp);
  return server;
}

TokenServer::~TokenServer() {
  server_.reset();
  EVP_PKEY_free(key_);
}

std::string TokenServer::realm() const {
  return absl::StrCat("http://", server_->host(), "/token");
}

int TokenServer::tokens_issued() const {
  absl::MutexLock lock(&mu_);
  return tokens_issued_;
}

std::vector<std::string> TokenServer::requested_scopes() const {
  absl::MutexLock lock(&mu_);
  return requested_scopes_;
}

absl::Status TokenServer::MakeSigningCertificate() {
  key_ = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_NAME* name = cert == nullptr ? nullptr : X509_get_subject_name(cert);
  const auto* common_name = reinterpret_cast<const unsigned char*>("elfdeploy test token signer");
  unsigned char* der = nullptr;
  int der_length = 0;
  if (key_ != nullptr && cert != nullptr && X509_set_version(cert, X509_VERSION_3) == 1 &&
      ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) == 1 &&
      X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != nullptr &&
      X509_gmtime_adj(X509_getm_notAfter(cert), 7 * 24 * 3600) != nullptr &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, common_name, -1, -1, 0) == 1 &&
      X509_set_issuer_name(cert, name) == 1 && X509_set_pubkey(cert, key_) == 1 &&
      X509_sign(cert, key_, EVP_sha256()) > 0) {
    der_length = i2d_X509(cert, &der);
  }
  X509_free(cert);
  if (der_length <= 0) return absl::InternalError("cannot make the token signing certificate");
  cert_der_.assign(reinterpret_cast<char*>(der), static_cast<size_t>(der_length));
  OPENSSL_free(der);
  std::string base64 = absl::Base64Escape(cert_der_);
  std::string pem = "-----BEGIN CERTIFICATE-----\n";
  for (size_t i = 0; i < base64.size(); i += 64) absl::StrAppend(&pem, base64.substr(i, 64), "\n");
  absl::StrAppend(&pem, "-----END CERTIFICATE-----\n");
  return WriteFile(cert_file(), pem);
}

absl::StatusOr<std::string> TokenServer::Sign(absl::string_view input) const {
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  std::string der(128, '\0');
  size_t length = der.size();
  const bool signed_ok =
      context != nullptr &&
      EVP_DigestSignInit(context, nullptr, EVP_sha256(), nullptr, key_) == 1 &&
      EVP_DigestSign(context, reinterpret_cast<unsigned char*>(der.data()), &length,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  EVP_MD_CTX_free(context);
  const auto* cursor = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* signature =
      signed_ok ? d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(length)) : nullptr;
  if (signature == nullptr) return absl::InternalError("ES256 signing failed");
  std::string raw(64, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  BN_bn2binpad(ECDSA_SIG_get0_r(signature), out, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(signature), out + 32, 32);
  ECDSA_SIG_free(signature);
  return raw;
}

void TokenServer::Serve(HttpConnection& connection) {
  while (true) {
    absl::StatusOr<HttpMessage> request = connection.ReadRequest();
    if (!request.ok() || !connection.Write(Handle(*request).Serialize()).ok()) return;
  }
}

HttpMessage TokenServer::Handle(const HttpMessage& request) {
  std::pair<std::string, std::string> target =
      absl::StrSplit(request.Target(), absl::MaxSplits('?', 1));
  if (request.Method() != "GET" || target.first != "/token") {
    return JsonError(404, "NOT_FOUND", "only GET /token is served");
  }
  std::string service;
  std::vector<std::string> scopes;
  for (absl::string_view parameter : absl::StrSplit(target.second, '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> pair = absl::StrSplit(parameter, absl::MaxSplits('=', 1));
    std::string value = UrlDecode(pair.second);
    if (pair.first == "service") service = value;
    if (pair.first != "scope") continue;
    for (absl::string_view scope : absl::StrSplit(value, ' ', absl::SkipEmpty())) {
      scopes.emplace_back(scope);
    }
  }
  {
    absl::MutexLock lock(&mu_);
    requested_scopes_.insert(requested_scopes_.end(), scopes.begin(), scopes.end());
  }
  if (service != options_.service) return JsonError(400, "UNSUPPORTED", "unknown service");

  std::string subject;
  std::vector<std::string> allowed;
  const std::string authorization = request.Header("Authorization");
  if (absl::StartsWithIgnoreCase(authorization, "Basic ")) {
    std::string credentials;
    absl::Base64Unescape(authorization.substr(6), &credentials);
    auto user = std::find_if(options_.users.begin(), options_.users.end(), [&](const TokenUser& u) {
      return credentials == absl::StrCat(u.username, ":", u.password);
    });
    if (user == options_.users.end()) return JsonError(401, "UNAUTHORIZED", "wrong credentials");
    subject = user->username;
    allowed = user->actions;
  } else if (options_.allow_anonymous_pull) {
    allowed = {"pull"};
  } else {
    return JsonError(401, "UNAUTHORIZED", "credentials required");
  }

  nlohmann::json access = nlohmann::json::array();
  for (const std::string& scope : scopes) {
    const size_t first = scope.find(':');
    const size_t last = scope.rfind(':');
    if (first == last) return JsonError(400, "INVALID_SCOPE", "malformed scope " + scope);
    std::vector<std::string> granted;
    for (absl::string_view action : absl::StrSplit(scope.substr(last + 1), ',')) {
      if (std::find(allowed.begin(), allowed.end(), action) != allowed.end() &&
          std::find(granted.begin(), granted.end(), action) == granted.end()) {
        granted.emplace_back(action);
      }
    }
    access.push_back({{"type", scope.substr(0, first)},
                      {"name", scope.substr(first + 1, last - first - 1)},
                      {"actions", granted}});
  }
  const absl::Time now = absl::Now();
  const int64_t issued_at = absl::ToUnixSeconds(now);
  const int64_t lifetime = absl::ToInt64Seconds(options_.token_lifetime);
  unsigned char id[16];
  RAND_bytes(id, sizeof(id));
  const nlohmann::json header = {{"typ", "JWT"},
                                 {"alg", "ES256"},
                                 {"x5c", nlohmann::json::array({absl::Base64Escape(cert_der_)})}};
  const nlohmann::json claims = {
      {"iss", options_.issuer},
      {"sub", subject},
      {"aud", options_.service},
      {"exp", issued_at + lifetime},
      {"nbf", issued_at},
      {"iat", issued_at},
      {"jti", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(id), sizeof(id)))},
      {"access", access}};
  const std::string input = absl::StrCat(absl::WebSafeBase64Escape(header.dump()), ".",
                                         absl::WebSafeBase64Escape(claims.dump()));
  absl::StatusOr<std::string> signature = Sign(input);
  if (!signature.ok()) return JsonError(500, "INTERNAL", signature.status().ToString());
  const std::string token = absl::StrCat(input, ".", absl::WebSafeBase64Escape(*signature));
  {
    absl::MutexLock lock(&mu_);
    ++tokens_issued_;
  }
  const nlohmann::json body = {
      {"token", token},
      {"access_token", token},
      {"expires_in", lifetime},
      {"issued_at", absl::FormatTime(absl::RFC3339_sec, now, absl::UTCTimeZone())}};
  return MakeResponse(200, body.dump(), {{"Content-Type", "application/json"}});
}

}  // namespace elfdeploy::testing
