"""Verification of webhooks in the Standard Webhooks format
(https://www.standardwebhooks.com): the headers webhook-id,
webhook-timestamp and webhook-signature ("v1,<base64 HMAC-SHA256>", several
separated by spaces during a secret's rotation), signed over
"<id>.<timestamp>.<body>" with the secret after its "whsec_" prefix,
base64-decoded."""

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Optional, Union

__all__ = ["WebhookVerificationError", "verify_webhook", "sign_webhook"]

#: How far a webhook's timestamp may be from now, in seconds (replay window).
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(Exception):
    """The webhook is not authentic or not fresh; do not act on it."""


def _key(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not base64 after its whsec_ prefix") from None


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: Union[bytes, str]) -> str:
    """The v1 signature of a webhook, "v1,<base64>"."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    signed = ("%s.%d." % (msg_id, timestamp)).encode("utf-8") + body
    mac = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    raise WebhookVerificationError("missing header " + name)


def verify_webhook(secret: str, headers: Mapping[str, str], body: Union[bytes, str],
                   tolerance: float = DEFAULT_TOLERANCE, now: Optional[float] = None) -> Any:
    """Checks a webhook's signature and freshness and returns its JSON
    payload; raises WebhookVerificationError when it is not authentic (no
    signature of this secret matches the raw body) or its timestamp is more
    than ``tolerance`` seconds from now. Pass the body exactly as received."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    msg_id = _header(headers, "webhook-id")
    ts_text = _header(headers, "webhook-timestamp")
    sigs = _header(headers, "webhook-signature")
    try:
        ts = int(ts_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance of %gs" % tolerance)
    expected = sign_webhook(secret, msg_id, ts, body).split(",", 1)[1].encode("ascii")
    for sig in sigs.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode("ascii", "replace"), expected):
            return json.loads(body)
    raise WebhookVerificationError("no matching signature")
