#include "tests/harness/fault_proxy.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/http_client.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/net.h"
#include "tests/harness/peers.h"

namespace elfdeploy::testing {
namespace {

std::string Sha256Digest(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), md, &length, EVP_sha256(), nullptr);
  return absl::StrCat(
      "sha256:", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), length)));
}

std::string MakeBlob(size_t size) {
  std::string blob = absl::StrCat("fault proxy blob ", absl::ToUnixNanos(absl::Now()), "\n");
  while (blob.size() < size) blob.push_back(static_cast<char>(blob.size() * 131 % 256));
  return blob;
}

HttpRequest Request(std::string method, std::string url, std::string body = "") {
  HttpRequest request;
  request.method = std::move(method);
  request.url = std::move(url);
  request.body = std::move(body);
  request.headers = {{"Content-Type", "application/octet-stream"}};
  return request;
}

class FaultProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
    absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
        FaultProxy::Start("127.0.0.1", registry_->port());
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = *std::move(proxy);
  }

  std::string Url(absl::string_view path) const {
    return absl::StrCat("http://", proxy_->host(), path);
  }

  // Pushes `blob` to test/app through the proxy with a monolithic upload; returns its digest.
  std::string PushBlob(HttpClient& client, const std::string& blob) {
    const std::string digest = Sha256Digest(blob);
    absl::StatusOr<HttpResponse> started =
        client.Do(Request("POST", Url("/v2/test/app/blobs/uploads/")));
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return digest;
    EXPECT_EQ(started->status, 202) << started->body;
    const std::string location = started->Header("location");
    EXPECT_TRUE(absl::StartsWith(location, Url("/v2/test/app/blobs/uploads/"))) << location;
    absl::StatusOr<HttpResponse> finished =
        client.Do(Request("PUT", absl::StrCat(location, "&digest=", digest), blob));
    EXPECT_TRUE(finished.ok()) << finished.status();
    if (finished.ok()) {
      EXPECT_EQ(finished->status, 201) << finished->body;
    }
    return digest;
  }

  std::unique_ptr<RegistryFixture> registry_;
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(FaultProxyTest, ForwardsRequestsAndRewritesUploadLocations) {
  EXPECT_EQ(proxy_->host(), absl::StrCat("127.0.0.1:", proxy_->port()));
  HttpClient client;
  absl::StatusOr<HttpResponse> base = client.Get(Url("/v2/"));
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->status, 200);
  EXPECT_EQ(base->Header("docker-distribution-api-version"), "registry/2.0");

  const std::string blob = MakeBlob(100000);
  const std::string digest = PushBlob(client, blob);
  const std::string blob_url = Url("/v2/test/app/blobs/" + digest);
  absl::StatusOr<HttpResponse> head = client.Do(Request("HEAD", blob_url));
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("content-length"), std::to_string(blob.size()));
  EXPECT_EQ(head->body, "");
  absl::StatusOr<HttpResponse> get = client.Get(blob_url);
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->status, 200);
  EXPECT_TRUE(get->body == blob) << "read back " << get->body.size() << " bytes";

  std::vector<ProxyLogEntry> log = proxy_->Log();
  ASSERT_EQ(log.size(), 5u);
  const std::vector<std::pair<std::string, int>> expected = {
      {"GET", 200}, {"POST", 202}, {"PUT", 201}, {"HEAD", 200}, {"GET", 200}};
  for (size_t i = 0; i < log.size(); ++i) {
    EXPECT_EQ(log[i].method, expected[i].first) << i;
    EXPECT_EQ(log[i].status, expected[i].second) << i;
  }
  EXPECT_EQ(log[0].path, "/v2/");
  EXPECT_EQ(log[1].path, "/v2/test/app/blobs/uploads/");
  EXPECT_EQ(log[4].path, "/v2/test/app/blobs/" + digest);
  EXPECT_EQ(proxy_->requests_seen(), 5);
  EXPECT_EQ(proxy_->faults_injected(), 0);
}

TEST_F(FaultProxyTest, KeepsClientConnectionsAliveAndForwardsChunkedBodies) {
  absl::StatusOr<std::unique_ptr<HttpConnection>> connection =
      ConnectTcp("127.0.0.1", proxy_->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  HttpConnection& wire = **connection;
  auto exchange = [&](const std::string& method, const std::string& target,
                      std::vector<std::pair<std::string, std::string>> headers,
                      std::string body) -> HttpMessage {
    HttpMessage request{.start_line = absl::StrCat(method, " ", target, " HTTP/1.1"),
                        .headers = std::move(headers),
                        .body = std::move(body)};
    request.SetHeader("Host", proxy_->host());
    EXPECT_TRUE(wire.Write(request.Serialize()).ok());
    absl::StatusOr<HttpMessage> response = wire.ReadResponse(method);
    EXPECT_TRUE(response.ok()) << method << " " << target << ": " << response.status();
    return response.value_or(HttpMessage{});
  };

  HttpMessage started =
      exchange("POST", "/v2/test/app/blobs/uploads/", {{"Content-Length", "0"}}, "");
  ASSERT_EQ(started.Status(), 202) << started.Serialize();
  std::string location = started.Header("Location");
  ASSERT_TRUE(absl::StartsWith(location, Url("/"))) << location;
  location = location.substr(Url("").size());

  const std::string blob = MakeBlob(5000);
  const std::string chunked =
      absl::StrCat("7d0\r\n", blob.substr(0, 2000), "\r\n", absl::Hex(blob.size() - 2000),
                   ";ext=1\r\n", blob.substr(2000), "\r\n0\r\n\r\n");
  HttpMessage patched = exchange(
      "PATCH", location,
      {{"Transfer-Encoding", "chunked"}, {"Content-Type", "application/octet-stream"}}, chunked);
  ASSERT_EQ(patched.Status(), 202) << patched.Serialize();
  EXPECT_EQ(patched.Header("Range"), absl::StrCat("0-", blob.size() - 1));
  location = patched.Header("Location").substr(Url("").size());

  const std::string digest = Sha256Digest(blob);
  HttpMessage finished =
      exchange("PUT", absl::StrCat(location, "&digest=", digest), {{"Content-Length", "0"}}, "");
  ASSERT_EQ(finished.Status(), 201) << finished.Serialize();
  HttpMessage head = exchange("HEAD", "/v2/test/app/blobs/" + digest, {}, "");
  EXPECT_EQ(head.Status(), 200);
  EXPECT_EQ(head.Header("Content-Length"), std::to_string(blob.size()));
  HttpMessage get = exchange("GET", "/v2/test/app/blobs/" + digest, {{"Connection", "close"}}, "");
  EXPECT_EQ(get.Status(), 200);
  EXPECT_TRUE(get.body == blob);
  EXPECT_EQ(wire.ReadResponse("GET").status().code(), absl::StatusCode::kOutOfRange)
      << "the proxy must close after Connection: close";
  EXPECT_EQ(proxy_->requests_seen(), 5);
}

TEST_F(FaultProxyTest, ResetFailsARequestOnAFreshConnection) {
  proxy_->AddFault({.kind = FaultKind::kReset, .path_contains = "/v2/"});
  HttpClient client;
  absl::StatusOr<HttpResponse> reset = client.Get(Url("/v2/"));
  ASSERT_FALSE(reset.ok()) << "HTTP " << reset->status;
  EXPECT_EQ(reset.status().code(), absl::StatusCode::kUnavailable) << reset.status();
  ASSERT_EQ(proxy_->Log().size(), 1u);
  EXPECT_EQ(proxy_->Log()[0].status, 0);

  absl::StatusOr<HttpResponse> next = client.Get(Url("/v2/"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);

  proxy_->AddFault({.kind = FaultKind::kReset});
  absl::StatusOr<HttpResponse> retried = client.Get(Url("/v2/"));
  ASSERT_TRUE(retried.ok()) << "libcurl retries a reset reused connection: " << retried.status();
  EXPECT_EQ(retried->status, 200);
  EXPECT_EQ(proxy_->requests_seen(), 4);
  EXPECT_EQ(proxy_->faults_injected(), 2);
}

TEST_F(FaultProxyTest, StatusFaultsApplyToMatchingRequestsOnly) {
  proxy_->AddFault({.kind = FaultKind::kStatus,
                    .method = "GET",
                    .path_contains = "/tags/list",
                    .count = 2,
                    .status = 503});
  proxy_->AddFault({.kind = FaultKind::kStatus, .method = "POST", .status = 500});
  HttpClient client;
  auto status_of = [&](const std::string& method, const std::string& path) -> long {
    absl::StatusOr<HttpResponse> response = client.Do(Request(method, Url(path)));
    EXPECT_TRUE(response.ok()) << response.status();
    if (response.ok() && response->status >= 500) {
      EXPECT_TRUE(absl::StrContains(response->body, "fault injected")) << response->body;
    }
    return response.ok() ? response->status : 0;
  };
  EXPECT_EQ(status_of("GET", "/v2/"), 200);
  EXPECT_EQ(status_of("GET", "/v2/test/app/tags/list"), 503);
  EXPECT_EQ(status_of("GET", "/v2/test/app/tags/list"), 503);
  EXPECT_EQ(status_of("GET", "/v2/test/app/tags/list"), 404);
  EXPECT_EQ(status_of("POST", "/v2/test/app/blobs/uploads/"), 500);
  EXPECT_EQ(status_of("POST", "/v2/test/app/blobs/uploads/"), 202);
  EXPECT_EQ(proxy_->requests_seen(), 6);
  EXPECT_EQ(proxy_->faults_injected(), 3);
  EXPECT_EQ(proxy_->Log()[4].status, 500);
}

TEST_F(FaultProxyTest, TooManyRequestsCarriesRetryAfter) {
  proxy_->AddFault({.kind = FaultKind::kTooManyRequests, .retry_after_seconds = 7});
  HttpClient client;
  absl::StatusOr<HttpResponse> limited = client.Get(Url("/v2/"));
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_EQ(limited->status, 429);
  EXPECT_EQ(limited->Header("retry-after"), "7");
  absl::StatusOr<HttpResponse> next = client.Get(Url("/v2/"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(proxy_->faults_injected(), 1);
}

TEST_F(FaultProxyTest, ResetMidResponseIsAShortRead) {
  HttpClient client;
  const std::string blob = MakeBlob(200000);
  const std::string blob_url = Url("/v2/test/app/blobs/" + PushBlob(client, blob));
  proxy_->AddFault(
      {.kind = FaultKind::kResetMidResponse, .method = "GET", .path_contains = "/blobs/sha256:"});
  absl::StatusOr<HttpResponse> cut = client.Get(blob_url);
  ASSERT_FALSE(cut.ok()) << "HTTP " << cut->status << ", " << cut->body.size() << " bytes";
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kUnavailable) << cut.status();
  EXPECT_EQ(proxy_->Log().back().status, 200);

  absl::StatusOr<HttpResponse> whole = client.Get(blob_url);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_TRUE(whole->body == blob);
  EXPECT_EQ(proxy_->faults_injected(), 1);
}

TEST_F(FaultProxyTest, DelayPostponesTheForwardedResponse) {
  proxy_->AddFault({.kind = FaultKind::kDelay, .delay = absl::Milliseconds(600)});
  HttpClient client;
  const absl::Time start = absl::Now();
  absl::StatusOr<HttpResponse> delayed = client.Get(Url("/v2/"));
  ASSERT_TRUE(delayed.ok()) << delayed.status();
  EXPECT_EQ(delayed->status, 200);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(600));
  EXPECT_EQ(proxy_->faults_injected(), 1);
}

TEST_F(FaultProxyTest, ClearFaultsDropsQueuedRules) {
  proxy_->AddFault({.kind = FaultKind::kStatus, .count = 5});
  proxy_->ClearFaults();
  HttpClient client;
  absl::StatusOr<HttpResponse> response = client.Get(Url("/v2/"));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(proxy_->faults_injected(), 0);
}

TEST(FaultProxyUpstreamTest, UnreachableUpstreamIsBadGateway) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy = FaultProxy::Start("127.0.0.1", *port);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  HttpClient client;
  absl::StatusOr<HttpResponse> response = client.Get("http://" + (*proxy)->host() + "/v2/");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 502);
  EXPECT_EQ((*proxy)->Log().back().status, 502);
}

}  // namespace
}  // namespace elfdeploy::testing
