"""The maintenance flows' report: every check's result, an overall status, and its artifacts.

Every maintenance flow ends Completed, since it did its job of looking. When a check failed,
the final state is named ``Unhealthy`` (type COMPLETED) with the failed checks in its message:
the UI shows it apart, ``prefect.flow-run.Unhealthy`` events let an Automation page, and
``state.result()`` still gives the report. A run ends Failed only when the flow itself could not
run (settings, Prefect API), and then ``runbook.flow.failed`` is emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed, State
from pydantic import AwareDatetime, BaseModel

from tasks.reports import CheckResult, Status, markdown_table, publish_markdown, publish_table

UNHEALTHY = "Unhealthy"
P = ParamSpec("P")
R = TypeVar("R")
LISTED = 8


class MaintenanceReport(BaseModel):
    flow: str
    started_at: AwareDatetime
    checks: list[CheckResult]
    sections: dict[str, str] = {}  # extra markdown sections, by heading

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    @property
    def overall(self) -> Status:
        if self.failed:
            return "fail"
        return "warn" if any(c.status == "warn" for c in self.checks) else "ok"

    def summary(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("fail", "warn", "ok")}
        line = (
            f"{self.flow}: {self.overall.upper()} - {counts['fail']} failed, {counts['warn']} "
            f"warnings, {counts['ok']} ok of {len(self.checks)} checks"
        )
        if self.failed:
            names = [f"{c.system}/{c.name}" for c in self.failed[:LISTED]]
            more = len(self.failed) - len(names)
            line += ": " + ", ".join(names) + (f" and {more} more" if more else "")
        return line

    def table_rows(self) -> list[dict[str, object]]:
        return [
            {
                "system": c.system,
                "check": c.name,
                "status": c.status,
                "figure": c.figure,
                "hint": c.hint,
            }
            for c in self.checks
        ]

    def markdown(self) -> str:
        parts = [f"# {self.flow} {self.started_at:%Y-%m-%d %H:%M %Z}", "", self.summary(), ""]
        if self.failed:
            parts += ["## What failed, and what to do", ""]
            parts += [
                f"- **{c.system} / {c.name}**: {c.detail or c.figure}  \n  *fix:* {c.hint or '-'}"
                for c in self.failed
            ]
            parts.append("")
        parts += [
            "## Every check",
            "",
            markdown_table(
                ["system", "check", "status", "figure", "detail", "hint"],
                [[c.system, c.name, c.status, c.figure, c.detail, c.hint] for c in self.checks],
            ),
        ]
        for heading, body in self.sections.items():
            parts += ["", f"## {heading}", "", body]
        return "\n".join(parts) + "\n"

    def text(self) -> str:
        """For a terminal: the summary, a row per check, then what to do about each failure."""
        rows = [("system", "check", "status", "figure")] + [
            (c.system, c.name, c.status, c.figure) for c in self.checks
        ]
        widths = [min(max(len(r[i]) for r in rows), 40) for i in range(3)]
        lines = [self.summary(), ""] + [
            "  ".join(cell[:40].ljust(w) for cell, w in zip(r[:3], widths, strict=True))
            + f"  {r[3]}"
            for r in rows
        ]
        if self.failed:
            lines += ["", "what to do:"]
            lines += [f"  {c.system}/{c.name}: {c.hint or c.detail}" for c in self.failed]
        return "\n".join(lines)

    def notification(self) -> tuple[str, str]:
        """(subject, body) for the on-call channels: the failures with their hints."""
        subject = f"[runbook] {self.flow}: {len(self.failed)} checks failed"
        lines = [self.summary(), ""] + [
            f"- {c.system}/{c.name}: {c.detail or c.figure} -> {c.hint or 'see the report'}"
            for c in self.failed
        ]
        return subject, "\n".join(lines)


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


def publish_report(report: MaintenanceReport) -> str:
    """The table artifact (system, check, status, figure, hint) and the markdown summary,
    keyed by the flow's name; returns the summary line.

    Not a task: two artifact calls on the flow run's own client, nothing to retry that the
    flow's final state change would not need as well (each task run is Prefect bookkeeping on
    the client and the server).
    """
    publish_table(report.flow, report.table_rows(), description=report.summary())
    publish_markdown(f"{report.flow}-summary", report.markdown(), description=report.summary())
    return report.summary()


def final_state(report: MaintenanceReport) -> State[Any] | MaintenanceReport:
    """The report itself when nothing failed, else a Completed state named ``Unhealthy``."""
    if not report.failed:
        return report
    return Completed(data=report, name=UNHEALTHY, message=report.summary())
