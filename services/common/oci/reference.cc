#include "services/common/oci/reference.h"

#include <algorithm>
#include <regex>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/oci/digest.h"

namespace elfdeploy::oci {
namespace {

// The grammar of distribution/reference (regexp.go).
constexpr char kAlphaNumeric[] = "[a-z0-9]+";
constexpr char kSeparator[] = "(?:[._]|__|[-]*)";
constexpr char kDomainComponent[] = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
constexpr char kTag[] = "[\\w][\\w.-]{0,127}";
constexpr char kDigest[] = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}";
constexpr size_t kMaxNameLength = 255;

const std::regex& ReferenceRegex() {
  static const std::regex* regex = [] {
    std::string component = absl::StrCat(kAlphaNumeric, "(?:", kSeparator, kAlphaNumeric, ")*");
    std::string domain =
        absl::StrCat(kDomainComponent, "(?:\\.", kDomainComponent, ")*(?::[0-9]+)?");
    std::string name = absl::StrCat("(?:", domain, "/)?", component, "(?:/", component, ")*");
    return new std::regex(absl::StrCat("^(", name, ")(?::(", kTag, "))?(?:@(", kDigest, "))?$"));
  }();
  return *regex;
}

bool IsHexIdentifier(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

absl::Status Invalid(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("image reference \"", text, "\": ", why));
}

}  // namespace

std::string ImageReference::ToString() const {
  std::string out = Name();
  if (!tag.empty()) absl::StrAppend(&out, ":", tag);
  if (!digest.empty()) absl::StrAppend(&out, "@", digest);
  return out;
}

std::string ImageReference::Reference() const {
  if (!digest.empty()) return digest;
  return tag.empty() ? "latest" : tag;
}

bool IsValidTag(absl::string_view tag) {
  if (tag.empty() || tag.size() > 128 || tag.front() == '.' || tag.front() == '-') return false;
  return std::all_of(tag.begin(), tag.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}

absl::StatusOr<ImageReference> ParseImageReference(absl::string_view text) {
  if (text.empty()) return Invalid(text, "repository name must have at least one component");
  if (IsHexIdentifier(text)) {
    return Invalid(text, "cannot specify 64-byte hexadecimal strings as a repository name");
  }
  // Docker's splitDockerDomain: the first component is a registry only when it looks like one.
  std::string domain = "docker.io";
  std::string remainder(text);
  size_t slash = text.find('/');
  if (slash != absl::string_view::npos) {
    absl::string_view first = text.substr(0, slash);
    if (absl::StrContains(first, '.') || absl::StrContains(first, ':') || first == "localhost" ||
        absl::AsciiStrToLower(first) != first) {
      domain = std::string(first);
      remainder = std::string(text.substr(slash + 1));
    }
  }
  if (domain == "index.docker.io") domain = "docker.io";
  if (domain == "docker.io" && !absl::StrContains(remainder, '/')) {
    remainder = absl::StrCat("library/", remainder);
  }
  std::string remote_name = remainder.substr(0, remainder.find_first_of(":@"));
  if (absl::AsciiStrToLower(remote_name) != remote_name) {
    return Invalid(text, "repository name must be lowercase");
  }

  std::string full = absl::StrCat(domain, "/", remainder);
  std::smatch match;
  if (!std::regex_match(full, match, ReferenceRegex())) {
    size_t at = full.find('@');
    absl::string_view before_digest = absl::string_view(full).substr(0, at);
    size_t colon = before_digest.rfind(':');
    if (colon != absl::string_view::npos && colon > before_digest.rfind('/')) {
      std::string tag(before_digest.substr(colon + 1));
      if (!IsValidTag(tag)) {
        return Invalid(text, absl::StrCat("invalid tag \"", tag,
                                          "\" (at most 128 of [A-Za-z0-9_.-], not starting with "
                                          "'.' or '-')"));
      }
    }
    if (at != std::string::npos && !std::regex_match(full.substr(at + 1), std::regex(kDigest))) {
      return Invalid(text, absl::StrCat("invalid digest \"", full.substr(at + 1), "\""));
    }
    return Invalid(text, "invalid reference format");
  }
  std::string name = match[1].str();
  if (name.size() > kMaxNameLength) {
    return Invalid(text, absl::StrCat("repository name must not be more than ", kMaxNameLength,
                                      " characters"));
  }
  ImageReference ref;
  ref.domain = domain;
  ref.path = name.substr(domain.size() + 1);
  ref.tag = match[2].str();
  ref.digest = match[3].str();
  if (!ref.digest.empty()) {
    if (absl::StatusOr<Digest> d = Digest::Parse(ref.digest); !d.ok()) {
      return Invalid(text, d.status().message());
    }
  }
  return ref;
}

std::string TransportReference::ToString() const {
  if (kind == Kind::kDocker) return absl::StrCat("docker://", image.ToString());
  return layout_ref.empty() ? absl::StrCat("oci:", layout_dir)
                            : absl::StrCat("oci:", layout_dir, ":", layout_ref);
}

absl::StatusOr<TransportReference> ParseTransportReference(absl::string_view text) {
  TransportReference out;
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "docker://")) {
    absl::StatusOr<ImageReference> image = ParseImageReference(rest);
    if (!image.ok()) return image.status();
    out.kind = TransportReference::Kind::kDocker;
    out.image = *std::move(image);
    if (out.image.tag.empty() && out.image.digest.empty()) out.image.tag = "latest";
    return out;
  }
  if (absl::ConsumePrefix(&rest, "oci:")) {
    out.kind = TransportReference::Kind::kOciLayout;
    size_t colon = rest.find(':');
    out.layout_dir = std::string(rest.substr(0, colon));
    if (colon != absl::string_view::npos) out.layout_ref = std::string(rest.substr(colon + 1));
    if (out.layout_dir.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("reference \"", text, "\": the OCI layout directory is empty"));
    }
    // OCI image-layout ref names: components of [A-Za-z0-9_.-] joined by ':', '/', '@', '+'.
    static const std::regex kRefName("^[A-Za-z0-9_.-]+(?:[:/@+][A-Za-z0-9_.-]+)*$");
    if (colon != absl::string_view::npos && !std::regex_match(out.layout_ref, kRefName)) {
      return absl::InvalidArgumentError(
          absl::StrCat("reference \"", text, "\": invalid OCI ref name \"", out.layout_ref, "\""));
    }
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "reference \"", text, "\": unknown transport; use docker://<image> or oci:<dir>[:<ref>]"));
}

}  // namespace elfdeploy::oci
