#!/usr/bin/env bash
# Checks the systemd units in this directory:
#   1. `systemd-analyze verify` accepts sweeper.service, sweeper-once.service
#      and sweeper-once.timer (ExecStart must name an existing executable, so
#      the units are copied to a temp dir with /usr/bin/sweeper replaced by a
#      real binary: $SWEEPER_BIN, else ./cmd/sweeper built here, else a stub);
#   2. `systemd-analyze security --offline=true` gives an overall exposure of
#      at most $MAX_EXPOSURE (default 2.0) for both services; the figure is printed;
#   3. TimeoutStopSec is longer than the daemon's shutdown grace.
# Installs systemd (for systemd-analyze) with apt-get when it is missing.
# Usage: deploy/systemd/check.sh   (from anywhere; no root needed unless installing)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
max=${MAX_EXPOSURE:-2.0}

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "systemd-analyze not found: installing systemd" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bin=${SWEEPER_BIN:-}
if [ -z "$bin" ] && [ -d "$root/cmd/sweeper" ]; then
	bin="$tmp/bin/sweeper"
	(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/sweeper)
fi
if [ -z "$bin" ]; then
	bin="$tmp/bin/sweeper"
	mkdir -p "$tmp/bin"
	printf '#!/bin/sh\nexit 0\n' >"$bin"
	chmod 0755 "$bin"
	echo "note: ./cmd/sweeper not found, verifying against a stub executable"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

units=(sweeper.service sweeper-once.service sweeper-once.timer)
for u in "${units[@]}"; do
	sed "s#/usr/bin/sweeper#$bin#g" "$here/$u" >"$tmp/$u"
done

echo "== systemd-analyze verify ${units[*]}"
# verify exits 0 on unknown keys and bad values (it only warns), so any
# output at all is a failure.
if ! vout=$(cd "$tmp" && systemd-analyze verify --man=no "${units[@]/#/./}" 2>&1) || [ -n "$vout" ]; then
	printf '%s\n' "$vout" >&2
	echo "FAIL: systemd-analyze verify" >&2
	exit 1
fi
echo "ok (no warnings)"

fail=0
for u in sweeper.service sweeper-once.service; do
	out=$(cd "$tmp" && systemd-analyze security --offline=true --no-pager "./$u" 2>&1) || true
	line=$(printf '%s\n' "$out" | grep 'Overall exposure level' || true)
	score=$(printf '%s\n' "$line" | sed -E 's/.*: ([0-9]+\.[0-9]+).*/\1/')
	if [ -z "$score" ]; then
		printf '%s\n' "$out" >&2
		echo "FAIL: no exposure figure for $u" >&2
		fail=1
		continue
	fi
	echo "== systemd-analyze security --offline=true $u"
	printf '%s\n' "$out" | grep '✗' || true
	if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
		echo "FAIL: $u exposure $score > $max" >&2
		fail=1
	else
		echo "$u exposure: $score (max $max) OK"
	fi
done

# TimeoutStopSec must exceed shutdown_grace (30s unless config.example.yaml says otherwise).
stop=$(sed -nE 's/^TimeoutStopSec=([0-9]+)s$/\1/p' "$here/sweeper.service")
grace=30
if [ -f "$root/config.example.yaml" ]; then
	g=$(sed -nE 's/^shutdown_grace:[[:space:]]*"?([0-9]+)s"?.*/\1/p' "$root/config.example.yaml" | head -1)
	[ -n "$g" ] && grace=$g
fi
if [ -z "$stop" ] || [ "$stop" -le "$grace" ]; then
	echo "FAIL: TimeoutStopSec=${stop:-unset}s must be longer than shutdown_grace ${grace}s" >&2
	fail=1
else
	echo "TimeoutStopSec=${stop}s > shutdown_grace ${grace}s OK"
fi

exit $fail
