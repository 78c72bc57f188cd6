#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace elfdeploy {

// The one place absl::Status and grpc::Status meet; codes map one to one.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The code's name as go-grpc-prometheus labels it ("OK", "InvalidArgument", "Unimplemented", ...).
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace elfdeploy
