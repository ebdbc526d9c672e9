"""The post-incident report (RUNBOOK.md "Post-Incident" and "Incident Review"), made from the
timeline at resolve: durations to the second, each against its target, the escalations, the
actions with their runs, the initial assessment, the timeline, and the review sections left
for people to fill. A markdown artifact of the incident's run, also kept in S3.

Targets: time to acknowledge against the response time of the severity the incident opened
with (resolving without an acknowledgement counts as one); time to resolve against the
resolution target of the highest severity it reached. A drill's targets are divided by its
time_scale; its durations are real. Durations are between the times as shown, to the second,
and a target is met when the duration is not longer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel

from tasks.aws.objects import put_text
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.settings import AwsSettings, Severity
from tasks.core.units import exact_duration
from tasks.incidents.models import IncidentRecord, TimelineEvent
from tasks.incidents.state import IncidentState


class Target(BaseModel):
    """A duration measured against its target: met, or missed, and by how much."""

    measure: Literal["time to acknowledge", "time to resolve"]
    severity: Severity
    took_s: int | None  # None: it never happened
    target_s: float

    @property
    def met(self) -> bool:
        return self.took_s is not None and self.took_s <= self.target_s

    @property
    def verdict(self) -> str:
        """'met, 1 s to spare', 'missed by 1 min 5 s', or 'never happened'."""
        if self.took_s is None:
            return "missed: it never happened"
        margin = exact_duration(abs(self.target_s - self.took_s))
        return f"met, {margin} to spare" if self.met else f"missed by {margin}"


class IncidentReport(BaseModel):
    """Everything the post-incident report shows, taken from the record and the timeline."""

    record: IncidentRecord
    severity: Severity  # at resolution
    highest_severity: Severity
    acknowledged_at: datetime | None
    acknowledged_by: str
    resolved_at: datetime
    resolved_by: str
    targets: list[Target]
    escalations: list[TimelineEvent]
    actions: list[TimelineEvent]
    assessment: list[CheckResult]
    timeline: list[TimelineEvent]
    ui_url: str = ""  # the Prefect UI, for links to runs

    @property
    def impact_s(self) -> int:
        """Seconds from opening to resolution."""
        return _seconds(self.record.opened_at, self.resolved_at)


def _seconds(start: datetime, end: datetime) -> int:
    """Whole seconds between the two times as the report shows them (to the second)."""
    return int((end.replace(microsecond=0) - start.replace(microsecond=0)).total_seconds())


def build_report(state: IncidentState, ui_url: str = "") -> IncidentReport:
    """The report of a resolved incident.

    Raises:
        ValueError: the incident is not resolved.
    """
    if state.resolved_at is None:
        raise ValueError(f"incident {state.record.id} is not resolved")
    record = state.record
    acknowledged = state.acknowledged_at or state.resolved_at
    highest = state.highest_severity
    assessed = state.of_kind("assessment")
    return IncidentReport(
        record=record,
        severity=state.severity,
        highest_severity=highest,
        acknowledged_at=state.acknowledged_at,
        acknowledged_by=state.acknowledged_by,
        resolved_at=state.resolved_at,
        resolved_by=state.resolved_by,
        targets=[
            Target(
                measure="time to acknowledge",
                severity=record.severity,
                took_s=_seconds(record.opened_at, acknowledged),
                target_s=record.scaled(record.timers[record.severity].response_s).total_seconds(),
            ),
            Target(
                measure="time to resolve",
                severity=highest,
                took_s=_seconds(record.opened_at, state.resolved_at),
                target_s=record.scaled(record.timers[highest].resolve_s).total_seconds(),
            ),
        ],
        escalations=state.of_kind("escalated"),
        actions=state.of_kind("action"),
        assessment=[CheckResult.model_validate(c) for c in assessed[0].data["checks"]]
        if assessed
        else [],
        timeline=state.events,
        ui_url=ui_url.rstrip("/"),
    )


_TEMPLATES = Environment(
    loader=PackageLoader("tasks.incidents", "templates"),
    undefined=StrictUndefined,  # a field the template names but the report lacks is an error
    autoescape=False,  # markdown, not HTML  # noqa: S701
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["duration"] = exact_duration
_TEMPLATES.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
_TEMPLATES.filters["clock"] = lambda at: f"{at:%Y-%m-%d %H:%M:%S %Z}" if at else "-"


def render_report(report: IncidentReport) -> str:
    """The report as markdown (``templates/report.md.j2``)."""
    return _TEMPLATES.get_template("report.md.j2").render(report=report, r=report.record)


def report_key(record: IncidentRecord, prefix: str) -> str:
    """The report's S3 key: ``<prefix><id>.md``, drills under ``<prefix>drills/``."""
    return f"{prefix}{'drills/' if record.drill else ''}{record.id}.md"


@ops_task("store-incident-report", retries=2)
def store_report(settings: AwsSettings, bucket: str, key: str, markdown: str) -> str:
    """Put the report in S3 (retried on transient errors; a put is idempotent); its URI."""
    return put_text(settings, bucket, key, markdown, "text/markdown; charset=utf-8")
