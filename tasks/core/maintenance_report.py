"""The maintenance flows' report: every check's result, an overall status, and its artifacts.

Every maintenance flow ends Completed, since it did its job of looking. When a check failed,
the final state is named ``Unhealthy`` (``flows.checks.final_state``). The report is a table
artifact and a markdown summary.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel

from tasks.core.reports import CheckResult, Status, markdown_table, publish_markdown, publish_table

LISTED = 8


class MaintenanceReport(BaseModel):
    """One maintenance flow run's report: every check's result, plus extra markdown sections."""

    flow: str
    started_at: AwareDatetime
    checks: list[CheckResult]
    sections: dict[str, str] = {}  # extra markdown sections, by heading

    @property
    def failed(self) -> list[CheckResult]:
        """The checks whose status is ``fail``, in order."""
        return [c for c in self.checks if c.failed]

    @property
    def overall(self) -> Status:
        """``fail`` if any check failed, else ``warn`` if any warned, else ``ok``."""
        if self.failed:
            return "fail"
        return "warn" if any(c.status == "warn" for c in self.checks) else "ok"

    def summary(self) -> str:
        """One line: overall status, counts by status, and up to 8 failed checks by name."""
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
        """One row per check (system, check, status, figure, hint), for the table artifact."""
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
        """The report as markdown: summary, failures with their hints, every check, the sections."""
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
