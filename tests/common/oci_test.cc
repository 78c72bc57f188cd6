#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/oci/credentials.h"
#include "services/common/oci/digest.h"
#include "services/common/oci/layout.h"
#include "services/common/oci/manifest.h"
#include "services/common/oci/reference.h"
#include "services/common/oci/registry_client.h"
#include "tests/harness/temp_dir.h"
#include "tests/support/oci_image.h"

namespace elfdeploy::oci {
namespace {

using ::testing::HasSubstr;

const std::string kHex(64, 'a');
const std::string kDigest = "sha256:" + kHex;

struct ValidCase {
  std::string input;
  std::string domain;
  std::string path;
  std::string tag;
  std::string digest;
};

void PrintTo(const ValidCase& c, std::ostream* os) { *os << c.input.substr(0, 60); }

class ValidReferenceTest : public ::testing::TestWithParam<ValidCase> {};

TEST_P(ValidReferenceTest, NormalisesAsDocker) {
  absl::StatusOr<ImageReference> ref = ParseImageReference(GetParam().input);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->domain, GetParam().domain);
  EXPECT_EQ(ref->path, GetParam().path);
  EXPECT_EQ(ref->tag, GetParam().tag);
  EXPECT_EQ(ref->digest, GetParam().digest);
}

INSTANTIATE_TEST_SUITE_P(
    Docker, ValidReferenceTest,
    ::testing::Values(ValidCase{"nginx", "docker.io", "library/nginx", "", ""},
                      ValidCase{"nginx:1.25", "docker.io", "library/nginx", "1.25", ""},
                      ValidCase{"library/nginx", "docker.io", "library/nginx", "", ""},
                      ValidCase{"docker.io/nginx", "docker.io", "library/nginx", "", ""},
                      ValidCase{"index.docker.io/library/nginx:latest", "docker.io",
                                "library/nginx", "latest", ""},
                      ValidCase{"elf-automations/executive-team:latest", "docker.io",
                                "elf-automations/executive-team", "latest", ""},
                      ValidCase{"localhost/app", "localhost", "app", "", ""},
                      ValidCase{"localhost:5000/app", "localhost:5000", "app", "", ""},
                      ValidCase{"registry:5000/x", "registry:5000", "x", "", ""},
                      ValidCase{"127.0.0.1:5000/elf-automations/executive-team:v1",
                                "127.0.0.1:5000", "elf-automations/executive-team", "v1", ""},
                      ValidCase{"registry.example.com/a/b/c:t_1.x-y@" + kDigest,
                                "registry.example.com", "a/b/c", "t_1.x-y", kDigest},
                      ValidCase{"app@" + kDigest, "docker.io", "library/app", "", kDigest},
                      ValidCase{"Foo/bar", "Foo", "bar", "",
                                ""},  // an upper-case first part is a host
                      ValidCase{"my_app__x/y-z.w--v", "docker.io", "my_app__x/y-z.w--v", "", ""},
                      ValidCase{"reg.example.com/app:" + std::string(128, 'x'), "reg.example.com",
                                "app", std::string(128, 'x'), ""}));

struct InvalidCase {
  std::string input;
  std::string message;
};

void PrintTo(const InvalidCase& c, std::ostream* os) { *os << c.input.substr(0, 60); }

class InvalidReferenceTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidReferenceTest, IsInvalidArgumentSayingWhy) {
  absl::StatusOr<ImageReference> ref = ParseImageReference(GetParam().input);
  ASSERT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument) << GetParam().input;
  EXPECT_THAT(ref.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Docker, InvalidReferenceTest,
    ::testing::Values(
        InvalidCase{"", "at least one component"}, InvalidCase{"Nginx", "must be lowercase"},
        InvalidCase{"docker.io/Library/nginx", "must be lowercase"},
        InvalidCase{"reg.example.com/App:v1", "must be lowercase"},
        InvalidCase{"nginx:", "invalid tag"}, InvalidCase{"nginx:-bad", "invalid tag"},
        InvalidCase{"nginx:" + std::string(129, 'x'), "invalid tag"},
        InvalidCase{"nginx@sha256:abc", "invalid digest"},
        InvalidCase{"nginx@sha256:" + std::string(64, 'A'), "lower-case"},
        InvalidCase{"nginx@md5:" + std::string(32, 'a'), "unsupported algorithm"},
        InvalidCase{kHex, "64-byte hexadecimal"},
        InvalidCase{"reg.example.com/" + std::string(250, 'a'), "not be more than 255"},
        InvalidCase{"a//b", "invalid reference format"},
        InvalidCase{"-app", "invalid reference format"},
        InvalidCase{"app!", "invalid reference format"},
        InvalidCase{"reg.example.com:port/app", "invalid reference format"}));

TEST(TagTest, FollowsDockersGrammar) {
  for (const std::string& tag :
       {std::string("v7"), std::string("_x"), std::string("1.2.3-rc_1"), std::string(128, 'a')}) {
    EXPECT_TRUE(IsValidTag(tag)) << tag;
  }
  for (const std::string& tag : {std::string(""), std::string(".x"), std::string("-x"),
                                 std::string("a/b"), std::string("a:b"), std::string(129, 'a')}) {
    EXPECT_FALSE(IsValidTag(tag)) << tag;
  }
}

TEST(TransportReferenceTest, ParsesDockerAndOciLayout) {
  absl::StatusOr<TransportReference> docker = ParseTransportReference("docker://nginx");
  ASSERT_TRUE(docker.ok()) << docker.status();
  EXPECT_EQ(docker->kind, TransportReference::Kind::kDocker);
  EXPECT_EQ(docker->image.ToString(), "docker.io/library/nginx:latest");
  EXPECT_EQ(docker->ToString(), "docker://docker.io/library/nginx:latest");

  absl::StatusOr<TransportReference> layout = ParseTransportReference("oci:/tmp/layout:v1.2");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->kind, TransportReference::Kind::kOciLayout);
  EXPECT_EQ(layout->layout_dir, "/tmp/layout");
  EXPECT_EQ(layout->layout_ref, "v1.2");
  EXPECT_EQ(ParseTransportReference("oci:/tmp/layout")->layout_ref, "");
}

TEST(TransportReferenceTest, RejectsBadTransports) {
  for (const auto& [input, message] : std::vector<std::pair<std::string, std::string>>{
           {"nginx", "unknown transport"},
           {"http://reg/app", "unknown transport"},
           {"docker://", "at least one component"},
           {"docker://Nginx", "lowercase"},
           {"oci::v1", "directory is empty"},
           {"oci:/x:bad ref", "invalid OCI ref name"}}) {
    absl::StatusOr<TransportReference> ref = ParseTransportReference(input);
    EXPECT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument) << input;
    EXPECT_THAT(ref.status().message(), HasSubstr(message)) << input;
  }
}

TEST(DigestTest, HashesAndValidates) {
  EXPECT_EQ(Digest::Sha256Of("").ToString(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 incremental;
  incremental.Update("ab");
  incremental.Update("c");
  EXPECT_EQ(incremental.Finish(), Digest::Sha256Of("abc"));
  EXPECT_TRUE(Digest::Parse(kDigest).ok());
  EXPECT_FALSE(Digest::Parse("sha256").ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
}

TEST(ManifestTest, ParsesOciAndDockerManifests) {
  std::string manifest = absl::StrCat(
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",)",
      R"("config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":")",
      kDigest, R"("},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip",)",
      R"("size":32,"digest":")", kDigest, R"("}]})");
  absl::StatusOr<Manifest> parsed = ParseManifest(manifest, "m");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->media_type, kDockerManifest);
  EXPECT_EQ(parsed->config.size, 7);
  ASSERT_EQ(parsed->layers.size(), 1u);
  EXPECT_EQ(DetectManifestMediaType(manifest).value_or(""), kDockerManifest);

  EXPECT_EQ(DetectManifestMediaType(R"({"schemaVersion":2,"config":{}})").value_or(""),
            kOciManifest);
  EXPECT_EQ(DetectManifestMediaType(R"({"schemaVersion":2,"manifests":[]})").value_or(""),
            kOciIndex);
  EXPECT_THAT(DetectManifestMediaType(R"({"schemaVersion":1,"fsLayers":[]})").status().message(),
              HasSubstr("schema 1"));
  EXPECT_THAT(ParseManifest(R"({"config":{"digest":"sha256:x","size":1}})", "m").status().message(),
              HasSubstr("m: "));
  EXPECT_FALSE(ParseManifest("not json", "m").ok());
}

TEST(ManifestTest, SelectsPlatformFromIndex) {
  std::string index = absl::StrCat(
      R"({"schemaVersion":2,"manifests":[)",
      R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:)",
      std::string(64, '1'),
      R"(","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},)",
      R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:)",
      std::string(64, '2'), R"(","platform":{"os":"linux","architecture":"amd64"}}]})");
  absl::StatusOr<Index> parsed = ParseIndex(index, "i");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(SelectPlatform(*parsed, DefaultPlatform())->digest.hex(), std::string(64, '2'));
  EXPECT_EQ(SelectPlatform(*parsed, *ParsePlatform("linux/arm64"))->digest.hex(),
            std::string(64, '1'));
  absl::StatusOr<Descriptor> missing = SelectPlatform(*parsed, *ParsePlatform("windows/amd64"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("linux/arm64/v8, linux/amd64"));
  EXPECT_FALSE(ParsePlatform("linux").ok());
}

class LayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("layout-");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(*std::move(dir));
    absl::StatusOr<OciLayout> layout = OciLayout::OpenOrCreate(dir_->Join("image"));
    ASSERT_TRUE(layout.ok()) << layout.status();
    layout_.emplace(*std::move(layout));
  }

  std::optional<testing::TempDir> dir_;
  std::optional<OciLayout> layout_;
};

TEST_F(LayoutTest, CreatesTheStandardLayout) {
  EXPECT_TRUE(std::filesystem::exists(dir_->Join("image/oci-layout")));
  EXPECT_TRUE(std::filesystem::exists(dir_->Join("image/index.json")));
  EXPECT_TRUE(std::filesystem::is_directory(dir_->Join("image/blobs/sha256")));
  EXPECT_EQ(OciLayout::Open(dir_->Join("nothing")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LayoutTest, BlobsAreVerifiedOnWriteAndRead) {
  absl::StatusOr<Digest> digest = layout_->WriteBlob("hello");
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, Digest::Sha256Of("hello"));
  EXPECT_EQ(layout_->ReadBlob(*digest).value_or(""), "hello");

  // A blob that does not match the digest it claims is refused and leaves nothing behind.
  Digest claimed = Digest::Sha256Of("other");
  EXPECT_EQ(layout_->WriteBlob("tampered", claimed).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(layout_->HasBlob(claimed));
  int files = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::recursive_directory_iterator(dir_->Join("image/blobs"))) {
    ++files;
  }
  EXPECT_EQ(files, 2);  // blobs/sha256 and the one good blob

  // Corruption on disk is caught when read.
  std::ofstream(layout_->BlobPath(*digest), std::ios::trunc) << "jello";
  EXPECT_EQ(layout_->ReadBlob(*digest).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(LayoutTest, TagsAndResolvesRefs) {
  absl::StatusOr<testing::TestImage> image =
      testing::WriteTestImage(layout_->dir(), "v1", {1000, 2000}, 7);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(layout_->Resolve("v1")->digest, image->manifest_digest);
  EXPECT_EQ(layout_->Resolve("")->digest, image->manifest_digest);  // the only one

  // Same inputs, same digests.
  absl::StatusOr<testing::TestImage> again =
      testing::WriteTestImage(layout_->dir(), "v2", {1000, 2000}, 7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifest_digest, image->manifest_digest);

  absl::StatusOr<Descriptor> unknown = layout_->Resolve("v3");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("refs: v1, v2"));
  EXPECT_EQ(layout_->Resolve("").status().code(), absl::StatusCode::kInvalidArgument);

  Descriptor missing{kOciManifest, Digest::Sha256Of("absent"), 6, std::nullopt, {}, {}};
  EXPECT_EQ(layout_->Tag("v4", missing).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CredentialStoreTest, ReadsDockerConfigForms) {
  absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("auth-");
  ASSERT_TRUE(dir.ok());
  std::string path = dir->Join("config.json");
  ASSERT_TRUE(testing::WriteFile(path, R"({"auths": {
      "https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcjN0"},
      "reg.example.com:5000": {"username": "bob", "password": "pw"},
      "ghcr.io": {"identitytoken": "tok"}}})")
                  .ok());
  absl::StatusOr<CredentialStore> store = CredentialStore::LoadFile(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->Find("docker.io")->username, "alice");
  EXPECT_EQ(store->Find("docker.io")->password.Reveal(), "s3cr3t");
  EXPECT_EQ(store->Find("reg.example.com:5000")->username, "bob");
  EXPECT_EQ(store->Find("ghcr.io")->identity_token.Reveal(), "tok");
  EXPECT_FALSE(store->Find("reg.example.com").has_value());

  ASSERT_TRUE(testing::WriteFile(path, R"({"auths": {"x": {"auth": "bm9jb2xvbg=="}}})").ok());
  EXPECT_THAT(CredentialStore::LoadFile(path).status().message(), HasSubstr("auths.x.auth"));
}

TEST(CredentialStoreTest, LoadDefaultTakesFlagThenEnvThenHome) {
  absl::StatusOr<testing::TempDir> dir = testing::TempDir::Create("auth-");
  ASSERT_TRUE(dir.ok());
  auto write = [&](const std::string& path, const std::string& user) {
    return testing::WriteFile(path, absl::StrCat(R"({"auths":{"r.example":{"username":")", user,
                                                 R"(","password":"p"}}})"));
  };
  ASSERT_TRUE(write(dir->Join("flag.json"), "from-flag").ok());
  ASSERT_TRUE(write(dir->Join("env.json"), "from-env").ok());
  ASSERT_TRUE(write(dir->Join("home/.docker/config.json"), "from-home").ok());
  std::map<std::string, std::string> env = {{"REGISTRY_AUTH_FILE", dir->Join("env.json")},
                                            {"HOME", dir->Join("home")}};
  auto getenv = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto user = [&](const std::string& flag) {
    absl::StatusOr<CredentialStore> store = CredentialStore::LoadDefault(flag, getenv);
    return store.ok() && store->Find("r.example") ? store->Find("r.example")->username : "none";
  };
  EXPECT_EQ(user(dir->Join("flag.json")), "from-flag");
  EXPECT_EQ(user(""), "from-env");
  env.erase("REGISTRY_AUTH_FILE");
  EXPECT_EQ(user(""), "from-home");
  env["HOME"] = dir->Join("nowhere");
  EXPECT_EQ(user(""), "none");
  EXPECT_EQ(CredentialStore::LoadDefault(dir->Join("missing.json"), getenv).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(RegistryClientTest, ParsesChallengesAndKnowsLoopback) {
  AuthChallenge bearer = ParseAuthChallenge(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push")");
  EXPECT_EQ(bearer.scheme, "Bearer");
  EXPECT_EQ(bearer.params["realm"], "https://auth.example/token");
  EXPECT_EQ(bearer.params["service"], "registry.example");
  EXPECT_EQ(bearer.params["scope"], "repository:a/b:pull,push");
  EXPECT_EQ(ParseAuthChallenge(R"(Basic realm="Registry Realm")").params["realm"],
            "Registry Realm");
  EXPECT_TRUE(IsLoopbackRegistry("localhost:5000"));
  EXPECT_TRUE(IsLoopbackRegistry("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackRegistry("[::1]:5000"));
  EXPECT_FALSE(IsLoopbackRegistry("registry.example.com"));
  EXPECT_FALSE(IsLoopbackRegistry("localhost.example.com:5000"));
}

}  // namespace
}  // namespace elfdeploy::oci
