// Tests of the TypeScript client (its build in dist/) against a real daemon
// and PostgreSQL. Run by clients/typescript/client_test.go (make test),
// which starts the daemon and sets SWEEPER_API, SWEEPER_LIMITED_API (a daemon
// with api.rate_limit 1) and the tokens SWEEPER_ADMIN_TOKEN,
// SWEEPER_CALLER_TOKEN (caller billing), SWEEPER_WORKER_TOKEN (worker
// agent-a), SWEEPER_READER_TOKEN.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";

import { Client, NotLiveError, ProblemError, VERSION, signWebhook, verifyWebhook, WebhookVerificationError } from "../dist/index.js";

const env = process.env;
const API = env.SWEEPER_API;
const WAIT_MS = 60_000;
const uid = (prefix) => `${prefix}-${randomUUID().slice(0, 10)}`;

/** Resolves when cond() is true, re-checked on every call of poke; rejects after WAIT_MS. */
function waiter(cond) {
  let resolve;
  const p = new Promise((res, rej) => {
    resolve = res;
    setTimeout(() => rej(new Error("condition not met within 60s")), WAIT_MS).unref();
  });
  return { poke: () => cond() && resolve(), done: p };
}

describe("against the daemon", { skip: API ? false : "SWEEPER_API is not set: run go test ./clients/typescript/" }, () => {
  const admin = new Client(API, env.SWEEPER_ADMIN_TOKEN);
  const caller = new Client(API, env.SWEEPER_CALLER_TOKEN);
  const worker = new Client(API, env.SWEEPER_WORKER_TOKEN);
  const reader = new Client(API, env.SWEEPER_READER_TOKEN);

  async function insert(extra = {}) {
    const id = uid("ts");
    const res = await caller.insert({ delegation_id: id, callee_id: "agent-a", task_preview: "task " + id, ...extra });
    assert.equal(res.outcome, "inserted");
    return id;
  }

  test("the token is never printed", () => {
    assert.ok(!String(caller).includes(env.SWEEPER_CALLER_TOKEN));
    assert.ok(!JSON.stringify(caller).includes(env.SWEEPER_CALLER_TOKEN));
  });

  test("every read endpoint", async () => {
    const deadline = new Date(Date.now() + 3600_000).toISOString();
    const id = await insert({ idempotency_key: uid("key"), deadline, heartbeat_timeout_seconds: 90 });
    assert.deepEqual(await caller.insert({ delegation_id: id, callee_id: "agent-a" }), { outcome: "already_exists", delegation_id: id });
    const d = await caller.get(id);
    assert.equal(d.caller_id, "billing");
    assert.equal(d.status, "queued");
    assert.equal(d.heartbeat_timeout_seconds, 90);
    assert.equal(Date.parse(d.deadline), Date.parse(deadline));

    const ids = [await insert(), await insert(), await insert()];
    const page = await caller.list({ caller_id: "billing", limit: 2 });
    assert.deepEqual(page.delegations.map((x) => x.delegation_id), ids.slice().reverse().slice(0, 2));
    assert.ok(page.next_cursor);
    const all = [];
    for await (const x of caller.listAll({ caller_id: "billing", in_flight: true, limit: 2 })) all.push(x.delegation_id);
    for (const x of [...ids, id]) assert.ok(all.includes(x), x);

    const evs = await reader.events(id);
    assert.deepEqual(evs.map((e) => [e.to_status, e.actor]), [["queued", "api:billing"]]);
    const s = await caller.summary();
    assert.ok(s.in_flight >= 4);
    assert.deepEqual(s.by_caller.map((c) => c.caller_id), ["billing"]);
    assert.ok("/v1/delegations" in (await reader.openapi()).paths);
  });

  test("problems carry their fields", async () => {
    await assert.rejects(reader.get(uid("missing")), (e) => {
      assert.ok(e instanceof ProblemError);
      assert.equal(e.status, 404);
      assert.equal(e.slug, "not-found");
      assert.ok(e.instance.startsWith("/v1/delegations/"));
      return true;
    });
    await assert.rejects(caller.insert({ delegation_id: "  ", callee_id: "agent-a" }), (e) => {
      assert.deepEqual([e.status, e.slug, e.field], [422, "invalid-field", "delegation_id"]);
      return true;
    });
    const id = await insert();
    await worker.transition(id, { to: "completed" });
    await assert.rejects(worker.transition(id, { to: "failed" }), (e) => {
      assert.deepEqual([e.status, e.outcome, e.currentStatus], [409, "rejected_terminal", "completed"]);
      return true;
    });
  });

  test("transitions, heartbeats, retry and attempts", async () => {
    const id = await insert();
    assert.equal((await worker.transition(id, { to: "in_progress" })).outcome, "applied");
    assert.equal((await worker.transition(id, { to: "in_progress" })).outcome, "unchanged");
    assert.deepEqual(await worker.heartbeat(id), { live: true, status: "in_progress" });
    const done = await insert();
    await worker.transition(done, { to: "failed", error: "no disk" });
    const nope = uid("nope");
    assert.deepEqual((await worker.heartbeats([id, done, nope])).sort(), [done, nope].sort());
    assert.deepEqual(await worker.heartbeats([], [{ id, progress: { step: 2 } }, { id: done, progress: { step: 9 } }]), [done]);
    assert.deepEqual((await reader.get(id)).progress, { step: 2 });
    assert.equal((await worker.heartbeat(id, { step: 3 })).live, true);
    assert.deepEqual((await reader.get(id)).progress, { step: 3 });
    const r = await caller.retry(done, { reason: "try again" });
    assert.deepEqual(r, { outcome: "created", delegation_id: done + "#2", attempt: 2 });
    assert.equal((await caller.retry(done)).outcome, "already_retried");
    const chain = await caller.attempts(done + "#2");
    assert.deepEqual(chain.map((a) => [a.delegation_id, a.attempt]), [[done, 1], [done + "#2", 2]]);
  });

  test("claims and retry policies", async () => {
    const callee = uid("claimer"); // a callee of its own: other tests' rows stay out
    const id = uid("pol");
    await admin.insert({ delegation_id: id, caller_id: "billing", callee_id: callee, retry: { max_attempts: 2, backoff_seconds: 0.01, on: ["failed"] } });
    const d = await admin.get(id);
    assert.deepEqual([d.retry.max_attempts, d.retry.on], [2, ["failed"]]);
    assert.deepEqual((await admin.claim(10, callee)).map((c) => [c.delegation_id, c.status]), [[id, "dispatched"]]);
    assert.deepEqual(await admin.claim(10, callee), []);
    await admin.transition(id, { to: "failed", error: "boom" });
    let next = [];
    for (let i = 0; i < 1000 && next.length === 0; i++) next = await admin.claim(10, callee); // due 10 ms (±10%) later
    assert.deepEqual(next.map((n) => [n.retry_of, n.attempt]), [[id, 2]]);
    await admin.transition(next[0].delegation_id, { to: "failed" });
    const ex = await admin.list({ callee_id: callee, exhausted: true });
    assert.deepEqual(ex.delegations.map((x) => [x.delegation_id, x.exhausted]), [[next[0].delegation_id, true]]);
    await assert.rejects(worker.claim(1, callee), (e) => e.status === 403);
  });

  test("webhook subscriptions", async () => {
    const url = "https://hooks.example.com/" + uid("ts");
    const created = await admin.createWebhook({ url, events: ["stuck", "failed"], callee_id: "agent-a" });
    assert.match(created.id, /^wh_[0-9a-f]{24}$/);
    assert.match(created.secret, /^whsec_/);
    assert.deepEqual([created.url, created.events, created.callee_id, created.state], [url, ["stuck", "failed"], "agent-a", "active"]);
    await assert.rejects(caller.createWebhook({ url: "https://hooks.example.com/x" }), (e) => {
      assert.equal(e.status, 403);
      return true;
    });
    await assert.rejects(admin.createWebhook({ url: "ftp://hooks.example.com/x" }), (e) => {
      assert.deepEqual([e.status, e.slug, e.field], [422, "invalid-field", "url"]);
      return true;
    });

    const listed = (await admin.webhooks()).find((w) => w.id === created.id);
    assert.equal(listed.url, url);
    assert.equal(listed.secret, undefined);
    const got = await admin.webhook(created.id);
    assert.deepEqual([got.id, got.cursor, got.secret], [created.id, created.cursor, undefined]);

    const rotated = await admin.rotateWebhookSecret(created.id);
    assert.match(rotated.secret, /^whsec_/);
    assert.notEqual(rotated.secret, created.secret);
    assert.ok(Date.parse(rotated.rotation_ends_at) > Date.now());
    assert.equal((await admin.resumeWebhook(created.id)).state, "active");
    assert.deepEqual(await admin.webhookAttempts(created.id, 5), []);

    assert.equal(await admin.deleteWebhook(created.id), undefined);
    await assert.rejects(admin.webhook(created.id), (e) => {
      assert.equal(e.status, 404);
      return true;
    });
  });

  test("runTask completes with its result", async () => {
    const id = await insert();
    let live = 0;
    const w = waiter(() => live >= 2);
    const before = { at: undefined };
    const task = await worker.runTask(
      id,
      async (t) => {
        assert.equal(t.delegation.status, "in_progress");
        before.at = (await reader.get(id)).last_heartbeat;
        assert.throws(() => t.progress([1, 2]), TypeError);
        t.progress({ page: 3 });
        await w.done; // the beat after the one that took the progress
        assert.equal(t.signal.aborted, false);
        const d = await reader.get(id);
        assert.deepEqual(d.progress, { page: 3 });
        assert.ok(d.progress_at);
        t.result = "invoice.pdf";
      },
      { heartbeatIntervalMs: 20, onBeat: (b) => { if (b.live) live++; w.poke(); } },
    );
    assert.equal(task.outcome, "completed");
    const d = await reader.get(id);
    assert.deepEqual([d.status, d.result_preview], ["completed", "invoice.pdf"]);
    assert.ok(Date.parse(d.last_heartbeat) > Date.parse(before.at));
    assert.deepEqual((await reader.events(id)).map((e) => [e.to_status, e.actor]), [
      ["queued", "api:billing"], ["in_progress", "api:agent"], ["completed", "api:agent"],
    ]);
  });

  test("runTask fails with the error and rethrows it", async () => {
    const id = await insert();
    await assert.rejects(worker.runTask(id, async () => { throw new TypeError("font missing"); }), TypeError);
    const d = await reader.get(id);
    assert.deepEqual([d.status, d.error_detail], ["failed", "TypeError: font missing"]);
  });

  test("the signal aborts when the sweeper marks the task stuck", async () => {
    const id = await insert({ timeout_seconds: 1 }); // the daemon sweeps every second
    const task = await worker.runTask(
      id,
      (t) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("not aborted within 60s")), WAIT_MS);
        t.signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
      }),
      { heartbeatIntervalMs: 50 },
    );
    assert.equal(task.outcome, "not_live");
    assert.ok(task.reason instanceof NotLiveError);
    assert.equal(task.reason.status, "stuck");
    assert.match(task.reason.message, /was marked stuck \(deadline_exceeded\)/);
    assert.equal((await reader.get(id)).status, "stuck");
    assert.deepEqual(await worker.heartbeat(id), { live: false, status: "stuck", reason: "deadline_exceeded" });
  });

  test("the signal aborts when the progress stalls", async () => {
    const id = await insert({ progress_timeout_seconds: 1 });
    const task = await worker.runTask(
      id,
      (t) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("not aborted within 60s")), WAIT_MS);
        t.signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
      }),
      { heartbeatIntervalMs: 50 },
    );
    assert.equal(task.outcome, "not_live");
    assert.match(task.reason.message, /was marked stuck \(stalled\)/);
  });

  test("the signal aborts when the caller fails the task", async () => {
    const id = await insert();
    let live = 0;
    const w = waiter(() => live >= 1);
    const task = await worker.runTask(
      id,
      async (t) => {
        await w.done;
        await caller.transition(id, { to: "failed", error: "cancelled by the user" });
        await new Promise((resolve) => t.signal.addEventListener("abort", resolve));
      },
      { heartbeatIntervalMs: 20, onBeat: (b) => { if (b.live) live++; w.poke(); } },
    );
    assert.equal(task.outcome, "not_live");
    assert.match(task.reason.message, /failed elsewhere/);
    assert.equal((await reader.get(id)).error_detail, "cancelled by the user");
  });

  test("runTask refuses what is not live", async () => {
    const id = await insert();
    await worker.transition(id, { to: "completed" });
    let ran = false;
    await assert.rejects(worker.runTask(id, () => { ran = true; }), (e) => e instanceof NotLiveError && e.status === "completed");
    await assert.rejects(worker.runTask(uid("missing"), () => { ran = true; }), (e) => e instanceof ProblemError && e.status === 404);
    assert.equal(ran, false);
  });

  test("follow resumes from a cursor and wakes on new events", async () => {
    const callerId = uid("follower");
    for (let i = 0; i < 3; i++) await admin.insert({ delegation_id: uid("f"), caller_id: callerId, callee_id: "agent-a" });
    const everything = (await reader.feed({ caller_id: callerId })).events.map((e) => e.id);
    assert.equal(everything.length, 3);
    const take = async (gen, n) => {
      const out = [];
      for await (const ev of gen) {
        out.push(ev);
        if (out.length === n) break;
      }
      return out;
    };
    const first = await take(reader.follow({ caller_id: callerId, wait: "5s" }), 2);
    const rest = await take(reader.follow({ after: first[1].id, caller_id: callerId, wait: "5s" }), 1);
    assert.deepEqual([...first, ...rest].map((e) => e.id), everything);

    const ac = new AbortController();
    const next = take(reader.follow({ after: everything[2], caller_id: callerId, wait: "60s", signal: ac.signal }), 1);
    const late = uid("late");
    await admin.insert({ delegation_id: late, caller_id: callerId, callee_id: "agent-a" });
    assert.deepEqual((await next).map((e) => e.delegation_id), [late]);
    ac.abort();
  });
});

describe("retries", { skip: env.SWEEPER_LIMITED_API ? false : "SWEEPER_LIMITED_API is not set" }, () => {
  test("429 is retried after Retry-After", async () => {
    const c = new Client(env.SWEEPER_LIMITED_API, env.SWEEPER_READER_TOKEN);
    for (let i = 0; i < 3; i++) await c.summary(); // rate 1/s, burst 1: the second and third wait
    assert.ok(c.retries >= 2, `retries ${c.retries}`);
    const impatient = new Client(env.SWEEPER_LIMITED_API, env.SWEEPER_READER_TOKEN, { maxRetries: 0 });
    await assert.rejects((async () => { await impatient.summary(); await impatient.summary(); })(), (e) => {
      assert.deepEqual([e.status, e.slug], [429, "rate-limited"]);
      assert.ok(e.retryAfter >= 1);
      return true;
    });
  });
});

describe("offline", () => {
  const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const BODY = '{"test": 2432232314}';
  const HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  };

  test("verifyWebhook accepts the Standard Webhooks example", async () => {
    assert.equal(await signWebhook(SECRET, HEADERS["webhook-id"], 1614265330, BODY), HEADERS["webhook-signature"]);
    assert.deepEqual(await verifyWebhook(SECRET, HEADERS, BODY, { nowSeconds: 1614265330 }), { test: 2432232314 });
    assert.deepEqual(await verifyWebhook(SECRET, new Headers(HEADERS), new TextEncoder().encode(BODY), { nowSeconds: 1614265330 + 299 }), { test: 2432232314 });
    const rotated = { ...HEADERS, "webhook-signature": "v1,bm90IHRoaXM= " + HEADERS["webhook-signature"] };
    await verifyWebhook(SECRET, rotated, BODY, { nowSeconds: 1614265330 });
  });

  test("verifyWebhook refuses", async () => {
    const cases = {
      "tampered body": [SECRET, HEADERS, '{"test": 2432232315}', 1614265330],
      "other secret": ["whsec_" + "A".repeat(32), HEADERS, BODY, 1614265330],
      "too old": [SECRET, HEADERS, BODY, 1614265330 + 301],
      "from the future": [SECRET, HEADERS, BODY, 1614265330 - 301],
      "no signature": [SECRET, { ...HEADERS, "webhook-signature": undefined }, BODY, 1614265330],
      "v2 only": [SECRET, { ...HEADERS, "webhook-signature": "v2," + HEADERS["webhook-signature"].slice(3) }, BODY, 1614265330],
    };
    for (const [name, [secret, headers, body, now]] of Object.entries(cases)) {
      await assert.rejects(verifyWebhook(secret, headers, body, { nowSeconds: now }), WebhookVerificationError, name);
    }
  });

  test("the version", () => {
    assert.match(VERSION, /^\d+\.\d+\.\d+$/);
  });
});
