"""localstripe on 127.0.0.1, its objects kept in the sandbox directory.

localstripe's own CLI binds every interface and keeps its objects in ``/tmp/localstripe.pickle``,
shared by every instance on the machine; here it binds loopback and keeps them in ``--store``.

Stand-in gaps filled here, as Stripe documents its test cards: localstripe declines only
``4000000000000341`` at charge time and reports every decline as ``card_declined``. Stripe
declines the cards below at confirmation with these codes, and its ``last_payment_error``
carries a ``decline_code``; this module teaches localstripe the same, so the decline checks see
the variety a real account shows.

Run: ``python -m sandbox.stripe_server --port PORT --store PATH``.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
from pathlib import Path
from typing import Any

# (code, decline_code) by card number: https://docs.stripe.com/testing#declined-payments
DECLINING_CARDS: dict[str, tuple[str, str]] = {
    "4000000000000002": ("card_declined", "generic_decline"),
    "4000000000009995": ("card_declined", "insufficient_funds"),
    "4000000000009987": ("card_declined", "lost_card"),
    "4000000000009979": ("card_declined", "stolen_card"),
    "4000000000000069": ("expired_card", "expired_card"),
    "4000000000000127": ("incorrect_cvc", "incorrect_cvc"),
    "4000000000000119": ("processing_error", "processing_error"),
    "4000000000000341": ("card_declined", "generic_decline"),
}
_MESSAGES = {
    "card_declined": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
}


def _teach_decline_codes() -> None:
    from localstripe import resources as r

    charging_is_declined = r.PaymentMethod._charging_is_declined

    def declines(self: Any) -> bool:
        number = getattr(self, "_card_number", None)
        return number in DECLINING_CARDS or bool(charging_is_declined(self))

    def set_auth_failure(self: Any) -> None:
        method = r.PaymentMethod._api_retrieve(self.payment_method)
        code, decline_code = DECLINING_CARDS.get(
            getattr(method, "_card_number", ""), ("card_declined", "generic_decline")
        )
        self.status = "failed"
        self.failure_code = code
        self.failure_message = _MESSAGES[code]
        self.outcome = {"type": "issuer_declined", "reason": decline_code}

    last_payment_error = r.PaymentIntent.last_payment_error.fget

    def with_decline_code(self: Any) -> dict[str, Any] | None:
        error = last_payment_error(self)
        outcome = getattr(self.latest_charge, "outcome", None)
        if error is not None and outcome:
            error = {**error, "decline_code": outcome["reason"]}
        return error

    r.PaymentMethod._charging_is_declined = declines
    r.Charge._set_auth_failure = set_auth_failure
    r.PaymentIntent.last_payment_error = property(with_decline_code)


def _keep_store_in(path: Path) -> None:
    from localstripe import resources as r

    def dump_to_disk() -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(dict(r.store), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    def load_from_disk() -> None:
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:
                saved = pickle.load(fh)  # noqa: S301 - our own file, mode 600, in the sandbox
            dict.clear(r.store)
            dict.update(r.store, saved)

    r.store.dump_to_disk = dump_to_disk
    r.store.try_load_from_disk = load_from_disk
    path.touch(mode=0o600)
    load_from_disk()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from aiohttp import web
    from localstripe.server import app

    _teach_decline_codes()
    _keep_store_in(args.store)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
