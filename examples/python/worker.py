"""An example worker: records a delegation (caller token), then works on it
(worker token) with the client's task helper, which heartbeats in a thread,
reports the work's progress with the beats, stops the work as soon as the
ledger says the delegation is no longer live (it was marked stuck, or
finished elsewhere), and records the outcome.

Environment: SWEEPER_API (base URL), SWEEPER_CALLER_TOKEN, SWEEPER_WORKER_TOKEN.
The client is clients/python (pip install ./clients/python).

    python3 worker.py --id task-42 --callee agent-a --work-seconds 2

Exit status: 0 completed, 3 stopped because the delegation was no longer live.
"""

import argparse
import os
import sys
import time

from sweeper_client import Client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--id", required=True)
    ap.add_argument("--callee", required=True)
    ap.add_argument("--work-seconds", type=float, default=1.0)
    ap.add_argument("--timeout-seconds", type=float, default=600)
    ap.add_argument("--heartbeat-seconds", type=float, default=0.2)
    args = ap.parse_args()

    base = os.environ["SWEEPER_API"]
    caller = Client(base, os.environ["SWEEPER_CALLER_TOKEN"])
    worker = Client(base, os.environ["SWEEPER_WORKER_TOKEN"])

    res = caller.insert(args.id, callee_id=args.callee, task_preview="example task " + args.id,
                        timeout_seconds=args.timeout_seconds)
    print("insert: %s %s" % (res.outcome, res.delegation_id), flush=True)

    with worker.task(args.id, heartbeat_interval=args.heartbeat_seconds) as t:
        # The "work": steps of one heartbeat each, each reported as progress
        # (so a progress timeout tells work that moves from work that is
        # wedged), until it is done or the ledger says stop.
        end, beats = time.monotonic() + args.work_seconds, 0
        while time.monotonic() < end:
            beats += 1
            t.progress({"beats": beats})
            if t.cancelled.wait(min(args.heartbeat_seconds, max(0.0, end - time.monotonic()))):
                print("heartbeat: %s, stopping" % t.reason, flush=True)
                break
        else:
            t.result = "done after %gs" % args.work_seconds
    print("outcome: %s" % t.outcome, flush=True)
    return 0 if t.outcome == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
