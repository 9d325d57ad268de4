// The TypeScript side of the three-language example: a pool of workers for
// one callee, as python_pool.py: it claims due work, runs each task with
// runTask, at most --concurrency at once, and stops gracefully on SIGTERM.
// Some attempts crash (a throw: failed), some wedge (no progress while the
// heartbeats go on: stuck, stalled); the caller's retry policy retries both.
//
// Environment: SWEEPER_API, SWEEPER_TOKEN (a worker token of the callee),
// SWEEPER_CLIENT (the built client, default ../../clients/typescript/dist/index.js).
//
//   npm ci --prefix clients/typescript && npm run build --prefix clients/typescript
//   node examples/polyglot/ts_pool.mjs --callee ts-pool

import { parseArgs } from "node:util";

const { Client, NotLiveError } = await import(process.env.SWEEPER_CLIENT ?? "../../clients/typescript/dist/index.js");

const { values } = parseArgs({ options: { callee: { type: "string" }, concurrency: { type: "string", default: "8" } } });
const concurrency = Number(values.concurrency);
const client = new Client(process.env.SWEEPER_API, process.env.SWEEPER_TOKEN);

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });

function behaviour(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) % 100003;
  h %= 100;
  return h < 25 ? "crash" : h < 40 ? "wedge" : "ok";
}

const counts = {};
async function work(d) {
  const what = behaviour(d.delegation_id);
  let outcome = "not_started";
  try {
    const task = await client.runTask(d.delegation_id, async (t) => {
      for (let step = 0; step < 5 && !t.signal.aborted; step++) {
        await sleep(50, t.signal);
        if (what === "wedge" && step === 2) {
          await sleep(120_000, t.signal); // no progress until the ledger says stop
          return;
        }
        if (what === "crash" && step === 3) throw new Error("crashed at step 3");
        t.progress({ step });
      }
      t.result = "rendered by typescript";
    }, { heartbeatIntervalMs: 200 });
    outcome = task.outcome;
  } catch (e) {
    if (e instanceof NotLiveError) outcome = "not_started";
    else if (e.message === "crashed at step 3") outcome = "failed";
    else throw e;
  }
  counts[outcome] = (counts[outcome] ?? 0) + 1;
  console.log(`typescript: ${d.delegation_id} ${what} -> ${outcome}`);
}

let stopped = false;
const stop = new AbortController();
process.on("SIGTERM", () => { stopped = true; stop.abort(); });
const running = new Set();
while (!stopped) {
  const free = concurrency - running.size;
  const claimed = free > 0 ? await client.claim(free, values.callee) : [];
  for (const d of claimed) {
    const p = work(d).finally(() => running.delete(p));
    running.add(p);
  }
  if (claimed.length === 0) await sleep(100, stop.signal);
}
await Promise.allSettled(running);
console.log(`typescript pool stopped: ${JSON.stringify(counts)}`);
