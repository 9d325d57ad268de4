#!/usr/bin/env bash
# make test-browser: the console's browser tests. Installs what they need on
# a Debian machine when it is missing (as root: chromium, node and npm from
# apt; playwright-core from the lockfile), builds the dev server and runs the
# tests, which rewrite the screenshots in docs/console/.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
GO=${GO:-go}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "test-browser: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
		exit 1
	fi
	echo "test-browser: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# PostgreSQL refuses to run as root: the dev server runs it as user postgres.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi

[ -d node_modules/playwright-core ] && [ -d node_modules/@axe-core/playwright ] || npm ci --no-audit --no-fund
mkdir -p "$repo/bin"
(cd "$repo" && $GO build -o bin/console-devserver ./console/internal/devserver)
DEVSERVER="$repo/bin/console-devserver" SCREENSHOT_DIR="$repo/docs/console" \
	node --test --test-concurrency=1 --test-reporter=spec console.test.mjs
