#pragma once

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace elfdeploy {

// A Kubernetes DNS-1123 label: 1-63 of [a-z0-9-], starting and ending alphanumeric (names of
// namespaces, Services, apps).
inline bool IsDns1123Label(absl::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '-') return false;
  }
  return true;
}

// A DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123 labels.
inline bool IsDns1123Subdomain(absl::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(s, '.')) {
    if (!IsDns1123Label(label)) return false;
  }
  return true;
}

}  // namespace elfdeploy
