/**
 * Client of sweeper's ledger HTTP API (docs/api.md). ESM, no runtime
 * dependencies: Node 18+ and browsers (fetch, AbortSignal, WebCrypto). The
 * types are generated from the API's OpenAPI document (src/schema.ts, by
 * openapi-typescript; a test fails when they drift from it).
 *
 * ```ts
 * import { Client } from "@tasksweeper/sweeper-client";
 * const worker = new Client("http://127.0.0.1:8080", token);
 * await worker.runTask("task-42", async (task) => {
 *   task.progress({ step: "render" }); // sent with the next heartbeat
 *   await render(task.delegation.task_preview, { signal: task.signal }); // aborted when no longer live
 *   task.result = "invoice.pdf"; // completed on return, failed on a throw
 * });
 * ```
 */

import type { components, operations } from "./schema.js";

export type { components, operations, paths } from "./schema.js";
export { verifyWebhook, signWebhook, WebhookVerificationError } from "./webhook.js";

type Schemas = components["schemas"];
export type Status = Schemas["Status"];
export type Delegation = Schemas["Delegation"];
export type Event = Schemas["Event"];
export type Problem = Schemas["Problem"];
export type InsertRequest = Schemas["InsertRequest"];
export type InsertResponse = Schemas["InsertResponse"];
export type RetryRequest = Schemas["RetryRequest"];
export type RetryResponse = Schemas["RetryResponse"];
export type ListResponse = Schemas["ListResponse"];
export type TransitionRequest = Schemas["TransitionRequest"];
export type TransitionResponse = Schemas["TransitionResponse"];
export type HeartbeatResponse = Schemas["HeartbeatResponse"];
export type HeartbeatRequest = Schemas["HeartbeatRequest"];
export type HeartbeatsRequest = Schemas["HeartbeatsRequest"];
export type FeedResponse = Schemas["FeedResponse"];
export type Summary = Schemas["Summary"];
export type RetryPolicy = Schemas["RetryPolicy"];
export type RetryPolicyInput = Schemas["RetryPolicyInput"];
export type WebhookRequest = Schemas["WebhookRequest"];
export type WebhookSubscription = Schemas["WebhookSubscription"];
export type WebhookSecret = Schemas["WebhookSecret"];
export type WebhookAttempt = Schemas["WebhookAttempt"];
export type ListQuery = NonNullable<operations["listDelegations"]["parameters"]["query"]>;
export type FeedQuery = NonNullable<operations["feed"]["parameters"]["query"]>;

/** The client's version; it follows the daemon's (internal/version.ClientVersion). */
export const VERSION = "0.4.0";

/**
 * An error answer of the API: RFC 9457 problem details. `type` is
 * `urn:sweeper:problem:<slug>`.
 */
export class ProblemError extends Error {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  readonly detail?: string;
  readonly instance?: string;
  readonly field?: string;
  readonly outcome?: string;
  readonly currentStatus?: Status;
  /** Seconds the server asked to wait (Retry-After), for 429 and 503. */
  readonly retryAfter?: number;
  readonly problem: Partial<Problem>;

  constructor(status: number, problem: Partial<Problem>, retryAfter?: number) {
    super(`${status} ${problem.title ?? ""}: ${problem.detail ?? ""}`);
    this.name = "ProblemError";
    this.status = status;
    this.problem = problem;
    this.type = problem.type ?? "";
    this.title = problem.title ?? "";
    this.detail = problem.detail;
    this.instance = problem.instance;
    this.field = problem.field;
    this.outcome = problem.outcome;
    this.currentStatus = problem.current_status;
    this.retryAfter = retryAfter;
  }

  /** The last part of `type`, e.g. "invalid-field". */
  get slug(): string {
    return this.type.slice(this.type.lastIndexOf(":") + 1);
  }
}

/**
 * The delegation is terminal (stuck, failed, completed) or gone: its work
 * must stop, and its outcome is not this worker's to record. It is the
 * reason of a task's aborted signal.
 */
export class NotLiveError extends Error {
  constructor(
    readonly delegationId: string,
    readonly status: Status | undefined,
    readonly stuckReason = "",
  ) {
    super(describeNotLive(delegationId, status, stuckReason));
    this.name = "NotLiveError";
  }
}

function describeNotLive(id: string, status: Status | undefined, stuckReason: string): string {
  switch (status) {
    case "stuck":
      return `delegation "${id}" was marked stuck (${stuckReason || "no reason recorded"})`;
    case "failed":
      return `delegation "${id}" was failed elsewhere (by its caller or an operator)`;
    case "completed":
      return `delegation "${id}" was completed elsewhere`;
    case undefined:
      return `delegation "${id}" no longer exists`;
  }
  return `delegation "${id}" is ${status}`;
}

export interface ClientOptions {
  /** Bound of each request, in milliseconds (default 70000, above a 60 s long poll). */
  timeoutMs?: number;
  /** Retries of answers 429 and 503 (default 3). */
  maxRetries?: number;
  /** Longest wait before a retry, in milliseconds (default 30000). */
  maxRetryDelayMs?: number;
  /** The fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** Retry-After as seconds: delta-seconds or an HTTP date. */
function parseRetryAfter(v: string | null): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - Date.now()) / 1000);
}

const enc = encodeURIComponent;

function query(q: object | undefined): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q ?? {})) {
    if (v !== undefined && v !== null) p.set(k, String(v));
  }
  const s = p.toString();
  return s ? "?" + s : "";
}

/**
 * One API token's view of the ledger. Answers 429 and 503 are retried after
 * their Retry-After (every write of the API is idempotent, so a retry never
 * writes twice); other errors throw ProblemError. The token is never
 * printed.
 */
export class Client {
  readonly baseUrl: string;
  #token: string;
  #opts: Required<Omit<ClientOptions, "fetch">> & { fetch: typeof fetch };
  /** Retries made so far (answers 429 and 503 waited out). */
  retries = 0;

  constructor(baseUrl: string, token: string, opts: ClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#token = token;
    this.#opts = {
      timeoutMs: opts.timeoutMs ?? 70_000,
      maxRetries: opts.maxRetries ?? 3,
      maxRetryDelayMs: opts.maxRetryDelayMs ?? 30_000,
      fetch: opts.fetch ?? globalThis.fetch.bind(globalThis),
    };
  }

  toString(): string {
    return `Client(${this.baseUrl}, token=<hidden>)`;
  }

  /** Sends a request; resolves with the decoded JSON answer. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.#token}`,
      Accept: "application/json",
    };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(this.#opts.timeoutMs);
      const res = await this.#opts.fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? anySignal([signal, timeout]) : timeout,
      });
      if (res.status === 204) return undefined as T;
      if (res.ok) return (await res.json()) as T;
      let problem: Partial<Problem>;
      try {
        problem = (await res.json()) as Partial<Problem>;
      } catch {
        problem = { title: res.statusText || `HTTP ${res.status}`, status: res.status };
      }
      const retryAfter = parseRetryAfter(res.headers.get("Retry-After"));
      if ((res.status === 429 || res.status === 503) && attempt < this.#opts.maxRetries) {
        this.retries++;
        const delay = retryAfter !== undefined ? retryAfter * 1000 : 500 * 2 ** attempt;
        await sleep(Math.min(delay, this.#opts.maxRetryDelayMs), signal);
        continue;
      }
      throw new ProblemError(res.status, problem, retryAfter);
    }
  }

  /** Records a delegation (POST /v1/delegations). */
  insert(req: InsertRequest): Promise<InsertResponse> {
    return this.request("POST", "/v1/delegations", req);
  }

  /** One delegation; 404 as ProblemError. */
  get(id: string): Promise<Delegation> {
    return this.request("GET", `/v1/delegations/${enc(id)}`);
  }

  /** One page of delegations, newest first. */
  list(q: ListQuery): Promise<ListResponse> {
    return this.request("GET", "/v1/delegations" + query(q));
  }

  /** Every delegation that list(q) pages through. */
  async *listAll(q: Omit<ListQuery, "cursor">): AsyncGenerator<Delegation> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.list({ ...q, cursor });
      yield* page.delegations;
      if (!page.next_cursor) return;
      cursor = page.next_cursor;
    }
  }

  /** Moves a delegation: applied or unchanged; a refused move throws ProblemError 409. */
  transition(id: string, req: TransitionRequest): Promise<TransitionResponse> {
    return this.request("POST", `/v1/delegations/${enc(id)}/transitions`, req);
  }

  /**
   * Records that the worker is alive; live false means stop (`reason` says
   * why a stuck one was marked). `progress`, an object of at most 8 KiB as
   * JSON, replaces the delegation's progress: one whose progress stops
   * changing is marked stuck (stalled) after its progress timeout.
   */
  heartbeat(id: string, progress?: Record<string, unknown>): Promise<HeartbeatResponse> {
    const body: HeartbeatRequest | undefined = progress === undefined ? undefined : { progress };
    return this.request("POST", `/v1/delegations/${enc(id)}/heartbeat`, body);
  }

  /**
   * Heartbeats many delegations in one statement, with a progress each in
   * `beats`; resolves with the ids not live.
   */
  async heartbeats(ids: string[], beats?: HeartbeatsRequest["beats"]): Promise<string[]> {
    const body: HeartbeatsRequest = { ids };
    if (beats?.length) body.beats = beats;
    const r = await this.request<Schemas["HeartbeatsResponse"]>("POST", "/v1/heartbeats", body);
    return r.not_live;
  }

  /** The audit log of one delegation, oldest first. */
  async events(id: string): Promise<Event[]> {
    const r = await this.request<Schemas["EventsResponse"]>("GET", `/v1/delegations/${enc(id)}/events`);
    return r.events;
  }

  /** The next attempt of a failed or stuck delegation. */
  retry(id: string, req: RetryRequest = {}): Promise<RetryResponse> {
    return this.request("POST", `/v1/delegations/${enc(id)}/retry`, req);
  }

  /** The attempt chain the delegation belongs to, first attempt first. */
  async attempts(id: string): Promise<Delegation[]> {
    const r = await this.request<Schemas["AttemptsResponse"]>("GET", `/v1/delegations/${enc(id)}/attempts`);
    return r.attempts;
  }

  /**
   * Moves up to `limit` due queued delegations of a callee (a worker
   * token's own when `calleeId` is absent) to dispatched and resolves with
   * them, the longest due first; concurrent claimers never get the same one.
   */
  async claim(limit: number, calleeId?: string): Promise<Delegation[]> {
    const body: Schemas["ClaimRequest"] = { limit };
    if (calleeId !== undefined) body.callee_id = calleeId;
    const r = await this.request<Schemas["ClaimResponse"]>("POST", "/v1/claims", body);
    return r.delegations;
  }

  /**
   * Subscribes an endpoint to the ledger's events (admin tokens only). The
   * answer's `secret` is shown this once: store it.
   */
  createWebhook(req: WebhookRequest): Promise<WebhookSecret> {
    return this.request("POST", "/v1/webhooks", req);
  }

  /** The oldest 10000 subscriptions, oldest first, without their secrets. */
  async webhooks(): Promise<WebhookSubscription[]> {
    const r = await this.request<Schemas["WebhooksResponse"]>("GET", "/v1/webhooks");
    return r.subscriptions;
  }

  /** One subscription, without its secret; 404 as ProblemError. */
  webhook(id: string): Promise<WebhookSubscription> {
    return this.request("GET", `/v1/webhooks/${enc(id)}`);
  }

  /** Deletes a subscription and its attempts; 404 as ProblemError. */
  async deleteWebhook(id: string): Promise<void> {
    await this.request<void>("DELETE", `/v1/webhooks/${enc(id)}`);
  }

  /**
   * A new secret, returned this once; deliveries are signed with both
   * until `rotation_ends_at`.
   */
  rotateWebhookSecret(id: string): Promise<WebhookSecret> {
    return this.request("POST", `/v1/webhooks/${enc(id)}/rotate-secret`);
  }

  /** Makes a paused or disabled subscription active again, from its cursor. */
  resumeWebhook(id: string): Promise<WebhookSubscription> {
    return this.request("POST", `/v1/webhooks/${enc(id)}/resume`);
  }

  /** A subscription's newest delivery attempts, newest first (`limit` 1 to 50, default 50). */
  async webhookAttempts(id: string, limit?: number): Promise<WebhookAttempt[]> {
    const r = await this.request<Schemas["WebhookAttemptsResponse"]>("GET", `/v1/webhooks/${enc(id)}/attempts` + query({ limit }));
    return r.attempts;
  }

  /** What is in flight, per status and per caller. */
  summary(callerId?: string): Promise<Summary> {
    return this.request("GET", "/v1/summary" + query({ caller_id: callerId }));
  }

  /** The API's OpenAPI document. */
  openapi(): Promise<Record<string, unknown>> {
    return this.request("GET", "/v1/openapi.json");
  }

  /** One page of the durable feed; `wait` ("30s") makes it a long poll. */
  feed(q: FeedQuery = {}, signal?: AbortSignal): Promise<FeedResponse> {
    return this.request("GET", "/v1/events" + query(q), undefined, signal);
  }

  /**
   * Every matching event after the cursor `after`, for ever, long-polling,
   * until `signal` aborts. Keep the id of the last event you processed:
   * following again from it misses nothing and repeats nothing.
   */
  async *follow(q: Omit<FeedQuery, "wait"> & { wait?: string; signal?: AbortSignal } = {}): AsyncGenerator<Event> {
    const { signal, ...rest } = q;
    let after = rest.after ?? 0;
    for (;;) {
      const page = await this.feed({ ...rest, wait: rest.wait ?? "30s", after }, signal);
      for (const ev of page.events) {
        yield ev;
        after = ev.id;
      }
      after = Math.max(after, page.next_after);
    }
  }

  /**
   * Works on one delegation as a worker (see Task): moves it to
   * in_progress, heartbeats while `work` runs, aborts `task.signal` (with a
   * NotLiveError reason) when the ledger answers not live, and records the
   * outcome: completed (with `task.result`) when `work` resolves, failed
   * with the error when it throws (the error is rethrown). Resolves with
   * the task, whose `outcome` says which.
   */
  async runTask(id: string, work: (task: Task) => Promise<void> | void, opts: TaskOptions = {}): Promise<Task> {
    const task = new Task(this, id, opts);
    await task.start();
    let failure: unknown;
    let failed = false;
    try {
      await work(task);
    } catch (e) {
      failure = e;
      failed = true;
    }
    await task.finish(failed, failure);
    if (failed) throw failure;
    return task;
  }
}

/** Combines signals (AbortSignal.any is Node 20+). */
function anySignal(signals: AbortSignal[]): AbortSignal {
  const c = new AbortController();
  for (const s of signals) {
    if (s.aborted) {
      c.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => c.abort(s.reason), { once: true, signal: c.signal });
  }
  return c.signal;
}

export interface TaskOptions {
  /** Heartbeat interval in ms; default a third of the delegation's heartbeat timeout. */
  heartbeatIntervalMs?: number;
  /** The sweeper's heartbeat timeout in seconds, for delegations without their own (default 600). */
  globalHeartbeatTimeoutSeconds?: number;
  /** Told of every heartbeat's answer (for tests and metrics). */
  onBeat?: (beat: HeartbeatResponse) => void;
}

/** One delegation being worked on: Client.runTask's argument. */
export class Task {
  /** The delegation as it was when the work started. */
  delegation!: Delegation;
  /** Aborted, with a NotLiveError reason, when the ledger says the delegation is no longer live. */
  readonly signal: AbortSignal;
  /** The result preview recorded when the work completes. */
  result?: string;
  /** After the work: "completed", "failed" or "not_live". */
  outcome?: "completed" | "failed" | "not_live";
  #controller = new AbortController();
  #progress?: Record<string, unknown>;
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = false;
  #beating?: Promise<void>;

  constructor(
    readonly client: Client,
    readonly id: string,
    readonly opts: TaskOptions = {},
  ) {
    this.signal = this.#controller.signal;
  }

  /**
   * Sets the progress the next heartbeat reports (an object of at most
   * 8 KiB as JSON): it replaces the delegation's progress. A delegation
   * whose progress stops changing for its progress timeout is marked stuck
   * (stalled), however often it heartbeats.
   */
  progress(progress: Record<string, unknown>): void {
    if (progress === null || typeof progress !== "object" || Array.isArray(progress)) {
      throw new TypeError("progress must be an object");
    }
    this.#progress = progress;
  }

  /** Why the work was stopped, when it was. */
  get reason(): NotLiveError | undefined {
    return this.signal.aborted ? (this.signal.reason as NotLiveError) : undefined;
  }

  async #notLive(status?: Status): Promise<NotLiveError> {
    try {
      const d = await this.client.get(this.id);
      return new NotLiveError(this.id, d.status, d.stuck_reason ?? "");
    } catch (e) {
      if (e instanceof ProblemError && e.status === 404) return new NotLiveError(this.id, undefined);
      return new NotLiveError(this.id, status);
    }
  }

  /** Moves the delegation to in_progress and starts the heartbeats. */
  async start(): Promise<void> {
    try {
      await this.client.transition(this.id, { to: "in_progress", reason: "worker started" });
    } catch (e) {
      if (e instanceof ProblemError && e.status === 409) throw await this.#notLive(e.currentStatus);
      throw e;
    }
    this.delegation = await this.client.get(this.id);
    const d = this.delegation;
    if (d.status === "completed" || d.status === "failed" || d.status === "stuck") {
      throw new NotLiveError(this.id, d.status, d.stuck_reason ?? "");
    }
    const timeout = d.heartbeat_timeout_seconds ?? this.opts.globalHeartbeatTimeoutSeconds ?? 600;
    const interval = this.opts.heartbeatIntervalMs ?? Math.max(1, (timeout * 1000) / 3);
    const beat = async () => {
      try {
        const progress = this.#progress;
        this.#progress = undefined;
        const b = await this.client.heartbeat(this.id, progress);
        this.opts.onBeat?.(b);
        if (!b.live) {
          this.#controller.abort(await this.#notLive(b.status));
          return;
        }
      } catch (e) {
        if (e instanceof ProblemError && e.status === 404) {
          this.#controller.abort(new NotLiveError(this.id, undefined));
          return;
        }
        // Any other failure: the next beat tries again.
      }
      schedule();
    };
    const schedule = () => {
      if (this.#stopped) return;
      this.#timer = setTimeout(() => {
        this.#beating = beat();
      }, interval);
    };
    schedule();
  }

  /** Stops the heartbeats and records the outcome. */
  async finish(failed: boolean, error?: unknown): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#beating;
    if (this.signal.aborted) {
      this.outcome = "not_live";
      return;
    }
    try {
      if (!failed) {
        await this.client.transition(this.id, { to: "completed", result: this.result, reason: "work done" });
        this.outcome = "completed";
      } else {
        const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        await this.client.transition(this.id, { to: "failed", error: text, reason: "work failed" });
        this.outcome = "failed";
      }
    } catch (e) {
      if (!(e instanceof ProblemError) || (e.status !== 404 && e.status !== 409)) throw e;
      this.#controller.abort(await this.#notLive(e.currentStatus));
      this.outcome = "not_live";
    }
  }
}
