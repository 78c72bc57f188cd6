#include "tests/harness/token_server.h"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "services/common/http_client.h"
#include "tests/harness/peers.h"

namespace elfdeploy::testing {
namespace {

using nlohmann::json;

constexpr char kScope[] = "repository:test/app:pull,push";

std::string Sha256Digest(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), md, &length, EVP_sha256(), nullptr);
  return absl::StrCat(
      "sha256:", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), length)));
}

std::string Encode(absl::string_view value) {
  return absl::StrReplaceAll(value, {{":", "%3A"}, {"/", "%2F"}, {",", "%2C"}, {" ", "+"}});
}

// GET realm?service=...&scope=... (scopes URL-encoded), with basic auth unless `username` is "".
absl::StatusOr<HttpResponse> FetchToken(HttpClient& client, const std::string& realm,
                                        const std::string& service,
                                        const std::vector<std::string>& scopes,
                                        const std::string& username = "",
                                        const std::string& password = "") {
  HttpRequest request;
  request.url = absl::StrCat(realm, "?service=", Encode(service));
  request.username = username;
  request.password = password;
  for (const std::string& scope : scopes) absl::StrAppend(&request.url, "&scope=", Encode(scope));
  return client.Do(request);
}

// The token of a successful token response; "" (and a test failure) otherwise.
std::string TokenOf(const absl::StatusOr<HttpResponse>& response) {
  EXPECT_TRUE(response.ok()) << response.status();
  if (!response.ok()) return "";
  EXPECT_EQ(response->status, 200) << response->body;
  json body = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(body.is_object()) << response->body;
  return body.is_object() ? body.value("token", "") : "";
}

// Part `index` (0: header, 1: claims) of a JWT, decoded.
json JwtPart(const std::string& token, int index) {
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  std::string decoded;
  if (parts.size() != 3 || !absl::WebSafeBase64Unescape(parts[index], &decoded)) return json();
  return json::parse(decoded, nullptr, /*allow_exceptions=*/false);
}

HttpRequest Bearer(std::string method, std::string url, const std::string& token,
                   std::string body = "") {
  HttpRequest request;
  request.method = std::move(method);
  request.url = std::move(url);
  request.headers = {{"Authorization", "Bearer " + token},
                     {"Content-Type", "application/octet-stream"}};
  request.body = std::move(body);
  return request;
}

// Starts an upload to test/app; the response to the POST.
HttpResponse StartUpload(HttpClient& client, const RegistryFixture& registry,
                         const std::string& token) {
  absl::StatusOr<HttpResponse> started =
      client.Do(Bearer("POST", registry.base_url() + "/v2/test/app/blobs/uploads/", token));
  EXPECT_TRUE(started.ok()) << started.status();
  return started.value_or(HttpResponse{});
}

// Pushes `blob` to test/app with `token`; returns its digest.
std::string PushBlob(HttpClient& client, const RegistryFixture& registry, const std::string& token,
                     const std::string& blob) {
  const std::string digest = Sha256Digest(blob);
  HttpResponse started = StartUpload(client, registry, token);
  EXPECT_EQ(started.status, 202) << started.body;
  absl::StatusOr<HttpResponse> finished = client.Do(
      Bearer("PUT", absl::StrCat(started.Header("location"), "&digest=", digest), token, blob));
  EXPECT_TRUE(finished.ok()) << finished.status();
  if (finished.ok()) {
    EXPECT_EQ(finished->status, 201) << finished->body;
  }
  return digest;
}

TEST(RegistryTokenAuthTest, RegistryAcceptsTokensForGrantedScopesOnly) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> started =
      RegistryFixture::Start({.token_auth = true});
  ASSERT_TRUE(started.ok()) << started.status();
  const RegistryFixture& registry = **started;
  const TokenServer& tokens = *registry.token_server();
  const std::string realm = registry.token_realm();
  const std::string service = tokens.options().service;
  EXPECT_EQ(realm, absl::StrCat("http://127.0.0.1:", tokens.port(), "/token"));
  HttpClient client;

  absl::StatusOr<HttpResponse> challenge = client.Get(registry.base_url() + "/v2/");
  ASSERT_TRUE(challenge.ok()) << challenge.status();
  EXPECT_EQ(challenge->status, 401);
  EXPECT_EQ(challenge->Header("www-authenticate"),
            absl::StrCat("Bearer realm=\"", realm, "\",service=\"", service, "\""));
  HttpResponse anonymous_upload = StartUpload(client, registry, "");
  EXPECT_EQ(anonymous_upload.status, 401);
  const std::string upload_challenge = anonymous_upload.Header("www-authenticate");
  EXPECT_TRUE(absl::StrContains(upload_challenge, "scope=\"repository:test/app:push,pull\"") ||
              absl::StrContains(upload_challenge, absl::StrCat("scope=\"", kScope, "\"")))
      << upload_challenge;

  absl::StatusOr<HttpResponse> issued =
      FetchToken(client, realm, service, {kScope}, registry.username(), registry.password());
  const std::string token = TokenOf(issued);
  ASSERT_FALSE(token.empty());
  json body = json::parse(issued->body);
  EXPECT_EQ(body["access_token"], token);
  EXPECT_EQ(body["expires_in"], 300);
  EXPECT_FALSE(body.value("issued_at", "").empty());
  json header = JwtPart(token, 0);
  EXPECT_EQ(header["alg"], "ES256");
  std::string pem = ReadFile(tokens.cert_file()).value_or("");
  ASSERT_EQ(header["x5c"].size(), 1u);
  EXPECT_TRUE(absl::StrContains(absl::StrReplaceAll(pem, {{"\n", ""}}),
                                header["x5c"][0].get<std::string>()));
  json claims = JwtPart(token, 1);
  EXPECT_EQ(claims["iss"], tokens.options().issuer);
  EXPECT_EQ(claims["sub"], registry.username());
  EXPECT_EQ(claims["aud"], service);
  EXPECT_EQ(claims["exp"].get<int64_t>() - claims["iat"].get<int64_t>(), 300);
  EXPECT_EQ(claims["access"],
            json::parse(R"([{"type":"repository","name":"test/app","actions":["pull","push"]}])"));

  absl::StatusOr<HttpResponse> base = client.Do(Bearer("GET", registry.base_url() + "/v2/", token));
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->status, 200);
  const std::string blob = "token-auth blob " + std::to_string(absl::ToUnixNanos(absl::Now()));
  const std::string blob_url = absl::StrCat(registry.base_url(), "/v2/test/app/blobs/",
                                            PushBlob(client, registry, token, blob));

  const std::string reader_token =
      TokenOf(FetchToken(client, realm, service, {kScope}, registry.pull_only_username(),
                         registry.pull_only_password()));
  EXPECT_EQ(JwtPart(reader_token, 1)["access"][0]["actions"], json::array({"pull"}));
  absl::StatusOr<HttpResponse> pulled = client.Do(Bearer("GET", blob_url, reader_token));
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->status, 200);
  EXPECT_EQ(pulled->body, blob);
  HttpResponse denied = StartUpload(client, registry, reader_token);
  EXPECT_TRUE(denied.status == 401 || denied.status == 403) << denied.status;
  EXPECT_TRUE(absl::StrContains(denied.Header("www-authenticate"), "error=\"insufficient_scope\""))
      << denied.Header("www-authenticate");

  absl::StatusOr<HttpResponse> wrong =
      FetchToken(client, realm, service, {kScope}, registry.username(), "wrong");
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ(wrong->status, 401);
  EXPECT_TRUE(absl::StartsWith(wrong->Header("www-authenticate"), "Basic "));
  absl::StatusOr<HttpResponse> anonymous = FetchToken(client, realm, service, {kScope});
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->status, 401);

  EXPECT_EQ(tokens.tokens_issued(), 2);
  EXPECT_EQ(tokens.requested_scopes(), std::vector<std::string>(4, kScope));
}

TEST(RegistryTokenAuthTest, AnonymousPullWithTls) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> started =
      RegistryFixture::Start({.tls = true, .token_auth = true, .anonymous_pull = true});
  ASSERT_TRUE(started.ok()) << started.status();
  const RegistryFixture& registry = **started;
  const std::string service = registry.token_server()->options().service;
  HttpClientOptions options;
  options.ca_file = registry.ca_file();
  HttpClient client(options);
  const std::string writer = TokenOf(FetchToken(client, registry.token_realm(), service, {kScope},
                                                registry.username(), registry.password()));
  const std::string blob = "anonymous pull blob";
  const std::string blob_url = absl::StrCat(registry.base_url(), "/v2/test/app/blobs/",
                                            PushBlob(client, registry, writer, blob));

  const std::string anonymous =
      TokenOf(FetchToken(client, registry.token_realm(), service, {kScope}));
  json claims = JwtPart(anonymous, 1);
  EXPECT_EQ(claims["sub"], "");
  EXPECT_EQ(claims["access"][0]["actions"], json::array({"pull"}));
  absl::StatusOr<HttpResponse> pulled = client.Do(Bearer("GET", blob_url, anonymous));
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->status, 200);
  EXPECT_EQ(pulled->body, blob);
  HttpResponse denied = StartUpload(client, registry, anonymous);
  EXPECT_TRUE(denied.status == 401 || denied.status == 403) << denied.status;
  EXPECT_TRUE(absl::StrContains(denied.Header("www-authenticate"), "insufficient_scope"));
}

TEST(RegistryTokenAuthTest, HtpasswdAndTokenAuthExcludeEachOther) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry =
      RegistryFixture::Start({.htpasswd = true, .token_auth = true});
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenServerTest, GrantsRequestedActionsPerScope) {
  absl::StatusOr<std::unique_ptr<TokenServer>> server = TokenServer::Start(
      {.service = "svc", .issuer = "iss", .users = {{"ann", "pw", {"pull", "push"}}}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string realm = (*server)->realm();
  HttpClient client;
  const std::string token =
      TokenOf(FetchToken(client, realm, "svc",
                         {"repository:a:pull", "repository:localhost:5000/b:push,pull,delete",
                          "registry:catalog:* repository:c:push"},
                         "ann", "pw"));
  json claims = JwtPart(token, 1);
  EXPECT_EQ(claims["iss"], "iss");
  EXPECT_EQ(claims["aud"], "svc");
  EXPECT_EQ(claims["sub"], "ann");
  EXPECT_EQ(claims["exp"].get<int64_t>() - claims["nbf"].get<int64_t>(), 300);
  EXPECT_EQ(claims["jti"].get<std::string>().size(), 32u);
  EXPECT_EQ(claims["access"], json::parse(R"([
      {"type": "repository", "name": "a", "actions": ["pull"]},
      {"type": "repository", "name": "localhost:5000/b", "actions": ["push", "pull"]},
      {"type": "registry", "name": "catalog", "actions": []},
      {"type": "repository", "name": "c", "actions": ["push"]}])"));
  EXPECT_NE(JwtPart(TokenOf(FetchToken(client, realm, "svc", {"repository:a:pull"}, "ann", "pw")),
                    1)["jti"],
            claims["jti"]);

  absl::StatusOr<HttpResponse> other_service =
      FetchToken(client, realm, "other", {"repository:a:pull"}, "ann", "pw");
  ASSERT_TRUE(other_service.ok()) << other_service.status();
  EXPECT_EQ(other_service->status, 400);
  absl::StatusOr<HttpResponse> other_path = client.Get(absl::StrCat(realm, "x"));
  ASSERT_TRUE(other_path.ok()) << other_path.status();
  EXPECT_EQ(other_path->status, 404);
  EXPECT_EQ((*server)->tokens_issued(), 2);
  EXPECT_EQ((*server)->requested_scopes().size(), 6u);
}

}  // namespace
}  // namespace elfdeploy::testing
