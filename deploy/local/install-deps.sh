#!/usr/bin/env bash
# Installs what elfdeploy needs to build, test and run its local stack: Debian 12 packages and
# the npm tools the tests use. Idempotent, and silent when everything is already present.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

packages=(
  # build
  cmake ninja-build g++ pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev libabsl-dev
  libyaml-cpp-dev libgit2-dev prometheus-cpp-dev libcurl4-openssl-dev nlohmann-json3-dev
  libssl-dev zlib1g-dev libarchive-dev libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libdeflate-dev libcpp-httplib-dev libsimdjson-dev libyaml-dev
  # tests/kubesim's allocator
  libjemalloc-dev
  # real peers for the tests and the local demo
  docker-registry git lighttpd apache2-utils openssl curl prometheus skopeo umoci
  openssh-server openssh-client
  # deploy/grafana/check_dashboards.py
  python3
  # RUN steps of the builder, and a static shell for its tests
  buildah busybox-static
  # npm, for buf (buf lint, buf curl)
  nodejs npm
)

missing=()
for p in "${packages[@]}"; do
  # Node.js may come from elsewhere (e.g. NodeSource): a working command counts.
  [[ $p == nodejs ]] && command -v node >/dev/null && continue
  [[ $p == npm ]] && command -v npm >/dev/null && continue
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # docker-registry's package starts a system registry on :5000; elfdeploy starts its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    $sudo systemctl stop docker-registry || true
  fi
  # openssh-server is here for the tests' own sshd; a fresh install does not open a login port.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet ssh 2>/dev/null; then
    $sudo systemctl disable --now ssh || true
  fi
fi

# npm tools, pinned, installed into the checkout (.tools/, ignored by git).
buf_version=1.75.0
tools="$root/.tools"
if [[ "$("$tools/node_modules/.bin/buf" --version 2>/dev/null)" != "$buf_version" ]]; then
  echo "install-deps: installing @bufbuild/buf@$buf_version into $tools" >&2
  mkdir -p "$tools"
  [[ -f "$tools/package.json" ]] || echo '{"private": true}' >"$tools/package.json"
  npm install --prefix "$tools" --silent --no-audit --no-fund --save-exact \
    "@bufbuild/buf@$buf_version" >/dev/null
fi
