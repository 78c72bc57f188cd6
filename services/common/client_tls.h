#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace elfdeploy {

// How a service dials its elfdeploy peers. Plain text when ca_file is empty (loopback and the
// one-machine stack); otherwise TLS verified against ca_file, with a client certificate when the
// peer requires one (its server.tls_client_ca_file).
struct ClientTlsOptions {
  std::string ca_file = {};
  std::string cert_file = {};
  std::string key_file = {};
};

// INVALID_ARGUMENT naming the file when one cannot be read, when only one of cert_file and
// key_file is set, or when a client certificate is given without a CA.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const ClientTlsOptions& options);

}  // namespace elfdeploy
