// registry-sync against the real docker-registry: copies checked from outside with skopeo,
// credentials, TLS, corruption.
#include "services/registry_sync/registry_sync.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/peers.h"
#include "tests/harness/process.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/oci_image.h"

namespace elfdeploy::testing {
namespace {

using ::testing::HasSubstr;

// `skopeo inspect` of a reference; the parsed JSON or the failure.
absl::StatusOr<nlohmann::json> SkopeoInspect(const std::string& ref,
                                             std::vector<std::string> extra = {}) {
  ProcessOptions options;
  options.argv = {"skopeo", "inspect"};
  for (std::string& arg : extra) options.argv.push_back(std::move(arg));
  options.argv.push_back(ref);
  absl::StatusOr<CommandResult> result = RunCommand(std::move(options), absl::Seconds(60));
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) return absl::UnknownError(result->output);
  size_t brace = result->output.find('{');
  nlohmann::json json = nlohmann::json::parse(
      brace == std::string::npos ? "" : result->output.substr(brace), nullptr, false);
  if (json.is_discarded()) return absl::UnknownError(result->output);
  return json;
}

struct Counts {
  int uploaded = 0;
  int skipped = 0;
  int mounted = 0;
  int downloaded = 0;
};

class RegistrySyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("registry-sync-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    absl::StatusOr<TestImage> image = WriteTestImage(Layout(), "v1", {300000, 200000, 100000}, 1);
    ASSERT_TRUE(image.ok()) << image.status();
    image_ = *image;
  }

  std::string Layout() const { return dir_->Join("layout"); }

  std::unique_ptr<RegistrySync> Make(RegistrySyncOptions options = {}) {
    options.parallelism = 3;
    absl::StatusOr<std::unique_ptr<RegistrySync>> sync = RegistrySync::Create(options, nullptr);
    EXPECT_TRUE(sync.ok()) << sync.status();
    return sync.ok() ? *std::move(sync) : nullptr;
  }

  absl::StatusOr<oci::CopyResult> Copy(RegistrySync& sync, const std::string& from,
                                       const std::string& to, Counts* counts = nullptr,
                                       RequestCredential src = {}, RequestCredential dst = {},
                                       oci::CopyOptions options = {}) {
    oci::CopyObserver observer;
    observer.on_blob = [counts](const oci::BlobEvent& event) {
      if (counts == nullptr) return;
      switch (event.action) {
        case oci::BlobAction::kUploaded:
          ++counts->uploaded;
          break;
        case oci::BlobAction::kSkipped:
          ++counts->skipped;
          break;
        case oci::BlobAction::kMounted:
          ++counts->mounted;
          break;
        default:
          ++counts->downloaded;
      }
    };
    return sync.Copy(from, to, src, dst, options, observer);
  }

  std::optional<TempDir> dir_;
  TestImage image_;
};

TEST_F(RegistrySyncTest, LayoutToRegistryIsWhatSkopeoSees) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok()) << registry.status();
  auto sync = Make();
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/elf-automations/app:v1");
  Counts counts;
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest, &counts);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
  EXPECT_EQ(counts.uploaded, 4);  // config and three layers
  EXPECT_EQ(result->bytes_transferred, image_.total_bytes);

  absl::StatusOr<nlohmann::json> seen =
      SkopeoInspect(absl::StrCat("docker://", (*registry)->host(), "/elf-automations/app:v1"),
                    {"--tls-verify=false"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());
  EXPECT_EQ((*seen)["Layers"].size(), 3u);
  EXPECT_EQ((*seen)["Architecture"], "amd64");

  // Again: every blob is already there, no byte moves, same digest.
  Counts warm;
  result = Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest, &warm);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(warm.skipped, 4);
  EXPECT_EQ(warm.uploaded, 0);
  EXPECT_EQ(result->bytes_transferred, 0);
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
}

TEST_F(RegistrySyncTest, RegistryToRegistryMountsWithinOneAndUploadsAcross) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> a = RegistryFixture::Start({});
  absl::StatusOr<std::unique_ptr<RegistryFixture>> b = RegistryFixture::Start({});
  ASSERT_TRUE(a.ok() && b.ok());
  auto sync = Make();
  std::string source = absl::StrCat("docker://", (*a)->host(), "/team/app:v1");
  ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), source).ok());

  Counts mounted;
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, source, absl::StrCat("docker://", (*a)->host(), "/mirror/app:v1"), &mounted);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(mounted.mounted, 4);
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);

  Counts across;
  result = Copy(*sync, source, absl::StrCat("docker://", (*b)->host(), "/team/app:v1"), &across);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(across.uploaded, 4);
  absl::StatusOr<nlohmann::json> seen = SkopeoInspect(
      absl::StrCat("docker://", (*b)->host(), "/team/app:v1"), {"--tls-verify=false"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());

  // Registry to a layout, which skopeo reads back.
  std::string out = dir_->Join("pulled");
  result = Copy(*sync, source, absl::StrCat("oci:", out, ":pulled"));
  ASSERT_TRUE(result.ok()) << result.status();
  seen = SkopeoInspect(absl::StrCat("oci:", out, ":pulled"));
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());
}

TEST_F(RegistrySyncTest, IndexCopiesLinuxAmd64UnlessAllPlatformsAsked) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok());
  oci::Digest amd64;
  absl::StatusOr<oci::Digest> index = WriteTestIndex(Layout(), "multi", 11, &amd64);
  ASSERT_TRUE(index.ok()) << index.status();
  auto sync = Make();
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/multi/app");
  absl::StatusOr<oci::CopyResult> one =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":multi"), absl::StrCat(dest, ":one"));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->manifest_digest, amd64);

  oci::CopyOptions all;
  all.all_platforms = true;
  absl::StatusOr<oci::CopyResult> both = Copy(*sync, absl::StrCat("oci:", Layout(), ":multi"),
                                              absl::StrCat(dest, ":all"), nullptr, {}, {}, all);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->manifest_digest, *index);

  absl::StatusOr<ResolveOutcome> resolved =
      sync->Resolve(absl::StrCat(dest, ":all"), {}, std::nullopt);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->image.descriptor.digest, *index);
  EXPECT_EQ(resolved->image.manifests.size(), 2u);
  ASSERT_TRUE(resolved->platform_manifest.has_value());
  EXPECT_EQ(resolved->platform_manifest->digest, amd64);
  EXPECT_EQ(resolved->canonical_reference,
            absl::StrCat(dest.substr(0, dest.size()), ":all@", index->ToString()));
}

TEST_F(RegistrySyncTest, ResolveTellsMissingImageFromRefusedCredentials) {
  RegistryOptions options;
  options.htpasswd = true;
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status();
  std::string ref = absl::StrCat("docker://", (*registry)->host(), "/team/app:v1");

  RequestCredential good;
  good.kind = RequestCredential::Kind::kBasic;
  good.credential.username = (*registry)->username();
  good.credential.password = Secret((*registry)->password());
  auto sync = Make();
  ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), ref, nullptr, {}, good).ok());
  absl::StatusOr<ResolveOutcome> found = sync->Resolve(ref, good, std::nullopt);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->image.descriptor.digest, image_.manifest_digest);

  absl::StatusOr<ResolveOutcome> missing = sync->Resolve(
      absl::StrCat("docker://", (*registry)->host(), "/team/app:v2"), good, std::nullopt);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("MANIFEST_UNKNOWN"));

  absl::StatusOr<ResolveOutcome> anonymous = sync->Resolve(ref, {}, std::nullopt);
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(anonymous.status().message(),
              HasSubstr("requires credentials and none are configured"));

  RequestCredential wrong = good;
  wrong.credential.password = Secret("not-the-password");
  absl::StatusOr<ResolveOutcome> refused = sync->Resolve(ref, wrong, std::nullopt);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(refused.status().message(), HasSubstr("credentials of elfdeploy refused"));
  EXPECT_THAT(refused.status().message(), ::testing::Not(HasSubstr("not-the-password")));
}

TEST_F(RegistrySyncTest, CredentialsComeFromTheDockerAuthFile) {
  RegistryOptions options;
  options.htpasswd = true;
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status();
  std::string auth_file = dir_->Join("auth.json");
  ASSERT_TRUE(
      WriteFile(auth_file, absl::StrCat(R"({"auths":{")", (*registry)->host(), R"(":{"username":")",
                                        (*registry)->username(), R"(","password":")",
                                        (*registry)->password(), R"("}}})"))
          .ok());
  RegistrySyncOptions sync_options;
  sync_options.auth_file = auth_file;
  auto sync = Make(sync_options);
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
           absl::StrCat("docker://", (*registry)->host(), "/team/app:v1"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
}

TEST_F(RegistrySyncTest, TlsIsVerifiedAgainstTheConfiguredCa) {
  RegistryOptions options;
  options.tls = true;
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status();
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/secure/app:v1");

  auto unverified = Make();
  absl::StatusOr<oci::CopyResult> refused =
      Copy(*unverified, absl::StrCat("oci:", Layout(), ":v1"), dest);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("certificate"));

  RegistrySyncOptions with_ca;
  with_ca.ca_file = (*registry)->ca_file();
  auto verified = Make(with_ca);
  absl::StatusOr<oci::CopyResult> result =
      Copy(*verified, absl::StrCat("oci:", Layout(), ":v1"), dest);
  ASSERT_TRUE(result.ok()) << result.status();
  absl::StatusOr<ResolveOutcome> resolved = verified->Resolve(dest, {}, std::nullopt);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->image.descriptor.digest, image_.manifest_digest);
}

TEST_F(RegistrySyncTest, InsecureRegistriesSkipVerificationOnlyWhenListed) {
  RegistryOptions options;
  options.tls = true;
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status();
  RegistrySyncOptions insecure;
  insecure.insecure_registries = {(*registry)->host()};
  auto sync = Make(insecure);
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
           absl::StrCat("docker://", (*registry)->host(), "/insecure/app:v1"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
}

TEST_F(RegistrySyncTest, CorruptContentIsRefusedAndNothingIsTagged) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok());
  auto sync = Make();
  // A layer in the source layout no longer matches its digest: the registry refuses it.
  std::string corrupt_layout = dir_->Join("corrupt");
  ASSERT_TRUE(WriteTestImage(corrupt_layout, "v1", {50000}, 5).ok());
  absl::StatusOr<oci::OciLayout> layout = oci::OciLayout::Open(corrupt_layout);
  ASSERT_TRUE(layout.ok());
  absl::StatusOr<oci::Descriptor> top = layout->Resolve("v1");
  ASSERT_TRUE(top.ok());
  absl::StatusOr<oci::Manifest> manifest = oci::ParseManifest(*layout->ReadBlob(top->digest), "m");
  ASSERT_TRUE(manifest.ok());
  {
    std::fstream blob(layout->BlobPath(manifest->layers[0].digest),
                      std::ios::in | std::ios::out | std::ios::binary);
    blob.seekp(100);
    blob.put('X');
  }
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/corrupt/app:v1");
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("oci:", corrupt_layout, ":v1"), dest);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << result.status();
  EXPECT_EQ(sync->Resolve(dest, {}, std::nullopt).status().code(), absl::StatusCode::kNotFound);

  // A blob corrupted inside the registry is refused on the way out, and the layout gets no tag.
  ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
                   absl::StrCat("docker://", (*registry)->host(), "/good/app:v1"))
                  .ok());
  std::string hex = image_.layers[0].hex();
  std::string data = absl::StrCat((*registry)->storage_dir(), "/docker/registry/v2/blobs/sha256/",
                                  hex.substr(0, 2), "/", hex, "/data");
  ASSERT_TRUE(std::filesystem::exists(data)) << data;
  {
    std::fstream blob(data, std::ios::in | std::ios::out | std::ios::binary);
    blob.seekp(10);
    blob.put('X');
  }
  std::string pulled = dir_->Join("pulled");
  result = Copy(*sync, absl::StrCat("docker://", (*registry)->host(), "/good/app:v1"),
                absl::StrCat("oci:", pulled, ":v1"));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << result.status();
  absl::StatusOr<oci::OciLayout> out = oci::OciLayout::Open(pulled);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->HasBlob(image_.layers[0]));
  EXPECT_EQ(out->Resolve("v1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistrySyncTest, SyncMirrorsMatchingTagsAndSkipsIdenticalOnes) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> a = RegistryFixture::Start({});
  absl::StatusOr<std::unique_ptr<RegistryFixture>> b = RegistryFixture::Start({});
  ASSERT_TRUE(a.ok() && b.ok());
  auto sync = Make();
  for (const char* tag : {"v1", "v2", "dev"}) {
    ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
                     absl::StrCat("docker://", (*a)->host(), "/team/app:", tag))
                    .ok());
  }
  auto run = [&](std::map<std::string, TagOutcome::Action>* seen) {
    return sync->Sync(absl::StrCat((*a)->host(), "/team/app"),
                      absl::StrCat((*b)->host(), "/team/app"), "v[0-9]+", {}, {}, {}, false, {},
                      [seen](const TagOutcome& tag) { (*seen)[tag.tag] = tag.action; });
  };
  std::map<std::string, TagOutcome::Action> first;
  ASSERT_TRUE(run(&first).ok());
  EXPECT_EQ(first, (std::map<std::string, TagOutcome::Action>{
                       {"v1", TagOutcome::Action::kCopied}, {"v2", TagOutcome::Action::kCopied}}));
  std::map<std::string, TagOutcome::Action> second;
  ASSERT_TRUE(run(&second).ok());
  EXPECT_EQ(second,
            (std::map<std::string, TagOutcome::Action>{{"v1", TagOutcome::Action::kSkipped},
                                                       {"v2", TagOutcome::Action::kSkipped}}));
  EXPECT_EQ(sync->Sync("a/b", "c/d", "([", {}, {}, {}, false, {}, [](const TagOutcome&) {}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistrySyncTest, RegistryRestartedMidCopyStillYieldsTheImage) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
  ASSERT_TRUE(registry.ok());
  std::string big = dir_->Join("big");
  absl::StatusOr<TestImage> image =
      WriteTestImage(big, "v1", {4000000, 4000000, 4000000, 4000000, 4000000}, 9);
  ASSERT_TRUE(image.ok());
  RegistrySyncOptions options;
  auto sync = Make(options);
  // The registry is restarted from this thread (its child processes die with the thread that
  // started them) as soon as the first blob is in, while the other uploads are in flight.
  // The copy is held at its first blob until the restart is over, so later blobs (and uploads
  // running at that moment) meet a registry that went away and came back.
  absl::Notification first_upload;
  absl::Notification restarted;
  int blobs_after_restart = 0;
  oci::CopyObserver observer;
  observer.on_blob = [&](const oci::BlobEvent&) {
    if (first_upload.HasBeenNotified()) {
      ++blobs_after_restart;
      return;
    }
    first_upload.Notify();
    restarted.WaitForNotificationWithTimeout(absl::Seconds(60));
  };
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/restart/app:v1");
  absl::StatusOr<oci::CopyResult> result;
  std::thread copy(
      [&] { result = sync->Copy(absl::StrCat("oci:", big, ":v1"), dest, {}, {}, {}, observer); });
  ASSERT_TRUE(first_upload.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::Status restart_status = (*registry)->Restart();
  restarted.Notify();
  copy.join();
  ASSERT_TRUE(restart_status.ok()) << restart_status;
  EXPECT_EQ(blobs_after_restart, 5);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image->manifest_digest);
  absl::StatusOr<nlohmann::json> seen = SkopeoInspect(dest, {"--tls-verify=false"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image->manifest_digest.ToString());
}

class FaultyRegistryTest : public RegistrySyncTest {
 protected:
  void SetUp() override {
    RegistrySyncTest::SetUp();
    absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start({});
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
    absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
        FaultProxy::Start("127.0.0.1", registry_->port());
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = *std::move(proxy);
  }

  std::unique_ptr<RegistryFixture> registry_;
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(FaultyRegistryTest, ResetsServerErrorsAndRateLimitsAreRetried) {
  proxy_->AddFault({.kind = FaultKind::kStatus,
                    .method = "POST",
                    .path_contains = "/blobs/uploads/",
                    .count = 2,
                    .status = 503});
  proxy_->AddFault(
      {.kind = FaultKind::kReset, .method = "PUT", .path_contains = "/blobs/uploads/", .count = 2});
  proxy_->AddFault({.kind = FaultKind::kTooManyRequests,
                    .method = "HEAD",
                    .path_contains = "/blobs/",
                    .count = 1,
                    .retry_after_seconds = 1});
  proxy_->AddFault({.kind = FaultKind::kStatus,
                    .method = "PUT",
                    .path_contains = "/manifests/",
                    .count = 1,
                    .status = 500});
  auto sync = Make();
  absl::Time start = absl::Now();
  std::string dest = absl::StrCat("docker://", proxy_->host(), "/faults/app:v1");
  absl::StatusOr<oci::CopyResult> result = Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
  EXPECT_GE(proxy_->faults_injected(), 5);
  EXPECT_GE(absl::Now() - start, absl::Seconds(1)) << "Retry-After: 1 was not honoured";
  absl::StatusOr<nlohmann::json> seen = SkopeoInspect(
      absl::StrCat("docker://", registry_->host(), "/faults/app:v1"), {"--tls-verify=false"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());
}

TEST_F(FaultyRegistryTest, PersistentFailureLeavesTheTagWhereItWas) {
  RegistrySyncOptions options;
  options.max_attempts = 3;
  auto sync = Make(options);
  std::string dest = absl::StrCat("docker://", proxy_->host(), "/faults/app:stable");
  ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest).ok());

  std::string other = dir_->Join("other");
  absl::StatusOr<TestImage> next = WriteTestImage(other, "v2", {70000, 80000}, 3);
  ASSERT_TRUE(next.ok());
  proxy_->AddFault({.kind = FaultKind::kStatus,
                    .method = "PUT",
                    .path_contains = "/blobs/uploads/",
                    .count = 1000,
                    .status = 500});
  absl::StatusOr<oci::CopyResult> result = Copy(*sync, absl::StrCat("oci:", other, ":v2"), dest);
  ASSERT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("HTTP 500"));
  int manifest_puts = 0;
  for (const ProxyLogEntry& entry : proxy_->Log()) {
    if (entry.method == "PUT" && absl::StrContains(entry.path, "/manifests/")) ++manifest_puts;
  }
  EXPECT_EQ(manifest_puts, 1);  // only the first, good copy wrote a manifest
  absl::StatusOr<ResolveOutcome> still = sync->Resolve(dest, {}, std::nullopt);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->image.descriptor.digest, image_.manifest_digest);
}

TEST_F(RegistrySyncTest, WrongPasswordFailsFastWithoutRetrying) {
  RegistryOptions options;
  options.htpasswd = true;
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
  ASSERT_TRUE(registry.ok());
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
      FaultProxy::Start("127.0.0.1", (*registry)->port());
  ASSERT_TRUE(proxy.ok());
  RequestCredential wrong;
  wrong.kind = RequestCredential::Kind::kBasic;
  wrong.credential.username = (*registry)->username();
  wrong.credential.password = Secret("wrong");
  auto sync = Make();
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
           absl::StrCat("docker://", (*proxy)->host(), "/team/app:v1"), nullptr, {}, wrong);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated) << result.status();
  int unauthorized = 0;
  for (const ProxyLogEntry& entry : (*proxy)->Log()) unauthorized += entry.status == 401;
  // The probe, then per blob at most the anonymous try and the one with the credentials.
  EXPECT_LE(unauthorized, 1 + 2 * 4) << (*proxy)->requests_seen();
  EXPECT_LE((*proxy)->requests_seen(), 1 + 2 * 4);
}

TEST_F(RegistrySyncTest, BearerTokenFlowPushesAndRespectsScopes) {
  RegistryOptions options;
  options.token_auth = true;
  options.anonymous_pull = true;
  absl::StatusOr<std::unique_ptr<RegistryFixture>> registry = RegistryFixture::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status();
  std::string dest = absl::StrCat("docker://", (*registry)->host(), "/team/app:v1");
  auto credential = [&](const std::string& user, const std::string& password) {
    RequestCredential c;
    c.kind = RequestCredential::Kind::kBasic;
    c.credential.username = user;
    c.credential.password = Secret(password);
    return c;
  };
  auto sync = Make();
  absl::StatusOr<oci::CopyResult> pushed =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest, nullptr, {},
           credential((*registry)->username(), (*registry)->password()));
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_GT((*registry)->token_server()->tokens_issued(), 0);

  // Anonymous pull is allowed by this token server; push is not.
  absl::StatusOr<ResolveOutcome> anonymous = sync->Resolve(dest, {}, std::nullopt);
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();
  EXPECT_EQ(anonymous->image.descriptor.digest, image_.manifest_digest);

  absl::StatusOr<oci::CopyResult> reader =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
           absl::StrCat("docker://", (*registry)->host(), "/team/other:v1"), nullptr, {},
           credential((*registry)->pull_only_username(), (*registry)->pull_only_password()));
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kPermissionDenied) << reader.status();

  absl::StatusOr<oci::CopyResult> wrong =
      Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest, nullptr, {},
           credential((*registry)->username(), "wrong"));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated) << wrong.status();
  EXPECT_THAT(wrong.status().message(), HasSubstr("refused the credentials of elfdeploy"));
}

TEST_F(FaultyRegistryTest, ChunkedUploadsUsePatchAndYieldTheSameImage) {
  RegistrySyncOptions options;
  options.chunk_size = 64 * 1024;
  auto sync = Make(options);
  std::string dest = absl::StrCat("docker://", proxy_->host(), "/chunked/app:v1");
  absl::StatusOr<oci::CopyResult> result = Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), dest);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
  int patches = 0;
  for (const ProxyLogEntry& entry : proxy_->Log()) {
    if (entry.method == "PATCH" && entry.status == 202) ++patches;
  }
  // 300000/200000/100000 bytes of random data in 64 KiB chunks, plus the config.
  EXPECT_GE(patches, 5 + 4 + 2 + 1);
  absl::StatusOr<nlohmann::json> seen = SkopeoInspect(
      absl::StrCat("docker://", registry_->host(), "/chunked/app:v1"), {"--tls-verify=false"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());
}

TEST_F(FaultyRegistryTest, DownloadsSurviveResetsAndErrorsMidBlob) {
  auto sync = Make();
  std::string source = absl::StrCat("docker://", registry_->host(), "/pull/app:v1");
  ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"), source).ok());
  proxy_->AddFault({.kind = FaultKind::kResetMidResponse,
                    .method = "GET",
                    .path_contains = "/blobs/sha256:",
                    .count = 2});
  proxy_->AddFault({.kind = FaultKind::kStatus,
                    .method = "GET",
                    .path_contains = "/blobs/sha256:",
                    .count = 1,
                    .status = 503});
  std::string out = dir_->Join("pulled");
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("docker://", proxy_->host(), "/pull/app:v1"),
           absl::StrCat("oci:", out, ":v1"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
  EXPECT_EQ(proxy_->faults_injected(), 3);
  absl::StatusOr<nlohmann::json> seen = SkopeoInspect(absl::StrCat("oci:", out, ":v1"));
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());
}

TEST_F(FaultyRegistryTest, BrokenStreamBetweenRegistriesFallsBackToStaging) {
  absl::StatusOr<std::unique_ptr<RegistryFixture>> target = RegistryFixture::Start({});
  ASSERT_TRUE(target.ok());
  RegistrySyncOptions options;
  options.spool_dir = dir_->Join("spool");
  auto sync = Make(options);
  ASSERT_TRUE(Copy(*sync, absl::StrCat("oci:", Layout(), ":v1"),
                   absl::StrCat("docker://", registry_->host(), "/src/app:v1"))
                  .ok());
  proxy_->AddFault({.kind = FaultKind::kResetMidResponse,
                    .method = "GET",
                    .path_contains = "/blobs/sha256:",
                    .count = 2});
  Counts counts;
  absl::StatusOr<oci::CopyResult> result =
      Copy(*sync, absl::StrCat("docker://", proxy_->host(), "/src/app:v1"),
           absl::StrCat("docker://", (*target)->host(), "/dst/app:v1"), &counts);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest_digest, image_.manifest_digest);
  EXPECT_EQ(counts.uploaded, 4);
  EXPECT_EQ(proxy_->faults_injected(), 2);
  absl::StatusOr<nlohmann::json> seen = SkopeoInspect(
      absl::StrCat("docker://", (*target)->host(), "/dst/app:v1"), {"--tls-verify=false"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ((*seen)["Digest"], image_.manifest_digest.ToString());
  absl::StatusOr<oci::OciLayout> spool = oci::OciLayout::Open(options.spool_dir);
  ASSERT_TRUE(spool.ok());
  for (const oci::Digest& layer : image_.layers) EXPECT_FALSE(spool->HasBlob(layer));
}

}  // namespace
}  // namespace elfdeploy::testing
