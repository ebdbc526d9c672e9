"""moto server (S3, SES, CloudWatch, CloudWatch Logs, IAM) with SES bounces and complaints.

moto's ``GetSendStatistics`` always reports 0 bounces and 0 complaints. SES's mailbox simulator
turns mail to ``bounce@simulator.amazonses.com`` and ``complaint@simulator.amazonses.com`` into a
bounce and a complaint; this launcher makes moto count those in the send statistics, so the
bounce and complaint checks read real numbers from a real server (one per recipient, as SES
counts them). Nothing else changes.

Run: ``python -m sandbox.aws_server -H 127.0.0.1 -p PORT`` (the ``moto_server`` arguments).
"""

from __future__ import annotations

import sys
from typing import Any

SIMULATOR_BOUNCE = "bounce@simulator.amazonses.com"
SIMULATOR_COMPLAINT = "complaint@simulator.amazonses.com"


def _count_simulated_feedback() -> None:
    from moto.ses.models import SESBackend

    send_statistics = SESBackend.get_send_statistics

    def get_send_statistics(self: SESBackend) -> dict[str, Any]:
        stats = send_statistics(self)
        recipients = [address for m in self.sent_messages for address in _recipients(m)]
        stats["Bounces"] = sum(SIMULATOR_BOUNCE in address for address in recipients)
        stats["Complaints"] = sum(SIMULATOR_COMPLAINT in address for address in recipients)
        return stats

    SESBackend.get_send_statistics = get_send_statistics  # type: ignore[method-assign]


def _recipients(message: Any) -> list[str]:
    """Every recipient of a sent message (``destinations`` is a dict of lists, or a list)."""
    destinations = getattr(message, "destinations", [])
    if isinstance(destinations, dict):
        return [address for addresses in destinations.values() for address in addresses]
    return list(destinations)


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    _count_simulated_feedback()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
