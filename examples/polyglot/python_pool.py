"""The Python side of the three-language example: a pool of workers for one
callee. It claims due work (POST /v1/claims), runs each task with the
client's task helper in a thread, at most --concurrency at once, and stops
gracefully on SIGTERM (running tasks finish). The "work" is five steps, each
reported as progress; by a hash of the attempt's id, some attempts crash (an
exception: failed) and some wedge (they stop making progress while their
heartbeats go on, so the sweeper marks them stuck: stalled). The retry
policy the caller gave retries both.

Environment: SWEEPER_API, SWEEPER_TOKEN (a worker token of the callee).

    PYTHONPATH=clients/python python3 examples/polyglot/python_pool.py --callee py-pool
"""

import argparse
import os
import signal
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

from sweeper_client import Client, NotLiveError


def behaviour(delegation_id):
    h = zlib.crc32(delegation_id.encode()) % 100
    return "crash" if h < 25 else "wedge" if h < 40 else "ok"


def work(client, d, counts, lock):
    what = behaviour(d.delegation_id)
    t = client.task(d.delegation_id, heartbeat_interval=0.2)
    try:
        with t:
            for step in range(5):
                if t.cancelled.wait(0.05):
                    break
                if what == "wedge" and step == 2:
                    t.cancelled.wait(120)  # no progress until the ledger says stop
                    break
                if what == "crash" and step == 3:
                    raise RuntimeError("crashed at step 3")
                t.progress({"step": step})
            t.result = "rendered by python"
    except RuntimeError:
        pass  # recorded as failed by the task helper
    except NotLiveError:
        pass  # settled elsewhere before it started
    with lock:
        counts[t.outcome or "not_started"] = counts.get(t.outcome or "not_started", 0) + 1
        print("python: %s %s -> %s" % (d.delegation_id, what, t.outcome), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--callee", required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    client = Client(os.environ["SWEEPER_API"], os.environ["SWEEPER_TOKEN"])

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    slots = threading.Semaphore(args.concurrency)
    counts, lock = {}, threading.Lock()
    running = [0]

    def run(d):
        try:
            work(client, d, counts, lock)
        finally:
            with lock:
                running[0] -= 1
            slots.release()

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        while not stop.is_set():
            with lock:
                free = args.concurrency - running[0]
            claimed = client.claim(free) if free > 0 else []
            for d in claimed:
                slots.acquire()
                with lock:
                    running[0] += 1
                pool.submit(run, d)
            if not claimed:
                stop.wait(0.1)
    print("python pool stopped: %s" % counts, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
