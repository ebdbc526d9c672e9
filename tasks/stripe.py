"""Stripe: events the platform has not processed, and the decline rate with its top codes.

Read-only: a restricted key with read access to events is enough. Errors from the ``stripe``
library become ``StripeCheckError`` here, with any API key in their text masked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import stripe
from pydantic import BaseModel, SecretStr
from stripe.params import EventListParamsCreated

from tasks.checking import Check, percent, run_concurrently
from tasks.errors import RunbookError
from tasks.postgres import connect
from tasks.reports import CheckResult
from tasks.retry import ops_task
from tasks.settings import StripeSettings

SYSTEM = "stripe"
SUCCEEDED = "payment_intent.succeeded"
FAILED = "payment_intent.payment_failed"
PAGE_SIZE = 100
TOP_CODES = 3
KEY_HINT = "check RUNBOOK_STRIPE_API_KEY (a restricted key that can read events is enough)"
_KEY_RE = re.compile(r"\b(sk|rk|pk|whsec)_(live|test)?_?[A-Za-z0-9]+")


class StripeCheckError(RunbookError):
    """A Stripe API call failed."""


class StripeUnreachable(StripeCheckError):
    transient = True


class StripeAuthError(StripeCheckError):
    """The API key is missing, wrong, or lacks a permission."""


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


@contextmanager
def stripe_client(settings: StripeSettings) -> Iterator[stripe.StripeClient | None]:
    """A client with a timeout and bounded retries, or None when no key is configured."""
    if settings.api_key is None:
        yield None
        return
    # requests (stripe's own dependency): its HTTPXClient posts bytes as data=, deprecated
    http = stripe.RequestsClient(timeout=settings.timeout_s)
    try:
        yield stripe.StripeClient(
            settings.api_key.get_secret_value(),
            base_addresses={"api": settings.api_base} if settings.api_base else None,
            max_network_retries=settings.max_network_retries,
            http_client=http,
        )
    finally:
        http.close()


@contextmanager
def stripe_errors(what: str) -> Iterator[None]:
    """Convert ``stripe`` library errors raised inside into ``StripeCheckError``."""
    try:
        yield
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise StripeAuthError(f"{what}: {_masked(exc)}", hint=KEY_HINT) from exc
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
        raise StripeUnreachable(
            f"{what}: {_masked(exc)}",
            hint="check RUNBOOK_STRIPE_API_BASE and the network path; see status.stripe.com",
        ) from exc
    except stripe.StripeError as exc:
        raise StripeCheckError(f"{what}: {_masked(exc)}", hint="read Stripe's message") from exc


def _masked(exc: stripe.StripeError) -> str:
    text = exc.user_message or str(exc) or type(exc).__name__
    return _KEY_RE.sub(lambda m: f"{m.group(1)}_***", text)


class Events(BaseModel):
    events: list[dict[str, Any]]
    complete: bool  # False: some type had more than the limit; only its newest were listed


def list_events(
    client: stripe.StripeClient | None, types: list[str], start: datetime, end: datetime, limit: int
) -> Events:
    """Events of ``types`` created in ``[start, end]``, the first ``limit`` of each type listed."""
    if client is None:
        raise StripeAuthError("no Stripe API key configured", hint=KEY_HINT)
    created: EventListParamsCreated = {"gte": int(start.timestamp()), "lte": int(end.timestamp())}
    events: list[dict[str, Any]] = []
    complete = True
    for event_type in types:
        with stripe_errors(f"list {event_type} events"):
            page = client.v1.events.list(
                params={"type": event_type, "created": created, "limit": PAGE_SIZE}
            )
            for n, event in enumerate(page.auto_paging_iter()):
                if n == limit:
                    complete = False
                    break
                events.append(event.to_dict())
    return Events(events=events, complete=complete)


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
