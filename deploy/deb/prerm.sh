#!/bin/sh
# sweeper .deb prerm: stop and disable the units on removal (not on upgrade).
set -e

if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl stop sweeper.service sweeper-once.timer sweeper-once.service >/dev/null 2>&1 || true
	systemctl disable sweeper.service sweeper-once.timer >/dev/null 2>&1 || true
fi
exit 0
