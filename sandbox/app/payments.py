"""``POST /api/webhooks/payments``: Stripe webhooks, verified, recorded once per event id, applied.

Each event is recorded in ``webhook_events`` and applied to ``payments`` and ``orders`` in one
transaction; an event id seen before is acknowledged as a duplicate and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import stripe
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sandbox.app.db import connect

router = APIRouter()

# Order and payment state implied by each payment event type.
_PAYMENT_STATE = {
    "payment_intent.succeeded": ("paid", "succeeded"),
    "payment_intent.payment_failed": ("failed", "requires_payment_method"),
    "payment_intent.canceled": ("failed", "canceled"),
}


def record_event(dsn: str, event: dict[str, Any]) -> bool:
    """Record a verified event and apply it, in one transaction; False if already recorded."""
    with connect(dsn) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO webhook_events (stripe_event_id, type, payload) VALUES (%s, %s, %s)"
            " ON CONFLICT (stripe_event_id) DO NOTHING RETURNING id",
            (event["id"], event["type"], json.dumps(event)),
        ).fetchone()
        if row is None:
            return False
        _apply_payment_event(conn, event)
        conn.execute("UPDATE webhook_events SET processed_at = now() WHERE id = %s", (row[0],))
    return True


def _apply_payment_event(conn: psycopg.Connection, event: dict[str, Any]) -> None:
    state = _PAYMENT_STATE.get(event["type"])
    intent = event.get("data", {}).get("object", {})
    order_id = (intent.get("metadata") or {}).get("order_id")
    if state is None or not order_id:
        return
    order_status, payment_status = state
    error = intent.get("last_payment_error") or {}
    conn.execute(
        "INSERT INTO payments (order_id, stripe_payment_intent, status, decline_code,"
        " amount_cents) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (stripe_payment_intent) DO UPDATE"
        " SET status = EXCLUDED.status, decline_code = EXCLUDED.decline_code",
        (
            int(order_id),
            intent["id"],
            payment_status,
            error.get("decline_code") or error.get("code"),
            int(intent.get("amount", 0)),
        ),
    )
    conn.execute(
        "UPDATE orders SET status = %s WHERE id = %s AND status IN ('pending', 'failed')",
        (order_status, int(order_id)),
    )


@router.post("/api/webhooks/payments")
async def payments_webhook(request: Request) -> JSONResponse:
    """Verify the ``Stripe-Signature`` header, then record and apply the event (400 if forged,
    503 when the database fails: Stripe retries on 5xx)."""
    payload = await request.body()
    try:
        event = stripe.Webhook.construct_event(
            payload, request.headers.get("stripe-signature", ""), request.app.state.webhook_secret
        )
    except (ValueError, stripe.SignatureVerificationError) as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=400)
    try:
        recorded = await run_in_threadpool(record_event, request.app.state.dsn, event.to_dict())
    except psycopg.Error as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=503)
    return JSONResponse({"received": True, "duplicate": not recorded})
