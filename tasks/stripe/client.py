"""The Stripe client: timeouts, bounded retries, errors converted, keys masked, events listed.

Errors from the ``stripe`` library become ``StripeCheckError`` here, with any API key in their
text masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import stripe
from pydantic import BaseModel
from stripe.params import EventListParamsCreated

from tasks.core.errors import RunbookError
from tasks.core.settings import StripeSettings

PAGE_SIZE = 100


KEY_HINT = "check RUNBOOK_STRIPE_API_KEY (a restricted key that can read events is enough)"


_KEY_RE = re.compile(r"\b(sk|rk|pk|whsec)_(live|test)?_?[A-Za-z0-9]+")


class StripeCheckError(RunbookError):
    """A Stripe API call failed."""


class StripeUnreachable(StripeCheckError):
    """Stripe did not answer, rate-limited the call or failed on its side; transient."""

    transient = True


class StripeAuthError(StripeCheckError):
    """The API key is missing, wrong, or lacks a permission."""


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
    """Events ``list_events`` listed, as dicts; ``complete`` is False when a type hit the limit."""

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
