/**
 * Verification of webhooks in the Standard Webhooks format
 * (https://www.standardwebhooks.com): headers webhook-id, webhook-timestamp
 * and webhook-signature ("v1,<base64 HMAC-SHA256>", several separated by
 * spaces during a secret's rotation), signed over "<id>.<timestamp>.<body>"
 * with the secret after its "whsec_" prefix, base64-decoded. WebCrypto:
 * browsers and Node 18+.
 */

/** How far a webhook's timestamp may be from now, in seconds. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** The webhook is not authentic or not fresh: do not act on it. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

async function subtle(): Promise<SubtleCrypto> {
  if (globalThis.crypto?.subtle) return globalThis.crypto.subtle;
  // Node 18 keeps WebCrypto in node:crypto unless --experimental-global-webcrypto.
  const specifier = "node:" + "crypto";
  const mod = (await import(specifier)) as { webcrypto: { subtle: SubtleCrypto } };
  return mod.webcrypto.subtle;
}

function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

function key(secret: string): Uint8Array {
  const raw = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
  try {
    return fromBase64(raw);
  } catch {
    throw new Error("webhook secret is not base64 after its whsec_ prefix");
  }
}

const utf8 = new TextEncoder();

/** The v1 signature of a webhook: "v1,<base64>". */
export async function signWebhook(
  secret: string,
  msgId: string,
  timestamp: number,
  body: string | Uint8Array,
): Promise<string> {
  const bytes = typeof body === "string" ? utf8.encode(body) : body;
  const prefix = utf8.encode(`${msgId}.${timestamp}.`);
  const signed = new Uint8Array(prefix.length + bytes.length);
  signed.set(prefix);
  signed.set(bytes, prefix.length);
  const s = await subtle();
  const k = await s.importKey("raw", key(secret) as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await s.sign("HMAC", k, signed as BufferSource));
  return "v1," + toBase64(mac);
}

function header(headers: Headers | Record<string, string | undefined>, name: string): string {
  let v: string | null | undefined;
  if (typeof (headers as Headers).get === "function") {
    v = (headers as Headers).get(name);
  } else {
    for (const [k, val] of Object.entries(headers)) {
      if (k.toLowerCase() === name) v = val;
    }
  }
  if (v == null) throw new WebhookVerificationError(`missing header ${name}`);
  return v;
}

/** Compares in time independent of where the strings differ. */
function equal(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return d === 0;
}

/**
 * Checks a webhook's signature and freshness and resolves with its JSON
 * payload; rejects with WebhookVerificationError when no signature of this
 * secret matches the raw body, or its timestamp is more than
 * `toleranceSeconds` from now. Pass the body exactly as received.
 */
export async function verifyWebhook(
  secret: string,
  headers: Headers | Record<string, string | undefined>,
  body: string | Uint8Array,
  opts: { toleranceSeconds?: number; nowSeconds?: number } = {},
): Promise<unknown> {
  const id = header(headers, "webhook-id");
  const tsText = header(headers, "webhook-timestamp");
  const sigs = header(headers, "webhook-signature");
  if (!/^\d+$/.test(tsText)) throw new WebhookVerificationError("webhook-timestamp is not an integer");
  const ts = Number(tsText);
  const now = opts.nowSeconds ?? Date.now() / 1000;
  const tolerance = opts.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (Math.abs(now - ts) > tolerance) {
    throw new WebhookVerificationError(`webhook-timestamp is outside the tolerance of ${tolerance}s`);
  }
  const expected = (await signWebhook(secret, id, ts, body)).slice(3);
  for (const sig of sigs.split(" ")) {
    const comma = sig.indexOf(",");
    if (comma > 0 && sig.slice(0, comma) === "v1" && equal(sig.slice(comma + 1), expected)) {
      return JSON.parse(typeof body === "string" ? body : new TextDecoder().decode(body));
    }
  }
  throw new WebhookVerificationError("no matching signature");
}
