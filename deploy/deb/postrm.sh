#!/bin/sh
# sweeper .deb postrm: forget the removed units. On purge, dpkg removes the
# conffiles in /etc/sweeper; an empty /etc/sweeper goes with them.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = "purge" ]; then
	rmdir /etc/sweeper 2>/dev/null || true
fi
exit 0
