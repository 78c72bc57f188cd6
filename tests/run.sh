#!/usr/bin/env bash
# The one test command: installs what is missing, configures, builds with both cores and runs
# every test through ctest. Exits non-zero on any failure.
#   ELFDEPLOY_BUILD_DIR  build directory (default: build/)
#   ELFDEPLOY_SANITIZE   e.g. "address;undefined"
#   CTEST_ARGS           extra ctest arguments, e.g. "-R Config"
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ELFDEPLOY_BUILD_DIR:-$root/build}
jobs=${ELFDEPLOY_JOBS:-2}

"$root/deploy/local/install-deps.sh"

cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DELFDEPLOY_WERROR=ON \
  -DELFDEPLOY_SANITIZE="${ELFDEPLOY_SANITIZE:-}" \
  -DELFDEPLOY_TOOLS_DIR="$root/.tools" >/dev/null
cmake --build "$build" -j "$jobs"

cd "$build"
# shellcheck disable=SC2086
ctest --output-on-failure -j "$jobs" --timeout 600 ${CTEST_ARGS:-}
