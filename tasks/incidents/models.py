"""An incident as the store keeps it: what opening fixed (the record), every event since (the
timeline, append-only), and which run responds to it (its liveness).

Everything that happens is a ``TimelineEvent`` written before anything else is done about it;
the incident's current state is its timeline folded (``tasks.incidents.state``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from tasks.core.settings import Roster, Severity, SeverityTimers

Level = Literal["primary", "secondary", "manager", "team", "management"]
Status = Literal["investigating", "identified", "monitoring", "resolved"]
EventKind = Literal[
    "opened",
    "triggered-again",  # a second trigger with the same dedup_key
    "page",  # a page attempted: written before it is sent
    "page-delivered",
    "page-failed",
    "page-unknown",  # attempted, but the run died before it knew whether it was delivered
    "escalated",
    "acknowledged",
    "severity-changed",
    "status-changed",
    "update",  # a note from the people working on it
    "team-update",  # the scheduled update to the team channel
    "assessment",
    "action",  # something done for the incident, with the run that did it
    "command-rejected",
    "run-crashed",
    "run-resumed",
    "resolved",
    "report",
]
DRILL_MARK = "[DRILL]"
RUNBOOK_ACTOR = "runbook"  # the actor of what the incident's own run does


class IncidentRequest(BaseModel):
    """What a trigger asks for: the checked parameters of an ``incident-response`` run."""

    severity: Severity = Field(description="at opening; changes are timeline events")
    service: str
    summary: str
    source: str = Field(description="what raised it: a check, a person, a service")
    dedup_key: str | None = None
    drill: bool = False
    time_scale: float = 1.0


class IncidentRecord(IncidentRequest):
    """What opening fixed, never changed afterwards: the request, its id and time, and the
    roster, timers and paging policy copied from the settings when the incident opened (an
    escalation snapshot: editing the roster mid-incident changes nothing already running).
    ``time_scale`` divides every timer of a drill (60: an hour takes a minute).
    """

    id: str
    opened_at: AwareDatetime
    roster: Roster
    timers: dict[Severity, SeverityTimers]
    page_attempts: int = Field(ge=1, description="tries per page and channel")
    page_retry_s: float = Field(gt=0, description="first retry after this, doubling")

    def scaled(self, seconds: float) -> timedelta:
        """A timer of the incident in real time: ``seconds`` divided by its time_scale."""
        return timedelta(seconds=seconds / self.time_scale)

    @property
    def mark(self) -> str:
        """``"[DRILL] "`` for a drill, else ``""``: the start of everything it sends."""
        return f"{DRILL_MARK} " if self.drill else ""


class TimelineEvent(BaseModel):
    """One event: when, who (a person, a check, ``runbook``), what people read, and the fields
    the runbook itself reads back (page keys and attempts, command keys, run ids)."""

    at: AwareDatetime
    kind: EventKind
    actor: str
    text: str
    data: dict[str, Any] = {}


class RunLiveness(BaseModel):
    """Which flow run responds to the incident, and the last time it was seen waiting.

    The incident-watchdog judges a run by ``last_seen`` only (a process id means nothing on
    another machine): older than ``stale_after_s`` and the run is taken for dead.
    """

    run_id: str
    run_name: str = ""
    last_seen: AwareDatetime
    next_due_at: AwareDatetime | None = None
    next_due: str = ""


def incident_tag(incident_id: str) -> str:
    """The tag of every flow run that responds to ``incident_id``: how commands find its run."""
    return f"incident:{incident_id}"


class IncidentOutcome(BaseModel):
    """What an incident-response run returns: the incident, and how the run ended for it."""

    incident_id: str
    outcome: Literal["resolved", "triggered-again"]
    severity: Severity
    drill: bool = False
    report_uri: str = ""

    @classmethod
    def of(
        cls,
        record: IncidentRecord,
        outcome: Literal["resolved", "triggered-again"],
        severity: Severity | None = None,
        report_uri: str = "",
    ) -> IncidentOutcome:
        """The outcome for ``record`` (``severity``: at the end; unset, at opening)."""
        return cls(
            incident_id=record.id,
            outcome=outcome,
            severity=severity or record.severity,
            drill=record.drill,
            report_uri=report_uri,
        )
