"""Stripe checks: events the platform has not processed, and the decline rate with its top codes.

Read-only: a restricted key with read access to events is enough.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import stripe
from pydantic import SecretStr

from tasks.core.checking import Check, run_concurrently
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.settings import StripeSettings
from tasks.core.units import percent
from tasks.postgres.sql import connect
from tasks.stripe.client import KEY_HINT, Events, list_events, stripe_client

SYSTEM = "stripe"


SUCCEEDED = "payment_intent.succeeded"


FAILED = "payment_intent.payment_failed"


TOP_CODES = 3


@ops_task("run-stripe-checks")
def run_stripe_checks(
    settings: StripeSettings, dsn: SecretStr, now: datetime | None = None
) -> list[CheckResult]:
    """Unprocessed events (Stripe's events vs ``webhook_events`` at ``dsn``) and declines.

    Never raises. Metrics: ``stripe_unprocessed_events``, ``stripe_decline_rate``.
    """
    end = now or datetime.now(UTC)
    with stripe_client(settings) as client:
        checks: list[Check] = [
            ("unprocessed events", partial(_unprocessed, client, settings, dsn, end)),
            ("decline rate", partial(_declines, client, settings, end)),
        ]
        return run_concurrently(SYSTEM, checks, hint=KEY_HINT)


def _partial(result: CheckResult, listed: Events, settings: StripeSettings) -> CheckResult:
    """A passing result over a truncated listing becomes a warning that says so."""
    if listed.complete or result.status != "ok":
        return result
    return result.model_copy(
        update={
            "status": "warn",
            "detail": f"{result.detail} (only the newest {settings.max_events} of each type)",
            "hint": "raise RUNBOOK_STRIPE_MAX_EVENTS or shorten the window",
        }
    )


def _unprocessed(
    client: stripe.StripeClient | None, settings: StripeSettings, dsn: SecretStr, end: datetime
) -> CheckResult:
    start = end - timedelta(hours=settings.events_lookback_hours)
    until = end - timedelta(seconds=settings.event_grace_s)
    listed = list_events(client, settings.event_types, start, until, settings.max_events)
    events = listed.events
    ids = [event["id"] for event in events]
    with connect(dsn, statement_timeout_ms=30_000) as conn:
        rows = conn.execute(
            "SELECT stripe_event_id FROM webhook_events"
            " WHERE stripe_event_id = ANY(%s) AND processed_at IS NOT NULL",
            (ids,),
        ).fetchall()
    processed = {row[0] for row in rows}
    missing = [event for event in events if event["id"] not in processed]
    result = CheckResult(
        name="unprocessed events",
        status="ok",
        figure=f"{len(missing)} of {len(events)}",
        detail=f"{', '.join(settings.event_types)} events from {start:%Y-%m-%d %H:%M} to "
        f"{until:%Y-%m-%d %H:%M} UTC not processed by the platform",
        metrics={
            "stripe_unprocessed_events": float(len(missing)),
            "stripe_events": float(len(events)),
        },
    )
    if missing:
        named = ", ".join(f"{e['id']} ({e['type']})" for e in missing[:5])
        return result.model_copy(
            update={
                "status": "fail",
                "detail": f"{result.detail}: {named}{' ...' if len(missing) > 5 else ''}",
                "hint": "the webhook endpoint missed them: check its delivery attempts in the "
                "Stripe dashboard and the app's /api/webhooks/payments logs, then resend them "
                "(stripe events resend EVENT_ID); recording is idempotent by event id",
            }
        )
    return _partial(result, listed, settings)


def _declines(
    client: stripe.StripeClient | None, settings: StripeSettings, end: datetime
) -> CheckResult:
    start = end - timedelta(hours=settings.decline_window_hours)
    listed = list_events(client, [SUCCEEDED, FAILED], start, end, settings.max_events)
    events = listed.events
    failed = [e for e in events if e["type"] == FAILED]
    rate = percent(len(failed), len(events))
    codes = Counter(_decline_code(e) for e in failed)
    top = ", ".join(f"{code} {n}" for code, n in codes.most_common(TOP_CODES))
    result = CheckResult(
        name="decline rate",
        status="ok",
        figure=f"{rate:.1%} of {len(events)}",
        detail=f"{len(failed)} declined of {len(events)} payment attempts in "
        f"{settings.decline_window_hours:g} h" + (f"; top decline codes: {top}" if top else ""),
        metrics={"stripe_decline_rate": rate, "stripe_payment_attempts": float(len(events))},
    )
    if rate > settings.decline_rate_max:
        return result.model_copy(
            update={
                "status": "fail",
                "hint": f"above {settings.decline_rate_max:.0%}: insufficient_funds and "
                "generic_decline come from customers' banks; a rise across codes points to a "
                "checkout bug, a Radar rule, or card testing (look for many small attempts)",
            }
        )
    return _partial(result, listed, settings)


def _decline_code(event: dict[str, Any]) -> str:
    error = event.get("data", {}).get("object", {}).get("last_payment_error") or {}
    return str(error.get("decline_code") or error.get("code") or "unknown")
