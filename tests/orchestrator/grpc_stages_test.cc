// The orchestrator's gRPC stage clients: GrpcBuilder, GrpcRegistry and GrpcPublisher against the
// real elfdeploy-builder, elfdeploy-registry-sync (with docker-registry) and
// elfdeploy-manifest-publisher (with git daemon); GrpcCluster, cancellation and deadlines against
// in-process fakes.
#include "services/orchestrator/grpc_stages.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/service_process.h"

namespace elfdeploy::orchestrator {
namespace {

using ::elfdeploy::testing::GitDaemonFixture;
using ::elfdeploy::testing::RegistryFixture;
using ::elfdeploy::testing::ServiceProcess;
using ::elfdeploy::testing::TempDir;
using ::elfdeploy::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::StartsWith;

constexpr char kDeployment[] = R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 1
  selector:
    matchLabels:
      app: hello
  template:
    metadata:
      labels:
        app: hello
    spec:
      containers:
        - name: hello
          image: teams/hello:latest
          ports:
            - containerPort: 8090
)";

std::shared_ptr<grpc::Channel> Channel(const std::string& addr) {
  return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
}

// An in-process gRPC server on 127.0.0.1 with one service.
class InProcessServer {
 public:
  explicit InProcessServer(grpc::Service* service) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~InProcessServer() { server_->Shutdown(); }
  std::string addr() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// A context with a Dockerfile building FROM scratch.
DiscoveredApp WriteApp(const TempDir& dir, const std::string& greeting) {
  DiscoveredApp app{.name = "hello",
                    .group = "teams",
                    .dir = dir.Join("teams/hello"),
                    .dockerfile = "Dockerfile",
                    .deployment_path = dir.Join("teams/hello/k8s/deployment.yaml"),
                    .build_args = {{"GREETING", greeting}}};
  EXPECT_TRUE(WriteFile(app.dir + "/Dockerfile",
                        "FROM scratch\nARG GREETING\nCOPY hello.txt /hello.txt\n"
                        "LABEL greeting=${GREETING}\n")
                  .ok());
  EXPECT_TRUE(WriteFile(app.dir + "/hello.txt", "hello\n").ok());
  EXPECT_TRUE(WriteFile(app.deployment_path, kDeployment).ok());
  return app;
}

TEST(GrpcStagesTest, BuildsPushesAndResolvesWithTheRealServices) {
  absl::StatusOr<TempDir> dir = TempDir::Create("grpc-stages-");
  ASSERT_TRUE(dir.ok());
  DiscoveredApp app = WriteApp(*dir, "hi");
  absl::StatusOr<std::unique_ptr<ServiceProcess>> builder_service =
      ServiceProcess::Start({.binary = "elfdeploy-builder",
                             .env = {{"ELFDEPLOY_BUILDER_STORE_DIR", dir->Join("store")}}});
  ASSERT_TRUE(builder_service.ok()) << builder_service.status();
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry_fixture = RegistryFixture::Start({});
  ASSERT_TRUE(registry_fixture.ok()) << registry_fixture.status();
  absl::StatusOr<std::unique_ptr<ServiceProcess>> sync_service =
      ServiceProcess::Start({.binary = "elfdeploy-registry-sync"});
  ASSERT_TRUE(sync_service.ok()) << sync_service.status();

  GrpcBuilder builder(Channel((*builder_service)->grpc_addr()), absl::Minutes(2));
  std::vector<Progress> seen;
  auto record = [&seen](const Progress& p) { seen.push_back(p); };
  auto never = [] { return false; };
  absl::StatusOr<BuildResult> built = builder.Build(app, "v1", false, record, never);
  ASSERT_TRUE(built.ok()) << built.status() << (*builder_service)->Log();
  EXPECT_EQ(built->layout_reference, absl::StrCat("oci:", dir->Join("store"), ":teams/hello:v1"));
  EXPECT_THAT(built->digest, StartsWith("sha256:"));
  EXPECT_FALSE(built->cached);
  ASSERT_FALSE(seen.empty());
  EXPECT_GT(seen.back().steps_total, 0);
  EXPECT_EQ(seen.back().steps_done, seen.back().steps_total);
  EXPECT_GT(seen.back().bytes_done, 0);

  // Unchanged inputs: every layer from the cache, the same digest.
  absl::StatusOr<BuildResult> again = builder.Build(app, "v1", false, nullptr, nullptr);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->digest, built->digest);
  EXPECT_TRUE(again->cached);
  // A changed build arg changes the image.
  app.build_args["GREETING"] = "hello";
  absl::StatusOr<BuildResult> changed = builder.Build(app, "v2", false, nullptr, nullptr);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_NE(changed->digest, built->digest);
  EXPECT_THAT(changed->layout_reference, HasSubstr(":teams/hello:v2"));
  // no_cache never reports cached.
  absl::StatusOr<BuildResult> uncached = builder.Build(app, "v2", true, nullptr, nullptr);
  ASSERT_TRUE(uncached.ok()) << uncached.status();
  EXPECT_FALSE(uncached->cached);

  // A failed build keeps the builder's code and names the method.
  DiscoveredApp missing = app;
  missing.dir = dir->Join("nowhere");
  absl::StatusOr<BuildResult> failed = builder.Build(missing, "v1", false, nullptr, nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kNotFound) << failed.status();
  EXPECT_THAT(std::string(failed.status().message()), StartsWith("BuilderService.Build: "));
  // Cancelled before the call: no build.
  absl::StatusOr<BuildResult> cancelled =
      builder.Build(app, "v1", false, nullptr, [] { return true; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);

  // Push the layout to the registry; the digest is the builder's.
  GrpcRegistry registry(Channel((*sync_service)->grpc_addr()), absl::Minutes(2));
  v1::RegistryTarget target;
  target.set_url((*registry_fixture)->host());
  std::string image = absl::StrCat((*registry_fixture)->host(), "/teams/hello:v1");
  seen.clear();
  absl::StatusOr<PushResult> pushed =
      registry.Push(built->layout_reference, image, target, record, never);
  ASSERT_TRUE(pushed.ok()) << pushed.status() << (*sync_service)->Log();
  EXPECT_EQ(pushed->digest, built->digest);
  EXPECT_GT(pushed->bytes_pushed, 0);
  ASSERT_FALSE(seen.empty());
  EXPECT_GT(seen.back().steps_total, 0);
  EXPECT_EQ(seen.back().steps_done, seen.back().steps_total);
  EXPECT_EQ(seen.back().bytes_done, pushed->bytes_pushed);

  // Again: the registry has every blob; nothing is transferred.
  absl::StatusOr<PushResult> warm =
      registry.Push(built->layout_reference, "docker://" + image, target, nullptr, nullptr);
  ASSERT_TRUE(warm.ok()) << warm.status();
  EXPECT_EQ(warm->digest, built->digest);
  EXPECT_EQ(warm->bytes_pushed, 0);

  absl::StatusOr<std::string> resolved = registry.Resolve(image, target);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, built->digest);

  absl::StatusOr<std::string> absent =
      registry.Resolve(absl::StrCat((*registry_fixture)->host(), "/teams/hello:nope"), target);
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound) << absent.status();
  EXPECT_THAT(std::string(absent.status().message()), StartsWith("RegistrySyncService.Resolve: "));
  absl::StatusOr<PushResult> bad_source =
      registry.Push(absl::StrCat("oci:", dir->Join("store"), ":teams/hello:nope"), image, target,
                    nullptr, nullptr);
  EXPECT_EQ(bad_source.status().code(), absl::StatusCode::kNotFound) << bad_source.status();
  EXPECT_THAT(std::string(bad_source.status().message()), StartsWith("RegistrySyncService.Copy: "));
}

TEST(GrpcStagesTest, PublishesOnceThenNoOp) {
  absl::StatusOr<TempDir> dir = TempDir::Create("grpc-stages-publish-");
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<std::unique_ptr<GitDaemonFixture>> git = GitDaemonFixture::Start();
  ASSERT_TRUE(git.ok()) << git.status();
  ASSERT_TRUE((*git)->CreateBareRepo("gitops").ok());
  absl::StatusOr<std::unique_ptr<ServiceProcess>> service =
      ServiceProcess::Start({.binary = "elfdeploy-manifest-publisher",
                             .env = {{"ELFDEPLOY_PUBLISHER_CACHE_DIR", dir->Join("cache")}}});
  ASSERT_TRUE(service.ok()) << service.status();

  GrpcPublisher publisher(Channel((*service)->grpc_addr()), absl::Minutes(2));
  std::vector<PublishApp> apps = {
      {.name = "hello",
       .group = "teams",
       .image = "127.0.0.1:5000/teams/hello:v1@sha256:" + std::string(64, 'a'),
       .deployment_yaml = kDeployment}};
  v1::GitOpsTarget gitops;
  gitops.set_url((*git)->url("gitops"));
  gitops.set_branch("main");
  gitops.set_path_prefix("elf-automations");
  v1::ClusterDestination destination;
  destination.set_namespace_("elf-automations");

  absl::StatusOr<PublishResult> published =
      publisher.Publish(apps, gitops, destination, "rollout-1", "Deploy hello");
  ASSERT_TRUE(published.ok()) << published.status() << (*service)->Log();
  EXPECT_EQ(published->commit.size(), 40u);
  EXPECT_FALSE(published->no_op);
  ASSERT_EQ(published->applications.size(), 1u);
  EXPECT_THAT(published->applications[0], Pair(::testing::Not(""), "teams"));
  ASSERT_EQ(published->definitions.size(), 1u);
  EXPECT_EQ(published->definitions[0].name(), published->applications[0].first);
  EXPECT_THAT(published->definitions[0].spec().path(), ::testing::EndsWith("manifests/teams"));
  absl::StatusOr<elfdeploy::testing::CommandResult> log =
      (*git)->Git({"--git-dir", (*git)->repo_path("gitops"), "log", "--format=%H%n%B", "main"});
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(log->output, HasSubstr(published->commit));
  EXPECT_THAT(log->output, HasSubstr("Elfdeploy-Rollout: rollout-1"));

  absl::StatusOr<PublishResult> same =
      publisher.Publish(apps, gitops, destination, "rollout-2", "Deploy hello");
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(same->no_op);
  EXPECT_EQ(same->commit, published->commit);
  EXPECT_EQ(same->applications, published->applications);

  // The same Applications, rendered without a commit (a resumed rollout asks for them).
  absl::StatusOr<PublishResult> rendered = publisher.Applications(apps, gitops, destination);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_TRUE(rendered->commit.empty());
  EXPECT_EQ(rendered->applications, published->applications);
  ASSERT_EQ(rendered->definitions.size(), 1u);
  EXPECT_EQ(rendered->definitions[0].SerializeAsString(),
            published->definitions[0].SerializeAsString());
  absl::StatusOr<elfdeploy::testing::CommandResult> count =
      (*git)->Git({"--git-dir", (*git)->repo_path("gitops"), "rev-list", "--count", "main"});
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->output, "1\n") << "Render committed";

  apps[0].image = "127.0.0.1:5000/teams/hello:v1";  // no digest
  absl::StatusOr<PublishResult> bad = publisher.Publish(apps, gitops, destination, "rollout-3", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()),
              StartsWith("ManifestPublisherService.Publish: "));
}

// Records what it is asked; "missing" names fail with NOT_FOUND; Diagnose waits for `delay`.
class FakeClusterWatcher final : public v1::ClusterWatcherService::Service {
 public:
  grpc::Status ApplyApplication(grpc::ServerContext*, const v1::ApplyApplicationRequest* request,
                                v1::ApplyApplicationResponse*) override {
    std::lock_guard<std::mutex> lock(mu);
    apply = *request;
    if (request->application().name().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "application name is empty");
    }
    return grpc::Status::OK;
  }
  grpc::Status EnsureImagePullSecret(grpc::ServerContext*,
                                     const v1::EnsureImagePullSecretRequest* request,
                                     v1::EnsureImagePullSecretResponse*) override {
    std::lock_guard<std::mutex> lock(mu);
    secret = *request;
    return grpc::Status::OK;
  }
  grpc::Status Refresh(grpc::ServerContext*, const v1::RefreshRequest* request,
                       v1::RefreshResponse*) override {
    std::lock_guard<std::mutex> lock(mu);
    refresh = *request;
    if (request->name() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "application missing not found");
    }
    return grpc::Status::OK;
  }
  grpc::Status Diagnose(grpc::ServerContext* context, const v1::DiagnoseRequest* request,
                        v1::DiagnoseResponse* response) override {
    absl::Time until = absl::Now() + delay;
    while (absl::Now() < until && !context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    response->set_cluster(request->cluster());
    response->set_healthy(request->app() == "hello");
    return grpc::Status::OK;
  }

  std::mutex mu;
  v1::ApplyApplicationRequest apply;
  v1::EnsureImagePullSecretRequest secret;
  v1::RefreshRequest refresh;
  absl::Duration delay = absl::ZeroDuration();
};

TEST(GrpcStagesTest, ClusterCallsMapOneToOne) {
  FakeClusterWatcher fake;
  InProcessServer server(&fake);
  GrpcCluster cluster(Channel(server.addr()), absl::Seconds(10));

  v1::ApplicationDefinition application;
  application.set_name("teams-app");
  application.set_namespace_("argocd");
  ASSERT_TRUE(cluster.ApplyApplication("kind", application).ok());
  EXPECT_EQ(fake.apply.cluster(), "kind");
  EXPECT_EQ(fake.apply.application().name(), "teams-app");
  EXPECT_EQ(fake.apply.application().namespace_(), "argocd");
  absl::Status invalid = cluster.ApplyApplication("kind", v1::ApplicationDefinition());
  EXPECT_EQ(invalid.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid.message(), "ClusterWatcherService.ApplyApplication: application name is empty");

  v1::RegistryCredentials credentials;
  credentials.set_ref("registry");
  ASSERT_TRUE(
      cluster.EnsureImagePullSecret("kind", "elf", "regcred", "registry:5000", credentials).ok());
  EXPECT_EQ(fake.secret.cluster(), "kind");
  EXPECT_EQ(fake.secret.namespace_(), "elf");
  EXPECT_EQ(fake.secret.name(), "regcred");
  EXPECT_EQ(fake.secret.registry(), "registry:5000");
  EXPECT_EQ(fake.secret.credentials().ref(), "registry");
  EXPECT_TRUE(fake.secret.create_namespace());

  ASSERT_TRUE(cluster.Refresh("kind", "teams-app").ok());
  EXPECT_EQ(fake.refresh.cluster(), "kind");
  EXPECT_EQ(fake.refresh.name(), "teams-app");
  EXPECT_FALSE(fake.refresh.hard());
  absl::Status missing = cluster.Refresh("", "missing");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "ClusterWatcherService.Refresh: application missing not found");

  v1::DiagnoseRequest diagnose;
  diagnose.set_cluster("kind");
  diagnose.set_app("hello");
  absl::StatusOr<v1::DiagnoseResponse> diagnosed = cluster.Diagnose(diagnose);
  ASSERT_TRUE(diagnosed.ok()) << diagnosed.status();
  EXPECT_EQ(diagnosed->cluster(), "kind");
  EXPECT_TRUE(diagnosed->healthy());

  // The per-call timeout is the deadline.
  fake.delay = absl::Seconds(5);
  GrpcCluster hasty(Channel(server.addr()), absl::Milliseconds(200));
  absl::StatusOr<v1::DiagnoseResponse> late = hasty.Diagnose(diagnose);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_THAT(std::string(late.status().message()), StartsWith("ClusterWatcherService.Diagnose: "));

  // Nobody listening: UNAVAILABLE, named.
  GrpcCluster nowhere(Channel("127.0.0.1:1"), absl::Seconds(5));
  absl::Status down = nowhere.Refresh("", "teams-app");
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_THAT(std::string(down.message()), StartsWith("ClusterWatcherService.Refresh: "));
}

// Starts a build and streams until the client goes away.
class EndlessBuilder final : public v1::BuilderService::Service {
 public:
  grpc::Status Build(grpc::ServerContext* context, const v1::BuildRequest* request,
                     grpc::ServerWriter<v1::BuildResponse>* writer) override {
    tags = request->tags(0);
    v1::BuildResponse started;
    started.mutable_started()->set_total_steps(3);
    writer->Write(started);
    while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    saw_cancel = true;
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
  std::string tags;
  std::atomic<bool> saw_cancel{false};
};

TEST(GrpcStagesTest, CancelStopsARunningBuild) {
  EndlessBuilder fake;
  InProcessServer server(&fake);
  GrpcBuilder builder(Channel(server.addr()));
  std::atomic<bool> cancel{false};
  std::atomic<int> events{0};
  DiscoveredApp app;
  app.name = "hello";
  app.group = "teams";
  app.dir = "/nowhere";
  std::thread canceller([&] {
    while (events.load() == 0) absl::SleepFor(absl::Milliseconds(5));
    cancel = true;
  });
  absl::Time start = absl::Now();
  absl::StatusOr<BuildResult> result = builder.Build(
      app, "registry:5000/x/y:1", false,
      [&](const Progress& p) {
        EXPECT_EQ(p.steps_total, 3);
        ++events;
      },
      [&] { return cancel.load(); });
  canceller.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(result.status().message(), "BuilderService.Build: cancelled");
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(fake.tags, "registry:5000/x/y:1");  // a tag with ':' is the whole ref name
}

}  // namespace
}  // namespace elfdeploy::orchestrator
