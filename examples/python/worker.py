"""An example worker: records a delegation (caller token), then works on it
(worker token) with a heartbeat loop, reporting progress, that stops as soon as the ledger says the
delegation is no longer live (it was marked stuck, or finished elsewhere), and
completes it when the work is done.

Environment: SWEEPER_API (base URL), SWEEPER_CALLER_TOKEN, SWEEPER_WORKER_TOKEN.

    python3 worker.py --id task-42 --callee agent-a --work-seconds 2

Exit status: 0 completed, 3 stopped because the delegation was no longer live.
"""

import argparse
import os
import sys
import threading

from sweeper_client import Client, Problem


def heartbeat_loop(client, delegation_id, interval, stop, lost):
    """Heartbeat every interval until stop is set; set lost (and stop) when
    the ledger answers live=false. Each beat reports the work's progress
    (here a counter), so a progress timeout tells this loop, alive while the
    work is wedged, from work that moves."""
    beats = 0
    while not stop.wait(interval):
        beats += 1
        beat = client.heartbeat(delegation_id, progress={"beats": beats})
        if not beat["live"]:
            print("heartbeat: %s is %s, stopping (reason %s)" % (delegation_id, beat["status"], beat.get("reason", "none")),
                  flush=True)
            lost.set()
            stop.set()


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
    print("insert: %s %s" % (res["outcome"], res["delegation_id"]), flush=True)
    worker.transition(args.id, "in_progress", reason="picked up")

    stop, lost = threading.Event(), threading.Event()
    beater = threading.Thread(target=heartbeat_loop,
                              args=(worker, args.id, args.heartbeat_seconds, stop, lost), daemon=True)
    beater.start()
    # The "work": wait until it is done, or until the heartbeat loop says stop.
    stop.wait(args.work_seconds)
    stop.set()
    beater.join()
    if lost.is_set():
        return 3
    try:
        out = worker.transition(args.id, "completed", result="done after %gs" % args.work_seconds)
    except Problem as p:
        print("complete refused: %s (%s)" % (p, p.outcome), flush=True)
        return 3
    print("complete: %s" % out["outcome"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
