"""Running checks inside a flow: start each system's checks at once, gather them within a
deadline, and end the run Completed, named ``Unhealthy`` when a check failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed, State

from tasks.core.maintenance_report import MaintenanceReport
from tasks.core.reports import CheckResult

UNHEALTHY = "Unhealthy"


P = ParamSpec("P")


R = TypeVar("R")


def start_task(task: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> PrefectFuture[R]:
    """Start an ``ops_task`` without waiting for it (``Task.submit``): a future of its result."""
    return cast("Task[P, R]", task).submit(*args, **kwargs)


def gather_checks(
    futures: dict[str, PrefectFuture[list[CheckResult]]], deadline_s: float
) -> list[CheckResult]:
    """Wait for every system's checks at most ``deadline_s`` in all; whatever did not answer,
    or crashed, becomes one failed result for its system, so nothing hides the others."""
    done = wait(list(futures.values()), timeout=deadline_s).done
    results: list[CheckResult] = []
    for system, future in futures.items():
        if future not in done:
            results.append(
                CheckResult(
                    name="checks",
                    status="fail",
                    system=system,
                    figure="timed out",
                    detail=f"the {system} checks did not answer within the {deadline_s:.0f} s "
                    "deadline",
                    hint=f"{system} may be hanging (network, locks): run its checks alone and "
                    "look at the task's logs; raise RUNBOOK_MAINTENANCE_CHECK_DEADLINE_S only if "
                    "it is simply slow",
                )
            )
            continue
        try:
            results += future.result()
        except Exception as exc:  # noqa: BLE001 - a crashed task is a failed check, never a crash
            results.append(
                CheckResult(
                    name="checks",
                    status="fail",
                    system=system,
                    figure="crashed",
                    detail=f"{type(exc).__name__}: {str(exc)[:300]}",
                    hint="a defect in the check itself: read the task run's traceback",
                )
            )
    return results


def final_state(report: MaintenanceReport) -> State[Any] | MaintenanceReport:
    """The report itself when nothing failed, else a Completed state named ``Unhealthy``."""
    if not report.failed:
        return report
    return Completed(data=report, name=UNHEALTHY, message=report.summary())
