#include "agent/requests.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/kube/convert.h"
#include "google/protobuf/util/time_util.h"

namespace elfdeploy::agent {
namespace {

using json = nlohmann::json;
using google::protobuf::util::TimeUtil;

constexpr int64_t kDefaultLimitBytes = 1 << 20;

std::string Escape(const std::string& value) {
  std::string out;
  for (unsigned char c : value) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

v1::AgentReply Failure(const absl::Status& status) {
  v1::AgentReply reply;
  reply.set_code(static_cast<int32_t>(status.code()));
  reply.set_message(std::string(status.message()));
  return reply;
}

v1::AgentReply PodLogs(KubeClient& client, const v1::PodLogsCommand& command) {
  if (command.namespace_().empty() || command.pod().empty()) {
    return Failure(absl::InvalidArgumentError("pod_logs needs a namespace and a pod"));
  }
  int64_t limit = command.limit_bytes() > 0 ? command.limit_bytes() : kDefaultLimitBytes;
  std::string path = absl::StrCat("/api/v1/namespaces/", command.namespace_(), "/pods/",
                                  command.pod(), "/log?limitBytes=", limit);
  if (!command.container().empty())
    absl::StrAppend(&path, "&container=", Escape(command.container()));
  if (command.tail_lines() > 0) absl::StrAppend(&path, "&tailLines=", command.tail_lines());
  if (command.previous()) absl::StrAppend(&path, "&previous=true");
  if (command.has_since_time()) {
    absl::StrAppend(&path, "&sinceTime=", Escape(TimeUtil::ToString(command.since_time())));
  }
  absl::StatusOr<std::string> text = client.GetText(path);
  if (!text.ok()) return Failure(text.status());
  v1::AgentReply reply;
  v1::PodLogsResult* result = reply.mutable_pod_logs();
  result->set_truncated(static_cast<int64_t>(text->size()) >= limit);
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    result->add_lines(std::string(line));
  }
  if (result->lines_size() > 0 && result->lines(result->lines_size() - 1).empty()) {
    result->mutable_lines()->RemoveLast();
  }
  return reply;
}

v1::AgentReply Refresh(KubeClient& client, const v1::RefreshApplicationCommand& command) {
  if (command.name().empty()) return Failure(absl::InvalidArgumentError("refresh needs a name"));
  std::string ns = command.namespace_().empty() ? "argocd" : command.namespace_();
  json patch = {
      {"metadata",
       {{"annotations", {{"argocd.argoproj.io/refresh", command.hard() ? "hard" : "normal"}}}}}};
  absl::StatusOr<json> patched = client.MergePatch(
      absl::StrCat("/apis/argoproj.io/v1alpha1/namespaces/", ns, "/applications/", command.name()),
      patch);
  if (!patched.ok()) return Failure(patched.status());
  absl::StatusOr<v1::Application> application = kube::ToApplication(*patched);
  if (!application.ok()) return Failure(application.status());
  v1::AgentReply reply;
  *reply.mutable_refresh_application()->mutable_application() = *std::move(application);
  return reply;
}

v1::AgentReply Apply(KubeClient& client, const v1::ApplyApplicationCommand& command) {
  const v1::ApplicationDefinition& definition = command.application();
  if (definition.name().empty()) {
    return Failure(absl::InvalidArgumentError("apply_application needs a name"));
  }
  json desired = kube::ToApplicationJson(definition);
  std::string ns = desired["metadata"].value("namespace", "argocd");
  std::string collection =
      absl::StrCat("/apis/argoproj.io/v1alpha1/namespaces/", ns, "/applications");
  std::string path = absl::StrCat(collection, "/", definition.name());
  v1::AgentReply reply;
  v1::ApplyApplicationResult* result = reply.mutable_apply_application();
  absl::StatusOr<json> stored;
  absl::StatusOr<json> live = client.Get(path);
  if (absl::IsNotFound(live.status())) {
    stored = client.Create(collection, desired);
    result->set_result(v1::ENSURE_RESULT_CREATED);
    if (absl::IsAlreadyExists(stored.status())) live = client.Get(path);
  }
  if (live.ok()) {
    json labels = live->contains("metadata") && (*live)["metadata"].contains("labels")
                      ? (*live)["metadata"]["labels"]
                      : json::object();
    bool labels_match = true;
    if (desired["metadata"].contains("labels")) {
      for (const auto& [key, value] : desired["metadata"]["labels"].items()) {
        if (!labels.contains(key) || labels[key] != value) labels_match = false;
      }
    }
    if (live->contains("spec") && (*live)["spec"] == desired["spec"] && labels_match) {
      stored = *live;
      result->set_result(v1::ENSURE_RESULT_UNCHANGED);
    } else {
      json patch = {{"spec", desired["spec"]}};
      if (desired["metadata"].contains("labels")) {
        patch["metadata"]["labels"] = desired["metadata"]["labels"];
      }
      // A merge patch replaces spec's lists wholesale; keys the definition does not set are
      // cleared so the stored spec is the desired one.
      for (const auto& [key, value] : (*live)["spec"].items()) {
        if (!desired["spec"].contains(key)) patch["spec"][key] = nullptr;
      }
      stored = client.MergePatch(path, patch);
      result->set_result(v1::ENSURE_RESULT_UPDATED);
    }
  } else if (!absl::IsNotFound(live.status())) {
    return Failure(live.status());
  }
  if (!stored.ok()) return Failure(stored.status());
  absl::StatusOr<v1::Application> application = kube::ToApplication(*stored);
  if (!application.ok()) return Failure(application.status());
  *result->mutable_application() = *std::move(application);
  return reply;
}

v1::AgentReply EnsureSecret(KubeClient& client, const v1::EnsureImagePullSecretCommand& command) {
  if (command.namespace_().empty() || command.name().empty()) {
    return Failure(
        absl::InvalidArgumentError("ensure_image_pull_secret needs a namespace and a name"));
  }
  json config = json::parse(command.docker_config_json(), nullptr, false);
  if (!config.is_object() || !config.contains("auths")) {
    return Failure(absl::InvalidArgumentError(
        "the image pull secret's content is not a docker config with \"auths\""));
  }
  std::string ns_path = absl::StrCat("/api/v1/namespaces/", command.namespace_());
  absl::StatusOr<json> ns = client.Get(ns_path);
  if (absl::IsNotFound(ns.status())) {
    if (!command.create_namespace()) {
      return Failure(absl::FailedPreconditionError(
          absl::StrCat("namespace ", command.namespace_(), " does not exist")));
    }
    absl::StatusOr<json> created =
        client.Create("/api/v1/namespaces", {{"apiVersion", "v1"},
                                             {"kind", "Namespace"},
                                             {"metadata", {{"name", command.namespace_()}}}});
    if (!created.ok() && !absl::IsAlreadyExists(created.status())) return Failure(created.status());
  } else if (!ns.ok()) {
    return Failure(ns.status());
  }
  std::string encoded = absl::Base64Escape(command.docker_config_json());
  json secret = {{"apiVersion", "v1"},
                 {"kind", "Secret"},
                 {"type", "kubernetes.io/dockerconfigjson"},
                 {"metadata",
                  {{"name", command.name()},
                   {"namespace", command.namespace_()},
                   {"labels", {{"app.kubernetes.io/managed-by", "elfdeploy"}}}}},
                 {"data", {{".dockerconfigjson", encoded}}}};
  std::string collection = absl::StrCat(ns_path, "/secrets");
  std::string path = absl::StrCat(collection, "/", command.name());
  v1::AgentReply reply;
  absl::StatusOr<json> live = client.Get(path);
  absl::Status status;
  if (absl::IsNotFound(live.status())) {
    status = client.Create(collection, secret).status();
    reply.mutable_ensure_image_pull_secret()->set_result(v1::ENSURE_RESULT_CREATED);
  } else if (!live.ok()) {
    status = live.status();
  } else if (live->value("type", "") == "kubernetes.io/dockerconfigjson" &&
             live->contains("data") && (*live)["data"].is_object() &&
             (*live)["data"].value(".dockerconfigjson", "") == encoded) {
    reply.mutable_ensure_image_pull_secret()->set_result(v1::ENSURE_RESULT_UNCHANGED);
  } else {
    status = client
                 .MergePatch(path, {{"type", "kubernetes.io/dockerconfigjson"},
                                    {"data", {{".dockerconfigjson", encoded}}}})
                 .status();
    reply.mutable_ensure_image_pull_secret()->set_result(v1::ENSURE_RESULT_UPDATED);
  }
  // Kubernetes echoes request bodies in some errors: never pass one on.
  if (!status.ok()) {
    return Failure(absl::Status(
        status.code(), absl::StrCat("writing Secret ", command.namespace_(), "/", command.name(),
                                    " failed (", absl::StatusCodeToString(status.code()), ")")));
  }
  return reply;
}

}  // namespace

v1::AgentReply HandleRequest(KubeClient& client, const v1::AgentRequest& request) {
  switch (request.command_case()) {
    case v1::AgentRequest::kPodLogs:
      return PodLogs(client, request.pod_logs());
    case v1::AgentRequest::kRefreshApplication:
      return Refresh(client, request.refresh_application());
    case v1::AgentRequest::kApplyApplication:
      return Apply(client, request.apply_application());
    case v1::AgentRequest::kEnsureImagePullSecret:
      return EnsureSecret(client, request.ensure_image_pull_secret());
    default:
      return Failure(absl::UnimplementedError("this agent does not know the request"));
  }
}

}  // namespace elfdeploy::agent
