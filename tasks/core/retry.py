"""The retry policy: which errors are worth retrying, with how many tries and what backoff.

Only errors that say they are transient (``RunbookError.transient``: an unreachable server or
repository) and transport-level HTTP errors are retried, and only by tasks whose work is
idempotent. Everything else fails at once, with its message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import httpx
from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from tasks.core.errors import RunbookError

P = ParamSpec("P")
R = TypeVar("R")


def is_transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` is worth a retry: a transient RunbookError or an httpx.TransportError."""
    if isinstance(exc, RunbookError):
        return exc.transient
    return isinstance(exc, httpx.TransportError)


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``retry_condition_fn`` for Prefect: retry only transient failures."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's own exception, inspected only
        return is_transient(exc)
    return False


def ops_task(
    name: str, *, retries: int = 0, persist_result: bool | None = None
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Decorate an operations step as a Prefect task.

    No caching (every call does real work on live systems); retries, when asked for, are
    bounded, backed off exponentially from 2 s, jittered, and only on transient errors. No task
    timeout: it cannot interrupt a blocking call in a worker thread, so every subprocess, query
    and HTTP call carries its own deadline instead. ``persist_result=False``: the result is
    never written to result storage, whatever the flow says (for results that hold secrets).
    """
    options: dict[str, Any] = {
        "name": name,
        "cache_policy": NO_CACHE,
        "persist_result": persist_result,
    }
    if retries:
        options.update(
            retries=retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=2),
            retry_jitter_factor=0.5,
            retry_condition_fn=retry_transient,
        )

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        return Task(fn, **options)

    return decorate
