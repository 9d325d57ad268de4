#!/usr/bin/env bash
# Release artifacts in dist/ (make dist):
#   sweeper-linux-{amd64,arm64}     static binaries, version and commit stamped
#   sweeper_<version>_<arch>.deb    from deploy/nfpm.yaml (deploy/deb/build.sh: the nfpm CLI)
#   sweeper-image-<arch>.tar        container image (tools/cmd/imagebuild)
#   SHA256SUMS
# and prints each package's contents and each image's summary.
#
# Environment: VERSION, COMMIT (default: git describe / rev-parse),
# ARCHES (default "amd64 arm64"), STEPS (default "binaries debs images"),
# DIST (default dist), SOURCE_DATE_EPOCH (default: the commit's time).
# Needs go and dpkg-deb (installed with apt-get when missing, as root). The
# binaries build on the product's go.mod alone (GOWORK=off); nfpm and
# imagebuild come from tools/go.mod.
set -euo pipefail
export GOWORK=off

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
ARCHES=${ARCHES:-amd64 arm64}
STEPS=${STEPS:-binaries debs images}
DIST=${DIST:-dist}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
GO=${GO:-go}
pkg=github.com/tasksweeper/sweeper
ldflags="-s -w -X $pkg/internal/version.Version=$VERSION -X $pkg/internal/version.Commit=$COMMIT"

step() { [[ " $STEPS " == *" $1 "* ]]; }

mkdir -p "$DIST"
echo "== sweeper $VERSION ($COMMIT), arches: $ARCHES, steps: $STEPS"

if step binaries; then
	for arch in $ARCHES; do
		out="$DIST/sweeper-linux-$arch"
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -ldflags "$ldflags" -o "$out" ./cmd/sweeper
		printf '%-28s %9d bytes  %s\n' "$out" "$(stat -c %s "$out")" "$(file -b "$out" 2>/dev/null | cut -d, -f1-2 || true)"
	done
	host=$("$GO" env GOARCH)
	if [ -x "$DIST/sweeper-linux-$host" ]; then
		got=$("$DIST/sweeper-linux-$host" --version)
		echo "sweeper-linux-$host --version: $got"
		case "$got" in
		*"$VERSION"*"$COMMIT"*) ;;
		*) echo "FAIL: --version does not show $VERSION and $COMMIT" >&2; exit 1 ;;
		esac
	fi
fi

if step debs; then
	if ! command -v dpkg-deb >/dev/null 2>&1; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg >/dev/null
	fi
	NFPM=$(cd tools && "$GO" tool -n nfpm)
	export NFPM
	for arch in $ARCHES; do
		deb=$(GO=$GO deploy/deb/build.sh "$arch" "$VERSION" "$DIST/sweeper-linux-$arch" "$DIST")
		echo "== $deb"
		dpkg-deb -f "$deb" Package Version Architecture Installed-Size
		echo "conffiles: $(dpkg-deb -I "$deb" conffiles | tr '\n' ' ')"
		dpkg-deb -c "$deb"
	done
fi

if step images; then
	(cd tools && "$GO" build -o "$root/bin/imagebuild" ./cmd/imagebuild)
	for arch in $ARCHES; do
		echo "== $DIST/sweeper-image-$arch.tar"
		bin/imagebuild -binary "$DIST/sweeper-linux-$arch" -arch "$arch" \
			-tag "sweeper:${VERSION#v}" -version "$VERSION" -revision "$COMMIT" \
			-out "$DIST/sweeper-image-$arch.tar"
	done
fi

(cd "$DIST" && sha256sum -- sweeper-linux-* sweeper_*.deb sweeper-image-*.tar 2>/dev/null >SHA256SUMS || true)
echo "== $DIST/SHA256SUMS"
cat "$DIST/SHA256SUMS"
