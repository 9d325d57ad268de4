// Browser tests of the sweeper console: Debian's chromium (headless),
// driven by playwright-core, against console/internal/devserver (the console
// on a throwaway PostgreSQL with a real sweeper). Each test's screenshots go
// to docs/console/. Run: make test-browser.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const shots = process.env.SCREENSHOT_DIR || join(repo, "docs", "console");
const devserver = process.env.DEVSERVER || join(repo, "bin", "console-devserver");

let server, env, ctx, page, userDataDir;
const dialogs = [];

async function startServer() {
  server = spawn(devserver, [], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: server.stdout });
  return await new Promise((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`devserver exited with ${code} before it was ready`)));
    lines.once("line", (l) => resolve(JSON.parse(l)));
  });
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  env = await startServer();
  userDataDir = mkdtempSync(join(tmpdir(), "sweeper-chromium-"));
  ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
    viewport: { width: 1280, height: 900 },
    colorScheme: "light",
  });
  page = ctx.pages()[0] || (await ctx.newPage());
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => dialogs.push("pageerror: " + e.message));
});

after(async () => {
  await ctx?.close();
  if (server && server.exitCode === null) {
    server.stdin.end(); // the devserver stops when stdin closes
    await new Promise((r) => server.once("exit", r));
  }
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

const url = (p) => env.url + p;

async function signIn(role) {
  await ctx.clearCookies();
  await page.goto(url("/"));
  assert.match(page.url(), /\/login$/, "an anonymous visit is sent to /login");
  await page.getByLabel("Token").fill(env.tokens[role]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(url("/"));
}

async function counts() {
  const r = await fetch(env.control + "/counts");
  assert.equal(r.status, 200);
  return await r.json();
}

async function text(testid) {
  return (await page.getByTestId(testid).innerText()).trim();
}

test("sign in: a wrong token is refused, a good one opens the overview", async () => {
  await ctx.clearCookies();
  await page.goto(url("/delegations"));
  assert.match(page.url(), /\/login\?next=%2Fdelegations$/);
  await page.screenshot({ path: join(shots, "login.png") });
  await page.getByLabel("Token").fill("swp_not-a-real-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  assert.match(await page.getByRole("alert").innerText(), /not valid or has been revoked/);
  await page.getByLabel("Token").fill(env.tokens.admin);
  await page.keyboard.press("Enter");
  await page.waitForURL(url("/delegations"));
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === "sweeper_session");
  assert.ok(session, "a session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(session.expires > Date.now() / 1000, "the session cookie expires");
  assert.ok(!cookies.some((c) => c.value.includes(env.tokens.admin)), "no cookie holds the token");
  assert.ok(!page.url().includes("swp_"), "no token in the URL");
});

test("overview numbers match the database", async () => {
  await page.goto(url("/"));
  const db = await counts();
  assert.ok(db.in_flight > 0, "the seed has work in flight");
  assert.equal(Number(await text("in-flight-total")), db.in_flight);
  for (const st of ["queued", "dispatched", "in_progress"]) {
    assert.equal(Number(await text(`in-flight-${st}`)), db[`in_flight_${st}`] ?? 0, st);
  }
  for (const reason of ["heartbeat_timeout", "deadline_exceeded"]) {
    assert.equal(Number(await text(`stuck-day-${reason}`)), db[`stuck_day_${reason}`] ?? 0, `stuck day ${reason}`);
    assert.equal(Number(await text(`stuck-hour-${reason}`)), db[`stuck_hour_${reason}`] ?? 0, `stuck hour ${reason}`);
  }
  assert.ok((await page.locator("[data-testid=stuck-chart] rect").count()) > 0, "the chart has bars");
  assert.match(await text("oldest-heartbeat"), /ago/);
  assert.match(await text("last-success"), /ago|just now/);
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });
});

test("keyboard: skip link first, visible focus, every control labelled", async () => {
  await page.goto(url("/delegations"));
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => [document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]);
  assert.equal(first[0], "Skip to content");
  assert.notEqual(first[1], "none", "the focused element has an outline");
  await page.keyboard.press("Enter");
  // Every input and select has a label.
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((el) => !(el.labels && el.labels.length)).map((el) => el.name));
  assert.deepEqual(unlabelled, []);
});

test("filter the delegations list, page on, with the filters in the URL", async () => {
  await page.goto(url("/delegations"));
  await page.getByLabel("Caller").fill("search");
  await page.getByLabel("Status").selectOption("queued");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/caller_id=search/);
  assert.match(page.url(), /status=queued/);
  const rows = page.locator("[data-testid=delegations] tbody tr");
  const n = await rows.count();
  assert.ok(n > 0, "rows match");
  for (let i = 0; i < n; i++) {
    const cells = rows.nth(i).locator("td");
    assert.match(await cells.nth(1).innerText(), /^queued/);
    assert.equal((await cells.nth(2).innerText()).trim(), "search");
  }
  // Keyset pagination: a small page has a next link, and its rows are older.
  await page.goto(url("/delegations?caller_id=search&limit=5"));
  const firstPage = await page.locator("[data-testid=delegations] tbody tr td.id").allInnerTexts();
  assert.equal(firstPage.length, 5);
  await page.getByTestId("next-page").click();
  const second = await page.locator("[data-testid=delegations] tbody tr td.id").allInnerTexts();
  assert.equal(second.length, 5);
  assert.deepEqual(second.filter((id) => firstPage.includes(id)), [], "pages do not overlap");
  await page.goto(url("/delegations?in_flight=true"));
  await page.screenshot({ path: join(shots, "delegations.png"), fullPage: false });
});

test("open a detail and read its timeline", async () => {
  await page.goto(url("/delegations?id_prefix=d-0001"));
  await page.getByRole("link", { name: "d-0001", exact: true }).click();
  await page.waitForURL(url("/delegations/d-0001"));
  assert.equal(await text("status"), "failed");
  const items = page.locator("[data-testid=timeline] li");
  assert.equal(await items.count(), 2);
  assert.match(await items.nth(0).innerText(), /created as\s+dispatched/);
  assert.match(await items.nth(1).innerText(), /dispatched\s+→\s+failed[\s\S]*by seed[\s\S]*Reason:\s+exit 137/);
  assert.match(await text("error-detail"), /worker crashed/);
  await page.screenshot({ path: join(shots, "detail.png"), fullPage: true });
});

test("hostile text renders as text", async () => {
  dialogs.length = 0;
  await page.goto(url("/delegations?id_prefix=hostile"));
  const link = page.locator("[data-testid=delegations] td.id a");
  assert.equal(await link.count(), 1);
  assert.match(await link.innerText(), /hostile-<script>alert\(1\)<\/script>/);
  await link.click();
  await page.waitForLoadState("load");
  assert.match(await text("delegation-id"), /<script>alert\(1\)<\/script>/);
  assert.match(await page.locator("[data-testid=task]").innerText(), /<img src=x onerror=alert\(1\)> zero⟨U\+200B⟩width/);
  assert.match(await page.locator("[data-testid=fields]").innerText(), /llm-worker⟨U\+202E⟩gnp\.exe/);
  const injected = await page.evaluate(() => document.querySelectorAll("main script, main img").length);
  assert.equal(injected, 0, "no element was injected");
  assert.deepEqual(dialogs, [], "no script ran");
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(wide <= 1280, `a 1500-character line does not widen the page (${wide}px)`);
});

test("watch a row turn stuck live", async () => {
  await page.goto(url("/live"));
  await page.waitForFunction(() => document.getElementById("live-state").dataset.state === "open");
  const id = "live-" + Date.now();
  const r = await fetch(env.control + "/stuck-soon?id=" + id, { method: "POST" });
  assert.equal(r.status, 201);
  // The sweeper runs every second; the row's deadline passes in one.
  const row = page.locator("#live tbody tr", { hasText: id });
  await row.waitFor({ timeout: 15000 });
  assert.match(await row.innerText(), /deadline_exceeded/);
  assert.equal(await page.evaluate(() => location.pathname), "/live", "no reload");
  await page.screenshot({ path: join(shots, "live.png") });
});

test("admin marks a delegation failed; a POST without the CSRF token is refused", async () => {
  await page.goto(url("/delegations/d-0003"));
  assert.equal(await text("status"), "queued");
  await page.screenshot({ path: join(shots, "detail-admin.png"), fullPage: true });
  const forged = await page.request.post(url("/delegations/d-0003/fail"), { form: { reason: "forged" } });
  assert.equal(forged.status(), 403, "no CSRF token: refused");
  const cross = await page.request.post(url("/delegations/d-0003/fail"), {
    form: { reason: "forged", csrf: "x" }, headers: { Origin: "https://evil.example", "Sec-Fetch-Site": "cross-site" },
  });
  assert.equal(cross.status(), 403, "cross-origin: refused");
  await page.getByLabel("Reason for marking it failed").fill("operator: customer cancelled");
  await page.getByRole("button", { name: "Mark failed" }).click();
  await page.waitForURL(/outcome=applied/);
  assert.equal(await text("status"), "failed");
  const last = page.locator("[data-testid=timeline] li").last();
  assert.match(await last.innerText(), /queued\s+→\s+failed[\s\S]*by console:ops-admin[\s\S]*customer cancelled/);
  assert.equal(await page.getByTestId("actions").count(), 0, "a terminal row offers no action");
});

test("a reader has no action buttons and a forged POST is refused", async () => {
  await signIn("reader");
  await page.goto(url("/delegations/d-0005"));
  assert.equal(await text("status"), "in_progress");
  assert.equal(await page.getByTestId("actions").count(), 0);
  assert.equal(await page.getByRole("button", { name: "Mark failed" }).count(), 0);
  const csrf = await page.locator("form[action='/logout'] input[name=csrf]").inputValue();
  const forged = await page.request.post(url("/delegations/d-0005/fail"), { form: { reason: "forged", csrf } });
  assert.equal(forged.status(), 403, "a reader may not act even with its own CSRF token");
  await page.reload();
  assert.equal(await text("status"), "in_progress");
});

test("admin retries a failed delegation now; the detail shows the chain and the policy", async () => {
  await signIn("admin");
  await page.goto(url("/delegations/d-0001"));
  assert.equal(await text("status"), "failed");
  assert.match(await text("policy"), /none \(one attempt\)/);
  const forged = await page.request.post(url("/delegations/d-0001/retry"), { form: {} });
  assert.equal(forged.status(), 403, "no CSRF token: refused");
  const before = (await counts()).retries_day || 0;
  await page.getByRole("button", { name: "Retry now" }).click();
  await page.waitForURL(/\/delegations\/d-0001%232\?outcome=created/);
  assert.equal(await text("status"), "queued");
  assert.equal(await text("attempt"), "2");
  const outcomes = await page.getByTestId("attempt-outcome").allInnerTexts();
  assert.equal(outcomes.length, 2, "the chain lists both attempts");
  assert.match(outcomes[0], /failed[\s\S]*worker crashed/);
  assert.match(outcomes[1], /queued/);
  const last = page.locator("[data-testid=timeline] li").last();
  assert.match(await last.innerText(), /created as\s+queued[\s\S]*by console:ops-admin[\s\S]*retry_of/);
  await page.screenshot({ path: join(shots, "detail-chain.png"), fullPage: true });
  // The original no longer offers Retry now: it has a next attempt.
  await page.goto(url("/delegations/d-0001"));
  assert.equal(await page.getByTestId("retry-action").count(), 0);
  await page.goto(url("/"));
  assert.equal(Number(await text("retries-day")), before + 1, "the overview counts the retry");
});

test("admin marks every queued delegation of a callee failed: the exact count first, CSRF, audited", async () => {
  await signIn("admin");
  const want = (await counts())["queued_pdf-renderer"];
  assert.ok(want > 0, "the seed has queued rows for pdf-renderer");
  await page.goto(url("/delegations?callee_id=pdf-renderer&status=queued"));
  await page.getByTestId("bulk-fail").click();
  await page.waitForURL(/\/bulk\?/);
  assert.equal(Number(await text("bulk-count")), want, "the confirmation counts exactly the rows it acts on");
  await page.screenshot({ path: join(shots, "bulk-confirm.png"), fullPage: true });
  const forged = await page.request.post(url("/bulk"), {
    form: { action: "fail", callee_id: "pdf-renderer", status: "queued", reason: "forged" },
  });
  assert.equal(forged.status(), 403, "no CSRF token: refused");
  assert.equal((await counts())["queued_pdf-renderer"], want, "the forged POST changed nothing");
  await page.getByLabel("Reason").fill("pdf-renderer retired");
  await page.getByRole("button", { name: `Mark failed ${want}` }).click();
  await page.getByTestId("bulk-done").waitFor();
  assert.equal(Number(await text("bulk-applied")), want);
  assert.equal((await counts())["queued_pdf-renderer"] || 0, 0, "no queued row of pdf-renderer is left");
  await page.goto(url("/delegations?callee_id=pdf-renderer&status=failed"));
  await page.locator("[data-testid=delegations] tbody tr a").first().click();
  const last = page.locator("[data-testid=timeline] li").last();
  assert.match(await last.innerText(), /queued\s+→\s+failed[\s\S]*by console:ops-admin[\s\S]*pdf-renderer retired/);
});

test("a reader gets no bulk action and its forged bulk POST is refused", async () => {
  await signIn("reader");
  await page.goto(url("/delegations?callee_id=indexer"));
  assert.equal(await page.getByTestId("bulk-actions").count(), 0);
  const confirm = await page.goto(url("/bulk?action=fail&callee_id=indexer"));
  assert.equal(confirm.status(), 403);
  await page.goto(url("/"));
  const csrf = await page.locator("form[action='/logout'] input[name=csrf]").inputValue();
  const forged = await page.request.post(url("/bulk"), { form: { action: "fail", callee_id: "indexer", reason: "x", csrf } });
  assert.equal(forged.status(), 403);
});

test("a caller sees only its own delegations", async () => {
  await signIn("caller");
  const own = await page.goto(url("/delegations/d-0000")); // caller billing
  assert.equal(own.status(), 200);
  const other = await page.goto(url("/delegations/d-0002")); // caller support-bot
  assert.equal(other.status(), 404);
  await page.goto(url("/delegations"));
  const callers = await page.locator("[data-testid=delegations] tbody tr td:nth-child(3)").allInnerTexts();
  assert.ok(callers.length > 0 && callers.every((c) => c.trim() === "billing"), callers.join(","));
});

test("phone width and dark mode", async () => {
  await signIn("reader");
  await page.setViewportSize({ width: 390, height: 844 });
  for (const p of ["/", "/delegations", "/delegations/d-0004"]) {
    await page.goto(url(p));
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 390, `${p} fits a phone (${wide}px)`);
  }
  await page.goto(url("/"));
  await page.screenshot({ path: join(shots, "overview-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(url("/"));
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, "rgb(18, 19, 23)", "dark background");
  await page.screenshot({ path: join(shots, "overview-dark.png"), fullPage: true });
  await page.emulateMedia({ colorScheme: "light" });
});

test("sign out", async () => {
  await page.goto(url("/"));
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(url("/login"));
  await page.goto(url("/"));
  assert.match(page.url(), /\/login$/, "signed out: the overview asks to sign in again");
});
