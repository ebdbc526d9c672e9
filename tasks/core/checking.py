"""What every system's checks share: running several at once, and "not configured" results."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from tasks.core.reports import CheckResult, timed_check

MAX_THREADS = 8


T = TypeVar("T")


Check = tuple[str, Callable[[], CheckResult]]


def in_threads(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls at once in threads (bounded by the calls' own timeouts); results in order.

    Each call runs in a copy of the caller's context, so that inside a task it logs to that task
    run and shares its Prefect client (a new client costs ~30 ms of CPU for its TLS context).
    """
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(calls))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
        return [future.result() for future in futures]


def run_concurrently(system: str, checks: Sequence[Check], *, hint: str = "") -> list[CheckResult]:
    """Run each ``(name, fn)`` through ``timed_check``, at once; results in the given order.

    ``hint`` is used when an error carries none of its own.
    """
    return in_threads(
        [partial(timed_check, name, fn, system=system, hint=hint) for name, fn in checks]
    )


def not_configured(system: str, name: str, hint: str) -> CheckResult:
    """The result for a check with nothing to check: skipped, with the setting to set."""
    return CheckResult(
        name=name, status="skipped", system=system, detail="not configured", hint=hint
    )


def once(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` called at most once, even from several threads: checks that share one API call.

    Its exception, if it raises, is raised again to every caller.
    """
    lock = threading.Lock()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def call() -> T:
        with lock:
            if not outcome and not failure:
                try:
                    outcome.append(fn())
                except BaseException as exc:  # noqa: BLE001 - re-raised to every caller below
                    failure.append(exc)
        if failure:
            raise failure[0]
        return outcome[0]

    return call
