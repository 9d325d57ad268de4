// A webhook receiver for sweeper's tests. It verifies every delivery with
// the Standard Webhooks reference library (the standardwebhooks package
// pinned in package-lock.json), never with sweeper's own code, and appends
// one JSON line per request to RECEIVER_LOG:
//   {"phase":"received","webhook_id":...}            when a request arrives
//   {"phase":"answered","webhook_id":...,"verified":true,"status":200,"type":...,"event_id":...,"delegation_id":...}
// A request whose signature does not verify is answered 400 and logged with
// verified false and the library's error.
//
// Environment:
//   RECEIVER_SECRETS_FILE  JSON object, path -> signing secret, read on each
//                          request (the test writes it once it has created
//                          the subscriptions)
//   RECEIVER_LOG           the file the lines are appended to
//   RECEIVER_DELAY_MS      wait this long before answering (default 0)
// It prints "listening PORT" on stdout once it listens on 127.0.0.1.
import { appendFileSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { Webhook } from "standardwebhooks";

const secretsFile = process.env.RECEIVER_SECRETS_FILE;
const logFile = process.env.RECEIVER_LOG;
const delay = Number(process.env.RECEIVER_DELAY_MS || "0");

function log(line) {
  appendFileSync(logFile, JSON.stringify(line) + "\n");
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const id = req.headers["webhook-id"] || "";
    log({ phase: "received", webhook_id: id, path: req.url });
    setTimeout(() => {
      let secrets = {};
      try {
        secrets = JSON.parse(readFileSync(secretsFile, "utf8"));
      } catch (e) {
        // no subscription yet: nothing verifies
      }
      const line = { phase: "answered", webhook_id: id, path: req.url, verified: false };
      try {
        const secret = secrets[req.url];
        if (!secret) throw new Error("no secret for " + req.url);
        const payload = new Webhook(secret).verify(body, {
          "webhook-id": id,
          "webhook-timestamp": req.headers["webhook-timestamp"] || "",
          "webhook-signature": req.headers["webhook-signature"] || "",
        });
        line.verified = true;
        line.type = payload.type;
        line.event_id = payload.data.event.id;
        line.delegation_id = payload.data.event.delegation_id;
        line.status = 200;
      } catch (e) {
        line.error = String(e && e.message ? e.message : e);
        line.status = 400;
      }
      log(line);
      res.writeHead(line.status, { "content-type": "text/plain" });
      res.end(line.verified ? "ok" : "verification failed");
    }, delay);
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write("listening " + server.address().port + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
