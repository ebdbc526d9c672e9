"""Termination signals around steps that must either finish their repair or never start it.

Inside a Prefect flow run, SIGTERM (the runner cancelling the run) already raises
``prefect.exceptions.TerminationSignal`` in the main thread. Outside one, SIGTERM would end the
process where it stands; ``terminations_raise`` makes it an exception there too, so the code
being stopped can put things back. ``signals_deferred`` holds SIGTERM and SIGINT back while that
repair runs, and delivers them afterwards. Both only act in the main thread (the only one
Python delivers signals to); elsewhere they change nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HELD = (signal.SIGTERM, signal.SIGINT)


class Terminated(BaseException):
    """SIGTERM arrived while ``terminations_raise`` was active (a BaseException, like Prefect's
    ``TerminationSignal``: ordinary ``except Exception`` handlers must not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def terminations_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` where it would have killed the process.

    A handler someone else installed (Prefect's) is left in place.
    """
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT are noted, not acted on; on leaving it they are
    sent again to this process, to its own handlers."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in HELD}

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    for signum in HELD:
        signal.signal(signum, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for again in dict.fromkeys(received):
            os.kill(os.getpid(), again)
