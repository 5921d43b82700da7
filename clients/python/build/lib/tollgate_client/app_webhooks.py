"""Webhooks Tollgate sends to the app: how they are signed, and how the app verifies them.

Each POST carries `Tollgate-Signature: t=<unix time>,v1=<hex HMAC-SHA256>`, where the HMAC is
of `"<t>.<raw body>"` under `TOLLGATE_APP_WEBHOOK_SECRET` (Stripe's scheme). The body is JSON
`{id, type, created, data}`; the same `id` may arrive more than once, so the app keeps the ids
it has handled. Standard library only, so an app can copy this file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SIGNATURE_HEADER = "Tollgate-Signature"


class AppWebhookSignatureError(ValueError):
    """The payload is not signed by the secret, or the signature is too old."""


def sign_app_webhook(payload: bytes, secret: str, timestamp: int) -> str:
    """Return the `Tollgate-Signature` header value for `payload` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_app_webhook(
    payload: bytes, header: str, secret: str, tolerance: int = 300, now: float | None = None
) -> dict[str, Any]:
    """Check the signature of a webhook from Tollgate and return its event, or raise."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise AppWebhookSignatureError("no t= timestamp or v1= signature in the header")
    expected = sign_app_webhook(payload, secret, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        raise AppWebhookSignatureError("the signature does not match the payload")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise AppWebhookSignatureError("the signature's timestamp is outside the tolerance")
    event = json.loads(payload)
    if not isinstance(event, dict):
        raise AppWebhookSignatureError("the payload is not a JSON object")
    return event
