#include "services/common/oci/digest.h"

#include <openssl/evp.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace elfdeploy::oci {

absl::StatusOr<Digest> Digest::Parse(absl::string_view text) {
  size_t colon = text.find(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("digest \"", text, "\" is not <algorithm>:<hex>"));
  }
  absl::string_view algorithm = text.substr(0, colon);
  absl::string_view hex = text.substr(colon + 1);
  size_t length = 0;
  if (algorithm == "sha256") {
    length = 64;
  } else if (algorithm == "sha512") {
    length = 128;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "digest \"", text, "\": unsupported algorithm \"", algorithm, "\" (sha256, sha512)"));
  }
  if (hex.size() != length) {
    return absl::InvalidArgumentError(absl::StrCat("digest \"", text, "\": ", algorithm, " needs ",
                                                   length, " hex characters, got ", hex.size()));
  }
  for (char c : hex) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) {
      return absl::InvalidArgumentError(
          absl::StrCat("digest \"", text, "\": hex must be lower-case [0-9a-f]"));
    }
  }
  return Digest(std::string(algorithm), std::string(hex));
}

Digest Digest::Sha256Of(absl::string_view data) {
  Sha256 hasher;
  hasher.Update(data);
  return hasher.Finish();
}

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(context_), EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context_)); }

void Sha256::Update(absl::string_view data) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(context_), data.data(), data.size());
}

Digest Sha256::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(context_), out, &size);
  return Digest("sha256", absl::BytesToHexString(
                              absl::string_view(reinterpret_cast<const char*>(out), size)));
}

}  // namespace elfdeploy::oci
