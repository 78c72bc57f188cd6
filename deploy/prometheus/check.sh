#!/usr/bin/env bash
# Checks elfdeploy's monitoring files offline:
#   promtool check config deploy/prometheus/prometheus.yml
#   promtool check rules  deploy/prometheus/rules/*.yml
#   promtool test rules   deploy/prometheus/tests/*.yml
#   deploy/grafana/check_dashboards.py  (dashboards provisioning-ready, every query valid PromQL)
# Runs every step and exits non-zero if any failed. PROMTOOL overrides the promtool to use.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
promtool=${PROMTOOL:-promtool}
cd "$root" || exit 1

command -v "$promtool" >/dev/null || { echo "check.sh: $promtool not found" >&2; exit 1; }

failed=()
step() {
  echo "+ $*"
  "$@" || failed+=("$*")
}

step "$promtool" check config deploy/prometheus/prometheus.yml
step "$promtool" check rules deploy/prometheus/rules/*.yml
step "$promtool" test rules deploy/prometheus/tests/*.yml
step python3 deploy/grafana/check_dashboards.py --promtool "$promtool"

if ((${#failed[@]})); then
  printf 'check.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "check.sh: all checks passed"
