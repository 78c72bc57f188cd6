#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace elfdeploy::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed). Another
// process may take it before the caller binds it: callers retry on a clash.
absl::StatusOr<int> PickFreePort();

// Polls until a TCP connection to `host`:`port` succeeds; DEADLINE_EXCEEDED after `timeout`.
absl::Status WaitForTcpPort(const std::string& host, int port, absl::Duration timeout);

}  // namespace elfdeploy::testing
