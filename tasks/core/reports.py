"""Results people read: check results, and Prefect artifacts (markdown, table, progress).

Artifact keys are lowercase letters, digits and dashes only (a Prefect rule).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from pydantic import BaseModel

from tasks.core.errors import RunbookError

Status = Literal["ok", "warn", "fail", "skipped"]
_KEY_RE = re.compile(r"^[a-z0-9-]+$")


class CheckResult(BaseModel):
    """One check: what was checked, how it went, the figure it found, and what to do.

    ``figure`` is the headline number as people read it ("12 ms", "3.2%"); ``metrics`` keeps
    the raw numbers (for trends and capacity forecasts); ``hint`` is set whenever status is not ok.
    """

    name: str
    status: Status
    system: str = ""
    figure: str = ""
    detail: str = ""
    hint: str = ""
    seconds: float = 0.0
    metrics: dict[str, float] = {}

    @property
    def failed(self) -> bool:
        """True when the status is ``fail`` (``warn`` and ``skipped`` are not failures)."""
        return self.status == "fail"


def timed_check(
    name: str, run: Callable[[], CheckResult], *, system: str = "", hint: str = ""
) -> CheckResult:
    """Run one check; an expected error becomes a failed result naming it, never an exception.

    ``hint`` is used when the error carries none of its own.
    """
    started = time.monotonic()
    try:
        result = run()
    except RunbookError as exc:
        result = CheckResult(name=name, status="fail", detail=exc.message, hint=exc.hint or hint)
    return result.model_copy(
        update={"seconds": time.monotonic() - started, "system": result.system or system}
    )


def first_failure(checks: Iterable[CheckResult]) -> CheckResult | None:
    """The first check whose status is ``fail``, or None."""
    return next((c for c in checks if c.failed), None)


def checks_table(checks: Sequence[CheckResult]) -> str:
    """A markdown table of checks: name, status, detail, hint and seconds (2 decimals)."""
    lines = ["| check | status | detail | hint | seconds |", "|---|---|---|---|---|"]
    lines += [
        f"| {c.name} | {c.status} | {_cell(c.detail)} | {_cell(c.hint)} | {c.seconds:.2f} |"
        for c in checks
    ]
    return "\n".join(lines)


def checks_list(checks: Sequence[CheckResult]) -> str:
    """Checks as a markdown list (wraps in narrow places, e.g. the UI's resume dialog)."""
    return "\n".join(
        f"- **{c.name}**: {c.status}"
        + (f", {c.detail}" if c.detail else "")
        + (f" (fix: {c.hint})" if c.hint and c.status != "ok" else "")
        for c in checks
    )


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table of ``rows`` under ``headers``; ``|`` is escaped, newlines become spaces."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(str(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _in_flow_run() -> bool:
    return FlowRunContext.get() is not None


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact under ``key`` (only inside a flow run; elsewhere nothing)."""
    if _in_flow_run():
        create_markdown_artifact(markdown=markdown, key=_checked(key), description=description)


def publish_table(key: str, rows: list[dict[str, object]], description: str) -> None:
    """A table artifact of ``rows`` (one dict per row) under ``key`` (only inside a flow run).

    Raises:
        ValueError: ``key`` is not lowercase letters, digits and dashes.
    """
    if _in_flow_run():
        create_table_artifact(table=rows, key=_checked(key), description=description)


class Progress:
    """A progress artifact (0-100 %) for a long-running step; callers log a line per phase."""

    def __init__(self, description: str) -> None:
        self._id: UUID | None = None
        if _in_flow_run():
            self._id = create_progress_artifact(progress=0.0, description=description)  # type: ignore[assignment]

    def update(self, percent: float) -> None:
        """Set the progress artifact to ``percent`` (0..100, clamped); no-op outside a flow run."""
        if self._id is not None:
            update_progress_artifact(artifact_id=self._id, progress=max(0.0, min(100.0, percent)))


def _checked(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"artifact key {key!r} must be lowercase letters, digits and dashes")
    return key
