#!/bin/sh
# sweeper .deb postinst: reload systemd so it sees the units. The service is
# not enabled or started: it needs a DSN in /etc/sweeper/sweeper.env and a
# migrated schema first.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# On upgrade, restart what was running so the new binary takes over.
	if [ "$1" = "configure" ] && [ -n "$2" ]; then
		for u in sweeper.service sweeper-once.timer; do
			if systemctl is-active --quiet "$u"; then
				systemctl try-restart "$u" || true
			fi
		done
	fi
fi

if [ "$1" = "configure" ] && [ -z "$2" ]; then
	cat <<'MSG'
sweeper installed. Next:
  1. put the DSN in /etc/sweeper/sweeper.env (mode 0600) and review /etc/sweeper/config.yaml
  2. migrate as the schema owner:  SWEEPER_DATABASE_URL=... sweeper migrate up
  3. systemctl enable --now sweeper.service      (or: sweeper-once.timer)
See /usr/share/doc/sweeper/operations.md.
MSG
fi
exit 0
