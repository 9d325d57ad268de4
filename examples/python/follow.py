"""Follow the durable feed and print one JSON line per event. The cursor (the
last event id processed) is kept in a file, so a restart resumes without loss
or repeats.

Environment: SWEEPER_API, SWEEPER_TOKEN. The client is clients/python.

    python3 follow.py --cursor-file /tmp/cursor --to-status stuck
    python3 follow.py --max-events 10 --wait 5s   # stop after 10 events
"""

import argparse
import json
import os
import sys

from sweeper_client import Client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cursor-file")
    ap.add_argument("--to-status")
    ap.add_argument("--caller-id")
    ap.add_argument("--wait", default="30s")
    ap.add_argument("--max-events", type=int, default=0, help="stop after this many (0: never)")
    args = ap.parse_args()

    client = Client(os.environ["SWEEPER_API"], os.environ["SWEEPER_TOKEN"])
    after = 0
    if args.cursor_file and os.path.exists(args.cursor_file):
        with open(args.cursor_file) as f:
            after = int(f.read().strip() or 0)
    n = 0
    for ev in client.follow(after=after, wait=args.wait, to_status=args.to_status, caller_id=args.caller_id):
        print(json.dumps({"id": ev.id, "delegation_id": ev.delegation_id, "from_status": ev.from_status,
                          "to_status": ev.to_status, "actor": ev.actor, "at": ev.at.isoformat()},
                         sort_keys=True), flush=True)
        if args.cursor_file:
            tmp = args.cursor_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(ev.id))
            os.replace(tmp, args.cursor_file)
        n += 1
        if args.max_events and n >= args.max_events:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
