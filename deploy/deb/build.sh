#!/usr/bin/env bash
# Builds the sweeper .deb from deploy/nfpm.yaml with the nfpm CLI (a tool of
# tools/go.mod) and prints the package's path:
#
#   deploy/deb/build.sh ARCH VERSION BINARY OUTDIR
#   deploy/deb/build.sh --deb-version VERSION   # only print the dpkg version
#
# ARCH is amd64 or arm64; VERSION a release (v1.2.3, 1.2.3-rc.1) or
# `git describe` output; BINARY the static sweeper binary for ARCH. The
# config's ${ARCH}, ${VERSION} and ${SWEEPER_BINARY} come from the arguments;
# its source paths are relative to the repository root. SOURCE_DATE_EPOCH,
# when set, fixes the file times (nfpm reads it).
# Environment: GO (default go), NFPM (an nfpm binary; default: built from
# tools/go.mod), NFPM_CONFIG (default deploy/nfpm.yaml, relative to the root).
set -euo pipefail

die() { echo "deb/build.sh: $*" >&2; exit "${2:-1}"; }

# deb_version turns a release or `git describe` version into one dpkg
# accepts: a leading v is dropped, a version that does not start with a digit
# (a bare commit such as ad87a29-dirty) becomes 0.0.0~git.<it>, which sorts
# before any release, and characters dpkg refuses become dots.
deb_version() {
	local v=${1#v}
	case $v in [0-9]*) ;; *) v="0.0.0~git.$v" ;; esac
	printf '%s\n' "$v" | LC_ALL=C sed 's/[^A-Za-z0-9.+~-]/./g'
}

if [ "${1:-}" = --deb-version ]; then
	[ $# = 2 ] || die "usage: $0 --deb-version VERSION" 2
	deb_version "$2"
	exit 0
fi
[ $# = 4 ] || die "usage: $0 ARCH VERSION BINARY OUTDIR" 2
arch=$1 version=$2 binary=$3 out=$4
case $arch in amd64 | arm64) ;; *) die "unsupported ARCH \"$arch\" (amd64 or arm64)" 2 ;; esac
[ -n "$version" ] || die "empty VERSION" 2
[ -f "$binary" ] || die "$binary: no such file"
[ -x "$binary" ] || die "$binary is not executable"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
mkdir -p "$out"
out=$(cd "$out" && pwd)

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
config=${NFPM_CONFIG:-deploy/nfpm.yaml}
[ -f "$config" ] || die "$config: no such file"
nfpm=${NFPM:-$(cd tools && GOWORK=off "${GO:-go}" tool -n nfpm)}

log=$(ARCH=$arch VERSION=$(deb_version "$version") SWEEPER_BINARY=$binary \
	"$nfpm" pkg --packager deb --config "$config" --target "$out/" 2>&1) ||
	die "nfpm: $log"
# nfpm prints "created package: PATH".
deb=$(printf '%s\n' "$log" | sed -n 's/.*created package: //p' | tail -1)
[ -f "$deb" ] || die "nfpm made no package: $log"
printf '%s\n' "$deb"
