#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "elfdeploy/v1/cluster_watcher.pb.h"
#include "elfdeploy/v1/common.pb.h"
#include "services/cluster_watcher/state.h"

// Diagnose (gRPC-free): evaluates an Argo CD Application and/or an app's Deployment in a cluster
// snapshot against the expected state and explains what is wrong, like skaffold's status check
// and the seed's troubleshooting list.
//
// Fatal rules (Finding.fatal: waiting will not fix it, the orchestrator fails at once):
// - IMAGE_PULL "ImageNotFound" (registry-sync Resolve says NOT_FOUND) and "CredentialsRefused"
//   (Resolve says UNAUTHENTICATED/PERMISSION_DENIED, or the image resolves but the kubelet's pull
//   was refused with 401/403: the cluster's pull Secret is missing or wrong). Never fatal:
//   "RegistryUnreachable" or a pull failure Resolve could not classify.
// - INVALID_IMAGE (InvalidImageName) and CONTAINER_CONFIG "CreateContainerConfigError".
// - SYNC_ERROR about the expected revision: with request.expected_revision empty, every sync
//   error is fatal (it concerns the state the caller asks about). With it set, an error is fatal
//   only when it is tied to that revision (full or abbreviated SHA): the operation's sync
//   revision (operationState), the revision of a SyncError's "Failed sync attempt to <rev>", else
//   the Application's sync revision (conditions). Argo CD reports no revision with a
//   ComparisonError, so one is fatal only once the Application was compared at the expected
//   revision. A "RepoAccess" error whose cause is permanent (authentication required,
//   repository not found, permission denied) is fatal whatever the revision, since no commit can
//   fix it; a transient one (connection refused, timeout) never is.
// - Never fatal: APPLICATION_MISSING (the orchestrator applies the Application just before
//   waiting; the agent's stream may lag), REVISION_NOT_SYNCED, CRASH_LOOP (an app may crash until
//   a dependency comes up), ROLLOUT_STUCK (ProgressDeadlineExceeded included: pods may still come
//   up, the orchestrator's own deadline governs), UNSCHEDULABLE, DISCOVERY_MISSING,
//   AGENT_DISCONNECTED.
//
// Crash tolerance: a container that crashed and is ready again gets an INFO finding when it was
// running again within crash_tolerance of the crash (running.started - lastState.finished),
// WARNING when recovery took longer. A container not ready after a crash gets ERROR, except
// WARNING while it crashed only once and that crash finished within crash_tolerance of now.
//
// Passwords in URLs quoted from Argo CD (https://user:password@host/…) are redacted.
namespace elfdeploy::watcher {

struct DiagnoseDeps {
  // registry-sync Resolve of an image reference (`docker://<image as the pod spec writes it>`)
  // with optional credentials: OK when it exists, NOT_FOUND when missing,
  // UNAUTHENTICATED/PERMISSION_DENIED when credentials are refused, UNAVAILABLE when
  // unreachable. Unset: pull failures are reported with the kubelet's reason only.
  std::function<absl::Status(const std::string& image, const v1::RegistryCredentials* credentials)>
      resolve_image;
  // The last lines of a container's log through the agent, oldest first (previous=true: the
  // terminated instance). An empty container means the pod's only container. Errors are
  // tolerated (no log evidence). Unset: no log evidence, and discovery cannot be checked
  // (a GatewayLogUnavailable warning).
  std::function<absl::StatusOr<std::vector<std::string>>(
      const std::string& ns, const std::string& pod, const std::string& container, int tail_lines,
      bool previous)>
      read_logs;
  // A crash followed by recovery (ready again) within this window is tolerated (INFO).
  absl::Duration crash_tolerance = absl::Minutes(2);
  // Log lines of a crashed container's previous instance quoted as evidence.
  int log_tail_lines = 20;
  // Log lines of the discovery gateway searched for `Discovered <app>`.
  int discovery_tail_lines = 1000;
  std::function<absl::Time()> now = absl::Now;
};

// Diagnoses the workloads `request` names in `snapshot` (one cluster):
// - request.application: every Deployment in the Application's status.resources, restricted to
//   request.app (by name or label app.kubernetes.io/name) and request.namespace when set;
// - only request.app: the Deployments named app (else labelled app.kubernetes.io/name=app) in
//   request.namespace, or in any namespace when it is empty.
// Returns workloads by name and findings most severe first (fatal before non-fatal at equal
// severity); healthy and fatal as DiagnoseResponse documents them. Errors: INVALID_ARGUMENT when
// neither application nor app is set; NOT_FOUND when neither the Application nor a Deployment of
// the app exists (a missing Application with an existing Deployment is an APPLICATION_MISSING
// finding instead).
absl::StatusOr<v1::DiagnoseResponse> Diagnose(const ClusterState::Snapshot& snapshot,
                                              const v1::DiagnoseRequest& request,
                                              const DiagnoseDeps& deps);

}  // namespace elfdeploy::watcher
