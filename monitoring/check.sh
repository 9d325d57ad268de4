#!/usr/bin/env bash
# Checks the monitoring files (make monitoring-check), on a fresh machine:
# .ci/setup installs promtool (Debian's prometheus package) when missing, then
#   promtool check rules / test rules / check config, and
#   go test ./monitoring/ of the tools module (documented metric names only, runbook anchors,
#   every alert tested firing and quiet, dashboard queries parsed by promtool,
#   the Kubernetes scrape job's relabeling).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/monitoring"
GO=${GO:-go}

# promtool comes from Debian's prometheus package, which the shared setup
# script installs (its server kept from starting) when it is missing.
"$root/.ci/setup"
promtool --version 2>&1 | head -1

echo "== promtool check rules"
promtool check rules prometheus/alerts.yml
echo "== promtool test rules"
promtool test rules prometheus/alerts_test.yml
echo "== promtool check config (static example)"
promtool check config prometheus/prometheus.example.yml
echo "== go test ./monitoring/ (tools module)"
cd "$root/tools"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
"$GO" test -count=1 -v ./monitoring/ >"$out" 2>&1 || status=$?
grep -E '^(--- |ok|FAIL|PASS)|^\s+monitoring_test' "$out" || true
if [ "$status" != 0 ]; then
	cat "$out" >&2
	exit "$status"
fi
echo "monitoring checks: OK"
