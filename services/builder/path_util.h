#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace elfdeploy::builder {

// Go's path.Clean for '/'-separated paths ("a/./b/../c" -> "a/c"); "" -> ".".
std::string CleanPath(absl::string_view path);

// Decodes the UTF-8 sequence at s[i] as Go does, storing it in *rune and returning its size; an
// invalid byte is U+FFFD of size 1.
size_t DecodeRune(absl::string_view s, size_t i, char32_t* rune);

}  // namespace elfdeploy::builder
