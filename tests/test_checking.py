"""Running checks at once: results in order, and each thread in its task run's context (so it
logs to that task run and shares its Prefect client rather than building one of its own)."""

from __future__ import annotations

import threading

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import TaskRunContext

from tasks.core.checking import in_threads
from tasks.core.retry import ops_task


def test_in_threads_keeps_the_calls_order():
    def answer(n: int) -> tuple[int, str]:
        return n, threading.current_thread().name

    results = in_threads([lambda n=n: answer(n) for n in range(5)])
    assert [n for n, _ in results] == list(range(5))
    assert threading.current_thread().name not in {name for _, name in results}


def test_in_threads_runs_each_call_in_the_calling_task_runs_context(prefect_server):
    @ops_task("context-probe")
    def probe() -> list[tuple[str | None, bool]]:
        task_client = get_client(sync_client=True)

        def seen() -> tuple[str | None, bool]:
            context = TaskRunContext.get()
            return (
                str(context.task_run.id) if context else None,
                get_client(sync_client=True) is task_client,
            )

        own = TaskRunContext.get()
        assert own is not None
        return [*in_threads([seen, seen, seen]), (str(own.task_run.id), True)]

    @flow(name="in-threads-context")
    def probing() -> list[tuple[str | None, bool]]:
        return probe()

    *threads, (task_run_id, _) = probing()
    assert threads == [(task_run_id, True)] * 3
