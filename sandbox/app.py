"""The sandbox app: a small stand-in for the Linkist platform's web app.

- ``GET /api/health``: 200 with details when its database answers, 503 otherwise.
- ``POST /api/webhooks/payments``: Stripe webhooks, signature verified, recorded once per event
  id in ``webhook_events`` together with the payment and order state they imply.
- ``POST /hooks/{channel}`` keeps what is posted, ``GET /hooks/{channel}`` returns it and
  ``DELETE /hooks/{channel}`` forgets it: notifications can be seen in tests.

Secrets come from the environment (``SANDBOX_APP_DSN``, ``SANDBOX_APP_WEBHOOK_SECRET``), never
argv. Run: ``python -m sandbox.app --port PORT``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import defaultdict, deque
from typing import Any

import psycopg
import stripe
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

DSN_ENV = "SANDBOX_APP_DSN"
WEBHOOK_SECRET_ENV = "SANDBOX_APP_WEBHOOK_SECRET"  # noqa: S105 - the variable's name
DB_CONNECT_TIMEOUT_S = 2
DB_STATEMENT_TIMEOUT_MS = 2000
HOOK_MESSAGES_KEPT = 500

# Order and payment state implied by each payment event type.
_PAYMENT_STATE = {
    "payment_intent.succeeded": ("paid", "succeeded"),
    "payment_intent.payment_failed": ("failed", "requires_payment_method"),
    "payment_intent.canceled": ("failed", "canceled"),
}


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(
        dsn,
        connect_timeout=DB_CONNECT_TIMEOUT_S,
        application_name="linkist-sandbox-app",
        options=f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}",
    )


def record_event(dsn: str, event: dict[str, Any]) -> bool:
    """Record a verified event and apply it, in one transaction; False if already recorded."""
    with _connect(dsn) as conn, conn.transaction():
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


def create_app(dsn: str, webhook_secret: str) -> FastAPI:
    app = FastAPI(title="Linkist sandbox app", docs_url=None, redoc_url=None)
    hooks: dict[str, deque[Any]] = defaultdict(lambda: deque(maxlen=HOOK_MESSAGES_KEPT))
    hooks_lock = threading.Lock()

    @app.get("/api/health")
    def health() -> JSONResponse:
        started = time.monotonic()
        try:
            with _connect(dsn) as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            return JSONResponse(
                {"status": "unavailable", "database": {"ok": False, "error": type(exc).__name__}},
                status_code=503,
            )
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        return JSONResponse({"status": "ok", "database": {"ok": True, "latency_ms": latency_ms}})

    @app.post("/api/webhooks/payments")
    async def payments_webhook(request: Request) -> JSONResponse:
        payload = await request.body()
        try:
            event = stripe.Webhook.construct_event(
                payload, request.headers.get("stripe-signature", ""), webhook_secret
            )
        except (ValueError, stripe.SignatureVerificationError) as exc:
            return JSONResponse({"error": type(exc).__name__}, status_code=400)
        try:
            recorded = await run_in_threadpool(record_event, dsn, event.to_dict())
        except psycopg.Error as exc:  # Stripe retries on 5xx
            return JSONResponse({"error": type(exc).__name__}, status_code=503)
        return JSONResponse({"received": True, "duplicate": not recorded})

    @app.post("/hooks/{channel}")
    async def keep(channel: str, request: Request) -> JSONResponse:
        body = await request.body()
        try:
            message: Any = json.loads(body)
        except ValueError:
            message = body.decode(errors="replace")
        with hooks_lock:
            hooks[channel].append(message)
        return JSONResponse({"kept": True})

    @app.get("/hooks/{channel}")
    def show(channel: str) -> JSONResponse:
        with hooks_lock:
            return JSONResponse(list(hooks.get(channel, ())))

    @app.delete("/hooks/{channel}")
    def forget(channel: str) -> JSONResponse:
        with hooks_lock:
            hooks.pop(channel, None)
        return JSONResponse({"forgotten": True})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_app(os.environ[DSN_ENV], os.environ[WEBHOOK_SECRET_ENV])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
