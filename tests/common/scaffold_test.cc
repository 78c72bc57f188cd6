#include "services/builder/scaffold.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace elfdeploy::builder {
namespace {

namespace fs = std::filesystem;

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/scaffold-test-XXXXXX");
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }

  const std::string& path() const { return path_; }
  std::string Join(const std::string& relative) const { return path_ + "/" + relative; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& content) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const ScaffoldFile* FindFile(const std::vector<ScaffoldFile>& files, const std::string& path) {
  for (const ScaffoldFile& f : files) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

ScaffoldOptions Options(const std::string& app_dir, bool overwrite = false, bool dry_run = false) {
  ScaffoldOptions options;
  options.app_dir = app_dir;
  options.overwrite = overwrite;
  options.dry_run = dry_run;
  return options;
}

AppSpec Spec(const std::string& name, const std::string& kind, int port) {
  AppSpec spec;
  spec.name = name;
  spec.kind = kind;
  spec.port = port;
  return spec;
}

std::vector<std::string> Paths(const std::vector<ScaffoldFile>& files) {
  std::vector<std::string> paths;
  paths.reserve(files.size());
  for (const ScaffoldFile& f : files) paths.push_back(f.path);
  return paths;
}

constexpr char kTeamServer[] = R"(""" Executive team server.

import this_is_in_a_docstring
"""
import os, json
import httpx
from fastapi import FastAPI, Request
import uvicorn
from pydantic import BaseModel
from .relative import thing
from helpers import util  # a local module

app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8090")))
)";

constexpr char kTeamAppYaml[] = R"(name: executive-team
kind: team
port: 8090
env:
  LOG_LEVEL: debug
  A2A_ENABLED: true
  EMPTY:
resources:
  requests:
    cpu: 250m
    memory: 256Mi
  limits:
    cpu: "1"
    memory: 1Gi
)";

// A Python team folder as the seed lays it out, before make-deployable-team ran.
void MakeTeamApp(const TempDir& dir) {
  WriteFile(dir.Join("team_server.py"), kTeamServer);
  WriteFile(dir.Join("helpers.py"), "import requests_not_mapped\n");
  WriteFile(dir.Join("app.yaml"), kTeamAppYaml);
}

YAML::Node Container(const YAML::Node& deployment) {
  return deployment["spec"]["template"]["spec"]["containers"][0];
}

TEST(ScaffoldTest, PythonTeamGetsDockerfileRequirementsAndDeployment) {
  TempDir dir;
  MakeTeamApp(dir);

  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.path()));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(Paths(*files), ElementsAre("Dockerfile", "requirements.txt", "k8s/deployment.yaml"));
  for (const ScaffoldFile& f : *files) {
    EXPECT_EQ(f.action, ScaffoldFile::Action::kCreated) << f.path;
    EXPECT_EQ(ReadFile(dir.Join(f.path)), f.content) << f.path;
  }

  EXPECT_EQ(ReadFile(dir.Join("requirements.txt")), "fastapi\nhttpx\npydantic\nuvicorn\n");

  std::string dockerfile = ReadFile(dir.Join("Dockerfile"));
  EXPECT_THAT(dockerfile, HasSubstr("FROM python:3.11-slim\n"));
  EXPECT_THAT(dockerfile, HasSubstr("WORKDIR /app\n"));
  EXPECT_THAT(dockerfile, HasSubstr("COPY requirements.txt .\n"
                                    "RUN pip install --no-cache-dir -r requirements.txt\n"));
  EXPECT_LT(dockerfile.find("COPY requirements.txt"), dockerfile.find("COPY . .\n"));
  EXPECT_THAT(dockerfile, HasSubstr("USER 10001:10001\n"));
  EXPECT_THAT(dockerfile, HasSubstr("EXPOSE 8090\n"));
  EXPECT_THAT(dockerfile, HasSubstr("CMD [\"python\", \"team_server.py\"]\n"));

  YAML::Node d = YAML::LoadFile(dir.Join("k8s/deployment.yaml"));
  EXPECT_EQ(d["apiVersion"].as<std::string>(), "apps/v1");
  EXPECT_EQ(d["kind"].as<std::string>(), "Deployment");
  EXPECT_EQ(d["metadata"]["name"].as<std::string>(), "executive-team");
  EXPECT_EQ(d["metadata"]["namespace"].as<std::string>(), "elf-automations");
  for (const YAML::Node& labels :
       {d["metadata"]["labels"], d["spec"]["template"]["metadata"]["labels"]}) {
    ASSERT_TRUE(labels.IsMap());
    EXPECT_EQ(labels.size(), 3u);
    EXPECT_EQ(labels["app.kubernetes.io/name"].as<std::string>(), "executive-team");
    EXPECT_EQ(labels["app.kubernetes.io/component"].as<std::string>(), "team");
    EXPECT_EQ(labels["app.kubernetes.io/part-of"].as<std::string>(), "elf-automations");
  }
  EXPECT_EQ(d["spec"]["replicas"].as<int>(), 1);
  EXPECT_EQ(d["spec"]["selector"]["matchLabels"].size(), 1u);
  EXPECT_EQ(d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(),
            "executive-team");

  YAML::Node pull = d["spec"]["template"]["spec"]["imagePullSecrets"];
  ASSERT_TRUE(pull.IsSequence());
  ASSERT_EQ(pull.size(), 1u);
  EXPECT_EQ(pull[0]["name"].as<std::string>(), "regcred");

  ASSERT_EQ(d["spec"]["template"]["spec"]["containers"].size(), 1u);
  YAML::Node c = Container(d);
  EXPECT_EQ(c["name"].as<std::string>(), "executive-team");
  EXPECT_EQ(c["image"].as<std::string>(), "elf-automations/executive-team:latest");
  ASSERT_EQ(c["ports"].size(), 1u);
  EXPECT_EQ(c["ports"][0]["containerPort"].as<int>(), 8090);
  EXPECT_EQ(c["ports"][0]["protocol"].as<std::string>(), "TCP");

  YAML::Node env = c["env"];
  ASSERT_TRUE(env.IsSequence());
  ASSERT_EQ(env.size(), 3u);
  EXPECT_EQ(env[0]["name"].as<std::string>(), "A2A_ENABLED");
  EXPECT_EQ(env[0]["value"].as<std::string>(), "true");
  EXPECT_EQ(env[0]["value"].Tag(), "!") << "a string, not a YAML bool";
  EXPECT_EQ(env[1]["name"].as<std::string>(), "EMPTY");
  EXPECT_EQ(env[1]["value"].as<std::string>(), "");
  EXPECT_EQ(env[2]["name"].as<std::string>(), "LOG_LEVEL");
  EXPECT_EQ(env[2]["value"].as<std::string>(), "debug");

  EXPECT_EQ(c["resources"]["requests"]["cpu"].as<std::string>(), "250m");
  EXPECT_EQ(c["resources"]["requests"]["memory"].as<std::string>(), "256Mi");
  EXPECT_EQ(c["resources"]["limits"]["cpu"].as<std::string>(), "1");
  EXPECT_EQ(c["resources"]["limits"]["memory"].as<std::string>(), "1Gi");

  for (const char* probe : {"readinessProbe", "livenessProbe"}) {
    ASSERT_TRUE(c[probe].IsMap()) << probe;
    EXPECT_EQ(c[probe]["httpGet"]["path"].as<std::string>(), "/health") << probe;
    EXPECT_EQ(c[probe]["httpGet"]["port"].as<int>(), 8090) << probe;
    EXPECT_GT(c[probe]["periodSeconds"].as<int>(), 0) << probe;
  }
}

TEST(ScaffoldTest, OmittedFieldsGetDefaults) {
  TempDir dir;
  WriteFile(dir.Join("main.py"), "from fastapi import FastAPI\n");
  WriteFile(dir.Join("app.yaml"), "name: research\nkind: team\n");

  absl::StatusOr<AppSpec> spec = LoadAppSpec(dir.path());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->port, 8080);
  EXPECT_EQ(spec->language, "python");
  EXPECT_EQ(spec->image, "elf-automations/research:latest");
  EXPECT_EQ(spec->command, (std::vector<std::string>{"python", "main.py"}));
  EXPECT_EQ(spec->cpu_request, kDefaultCpuRequest);
  EXPECT_EQ(spec->memory_limit, kDefaultMemoryLimit);

  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.path()));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(ReadFile(dir.Join("requirements.txt")), "fastapi\nuvicorn\n");
  YAML::Node c = Container(YAML::LoadFile(dir.Join("k8s/deployment.yaml")));
  EXPECT_EQ(c["ports"][0]["containerPort"].as<int>(), 8080);
  EXPECT_FALSE(c["env"].IsDefined());
  EXPECT_EQ(c["resources"]["requests"]["cpu"].as<std::string>(), kDefaultCpuRequest);
  EXPECT_EQ(c["resources"]["requests"]["memory"].as<std::string>(), kDefaultMemoryRequest);
  EXPECT_EQ(c["resources"]["limits"]["cpu"].as<std::string>(), kDefaultCpuLimit);
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/health");
}

TEST(ScaffoldTest, ExistingDockerfileIsKeptUnlessOverwrite) {
  TempDir dir;
  MakeTeamApp(dir);
  const std::string mine = "FROM python:3.12\nCMD [\"python\", \"mine.py\"]\n";
  WriteFile(dir.Join("Dockerfile"), mine);

  absl::StatusOr<std::vector<ScaffoldFile>> kept = Scaffold(Options(dir.path()));
  ASSERT_TRUE(kept.ok()) << kept.status();
  const ScaffoldFile* dockerfile = FindFile(*kept, "Dockerfile");
  ASSERT_NE(dockerfile, nullptr);
  EXPECT_EQ(dockerfile->action, ScaffoldFile::Action::kKept);
  EXPECT_EQ(dockerfile->content, mine);
  EXPECT_EQ(ReadFile(dir.Join("Dockerfile")), mine);
  EXPECT_EQ(FindFile(*kept, "k8s/deployment.yaml")->action, ScaffoldFile::Action::kCreated);

  absl::StatusOr<std::vector<ScaffoldFile>> again = Scaffold(Options(dir.path()));
  ASSERT_TRUE(again.ok()) << again.status();
  for (const ScaffoldFile& f : *again) EXPECT_EQ(f.action, ScaffoldFile::Action::kKept) << f.path;

  absl::StatusOr<std::vector<ScaffoldFile>> replaced =
      Scaffold(Options(dir.path(), /*overwrite=*/true));
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  for (const ScaffoldFile& f : *replaced) {
    EXPECT_EQ(f.action, ScaffoldFile::Action::kOverwritten) << f.path;
  }
  std::string written = ReadFile(dir.Join("Dockerfile"));
  EXPECT_NE(written, mine);
  EXPECT_THAT(written, HasSubstr("FROM python:3.11-slim"));
  EXPECT_EQ(written, FindFile(*replaced, "Dockerfile")->content);
}

TEST(ScaffoldTest, DryRunWritesNothingButReturnsTheContent) {
  TempDir dir;
  MakeTeamApp(dir);

  absl::StatusOr<std::vector<ScaffoldFile>> dry =
      Scaffold(Options(dir.path(), /*overwrite=*/false, /*dry_run=*/true));
  ASSERT_TRUE(dry.ok()) << dry.status();
  ASSERT_EQ(dry->size(), 3u);
  EXPECT_FALSE(fs::exists(dir.Join("Dockerfile")));
  EXPECT_FALSE(fs::exists(dir.Join("requirements.txt")));
  EXPECT_FALSE(fs::exists(dir.Join("k8s")));
  for (const ScaffoldFile& f : *dry) {
    EXPECT_EQ(f.action, ScaffoldFile::Action::kCreated) << f.path;
    EXPECT_FALSE(f.content.empty()) << f.path;
  }

  absl::StatusOr<std::vector<ScaffoldFile>> real = Scaffold(Options(dir.path()));
  ASSERT_TRUE(real.ok()) << real.status();
  for (size_t i = 0; i < real->size(); ++i) {
    EXPECT_EQ((*real)[i].content, (*dry)[i].content) << (*real)[i].path;
  }

  std::string before = ReadFile(dir.Join("Dockerfile"));
  ScaffoldOptions options = Options(dir.path(), /*overwrite=*/true, /*dry_run=*/true);
  options.spec = Spec("executive-team", "team", 9999);
  absl::StatusOr<std::vector<ScaffoldFile>> dry_overwrite = Scaffold(options);
  ASSERT_TRUE(dry_overwrite.ok()) << dry_overwrite.status();
  EXPECT_EQ(FindFile(*dry_overwrite, "Dockerfile")->action, ScaffoldFile::Action::kOverwritten);
  EXPECT_THAT(FindFile(*dry_overwrite, "Dockerfile")->content, HasSubstr("EXPOSE 9999"));
  EXPECT_EQ(ReadFile(dir.Join("Dockerfile")), before);
}

TEST(ScaffoldTest, OutputIsDeterministic) {
  TempDir a;
  TempDir b;
  MakeTeamApp(a);
  WriteFile(b.Join("zzz.py"), "import yaml\n");
  MakeTeamApp(b);
  WriteFile(a.Join("zzz.py"), "import yaml\n");

  absl::StatusOr<std::vector<ScaffoldFile>> first = Scaffold(Options(a.path()));
  absl::StatusOr<std::vector<ScaffoldFile>> second = Scaffold(Options(b.path()));
  absl::StatusOr<std::vector<ScaffoldFile>> third = Scaffold(Options(a.path(), /*overwrite=*/true));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(third.ok()) << third.status();
  ASSERT_EQ(first->size(), 3u);
  for (const ScaffoldFile& f : *first) {
    EXPECT_EQ(ReadFile(a.Join(f.path)), ReadFile(b.Join(f.path))) << f.path;
    EXPECT_EQ(f.content, FindFile(*third, f.path)->content) << f.path;
  }
  EXPECT_EQ(ReadFile(a.Join("requirements.txt")), "fastapi\nhttpx\npydantic\npyyaml\nuvicorn\n");
}

struct BadYamlCase {
  std::string label;
  std::string yaml;
  std::vector<std::string> message_parts;
};

class BadAppYamlTest : public ::testing::TestWithParam<BadYamlCase> {};

TEST_P(BadAppYamlTest, IsInvalidArgumentWithTheReason) {
  TempDir dir;
  WriteFile(dir.Join("app.py"), "print('hi')\n");
  WriteFile(dir.Join("app.yaml"), GetParam().yaml);

  absl::StatusOr<AppSpec> spec = LoadAppSpec(dir.path());
  ASSERT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << spec.status();
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr(dir.Join("app.yaml")));
  for (const std::string& part : GetParam().message_parts) {
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr(part));
  }

  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.path()));
  EXPECT_EQ(files.status(), spec.status());
  EXPECT_FALSE(fs::exists(dir.Join("Dockerfile")));
  EXPECT_FALSE(fs::exists(dir.Join("k8s")));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadAppYamlTest,
    ::testing::Values(
        BadYamlCase{"UnknownKey",
                    "name: a\nkind: team\ncolour: red\n",
                    {"app.yaml:3:1", "unknown key \"colour\"", "known: name, kind"}},
        BadYamlCase{"UnknownNestedKey",
                    "name: a\nkind: team\nresources:\n  requests:\n    gpu: 1\n",
                    {"app.yaml:5:5", "unknown key \"resources.requests.gpu\""}},
        BadYamlCase{"DuplicateKey",
                    "name: a\nkind: team\nname: b\n",
                    {"app.yaml:3:1", "duplicate key \"name\""}},
        BadYamlCase{"UppercaseName",
                    "name: Executive_Team\nkind: team\n",
                    {"app.yaml:1:7", "name \"Executive_Team\" is not a DNS-1123 label"}},
        BadYamlCase{"LongName",
                    absl::StrCat("name: ", std::string(64, 'a'), "\nkind: team\n"),
                    {"app.yaml:1:7", "is not a DNS-1123 label"}},
        BadYamlCase{"MissingName", "kind: team\n", {"name is required"}},
        BadYamlCase{"BadKind",
                    "name: a\nkind: worker\n",
                    {"app.yaml:2:7", "kind \"worker\" must be team or mcp"}},
        BadYamlCase{"MissingKind", "name: a\n", {"kind is required"}},
        BadYamlCase{"PortZero",
                    "name: a\nkind: team\nport: 0\n",
                    {"app.yaml:3:7", "port 0 is not in 1..65535"}},
        BadYamlCase{"PortTooLarge",
                    "name: a\nkind: team\nport: 70000\n",
                    {"app.yaml:3:7", "port 70000 is not in 1..65535"}},
        BadYamlCase{"PortNotNumber",
                    "name: a\nkind: team\nport: http\n",
                    {"app.yaml:3:7", "port must be an integer, not \"http\""}},
        BadYamlCase{"BadQuantity",
                    "name: a\nkind: team\nresources:\n  limits:\n    memory: lots\n",
                    {"app.yaml:5:13", "resources.limits.memory \"lots\" is not a Kubernetes"}},
        BadYamlCase{"EnvNotMap",
                    "name: a\nkind: team\nenv: [A, B]\n",
                    {"app.yaml:3:6", "env must be a mapping"}},
        BadYamlCase{"CommandMap",
                    "name: a\nkind: team\ncommand: {a: b}\n",
                    {"app.yaml:3:10", "command must be a list of strings or a string"}},
        BadYamlCase{"UnterminatedQuote",
                    "name: a\nkind: team\ncommand: python \"x\n",
                    {"app.yaml:3:10", "unterminated quote"}},
        BadYamlCase{"BadLanguage",
                    "name: a\nkind: team\nlanguage: rust\n",
                    {"app.yaml:3:11", "language \"rust\" must be python, node or generic"}},
        BadYamlCase{"NotAMapping", "- name: a\n", {"the document must be a mapping"}},
        BadYamlCase{"MalformedYaml", "name: a\nkind: [team\n", {"malformed YAML"}},
        BadYamlCase{
            "BadIndentation", "name: a\n  kind: team\n", {"app.yaml:2:", "malformed YAML"}}),
    [](const ::testing::TestParamInfo<BadYamlCase>& info) { return info.param.label; });

TEST(ScaffoldTest, MissingAppDirIsNotFound) {
  TempDir dir;
  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.Join("nope")));
  EXPECT_EQ(files.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(files.status().message()), HasSubstr("nope"));
  EXPECT_EQ(LoadAppSpec(dir.Join("nope")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Scaffold(Options("")).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ScaffoldTest, MissingAppYamlWithoutSpecIsNotFound) {
  TempDir dir;
  WriteFile(dir.Join("server.py"), "import mcp\n");
  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.path()));
  EXPECT_EQ(files.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(files.status().message()), HasSubstr("app.yaml"));
}

TEST(ScaffoldTest, McpAppUsesItsKindAndImports) {
  TempDir dir;
  WriteFile(dir.Join("server.py"),
            "from mcp.server.fastmcp import FastMCP\nimport httpx\n\nmcp = FastMCP('tools')\n");
  WriteFile(dir.Join("app.yaml"),
            "name: github-tools\nkind: mcp\nport: 3000\nhealth_path: /healthz\n"
            "image: registry.local:5000/elf/github-tools:1.2\nimage_pull_secret: hub-creds\n"
            "namespace: tools\nreplicas: 2\n");

  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.path()));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(ReadFile(dir.Join("requirements.txt")), "httpx\nmcp\n");
  EXPECT_THAT(ReadFile(dir.Join("Dockerfile")), HasSubstr("CMD [\"python\", \"server.py\"]\n"));
  EXPECT_THAT(ReadFile(dir.Join("Dockerfile")), HasSubstr("EXPOSE 3000\n"));

  YAML::Node d = YAML::LoadFile(dir.Join("k8s/deployment.yaml"));
  EXPECT_EQ(d["metadata"]["namespace"].as<std::string>(), "tools");
  EXPECT_EQ(d["metadata"]["labels"]["app.kubernetes.io/component"].as<std::string>(), "mcp");
  EXPECT_EQ(
      d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].as<std::string>(),
      "mcp");
  EXPECT_EQ(d["spec"]["replicas"].as<int>(), 2);
  EXPECT_EQ(d["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"].as<std::string>(),
            "hub-creds");
  YAML::Node c = Container(d);
  EXPECT_EQ(c["image"].as<std::string>(), "registry.local:5000/elf/github-tools:1.2");
  EXPECT_EQ(c["ports"][0]["containerPort"].as<int>(), 3000);
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["port"].as<int>(), 3000);
}

TEST(ScaffoldTest, CommandAsList) {
  TempDir dir;
  WriteFile(dir.Join("team_server.py"), "import fastapi\n");
  WriteFile(dir.Join("app.yaml"),
            "name: t\nkind: team\ncommand: [uvicorn, \"team_server:app\", --host, 0.0.0.0]\n");
  absl::StatusOr<AppSpec> spec = LoadAppSpec(dir.path());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->command,
            (std::vector<std::string>{"uvicorn", "team_server:app", "--host", "0.0.0.0"}));
  ASSERT_TRUE(Scaffold(Options(dir.path())).ok());
  EXPECT_THAT(ReadFile(dir.Join("Dockerfile")),
              HasSubstr("CMD [\"uvicorn\", \"team_server:app\", \"--host\", \"0.0.0.0\"]\n"));
}

TEST(ScaffoldTest, CommandAsString) {
  TempDir dir;
  WriteFile(dir.Join("team_server.py"), "import fastapi\n");
  WriteFile(dir.Join("app.yaml"),
            "name: t\nkind: team\ncommand: python -m 'my server.py' --name \"a \\\"b\\\"\"\n");
  absl::StatusOr<AppSpec> spec = LoadAppSpec(dir.path());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->command,
            (std::vector<std::string>{"python", "-m", "my server.py", "--name", "a \"b\""}));
  ASSERT_TRUE(Scaffold(Options(dir.path())).ok());
  EXPECT_THAT(ReadFile(dir.Join("Dockerfile")),
              HasSubstr(R"(CMD ["python", "-m", "my server.py", "--name", "a \"b\""])"));

  WriteFile(dir.Join("app.yaml"),
            "name: t\nkind: team\ncommand: python team_server.py --port $PORT\n");
  spec = LoadAppSpec(dir.path());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->command,
            (std::vector<std::string>{"/bin/sh", "-c", "python team_server.py --port $PORT"}));
}

TEST(ScaffoldTest, SpecOverridesAppYaml) {
  TempDir dir;
  WriteFile(dir.Join("app.yaml"), "name: from-file\nkind: team\n");
  WriteFile(dir.Join("team_server.py"), "import fastapi\n");
  AppSpec spec = Spec("from-request", "mcp", 7000);
  spec.env["MODE"] = "x";
  spec.namespace_ = "";

  ScaffoldOptions options = Options(dir.path());
  options.spec = spec;
  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(options);
  ASSERT_TRUE(files.ok()) << files.status();
  YAML::Node d = YAML::LoadFile(dir.Join("k8s/deployment.yaml"));
  EXPECT_EQ(d["metadata"]["name"].as<std::string>(), "from-request");
  EXPECT_FALSE(d["metadata"]["namespace"].IsDefined());
  EXPECT_EQ(Container(d)["env"][0]["value"].as<std::string>(), "x");
  EXPECT_EQ(ReadFile(dir.Join("requirements.txt")), "fastapi\n");

  spec.name = "Bad Name";
  options.overwrite = true;
  options.spec = spec;
  absl::StatusOr<std::vector<ScaffoldFile>> bad = Scaffold(options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("DNS-1123"));
}

TEST(ScaffoldTest, ResolveAppSpecFillsProtoDefaults) {
  TempDir dir;
  WriteFile(dir.Join("package.json"), "{}\n");
  AppSpec spec = Spec("api", "mcp", 3000);
  spec.namespace_ = "";
  spec.image_pull_secret = "";
  spec.health_path = "";
  spec.replicas = 0;
  spec.memory_limit = "2Gi";

  absl::StatusOr<AppSpec> resolved = ResolveAppSpec(dir.path(), spec);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->language, "node");
  EXPECT_EQ(resolved->command, (std::vector<std::string>{"npm", "start"}));
  EXPECT_EQ(resolved->namespace_, "");
  EXPECT_EQ(resolved->image_pull_secret, "regcred");
  EXPECT_EQ(resolved->health_path, "/health");
  EXPECT_EQ(resolved->replicas, 1);
  EXPECT_EQ(resolved->image, "elf-automations/api:latest");
  EXPECT_EQ(resolved->memory_limit, "2Gi");
  EXPECT_EQ(resolved->cpu_limit, kDefaultCpuLimit);

  spec.port = 0;
  EXPECT_THAT(std::string(ResolveAppSpec(dir.path(), spec).status().message()),
              HasSubstr("port 0 is not in 1..65535"));
  spec.port = 3000;
  spec.env["1BAD"] = "x";
  EXPECT_EQ(ResolveAppSpec(dir.path(), spec).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveAppSpec(dir.Join("missing"), Spec("api", "mcp", 3000)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ScaffoldTest, NodeAndGenericApps) {
  TempDir node;
  WriteFile(node.Join("package.json"), "{\"name\": \"n\"}\n");
  WriteFile(node.Join("package-lock.json"), "{}\n");
  WriteFile(node.Join("index.js"), "require('http')\n");
  WriteFile(node.Join("app.yaml"), "name: n\nkind: mcp\n");
  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(node.path()));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(Paths(*files), ElementsAre("Dockerfile", "k8s/deployment.yaml"));
  std::string dockerfile = ReadFile(node.Join("Dockerfile"));
  EXPECT_THAT(dockerfile, HasSubstr("FROM node:20-slim\n"));
  EXPECT_THAT(dockerfile, HasSubstr("RUN npm ci --omit=dev\n"));
  EXPECT_THAT(dockerfile, HasSubstr("USER node\n"));
  EXPECT_THAT(dockerfile, HasSubstr("CMD [\"node\", \"index.js\"]\n"));

  TempDir generic;
  WriteFile(generic.Join("run.sh"), "#!/bin/sh\n");
  WriteFile(generic.Join("app.yaml"), "name: g\nkind: mcp\n");
  absl::StatusOr<std::vector<ScaffoldFile>> no_command = Scaffold(Options(generic.path()));
  EXPECT_EQ(no_command.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_command.status().message()), HasSubstr("set command in app.yaml"));
  EXPECT_FALSE(fs::exists(generic.Join("k8s")));

  WriteFile(generic.Join("Dockerfile"), "FROM scratch\n");
  absl::StatusOr<std::vector<ScaffoldFile>> kept = Scaffold(Options(generic.path()));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(FindFile(*kept, "Dockerfile")->action, ScaffoldFile::Action::kKept);
  EXPECT_TRUE(fs::exists(generic.Join("k8s/deployment.yaml")));
}

TEST(ScaffoldTest, PathsNeverEscapeTheAppDir) {
  TempDir dir;
  TempDir outside;
  MakeTeamApp(dir);
  fs::create_directory_symlink(outside.path(), dir.Join("k8s"));

  absl::StatusOr<std::vector<ScaffoldFile>> files = Scaffold(Options(dir.path()));
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(files.status().message()), HasSubstr("outside the app folder"));
  EXPECT_FALSE(fs::exists(outside.Join("deployment.yaml")));
  EXPECT_FALSE(fs::exists(dir.Join("Dockerfile")));

  fs::remove(dir.Join("k8s"));
  WriteFile(outside.Join("secret.txt"), "top secret\n");
  fs::create_symlink(outside.Join("secret.txt"), dir.Join("Dockerfile"));
  files = Scaffold(Options(dir.path()));
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFile(outside.Join("secret.txt")), "top secret\n");
}

bool KubectlAvailable() { return std::system("command -v kubectl >/dev/null 2>&1") == 0; }

TEST(ScaffoldTest, DeploymentRendersWithKubectlKustomize) {
  if (!KubectlAvailable()) GTEST_SKIP() << "kubectl is not installed";
  TempDir dir;
  MakeTeamApp(dir);
  ASSERT_TRUE(Scaffold(Options(dir.path())).ok());

  TempDir kustomize;
  fs::copy_file(dir.Join("k8s/deployment.yaml"), kustomize.Join("deployment.yaml"));
  WriteFile(kustomize.Join("kustomization.yaml"),
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources:\n  - deployment.yaml\n");

  std::string command = absl::StrCat("kubectl kustomize '", kustomize.path(), "' 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) output.append(buffer, n);
  int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;

  YAML::Node rendered = YAML::Load(output);
  EXPECT_EQ(rendered["kind"].as<std::string>(), "Deployment");
  EXPECT_EQ(rendered["metadata"]["name"].as<std::string>(), "executive-team");
  EXPECT_EQ(Container(rendered)["ports"][0]["containerPort"].as<int>(), 8090);
  EXPECT_EQ(Container(rendered)["env"].size(), 3u);
  EXPECT_THAT(output, Not(HasSubstr("error")));
}

}  // namespace
}  // namespace elfdeploy::builder
