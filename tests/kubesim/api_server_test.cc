#include "tests/kubesim/api_server.h"

#include <curl/curl.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::kubesim {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

// A guard against hangs only: nothing below asserts on time.
constexpr absl::Duration kGuard = absl::Seconds(60);

struct Reply {
  long status = 0;
  std::string body;
  json Json() const { return json::parse(body, nullptr, false); }
};

// A streaming GET read line by line from the test's thread (libcurl's multi interface).
class Stream {
 public:
  Stream(const std::string& url, const std::vector<std::string>& headers,
         const std::string& ca_file) {
    easy_ = curl_easy_init();
    multi_ = curl_multi_init();
    curl_easy_setopt(easy_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, &Stream::OnData);
    curl_easy_setopt(easy_, CURLOPT_WRITEDATA, this);
    if (!ca_file.empty()) curl_easy_setopt(easy_, CURLOPT_CAINFO, ca_file.c_str());
    for (const std::string& header : headers) list_ = curl_slist_append(list_, header.c_str());
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, list_);
    curl_multi_add_handle(multi_, easy_);
  }
  ~Stream() {
    curl_multi_remove_handle(multi_, easy_);
    curl_easy_cleanup(easy_);
    curl_multi_cleanup(multi_);
    curl_slist_free_all(list_);
  }

  // Pumps until the response's status is known; 0 when the transfer failed first.
  long WaitForStatus() {
    absl::Time deadline = absl::Now() + kGuard;
    while (Status() == 0 && !finished_ && absl::Now() < deadline) Pump();
    return Status();
  }
  long Status() const {
    long code = 0;
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &code);
    return code;
  }
  // The next line (without '\n'), or nullopt when the stream ended (or the guard ran out).
  std::optional<std::string> NextLine() {
    absl::Time deadline = absl::Now() + kGuard;
    while (true) {
      size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      if (finished_ || absl::Now() >= deadline) return std::nullopt;
      Pump();
    }
  }
  std::optional<json> NextEvent() {
    std::optional<std::string> line = NextLine();
    if (!line.has_value()) return std::nullopt;
    return json::parse(*line, nullptr, false);
  }
  // Reads to the end; the rest of the body.
  std::string ReadAll() {
    absl::Time deadline = absl::Now() + kGuard;
    while (!finished_ && absl::Now() < deadline) Pump();
    return std::move(buffer_);
  }
  bool finished() const { return finished_; }
  CURLcode result() const { return result_; }

 private:
  static size_t OnData(char* data, size_t size, size_t n, void* self) {
    static_cast<Stream*>(self)->buffer_.append(data, size * n);
    return size * n;
  }
  // Lets curl make progress; waits (up to 100 ms) for the sockets only when it made none.
  void Pump() {
    size_t before = buffer_.size();
    long status_before = Status();
    int running = 0;
    curl_multi_perform(multi_, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg == CURLMSG_DONE) {
        finished_ = true;
        result_ = msg->data.result;
      }
    }
    if (!finished_ && buffer_.size() == before && Status() == status_before) {
      curl_multi_poll(multi_, nullptr, 0, 100, nullptr);
    }
  }

  CURL* easy_ = nullptr;
  CURLM* multi_ = nullptr;
  curl_slist* list_ = nullptr;
  std::string buffer_;
  bool finished_ = false;
  CURLcode result_ = CURLE_OK;
};

class ApiServerTest : public ::testing::Test {
 protected:
  void Start(ObjectStoreOptions store_options = {}, ApiServerOptions options = {}) {
    store_ = std::make_unique<ObjectStore>(store_options);
    absl::StatusOr<std::unique_ptr<ApiServer>> server = ApiServer::Start(store_.get(), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    HttpClientOptions client_options;
    client_options.ca_file = ca_file_;
    client_ = std::make_unique<HttpClient>(client_options);
  }
  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Stop();
  }

  Reply Call(const std::string& method, const std::string& path, const std::string& body = "",
             const std::string& content_type = "application/json") {
    HttpRequest request;
    request.method = method;
    request.url = server_->base_url() + path;
    request.body = body;
    if (!body.empty()) request.headers.emplace_back("Content-Type", content_type);
    if (!token_.empty()) request.headers.emplace_back("Authorization", "Bearer " + token_);
    absl::StatusOr<HttpResponse> response = client_->Do(request);
    EXPECT_TRUE(response.ok()) << method << " " << path << ": " << response.status();
    if (!response.ok()) return {};
    return {response->status, response->body};
  }
  Reply Get(const std::string& path) { return Call("GET", path); }

  std::unique_ptr<Stream> Open(const std::string& path) {
    std::vector<std::string> headers;
    if (!token_.empty()) headers.push_back("Authorization: Bearer " + token_);
    return std::make_unique<Stream>(server_->base_url() + path, headers, ca_file_);
  }

  void CreatePod(const std::string& name, json labels = json::object(),
                 const std::string& ns = "default") {
    json pod = {{"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
                {"spec", {{"containers", {{{"name", "app"}, {"image", "busybox"}}}}}}};
    absl::StatusOr<ObjectPtr> created = store_->Create("pods", pod);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  std::unique_ptr<ObjectStore> store_;
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<HttpClient> client_;
  std::string ca_file_;
  std::string token_;
};

std::vector<std::string> ItemNames(const json& list) {
  std::vector<std::string> names;
  for (const json& item : list["items"]) names.push_back(item["metadata"]["name"]);
  return names;
}

TEST_F(ApiServerTest, VersionHealthAndUnknownPaths) {
  Start();
  Reply version = Get("/version");
  EXPECT_EQ(version.status, 200);
  EXPECT_EQ(version.Json()["major"], "1");
  EXPECT_EQ(Get("/healthz").body, "ok");
  for (const char* path :
       {"/nope", "/api/v1/widgets", "/apis/apps/v1/namespaces/default/pods",
        "/api/v1/pods/name-without-namespace", "/api/v1/namespaces/default/pods/p/exec"}) {
    Reply reply = Get(path);
    EXPECT_EQ(reply.status, 404) << path;
    json status = reply.Json();
    EXPECT_EQ(status["kind"], "Status") << path;
    EXPECT_EQ(status["apiVersion"], "v1");
    EXPECT_EQ(status["status"], "Failure");
    EXPECT_EQ(status["reason"], "NotFound");
    EXPECT_EQ(status["code"], 404);
  }
  Reply missing = Get("/api/v1/namespaces/default/pods/ghost");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.Json()["message"], "pods \"ghost\" not found");
  EXPECT_EQ(Get("/apis/apps/v1").Json()["resources"][0]["name"], "deployments");
}

TEST_F(ApiServerTest, ListsOfEveryPathForm) {
  Start();
  ASSERT_TRUE(store_->Create("namespaces", {{"metadata", {{"name", "argocd"}}}}).ok());
  CreatePod("a");
  CreatePod("b", {}, "argocd");
  ASSERT_TRUE(store_
                  ->Create("events", {{"metadata", {{"name", "e"}, {"namespace", "default"}}},
                                      {"reason", "Pulled"}})
                  .ok());
  ASSERT_TRUE(
      store_->Create("deployments", {{"metadata", {{"name", "d"}, {"namespace", "argocd"}}}}).ok());
  ASSERT_TRUE(
      store_->Create("applications", {{"metadata", {{"name", "app"}, {"namespace", "argocd"}}}})
          .ok());
  json pods = Get("/api/v1/namespaces/default/pods").Json();
  EXPECT_EQ(pods["kind"], "PodList");
  EXPECT_EQ(pods["apiVersion"], "v1");
  EXPECT_EQ(pods["metadata"]["resourceVersion"], absl::StrCat(store_->resource_version()));
  EXPECT_THAT(ItemNames(pods), ElementsAre("a"));
  EXPECT_THAT(ItemNames(Get("/api/v1/pods").Json()), ElementsAre("b", "a"));  // argocd < default
  EXPECT_THAT(ItemNames(Get("/api/v1/events").Json()), ElementsAre("e"));
  EXPECT_THAT(ItemNames(Get("/api/v1/namespaces/default/events").Json()), ElementsAre("e"));
  json deployments = Get("/apis/apps/v1/deployments").Json();
  EXPECT_EQ(deployments["kind"], "DeploymentList");
  EXPECT_EQ(deployments["apiVersion"], "apps/v1");
  EXPECT_THAT(ItemNames(Get("/apis/apps/v1/namespaces/argocd/deployments").Json()),
              ElementsAre("d"));
  json apps = Get("/apis/argoproj.io/v1alpha1/namespaces/argocd/applications").Json();
  EXPECT_EQ(apps["kind"], "ApplicationList");
  EXPECT_THAT(ItemNames(apps), ElementsAre("app"));
  EXPECT_THAT(ItemNames(Get("/apis/argoproj.io/v1alpha1/applications").Json()), ElementsAre("app"));
  EXPECT_EQ(Get("/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/app").Json()["kind"],
            "Application");
}

// A writer creates pods while the client lists and then watches from the list's
// resourceVersion: every pod shows up exactly once, either in the list or as an ADDED event.
TEST_F(ApiServerTest, ListThenWatchHandOffHasNoGapAndNoDuplicate) {
  Start();
  constexpr int kPods = 400;
  std::thread writer([this] {
    for (int i = 0; i < kPods; ++i) CreatePod(absl::StrCat("p", i), {{"app", "load"}});
  });
  json list = Get("/api/v1/namespaces/default/pods?labelSelector=app%3Dload").Json();
  std::string rv = list["metadata"]["resourceVersion"];
  std::multiset<std::string> seen;
  for (const json& item : list["items"]) seen.insert(item["metadata"]["name"]);
  auto watch =
      Open(absl::StrCat("/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dload"
                        "&resourceVersion=",
                        rv));
  ASSERT_EQ(watch->WaitForStatus(), 200);
  uint64_t last = std::stoull(rv);
  while (seen.size() < kPods) {
    std::optional<json> event = watch->NextEvent();
    ASSERT_TRUE(event.has_value()) << "stream ended after " << seen.size() << " pods";
    ASSERT_EQ((*event)["type"], "ADDED") << event->dump();
    uint64_t event_rv =
        std::stoull((*event)["object"]["metadata"]["resourceVersion"].get<std::string>());
    EXPECT_GT(event_rv, last);
    last = event_rv;
    seen.insert((*event)["object"]["metadata"]["name"]);
  }
  writer.join();
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size()) << "a pod was delivered twice";
  EXPECT_EQ(unique.size(), static_cast<size_t>(kPods));
}

TEST_F(ApiServerTest, WatchWithoutVersionStartsWithSyntheticAdds) {
  Start();
  CreatePod("existing");
  auto watch = Open("/api/v1/namespaces/default/pods?watch=true");
  std::optional<json> first = watch->NextEvent();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ((*first)["type"], "ADDED");
  EXPECT_EQ((*first)["object"]["metadata"]["name"], "existing");
  ASSERT_TRUE(store_->Delete("pods", "default", "existing").ok());
  std::optional<json> second = watch->NextEvent();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ((*second)["type"], "DELETED");
  EXPECT_EQ((*second)["object"]["metadata"]["resourceVersion"],
            absl::StrCat(store_->resource_version()));
}

TEST_F(ApiServerTest, WatchFromCompactedVersionIsGone) {
  Start({.history_window = 5});
  uint64_t old = store_->resource_version();
  for (int i = 0; i < 10; ++i) CreatePod(absl::StrCat("p", i));
  auto watch = Open(absl::StrCat("/api/v1/namespaces/default/pods?watch=1&resourceVersion=", old));
  EXPECT_EQ(watch->WaitForStatus(), 410);
  json status = json::parse(watch->ReadAll(), nullptr, false);
  EXPECT_EQ(status["kind"], "Status");
  EXPECT_EQ(status["code"], 410);
  EXPECT_EQ(status["reason"], "Expired");
  EXPECT_THAT(status["message"].get<std::string>(), HasSubstr("too old resource version"));

  // The client's recovery: relist, then watch from the new list's version.
  json list = Get("/api/v1/namespaces/default/pods").Json();
  EXPECT_EQ(list["items"].size(), 10u);
  auto again = Open(absl::StrCat("/api/v1/namespaces/default/pods?watch=1&resourceVersion=",
                                 list["metadata"]["resourceVersion"].get<std::string>()));
  EXPECT_EQ(again->WaitForStatus(), 200);
}

// The client stops reading; the server's writes block on the full socket while far more changes
// than the history window happen, so the watch falls behind and ends with an ERROR 410 event.
TEST_F(ApiServerTest, WatcherThatFallsBehindGetsErrorEvent) {
  Start({.history_window = 20});
  auto watch = Open(absl::StrCat("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=",
                                 store_->resource_version()));
  ASSERT_EQ(watch->WaitForStatus(), 200);
  std::string big(256 * 1024, 'x');
  for (int i = 0; i < 200; ++i) {
    json cm = {{"metadata", {{"name", absl::StrCat("c", i)}, {"namespace", "default"}}},
               {"data", {{"blob", big}}}};
    ASSERT_TRUE(store_->Create("configmaps", cm).ok());
  }
  std::optional<json> last;
  int added = 0;
  while (std::optional<json> event = watch->NextEvent()) {
    if ((*event)["type"] == "ADDED") ++added;
    last = event;
  }
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ((*last)["type"], "ERROR") << last->dump().substr(0, 200);
  EXPECT_EQ((*last)["object"]["kind"], "Status");
  EXPECT_EQ((*last)["object"]["code"], 410);
  EXPECT_EQ((*last)["object"]["reason"], "Expired");
  EXPECT_LT(added, 200);
  EXPECT_EQ(watch->result(), CURLE_OK);  // the stream was closed cleanly
}

TEST_F(ApiServerTest, BookmarksWhenAsked) {
  Start({}, {.bookmark_interval = absl::Milliseconds(50)});
  CreatePod("a");
  auto watch = Open(absl::StrCat(
      "/api/v1/namespaces/default/pods?watch=1&allowWatchBookmarks=true&resourceVersion=",
      store_->resource_version()));
  std::optional<json> event = watch->NextEvent();
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ((*event)["type"], "BOOKMARK");
  const json& object = (*event)["object"];
  EXPECT_EQ(object["kind"], "Pod");
  EXPECT_EQ(object["apiVersion"], "v1");
  EXPECT_EQ(object["metadata"],
            json({{"resourceVersion", absl::StrCat(store_->resource_version())}}));
  EXPECT_EQ(object.size(), 3u);

  // Without allowWatchBookmarks there are none: the change is the first line.
  auto plain = Open(absl::StrCat("/api/v1/namespaces/default/pods?watch=1&resourceVersion=",
                                 store_->resource_version()));
  ASSERT_EQ(plain->WaitForStatus(), 200);
  CreatePod("b");
  std::optional<json> change = plain->NextEvent();
  ASSERT_TRUE(change.has_value());
  EXPECT_EQ((*change)["type"], "ADDED");
}

TEST_F(ApiServerTest, TimeoutSecondsEndsTheWatchCleanly) {
  Start();
  auto watch = Open("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1&resourceVersion=1");
  ASSERT_EQ(watch->WaitForStatus(), 200);
  watch->ReadAll();
  EXPECT_TRUE(watch->finished());
  EXPECT_EQ(watch->result(), CURLE_OK);
}

TEST_F(ApiServerTest, PaginationAndExpiredContinue) {
  Start({.history_window = 50});
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(store_
                    ->Create("secrets",
                             {{"metadata",
                               {{"name", absl::StrCat("s", 100 + i)}, {"namespace", "default"}}}})
                    .ok());
    all.push_back(absl::StrCat("s", 100 + i));
  }
  json page = Get("/api/v1/namespaces/default/secrets?limit=10").Json();
  EXPECT_EQ(page["items"].size(), 10u);
  EXPECT_EQ(page["metadata"]["remainingItemCount"], 15);
  std::string rv = page["metadata"]["resourceVersion"];
  // Changes between pages do not show: the pages are one consistent snapshot.
  ASSERT_TRUE(
      store_->Create("secrets", {{"metadata", {{"name", "s999"}, {"namespace", "default"}}}}).ok());
  ASSERT_TRUE(store_->Delete("secrets", "default", "s124").ok());
  std::vector<std::string> names = ItemNames(page);
  while (page["metadata"].contains("continue")) {
    page = Get("/api/v1/namespaces/default/secrets?limit=10&continue=" +
               page["metadata"]["continue"].get<std::string>())
               .Json();
    ASSERT_EQ(page["kind"], "SecretList") << page.dump();
    EXPECT_EQ(page["metadata"]["resourceVersion"], rv);
    for (const std::string& name : ItemNames(page)) names.push_back(name);
  }
  EXPECT_THAT(names, UnorderedElementsAreArray(all));

  // A token older than the history window has expired.
  json first = Get("/api/v1/namespaces/default/secrets?limit=5").Json();
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(store_
                    ->MergePatch("secrets", "default", "s100",
                                 {{"metadata", {{"labels", {{"n", absl::StrCat(i)}}}}}})
                    .ok());
  }
  Reply expired = Get("/api/v1/namespaces/default/secrets?limit=5&continue=" +
                      first["metadata"]["continue"].get<std::string>());
  EXPECT_EQ(expired.status, 410);
  EXPECT_EQ(expired.Json()["reason"], "Expired");
  EXPECT_EQ(expired.Json()["code"], 410);
}

TEST_F(ApiServerTest, LabelAndFieldSelectors) {
  Start();
  CreatePod("web-1", {{"app", "web"}, {"tier", "front"}});
  CreatePod("web-2", {{"app", "web"}});
  CreatePod("db-1", {{"app", "db"}});
  auto names = [&](const std::string& query) {
    return ItemNames(Get("/api/v1/namespaces/default/pods?" + query).Json());
  };
  EXPECT_THAT(names("labelSelector=app%3Dweb"), ElementsAre("web-1", "web-2"));
  EXPECT_THAT(names("labelSelector=app%21%3Dweb"), ElementsAre("db-1"));
  EXPECT_THAT(names("labelSelector=app%20in%20(db%2Cweb)%2C!tier"), ElementsAre("db-1", "web-2"));
  EXPECT_THAT(names("labelSelector=tier"), ElementsAre("web-1"));
  EXPECT_THAT(names("fieldSelector=metadata.name%3Dweb-2"), ElementsAre("web-2"));
  EXPECT_THAT(names("fieldSelector=metadata.namespace%3Ddefault,metadata.name!%3Dweb-2"),
              ElementsAre("db-1", "web-1"));
  Reply bad = Get("/api/v1/namespaces/default/pods?fieldSelector=spec.image%3Dx");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.Json()["reason"], "BadRequest");

  auto watch = Open("/api/v1/namespaces/default/pods?watch=1&fieldSelector=metadata.name%3Ddb-1");
  std::optional<json> initial = watch->NextEvent();
  ASSERT_TRUE(initial.has_value());
  EXPECT_EQ((*initial)["object"]["metadata"]["name"], "db-1");
  CreatePod("db-2");
  ASSERT_TRUE(store_->Delete("pods", "default", "db-1").ok());
  std::optional<json> deleted = watch->NextEvent();
  ASSERT_TRUE(deleted.has_value());
  EXPECT_EQ((*deleted)["type"], "DELETED");
  EXPECT_EQ((*deleted)["object"]["metadata"]["name"], "db-1");
}

TEST_F(ApiServerTest, ApplicationsCreateReplaceAndMergePatch) {
  Start();
  const std::string apps = "/apis/argoproj.io/v1alpha1/namespaces/default/applications";
  json app = {{"apiVersion", "argoproj.io/v1alpha1"},
              {"kind", "Application"},
              {"metadata", {{"name", "team"}}},
              {"spec", {{"project", "default"}, {"source", {{"path", "apps/team"}}}}}};
  Reply created = Call("POST", apps, app.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  json object = created.Json();
  EXPECT_EQ(object["metadata"]["namespace"], "default");
  EXPECT_EQ(object["metadata"]["generation"], 1);
  Reply duplicate = Call("POST", apps, app.dump());
  EXPECT_EQ(duplicate.status, 409);
  EXPECT_EQ(duplicate.Json()["reason"], "AlreadyExists");
  json wrong_ns = app;
  wrong_ns["metadata"]["namespace"] = "other";
  EXPECT_EQ(Call("POST", apps, wrong_ns.dump()).status, 400);

  Reply got = Get(apps + "/team");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.Json()["metadata"]["uid"], object["metadata"]["uid"]);

  // The refresh annotation, as Argo CD's CLI sets it.
  json refresh = {{"metadata", {{"annotations", {{"argocd.argoproj.io/refresh", "normal"}}}}}};
  Reply patched = Call("PATCH", apps + "/team", refresh.dump(), "application/merge-patch+json");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.Json()["metadata"]["annotations"]["argocd.argoproj.io/refresh"], "normal");
  EXPECT_EQ(patched.Json()["metadata"]["generation"], 1);
  json clear = {{"metadata", {{"annotations", {{"argocd.argoproj.io/refresh", nullptr}}}}}};
  Reply cleared = Call("PATCH", apps + "/team", clear.dump(), "application/merge-patch+json");
  EXPECT_FALSE(cleared.Json()["metadata"]["annotations"].contains("argocd.argoproj.io/refresh"));
  EXPECT_EQ(
      Call("PATCH", apps + "/team", clear.dump(), "application/strategic-merge-patch+json").status,
      415);

  // PUT with a stale resourceVersion is a conflict; with the current one it replaces.
  json stale = object;
  stale["spec"]["project"] = "other";
  Reply conflict = Call("PUT", apps + "/team", stale.dump());
  EXPECT_EQ(conflict.status, 409);
  EXPECT_EQ(conflict.Json()["reason"], "Conflict");
  json current = cleared.Json();
  current["spec"]["project"] = "other";
  Reply replaced = Call("PUT", apps + "/team", current.dump());
  ASSERT_EQ(replaced.status, 200) << replaced.body;
  EXPECT_EQ(replaced.Json()["spec"]["project"], "other");
  EXPECT_EQ(replaced.Json()["metadata"]["generation"], 2);
  EXPECT_EQ(Call("PUT", apps + "/other-name", current.dump()).status, 400);

  Reply deleted = Call("DELETE", apps + "/team");
  EXPECT_EQ(deleted.status, 200);
  EXPECT_EQ(Get(apps + "/team").status, 404);
}

TEST_F(ApiServerTest, SecretsAndNamespaces) {
  Start();
  Reply ns = Call("POST", "/api/v1/namespaces", R"({"metadata":{"name":"team"}})");
  ASSERT_EQ(ns.status, 201) << ns.body;
  EXPECT_EQ(ns.Json()["status"]["phase"], "Active");
  const std::string secrets = "/api/v1/namespaces/team/secrets";
  json secret = {{"metadata", {{"name", "pull"}}},
                 {"type", "kubernetes.io/dockerconfigjson"},
                 {"data", {{".dockerconfigjson", "e30="}}}};
  EXPECT_EQ(Call("POST", "/api/v1/namespaces/ghost/secrets", secret.dump()).status, 404);
  ASSERT_EQ(Call("POST", secrets, secret.dump()).status, 201);
  EXPECT_EQ(Call("POST", secrets, secret.dump()).Json()["reason"], "AlreadyExists");
  json patch = {{"data", {{".dockerconfigjson", "eyJhdXRocyI6e319"}}}};
  Reply patched = Call("PATCH", secrets + "/pull", patch.dump(), "application/merge-patch+json");
  ASSERT_EQ(patched.status, 200);
  EXPECT_EQ(patched.Json()["data"][".dockerconfigjson"], "eyJhdXRocyI6e319");
  json stale = {{"metadata", {{"resourceVersion", "1"}}}};
  EXPECT_EQ(Call("PATCH", secrets + "/pull", stale.dump(), "application/merge-patch+json").status,
            409);
  EXPECT_EQ(Call("PATCH", secrets + "/ghost", patch.dump(), "application/merge-patch+json").status,
            404);
  EXPECT_EQ(Get(secrets + "?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson")
                .Json()["items"]
                .size(),
            1u);
}

TEST_F(ApiServerTest, PodLogsWithTailAndFollow) {
  Start();
  json pod = {{"metadata", {{"name", "web"}, {"namespace", "default"}}},
              {"spec", {{"containers", {{{"name", "app"}}, {{"name", "sidecar"}}}}}}};
  ASSERT_TRUE(store_->Create("pods", pod).ok());
  ASSERT_TRUE(store_->AppendLog("default", "web", "app", {"one", "two", "three"}).ok());
  const std::string log = "/api/v1/namespaces/default/pods/web/log";
  Reply all = Get(log + "?container=app");
  EXPECT_EQ(all.status, 200);
  EXPECT_EQ(all.body, "one\ntwo\nthree\n");
  EXPECT_EQ(Get(log + "?container=app&tailLines=2").body, "two\nthree\n");
  Reply unnamed = Get(log);
  EXPECT_EQ(unnamed.status, 400);
  EXPECT_THAT(unnamed.Json()["message"].get<std::string>(), HasSubstr("choose one of"));
  EXPECT_EQ(Get(log + "?container=nope").status, 400);
  EXPECT_EQ(Get("/api/v1/namespaces/default/pods/ghost/log").status, 404);

  auto follow = Open(log + "?container=app&follow=true&tailLines=1");
  EXPECT_EQ(follow->NextLine(), "three");
  ASSERT_TRUE(store_->AppendLog("default", "web", "app", {"four"}).ok());
  EXPECT_EQ(follow->NextLine(), "four");
  ASSERT_TRUE(store_->AppendLog("default", "web", "sidecar", {"not this one"}).ok());
  ASSERT_TRUE(store_->AppendLog("default", "web", "app", {"five"}).ok());
  EXPECT_EQ(follow->NextLine(), "five");
  ASSERT_TRUE(store_->Delete("pods", "default", "web").ok());
  EXPECT_EQ(follow->NextLine(), std::nullopt);
  EXPECT_TRUE(follow->finished());
  EXPECT_EQ(follow->result(), CURLE_OK);
}

TEST_F(ApiServerTest, TlsAndBearerToken) {
  absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("kubesim-tls-");
  ASSERT_TRUE(dir.ok());
  std::string cert = dir->Join("cert.pem");
  std::string key = dir->Join("key.pem");
  absl::StatusOr<testing::CommandResult> made =
      testing::RunCommand({.argv = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                                    "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext",
                                    "subjectAltName=DNS:localhost,IP:127.0.0.1"}});
  ASSERT_TRUE(made.ok() && made->exit_code == 0) << (made.ok() ? made->output : "");
  ca_file_ = cert;
  ApiServerOptions options;
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  options.token = Secret("s3cret-token");
  Start({}, options);
  EXPECT_TRUE(absl::StartsWith(server_->base_url(), "https://"));

  Reply anonymous = Get("/api/v1/namespaces/default/pods");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(anonymous.Json()["kind"], "Status");
  EXPECT_EQ(anonymous.Json()["reason"], "Unauthorized");
  EXPECT_EQ(anonymous.Json()["code"], 401);
  token_ = "wrong";
  EXPECT_EQ(Get("/api/v1/namespaces/default/pods").status, 401);
  token_ = "s3cret-token";
  EXPECT_EQ(Get("/api/v1/namespaces/default/pods").status, 200);
  CreatePod("a");
  auto watch = Open("/api/v1/namespaces/default/pods?watch=1");
  std::optional<json> event = watch->NextEvent();
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ((*event)["object"]["metadata"]["name"], "a");
  token_.clear();
  EXPECT_EQ(Get("/healthz").status, 200);
  EXPECT_EQ(Get("/version").status, 200);
}

TEST_F(ApiServerTest, ManyConcurrentWatchers) {
  Start();
  std::vector<std::unique_ptr<Stream>> watches;
  for (int i = 0; i < 50; ++i) {
    watches.push_back(
        Open(absl::StrCat("/api/v1/pods?watch=1&resourceVersion=", store_->resource_version())));
  }
  for (auto& watch : watches) ASSERT_EQ(watch->WaitForStatus(), 200);
  for (int i = 0; i < 20; ++i) CreatePod(absl::StrCat("p", i));
  for (auto& watch : watches) {
    for (int i = 0; i < 20; ++i) {
      std::optional<json> event = watch->NextEvent();
      ASSERT_TRUE(event.has_value());
      EXPECT_EQ((*event)["object"]["metadata"]["name"], absl::StrCat("p", i));
    }
  }
  watches.clear();
}

// The binary: port 0, a seed file and a token file; the address comes from the "serving" line.
TEST(KubesimBinaryTest, ServesSeedOnAFreePort) {
  absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("kubesim-bin-");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(testing::WriteFile(dir->Join("seed.yaml"), R"(
apiVersion: v1
kind: Namespace
metadata: {name: argocd}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: team, namespace: argocd}
spec: {project: default}
)")
                  .ok());
  ASSERT_TRUE(testing::WriteFile(dir->Join("token"), "bin-token\n").ok());
  absl::StatusOr<std::unique_ptr<testing::ChildProcess>> process = testing::ChildProcess::Start(
      {.argv = {KUBESIM_BINARY, "--listen_addr=127.0.0.1:0",
                "--seed_file=" + dir->Join("seed.yaml"), "--token_file=" + dir->Join("token")},
       .log_path = dir->Join("kubesim.log")});
  ASSERT_TRUE(process.ok()) << process.status();
  std::string line;
  ASSERT_TRUE((*process)->WaitForLogLine("msg=serving", kGuard, &line).ok())
      << (*process)->ReadLog();
  std::string addr;
  for (absl::string_view field : absl::StrSplit(line, ' ')) {
    if (absl::ConsumePrefix(&field, "addr=")) addr = std::string(field);
  }
  ASSERT_FALSE(addr.empty()) << line;
  EXPECT_THAT((*process)->ReadLog(), ::testing::Not(HasSubstr("bin-token")));
  HttpClient client;
  HttpRequest request;
  request.url = absl::StrCat("http://", addr,
                             "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/team");
  request.headers.emplace_back("Authorization", "Bearer bin-token");
  absl::StatusOr<HttpResponse> response = client.Do(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(json::parse(response->body)["spec"]["project"], "default");
  absl::StatusOr<int> code = (*process)->Stop(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace elfdeploy::kubesim
