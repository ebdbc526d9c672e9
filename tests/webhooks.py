"""Stripe-signed webhook posts, as Stripe (and localstripe) send them, for tests of the app."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload`` (scheme v1: HMAC-SHA256)."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def post_event(app_url: str, event: dict[str, Any], secret: str) -> httpx.Response:
    """POST ``event`` to the app's payments webhook, signed with ``secret``."""
    payload = json.dumps(event).encode()
    return httpx.post(
        f"{app_url}/api/webhooks/payments",
        content=payload,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature(payload, secret),
        },
        timeout=10,
    )
