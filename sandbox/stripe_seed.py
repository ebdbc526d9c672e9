"""What the sandbox's localstripe holds: customers, payment intents for pending orders, events.

Planted, so the Stripe checks have something true to find:

- 4 payment intents are made BEFORE the app's webhook is registered: their 4 events
  (2 ``payment_intent.succeeded``, 2 ``payment_intent.payment_failed``) never reach the
  platform's ``webhook_events`` table: the unprocessed events to find.
- 16 more are made after: delivered, signed, recorded by the sandbox app once each.
- 7 of the 20 are declined (35% > 15%): insufficient_funds 3, generic_decline 2, expired_card 1,
  incorrect_cvc 1 (Stripe's test cards; see ``sandbox.stripe_server``).
"""

from __future__ import annotations

import contextlib
import time
from functools import partial

import httpx
import stripe
from pydantic import SecretStr

from sandbox.processes import DaemonError
from tasks.core.checking import in_threads
from tasks.core.settings import StripeSettings
from tasks.postgres.sql import connect
from tasks.stripe.client import stripe_client

WEBHOOK_ID = "sandbox-app"
OK_CARD = "4242424242424242"
INSUFFICIENT_FUNDS = "4000000000009995"
GENERIC_DECLINE = "4000000000000002"
EXPIRED = "4000000000000069"
INCORRECT_CVC = "4000000000000127"
UNDELIVERED_CARDS = [OK_CARD, INSUFFICIENT_FUNDS, OK_CARD, GENERIC_DECLINE]
DELIVERED_CARDS = (
    [OK_CARD] * 11 + [INSUFFICIENT_FUNDS] * 2 + [GENERIC_DECLINE, EXPIRED, INCORRECT_CVC]
)
DELIVERY_DEADLINE_S = 30
LOCALSTRIPE_DELIVERY_DELAY_S = 1.2


def register_webhook(api_base: str, url: str, secret: SecretStr) -> None:
    """Point localstripe's webhook at the app (it forgets webhooks when it restarts)."""
    response = httpx.post(
        f"{api_base}/_config/webhooks/{WEBHOOK_ID}",
        data={"url": url, "secret": secret.get_secret_value()},
        timeout=10,
    )
    response.raise_for_status()


class StripeSeed:
    """The sandbox's payments: ``make_undelivered`` before the webhook, ``make_delivered`` after."""

    def __init__(self, api_base: str, api_key: SecretStr, dsn: SecretStr) -> None:
        self.settings = StripeSettings.model_construct(
            api_key=api_key, api_base=api_base, timeout_s=10, max_network_retries=0
        )
        self.dsn = dsn
        with connect(dsn) as conn:
            self.orders: list[tuple[int, int, int]] = conn.execute(
                "SELECT id, user_id, amount_cents FROM orders WHERE status = 'pending'"
                " ORDER BY id LIMIT %s",
                (len(UNDELIVERED_CARDS) + len(DELIVERED_CARDS),),
            ).fetchall()

    def make_undelivered(self) -> None:
        self._pay_all(self.orders[: len(UNDELIVERED_CARDS)], UNDELIVERED_CARDS)
        # localstripe sends an event 1 s after making it, to the webhooks registered by then
        time.sleep(LOCALSTRIPE_DELIVERY_DELAY_S)

    def make_delivered(self) -> None:
        intents = self._pay_all(self.orders[len(UNDELIVERED_CARDS) :], DELIVERED_CARDS)
        _wait_until_recorded(self.dsn, intents)

    def _pay_all(self, orders: list[tuple[int, int, int]], cards: list[str]) -> list[str]:
        with stripe_client(self.settings) as client:
            assert client is not None  # an api_key is given
            return in_threads(
                [
                    partial(_pay, client, *order, card)
                    for order, card in zip(orders, cards, strict=False)
                ]
            )


def _pay(client: stripe.StripeClient, order_id: int, user_id: int, amount: int, card: str) -> str:
    """A customer, a card and a confirmed payment intent for one order; returns its id."""
    customer = client.v1.customers.create(
        params={"email": f"user{user_id}@linkist.example", "name": f"User {user_id}"}
    )
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }  # raw card numbers: test mode only
    )
    intent = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": method.id,
            "metadata": {"order_id": str(order_id)},
        }
    )
    with contextlib.suppress(stripe.CardError):  # declined: its payment_failed event is wanted
        client.v1.payment_intents.confirm(intent.id)
    return str(intent.id)


def _wait_until_recorded(dsn: SecretStr, intents: list[str]) -> None:
    deadline = time.monotonic() + DELIVERY_DEADLINE_S
    while True:
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM payments WHERE stripe_payment_intent = ANY(%s)", (intents,)
            ).fetchone()
        if row is not None and row[0] >= len(intents):
            return
        if time.monotonic() > deadline:
            raise DaemonError(
                f"the sandbox app recorded {row[0] if row else 0} of {len(intents)} payments "
                f"within {DELIVERY_DEADLINE_S} s",
                hint="read run/app.log and run/localstripe.log in the sandbox directory",
            )
        time.sleep(0.2)
