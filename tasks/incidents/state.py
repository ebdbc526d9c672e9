"""An incident's current state: its record with its timeline folded, oldest event first.

Pure: the same timeline always gives the same state, so a run that starts again after a crash
knows exactly what was done (who was paged, which commands were applied) and repeats nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from tasks.core.settings import Severity
from tasks.incidents.models import IncidentRecord, Level, Status, TimelineEvent


class PageState(BaseModel):
    """One page (a level or channel, in one round, through one block) and its attempts so far."""

    key: str
    level: Level
    channel: str
    round: int
    attempts: int = 0
    delivered: bool = False
    unknown: bool = False  # attempted, outcome never recorded: never sent again
    outcome_recorded: bool = True  # False while the last attempt has no outcome
    last_failed_at: datetime | None = None
    last_error: str = ""
    subject: str = ""  # what was sent: a retry sends the same
    body: str = ""

    @property
    def settled(self) -> bool:
        """Delivered, or given up as unknown: nothing more to send."""
        return self.delivered or self.unknown


class IncidentState(BaseModel):
    """What the timeline says now: severity, status, acknowledgement, pages, resolution.

    A round starts when the incident opens and again each time its severity is raised: the
    primary is paged at the round's start, and the escalation timers count from it until an
    acknowledgement made in that round.
    """

    record: IncidentRecord
    events: list[TimelineEvent]
    severity: Severity
    status: Status = "investigating"
    round: int = 1
    round_started_at: datetime
    acknowledged_at: datetime | None = None  # the first acknowledgement
    acknowledged_by: str = ""
    acknowledged_round: int = 0  # the last round acknowledged
    pages: dict[str, PageState] = {}
    updates_sent: int = 0
    last_update_at: datetime | None = None  # when the last team update was due
    assessed: bool = False
    note: str = ""  # the latest note: current actions
    expected_resolution: str = ""
    resolved_at: datetime | None = None
    resolved_by: str = ""
    commands: set[str] = set()  # keys of the run inputs already applied
    run_ids: list[str] = []  # every run that responded, in order

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def finished(self) -> bool:
        """Resolved, and its post-incident report written: nothing left for a run to do."""
        return self.resolved and bool(self.of_kind("report"))

    @property
    def highest_severity(self) -> Severity:
        """The most severe level the incident reached (P0 is the most severe)."""
        seen: list[Severity] = [self.record.severity]
        seen += [e.data["to"] for e in self.events if e.kind == "severity-changed"]
        return min(seen)  # "P0" < "P1" < ...

    def of_kind(self, *kinds: str) -> list[TimelineEvent]:
        """The events of these kinds, oldest first."""
        return [e for e in self.events if e.kind in kinds]


def fold(record: IncidentRecord, events: list[TimelineEvent]) -> IncidentState:
    """The incident's state after ``events`` (oldest first)."""
    state = IncidentState(
        record=record,
        events=events,
        severity=record.severity,
        round_started_at=record.opened_at,
    )
    for event in events:
        _apply(state, event)
    return state


def _apply(state: IncidentState, event: TimelineEvent) -> None:
    data: dict[str, Any] = event.data
    if "command" in data:
        state.commands.add(str(data["command"]))
    if data.get("note"):  # the latest note says what is being done
        state.note = str(data["note"])
    if data.get("expected_resolution"):
        state.expected_resolution = str(data["expected_resolution"])
    kind = event.kind
    if kind in ("opened", "run-resumed") and data.get("run_id"):
        state.run_ids.append(str(data["run_id"]))
    elif kind == "page":
        page = state.pages.setdefault(
            str(data["key"]),
            PageState(
                key=str(data["key"]),
                level=data["level"],
                channel=str(data["channel"]),
                round=int(data["round"]),
            ),
        )
        page.attempts = int(data["attempt"])
        page.outcome_recorded = False
        page.subject, page.body = str(data.get("subject", "")), str(data.get("body", ""))
    elif kind in ("page-delivered", "page-failed", "page-unknown"):
        page = state.pages[str(data["key"])]
        page.outcome_recorded = True
        page.delivered = kind == "page-delivered"
        page.unknown = kind == "page-unknown"
        if kind == "page-failed":
            page.last_failed_at = event.at
            page.last_error = str(data.get("error", ""))
    elif kind == "acknowledged":
        if state.acknowledged_at is None:
            state.acknowledged_at, state.acknowledged_by = event.at, event.actor
        state.acknowledged_round = state.round
    elif kind == "severity-changed":
        state.severity = data["to"]
        if data.get("raised"):
            state.round += 1
            state.round_started_at = event.at
    elif kind == "status-changed":
        state.status = data["to"]
    elif kind == "team-update":
        state.updates_sent = int(data["number"])
        state.last_update_at = datetime.fromisoformat(str(data["due_at"]))  # not when it went out
    elif kind == "assessment":
        state.assessed = True
    elif kind == "resolved":
        state.status = "resolved"
        state.resolved_at, state.resolved_by = event.at, event.actor
