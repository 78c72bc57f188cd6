#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace elfdeploy::oci {

// A content digest "<algorithm>:<hex>" (OCI image spec, descriptor.md). sha256 and sha512 are
// accepted; content is hashed with sha256.
class Digest {
 public:
  Digest() = default;

  // Parses and validates: a known algorithm and lower-case hex of the algorithm's length.
  // INVALID_ARGUMENT says what is wrong.
  static absl::StatusOr<Digest> Parse(absl::string_view text);

  // sha256 of `data`.
  static Digest Sha256Of(absl::string_view data);

  const std::string& algorithm() const { return algorithm_; }
  const std::string& hex() const { return hex_; }
  std::string ToString() const { return algorithm_.empty() ? "" : algorithm_ + ":" + hex_; }
  bool empty() const { return algorithm_.empty(); }

  bool operator==(const Digest&) const = default;
  bool operator<(const Digest& other) const { return ToString() < other.ToString(); }

 private:
  Digest(std::string algorithm, std::string hex)
      : algorithm_(std::move(algorithm)), hex_(std::move(hex)) {}
  friend class Sha256;

  std::string algorithm_;
  std::string hex_;
};

// Incremental sha256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // The digest of everything given; the hasher must not be used afterwards.
  Digest Finish();

 private:
  void* context_;  // EVP_MD_CTX*
};

}  // namespace elfdeploy::oci
