"""Commands reach an incident's run as Prefect run inputs: waiting for them, with a deadline.

``receive_input`` polls the run's inputs under ``incidentcommand-auto-``, oldest first, and
skips the keys given; the inbox starts from the keys the timeline says were applied, so a run
that takes over never applies a command twice. Commands sent to the runs it took over from
(while they were dying) are read first. A command that cannot even be read is returned with
the reason, for the timeline, instead of stopping the run.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple, cast
from uuid import UUID

import httpx
from prefect.exceptions import PrefectHTTPStatusError
from prefect.input import GetInputHandler, receive_input
from pydantic import ValidationError

from tasks.core.runlog import run_logger
from tasks.incidents.commands import IncidentCommand

DRAIN_POLL_S = 0.01


class Received(NamedTuple):
    """A run input: its key, the command (None when it could not be read) and why not."""

    key: str
    sent: IncidentCommand | None
    error: str = ""


class CommandInbox:
    """The commands sent to this run, and to the runs it took over from, not applied yet."""

    def __init__(self, applied: set[str], poll_s: float, earlier_runs: list[UUID]) -> None:
        self._poll_s = poll_s
        self._handler = self._receive(applied, None)
        self._earlier = [self._receive(applied, run_id) for run_id in earlier_runs]

    @staticmethod
    def _receive(applied: set[str], run_id: UUID | None) -> GetInputHandler[IncidentCommand]:
        return receive_input(
            IncidentCommand,
            timeout=0,
            poll_interval=DRAIN_POLL_S,
            raise_timeout_error=True,
            exclude_keys=set(applied),
            flow_run_id=run_id,
        )

    def earlier(self) -> list[Received]:
        """Everything sent to the earlier runs and not applied, oldest first per run."""
        received = []
        for handler in self._earlier:
            while (item := _next(handler)) is not None:
                received.append(item)
        return received

    def wait(self, seconds: float) -> Received | None:
        """The next command sent to this run, waiting at most about ``seconds``; None if none
        came. Polls evenly so that the wait ends within one API call of ``seconds``. The
        Prefect API failing is a wait without commands: the incident's timers go on."""
        seconds = max(seconds, 0.0)
        polls = max(1, math.ceil(seconds / self._poll_s))
        self._handler.timeout = seconds
        self._handler.poll_interval = max(seconds / polls, DRAIN_POLL_S)
        started = time.monotonic()
        try:
            return _next(self._handler)
        except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
            run_logger().warning("cannot read commands from the Prefect API: %s", exc)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            return None


def _next(handler: GetInputHandler[IncidentCommand]) -> Received | None:
    before = set(handler.exclude_keys)
    started = time.monotonic()
    try:
        sent = cast(IncidentCommand, handler.next())  # sync call: never a coroutine
    except TimeoutError:
        return None
    except (ValidationError, TypeError, ValueError) as exc:  # not a command: record, go on
        (key,) = handler.exclude_keys - before or {f"unknown-{started}"}
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        return Received(key, None, f"unreadable run input: {reason}")
    return Received(sent.metadata.key, sent)
