#!/usr/bin/env bash
# elfdeploy on one machine: builds the binaries, starts the local peers (an OCI registry and a
# GitOps git server) and every elfdeploy service, shows each one healthy, and stops them all
# cleanly on exit or Ctrl-C.
#
#   deploy/local/demo.sh           run until Ctrl-C
#   deploy/local/demo.sh --once    stop right after the health check (used by the tests)
#
# Environment: ELFDEPLOY_BUILD_DIR (default build/), ELFDEPLOY_DEMO_SKIP_BUILD=1,
# ELFDEPLOY_DEMO_ANY_PORTS=1 (free ports instead of the defaults 5000, 9418, 7400-7404, 9400-9405).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${ELFDEPLOY_BUILD_DIR:-$root/build}
bin=$build/bin
config=$root/deploy/local/config
once=0
[[ ${1:-} == --once ]] && once=1

if [[ -t 1 ]]; then
  say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
else
  say() { printf '==> %s\n' "$*"; }
fi
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

state=$(mktemp -d "${TMPDIR:-/tmp}/elfdeploy-demo.XXXXXX")
names=()
pids=()
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    say "stopping"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      local rc=0
      wait "${pids[i]}" 2>/dev/null || rc=$?
      case $rc in
        0) rc="exit 0" ;;
        143) rc="terminated by SIGTERM" ;;
        *) rc="exit $rc" ;;
      esac
      printf '    %-28s stopped (%s)\n' "${names[i]}" "$rc"
    done
  fi
  rm -rf "$state"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD... : runs CMD in the background, remembered for cleanup.
start() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  names+=("$name")
  pids+=("$!")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    port_free "$p" && { echo "$p"; return; }
  done
  die "no free port found"
}
wait_for_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# serving_addr LOG KEY: the address a service logged in its "serving" line.
serving_addr() {
  for _ in $(seq 300); do
    local line
    line=$(grep -m1 'msg=serving' "$1" 2>/dev/null || true)
    if [[ -n $line ]]; then
      sed -E "s/.* $2=([^ ]+).*/\1/" <<<"$line"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

"$root/deploy/local/install-deps.sh"
if [[ ${ELFDEPLOY_DEMO_SKIP_BUILD:-0} != 1 ]]; then
  say "building"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j 2 --target elfdeploy-orchestrator elfdeploy-builder \
    elfdeploy-registry-sync elfdeploy-manifest-publisher elfdeploy-cluster-watcher elfdeploy-agent
fi
buf=$root/.tools/node_modules/.bin/buf
export BUF_CACHE_DIR=$state/buf-cache

if [[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} == 1 ]]; then
  registry_port=$(pick_port)
  git_port=$(pick_port)
else
  registry_port=5000
  git_port=9418
  for p in $registry_port $git_port 7400 7401 7402 7403 7404 9400 9401 9402 9403 9404 9405; do
    port_free "$p" || die "port $p is in use (another stack running?); try ELFDEPLOY_DEMO_ANY_PORTS=1"
  done
fi

say "starting the local peers"
mkdir -p "$state/registry" "$state/git" "$state/logs"
cat >"$state/registry/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $state/registry/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$registry_port}
YAML
start registry "$state/logs/registry.log" docker-registry serve "$state/registry/config.yml"
git init -q --bare --initial-branch=main "$state/git/gitops.git"
start git-daemon "$state/logs/git-daemon.log" git daemon --listen=127.0.0.1 --port="$git_port" \
  --base-path="$state/git" --export-all --enable=receive-pack --reuseaddr
wait_for_port "$registry_port" || die "registry did not start: $(cat "$state/logs/registry.log")"
wait_for_port "$git_port" || die "git daemon did not start: $(cat "$state/logs/git-daemon.log")"

export DOCKER_REGISTRY=127.0.0.1:$registry_port
export GITOPS_REPO=git://127.0.0.1:$git_port/gitops.git
export ELFDEPLOY_ORCHESTRATOR_DATA_DIR=$state/orchestrator
export ELFDEPLOY_BUILDER_STORE_DIR=$state/builder
export ELFDEPLOY_PUBLISHER_CACHE_DIR=$state/publisher

say "starting elfdeploy"
services=(orchestrator builder registry-sync manifest-publisher cluster-watcher)
declare -A grpc_addr metrics_addr
for s in "${services[@]}" agent; do
  args=(--config "$config/$s.yaml")
  if [[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} == 1 ]]; then
    [[ $s == agent ]] || args+=(--grpc_addr=127.0.0.1:0)
    args+=(--metrics_addr=127.0.0.1:0)
  fi
  start "elfdeploy-$s" "$state/logs/$s.log" "$bin/elfdeploy-$s" "${args[@]}"
done
for s in "${services[@]}" agent; do
  metrics_addr[$s]=$(serving_addr "$state/logs/$s.log" metrics_addr) ||
    die "elfdeploy-$s did not start: $(cat "$state/logs/$s.log")"
  [[ $s == agent ]] || grpc_addr[$s]=$(serving_addr "$state/logs/$s.log" grpc_addr)
done

say "health"
healthy=0
printf '    %-28s %s\n' "registry (docker-registry)" \
  "http://127.0.0.1:$registry_port/v2/ -> $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$registry_port/v2/")"
printf '    %-28s %s\n' "gitops repo (git daemon)" \
  "$GITOPS_REPO -> $(git ls-remote "$GITOPS_REPO" >/dev/null && echo reachable)"
for s in "${services[@]}"; do
  status=unknown
  for _ in $(seq 50); do
    out=$("$buf" curl --protocol grpc --http2-prior-knowledge -d '{}' \
      "http://${grpc_addr[$s]}/grpc.health.v1.Health/Check" 2>&1 || true)
    status=$(sed -nE 's/.*"status": "([A-Z_]+)".*/\1/p' <<<"$out")
    [[ $status == SERVING ]] && break
    sleep 0.1
  done
  [[ $status == SERVING ]] && healthy=$((healthy + 1))
  printf '    %-28s grpc %-16s %-12s metrics http://%s/metrics\n' "elfdeploy-$s" \
    "${grpc_addr[$s]}" "$status" "${metrics_addr[$s]}"
done
agent_up=$(curl -s "http://${metrics_addr[agent]}/metrics" | grep -c '^process_start_time_seconds' || true)
printf '    %-28s metrics http://%s/metrics %s\n' "elfdeploy-agent" "${metrics_addr[agent]}" \
  "$([[ $agent_up == 1 ]] && echo up || echo DOWN)"
[[ $healthy == "${#services[@]}" && $agent_up == 1 ]] || die "not every service is healthy; logs: $state/logs"
say "all ${#services[@]} services SERVING, agent up. Try:"
echo "    $buf curl --protocol grpc --http2-prior-knowledge --list-services http://${grpc_addr[orchestrator]}"
echo "    logs: $state/logs (removed when the demo stops)"

if ((once)); then
  exit 0
fi
say "press Ctrl-C to stop"
while true; do
  for i in "${!pids[@]}"; do
    kill -0 "${pids[i]}" 2>/dev/null || die "${names[i]} exited; its log: $(tail -5 "$state/logs/${names[i]#elfdeploy-}.log" 2>/dev/null)"
  done
  sleep 1
done
