#!/usr/bin/env bash
# Checks the deployment files (make deploy-check), on a fresh machine:
#   1. the systemd units: verify + exposure <= 2.0 (deploy/systemd/check.sh),
#      against the real binary;
#   2. the config files shipped to users load under the real binary's strict
#      config validation (unknown keys and bad values fail);
#   3. the Kubernetes manifests: strict decoding and assertions
#      (go test ./deploy/kubernetes/ of the tools module, which also renders
#      them with `kubectl kustomize` when kubectl is installed).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GO=${GO:-go}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin="$tmp/sweeper"
CGO_ENABLED=0 "$GO" build -trimpath -o "$bin" ./cmd/sweeper

echo "== systemd units"
SWEEPER_BIN="$bin" deploy/systemd/check.sh

echo "== shipped config files (sweeper config validate)"
for f in deploy/kubernetes/base/config.yaml config.example.yaml; do
	if [ ! -f "$f" ]; then
		echo "$f: missing" >&2
		exit 1
	fi
	env -i PATH="$PATH" SWEEPER_DATABASE_URL='postgres://check@127.0.0.1:5432/check' \
		"$bin" --config "$f" config validate >/dev/null
	echo "$f: valid"
done

echo "== Kubernetes manifests"
command -v kubectl >/dev/null 2>&1 || echo "note: kubectl not installed: manifests decoded and resolved, not rendered"
status=0
(cd tools && "$GO" test -count=1 -v ./deploy/kubernetes/) >"$tmp/test.out" 2>&1 || status=$?
grep -E '^(--- |ok|FAIL|PASS)|^\s+manifests_test' "$tmp/test.out" || true
if [ "$status" != 0 ]; then
	cat "$tmp/test.out" >&2
	exit "$status"
fi
echo "deploy checks: OK"
