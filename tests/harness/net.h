#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace elfdeploy::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bound and closed), picked at random below the
// kernel's ephemeral range so that other processes' outgoing connections and port-0 binds cannot
// take it meanwhile (and a server may come back on it after a restart). Another picker still may:
// callers retry on a clash (see StartOnFreePort).
absl::StatusOr<int> PickFreePort();

// Polls until a TCP connection to `host`:`port` succeeds; DEADLINE_EXCEEDED after `timeout`.
absl::Status WaitForTcpPort(const std::string& host, int port, absl::Duration timeout);

}  // namespace elfdeploy::testing
