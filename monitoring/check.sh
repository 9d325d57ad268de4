#!/usr/bin/env bash
# Checks the monitoring files (make monitoring-check), on a fresh machine:
# installs promtool (Debian's prometheus package) when missing, then
#   promtool check rules / test rules / check config, and
#   go test ./monitoring/ of the tools module (documented metric names only, runbook anchors,
#   every alert tested firing and quiet, dashboard queries parsed by promtool,
#   the Kubernetes scrape job's relabeling).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/monitoring"
GO=${GO:-go}

if ! command -v promtool >/dev/null 2>&1; then
	echo "promtool not found: installing Debian's prometheus package (for promtool only)"
	# Keep the package's service from starting (no init system here anyway).
	created_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		created_policy=1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now prometheus >/dev/null 2>&1 || true
	fi
	# No stray server left behind: only the one the package may have started.
	if pids=$(pgrep -x prometheus); then
		echo "stopping the prometheus server the package started: $pids"
		kill $pids || true
	fi
fi
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
