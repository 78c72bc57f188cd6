#pragma once

#include "agent/kube/client.h"
#include "elfdeploy/v1/agent_link.pb.h"

namespace elfdeploy::agent {

// Carries out one watcher request on the cluster:
//  - pod_logs: GET .../pods/{pod}/log (container, tailLines, previous, sinceTime, limitBytes);
//  - refresh_application: merge-patch of argocd.argoproj.io/refresh ("normal" or "hard");
//  - apply_application: create, or update the spec and labels when they differ (UNCHANGED
//    otherwise), as `kubectl apply` of the Application would;
//  - ensure_image_pull_secret: the Secret of type kubernetes.io/dockerconfigjson (namespace created
//    first when asked), created or updated only when its data differs.
// Kubernetes errors become the reply's gRPC code; the Secret's content never appears in a reply,
// an error or a log.
v1::AgentReply HandleRequest(KubeClient& client, const v1::AgentRequest& request);

}  // namespace elfdeploy::agent
