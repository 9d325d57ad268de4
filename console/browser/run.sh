#!/usr/bin/env bash
# make test-browser: the console's browser tests. .ci/setup installs what
# they need on a Debian machine when it is missing (as root: chromium, node
# and npm from apt; playwright-core from the lockfile), then this builds the
# dev server and runs the tests, which rewrite the screenshots in docs/console/.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
GO=${GO:-go}

# chromium, node and npm from Debian, playwright-core (and the rest of this
# folder's lockfile) from npm: the shared setup script installs what is
# missing, or names the command to run when not root.
"$repo/.ci/setup" browser

mkdir -p "$repo/bin"
(cd "$repo" && $GO build -o bin/console-devserver ./console/internal/devserver)
DEVSERVER="$repo/bin/console-devserver" SCREENSHOT_DIR="$repo/docs/console" \
	node --test --test-concurrency=1 --test-reporter=spec console.test.mjs
