#!/usr/bin/env bash
# elfdeploy on one machine: builds the binaries, starts the local peers (an OCI registry, a
# GitOps git server, and elfdeploy-kubesim as the Kubernetes + Argo CD cluster) and every
# elfdeploy service with the agent linked to cluster-watcher, shows each one healthy; then seeds a
# base image, deploys the platform's agentgateway and the example teams and MCP server with
# `elfctl deploy` (build, push, GitOps commit, Argo CD sync, pods ready, A2A discovery), deploys a
# broken app and shows its diagnosis; and stops everything cleanly on exit or Ctrl-C.
#
#   deploy/local/demo.sh           run until Ctrl-C
#   deploy/local/demo.sh --once    stop after the flow (exit 0 only if it went as described)
#
# Environment: ELFDEPLOY_BUILD_DIR (default build/), ELFDEPLOY_DEMO_SKIP_BUILD=1,
# ELFDEPLOY_DEMO_SKIP_DEPLOY=1 (services only), ELFDEPLOY_DEMO_ANY_PORTS=1 (free ports instead of
# the defaults 5000, 9418, 6443, 7400-7404, 9400-9405).
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
# pick_port: a port free now, below the kernel's ephemeral range (where port-0 binds and outgoing
# connections of other processes land). Someone may still take it first: see start_peer.
pick_port() {
  local low high from=10000 to=65536 p
  read -r low high </proc/sys/net/ipv4/ip_local_port_range
  if ((low - from >= 1000)); then
    to=$low
  elif ((to - high > 1000)); then
    from=$((high + 1))
  fi
  for _ in $(seq 100); do
    p=$((from + RANDOM % (to - from)))
    port_free "$p" && { echo "$p"; return; }
  done
  die "no free port found"
}
# wait_for_line LOG TEXT PID: waits until TEXT is in LOG; fails when PID exits first or after 30 s.
wait_for_line() {
  for _ in $(seq 300); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# start_peer NAME PORT READY LAUNCH: runs `LAUNCH PORT` (which execs the server) in the background
# and waits for its own READY line, so a port another process took is never mistaken for ours.
# With ELFDEPLOY_DEMO_ANY_PORTS=1 a port taken meanwhile is retried on another one.
# Sets peer_port.
start_peer() {
  local name=$1 port=$2 ready=$3 launch=$4 log=$state/logs/$1.log
  for _ in 1 2 3 4 5; do
    [[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} == 1 ]] && port=$(pick_port)
    start "$name" "$log" "$launch" "$port"
    if wait_for_line "$log" "$ready" "${pids[-1]}"; then
      peer_port=$port
      return 0
    fi
    kill -TERM "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" 2>/dev/null || true
    unset 'names[-1]' 'pids[-1]'
    if [[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} != 1 ]] || ! grep -qi 'address already in use' "$log"; then
      break
    fi
  done
  die "$name did not start: $(cat "$log")"
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
    elfdeploy-registry-sync elfdeploy-manifest-publisher elfdeploy-cluster-watcher elfdeploy-agent \
    elfdeploy-kubesim elfctl
fi
buf=$root/.tools/node_modules/.bin/buf
export BUF_CACHE_DIR=$state/buf-cache

# With any ports, the peers get theirs in start_peer and kubesim binds port 0.
registry_port=5000
git_port=9418
kube_port=6443
if [[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} != 1 ]]; then
  for p in $registry_port $git_port $kube_port 7400 7401 7402 7403 7404 9400 9401 9402 9403 9404 9405; do
    port_free "$p" || die "port $p is in use (another stack running?); try ELFDEPLOY_DEMO_ANY_PORTS=1"
  done
fi

say "starting the local peers"
mkdir -p "$state/registry" "$state/git" "$state/logs"
# launch_registry PORT / launch_git_daemon PORT: exec the peer on PORT (see start_peer).
launch_registry() {
  cat >"$state/registry/config.yml" <<YAML
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $state/registry/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$1}
YAML
  exec docker-registry serve "$state/registry/config.yml"
}
launch_git_daemon() {
  exec git daemon --listen=127.0.0.1 --port="$1" --base-path="$state/git" --export-all \
    --enable=receive-pack --reuseaddr --verbose
}
git init -q --bare --initial-branch=main "$state/git/gitops.git"
start_peer registry "$registry_port" "listening on" launch_registry
registry_port=$peer_port
start_peer git-daemon "$git_port" "Ready to rumble" launch_git_daemon
git_port=$peer_port

export DOCKER_REGISTRY=127.0.0.1:$registry_port
export GITOPS_REPO=git://127.0.0.1:$git_port/gitops.git

# The cluster: kubesim plays the Kubernetes API, Argo CD (following the GitOps repo) and a node
# (asking the registry for every image). The agent reaches it through a kubeconfig.
[[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} == 1 ]] && kube_port=0
start kubesim "$state/logs/kubesim.log" "$bin/elfdeploy-kubesim" --listen_addr="127.0.0.1:$kube_port" \
  --gitops_repo="$GITOPS_REPO" --gitops_prefix=elf-automations --cache_dir="$state/kubesim" \
  --container_start_delay=300ms --crash_after=1s --crash_backoff=1s --crash_backoff_max=4s
kube_addr=$(serving_addr "$state/logs/kubesim.log" addr) ||
  die "kubesim did not start: $(cat "$state/logs/kubesim.log")"
kube_port=${kube_addr##*:}
cat >"$state/kubeconfig" <<YAML
apiVersion: v1
kind: Config
current-context: local
clusters: [{name: local, cluster: {server: "http://127.0.0.1:$kube_port"}}]
users: [{name: local, user: {}}]
contexts: [{name: local, context: {cluster: local, user: local}}]
YAML
# The agent's token for cluster-watcher, made for this run.
agent_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ELFDEPLOY_WATCHER_DATA_DIR=$state/cluster-watcher
export ELFDEPLOY_WATCHER_AGENT_TOKEN=$agent_token
export ELFDEPLOY_AGENT_TOKEN=$agent_token
export ELFDEPLOY_AGENT_KUBECONFIG=$state/kubeconfig
# Plain-text gRPC on loopback for this one-machine stack only; see README for TLS.
export ELFDEPLOY_AGENT_INSECURE=true
export ELFDEPLOY_ORCHESTRATOR_DATA_DIR=$state/orchestrator
export ELFDEPLOY_BUILDER_STORE_DIR=$state/builder
export ELFDEPLOY_PUBLISHER_CACHE_DIR=$state/publisher

say "starting elfdeploy"
services=(orchestrator builder registry-sync manifest-publisher cluster-watcher)
declare -A grpc_addr metrics_addr
start_service() {
  local s=$1
  local args=(--config "$config/$s.yaml")
  if [[ ${ELFDEPLOY_DEMO_ANY_PORTS:-0} == 1 ]]; then
    [[ $s == agent ]] || args+=(--grpc_addr=127.0.0.1:0)
    args+=(--metrics_addr=127.0.0.1:0)
  fi
  start "elfdeploy-$s" "$state/logs/$s.log" "$bin/elfdeploy-$s" "${args[@]}"
}
# started_service S: waits for S's "serving" line and records its addresses.
started_service() {
  metrics_addr[$1]=$(serving_addr "$state/logs/$1.log" metrics_addr) ||
    die "elfdeploy-$1 did not start: $(cat "$state/logs/$1.log")"
  grpc_addr[$1]=$(serving_addr "$state/logs/$1.log" grpc_addr)
}
for s in builder registry-sync manifest-publisher; do start_service "$s"; done
for s in builder registry-sync manifest-publisher; do started_service "$s"; done
# Each client is pointed at the address its peer actually took.
export ELFDEPLOY_WATCHER_REGISTRY_SYNC_ADDR=${grpc_addr[registry-sync]}
start_service cluster-watcher
started_service cluster-watcher
export ELFDEPLOY_ORCHESTRATOR_BUILDER_ADDR=${grpc_addr[builder]}
export ELFDEPLOY_ORCHESTRATOR_REGISTRY_SYNC_ADDR=${grpc_addr[registry-sync]}
export ELFDEPLOY_ORCHESTRATOR_MANIFEST_PUBLISHER_ADDR=${grpc_addr[manifest-publisher]}
export ELFDEPLOY_ORCHESTRATOR_CLUSTER_WATCHER_ADDR=${grpc_addr[cluster-watcher]}
start_service orchestrator
started_service orchestrator
# The agent dials the watcher wherever it listens.
export ELFDEPLOY_AGENT_WATCHER_ADDR=${grpc_addr[cluster-watcher]}
start_service agent
metrics_addr[agent]=$(serving_addr "$state/logs/agent.log" metrics_addr) ||
  die "elfdeploy-agent did not start: $(cat "$state/logs/agent.log")"

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
printf '    %-28s %s\n' "cluster (elfdeploy-kubesim)" \
  "http://127.0.0.1:$kube_port -> $(curl -s "http://127.0.0.1:$kube_port/healthz")"
agent_up=0
for _ in $(seq 100); do
  out=$("$buf" curl --protocol grpc --http2-prior-knowledge -d '{}' \
    "http://${grpc_addr[cluster-watcher]}/elfdeploy.v1.ClusterWatcherService/ListClusters" 2>&1 || true)
  grep -q '"CONNECTION_STATE_CONNECTED"' <<<"$out" && { agent_up=1; break; }
  sleep 0.1
done
printf '    %-28s metrics http://%s/metrics %s\n' "elfdeploy-agent" "${metrics_addr[agent]}" \
  "$([[ $agent_up == 1 ]] && echo "linked to cluster-watcher" || echo "NOT LINKED")"
[[ $healthy == "${#services[@]}" && $agent_up == 1 ]] || die "not every service is healthy; logs: $state/logs"
say "all ${#services[@]} services SERVING, agent linked. Try:"
echo "    $buf curl --protocol grpc --http2-prior-knowledge --list-services http://${grpc_addr[orchestrator]}"
echo "    $buf curl --protocol grpc --http2-prior-knowledge -d '{}' http://${grpc_addr[cluster-watcher]}/elfdeploy.v1.ClusterWatcherService/ListClusters"
echo "    logs: $state/logs (removed when the demo stops)"

if [[ ${ELFDEPLOY_DEMO_SKIP_DEPLOY:-0} != 1 ]]; then
  elfctl=$bin/elfctl
  export ELFDEPLOY_ORCHESTRATOR=${grpc_addr[orchestrator]}
  export ELFDEPLOY_CLUSTER_WATCHER=${grpc_addr[cluster-watcher]}
  rpc() { "$buf" curl --protocol grpc --http2-prior-knowledge -d "$2" "http://$1"; }

  say "seeding the base image the examples build FROM (built by elfdeploy-builder, pushed by registry-sync)"
  base=$DOCKER_REGISTRY/elf/python-base:3.11
  built=$(rpc "${grpc_addr[builder]}/elfdeploy.v1.BuilderService/Build" \
    "{\"context_dir\": \"$root/deploy/local/base/python-base\", \"tags\": [\"python-base:3.11\"]}" 2>&1) ||
    die "building the base image failed: $built"
  layout=$(sed -nE 's/.*"layoutReference": "([^"]+)".*/\1/p' <<<"$built")
  [[ -n $layout ]] || die "the base image build gave no layout: $built"
  copied=$(rpc "${grpc_addr[registry-sync]}/elfdeploy.v1.RegistrySyncService/Copy" \
    "{\"source\": \"$layout\", \"destination\": \"docker://$base\"}" 2>&1) ||
    die "pushing the base image failed: $copied"
  echo "    $base"

  say "deploying the platform's agentgateway: elfctl deploy deploy/local/platform"
  "$elfctl" deploy "$root/deploy/local/platform" --build_arg "BASE=$base" --skip_discovery ||
    die "the agentgateway rollout did not succeed; logs: $state/logs"

  say "deploying the example teams and MCP server: elfctl deploy deploy/local/examples"
  "$elfctl" deploy "$root/deploy/local/examples" --build_arg "BASE=$base" ||
    die "the examples rollout did not succeed; logs: $state/logs"
  rollout=$("$elfctl" rollouts --limit 1 --output json | sed -nE 's/.*"id": "([^"]+)".*/\1/p' | head -1)

  say "where to look"
  printf '    %-14s %s\n' "rollout" "$elfctl status $rollout --orchestrator $ELFDEPLOY_ORCHESTRATOR"
  printf '    %-14s %s\n' "GitOps repo" "git clone $GITOPS_REPO   (elf-automations/)"
  printf '    %-14s %s\n' "registry" "skopeo list-tags --tls-verify=false docker://$DOCKER_REGISTRY/elf-automations/executive-team"
  printf '    %-14s %s\n' "cluster" "curl http://127.0.0.1:$kube_port/api/v1/namespaces/elf-automations/pods"
  for s in "${services[@]}" agent; do
    printf '    %-14s %s\n' "metrics" "http://${metrics_addr[$s]}/metrics   (elfdeploy-$s)"
  done

  say "deploying a broken app: flaky-team crashes at start (deploy/local/broken)"
  if "$elfctl" deploy "$root/deploy/local/broken" --build_arg "BASE=$base" --skip_discovery \
    --timeout_rollout 30s; then
    die "the broken app's rollout succeeded"
  fi
  say "its diagnosis: elfctl diagnose flaky-team"
  if "$elfctl" diagnose flaky-team --namespace elf-automations; then
    die "no finding for the broken app"
  fi
  say "demo flow done"
fi

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
