"""Commands on an open incident: acknowledge, update, resolve; checked, sent, applied.

A command reaches the incident's run as a Prefect run input (``IncidentCommand`` under a key
``incidentcommand-auto-<anything>``) sent to the newest run tagged ``incident:<id>``; the run
applies each command once, in the order they arrived, and records the key with the events it
caused, so a run that takes over after a crash skips what was already applied. Anyone who can
reach the Prefect API can send one: ``by`` is who the sender says they are (self-hosted Prefect
authenticates nobody), and it is recorded on the timeline.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal
from uuid import uuid4

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.input import RunInput
from prefect.input.actions import create_flow_run_input_from_model
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.core.errors import RefusedError
from tasks.core.settings import Severity
from tasks.incidents.models import EventKind, TimelineEvent, incident_tag
from tasks.incidents.state import IncidentState
from tasks.incidents.store import IncidentStore, UnknownIncident

Action = Literal["acknowledge", "update", "resolve"]
OpenStatus = Literal["investigating", "identified", "monitoring"]
INPUT_PREFIX = "incidentcommand-auto"  # receive_input's default key prefix for IncidentCommand
RUNS_LOOKED_AT = 50


class IncidentCommand(RunInput):
    """A command as it travels (a Prefect run input): every field a string, unknown fields
    ignored, so that a bad command is recorded as rejected instead of stopping the run."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    action: str = ""
    by: str = ""
    note: str = ""
    status: str = ""
    severity: str = ""
    expected_resolution: str = ""


class Command(BaseModel):
    """A command checked: ``action`` by ``by``, with an optional note, status, severity, and
    (for updates) when resolution is expected, in the sender's words."""

    action: Action
    by: str = Field(min_length=1)
    note: str = ""
    status: OpenStatus | None = None
    severity: Severity | None = None
    expected_resolution: str = ""

    @field_validator("by", "note", "expected_resolution", mode="before")
    @classmethod
    def _stripped(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    def as_input(self) -> IncidentCommand:
        """The run input that carries this command."""
        return IncidentCommand(
            action=self.action,
            by=self.by,
            note=self.note,
            status=self.status or "",
            severity=self.severity or "",
            expected_resolution=self.expected_resolution,
        )


def check_command(sent: IncidentCommand) -> Command:
    """The command ``sent`` carries, checked.

    Raises:
        RefusedError: naming what is wrong and how to send it right.
    """
    fields = {k: v for k, v in sent.model_dump().items() if v != ""}
    try:
        command = Command.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'command'}: {e['msg']}" for e in exc.errors()
        )
        raise RefusedError(
            f"not a valid incident command: {problems}",
            hint="action is acknowledge, update or resolve; by names who acts (--by NAME); "
            "status is investigating, identified or monitoring; severity is P0..P3",
        ) from None
    if command.action == "update" and not (
        command.note or command.status or command.severity or command.expected_resolution
    ):
        raise RefusedError(
            "an update says nothing",
            hint="give --note, --status, --severity or --expected-resolution",
        )
    return command


def command_events(
    state: IncidentState, command: Command, key: str, now: datetime
) -> list[TimelineEvent]:
    """The events ``command`` causes on the incident, each carrying the command's key."""
    by, events = command.by, []

    def add(kind: EventKind, text: str, data: dict[str, Any]) -> None:
        events.append(
            TimelineEvent(at=now, kind=kind, actor=by, text=text, data={"command": key, **data})
        )

    said = f": {command.note}" if command.note else ""
    words = {"note": command.note, "expected_resolution": command.expected_resolution}
    if command.action == "acknowledge":
        add("acknowledged", f"acknowledged by {by}{said}", {"round": state.round, **words})
    if command.severity and command.severity != state.severity:
        raised = command.severity < state.severity  # "P0" < "P1": more severe
        again = f"; paging again at {command.severity}'s timers" if raised else ""
        add(
            "severity-changed",
            f"severity {state.severity} -> {command.severity}{again}",
            {"from": state.severity, "to": command.severity, "raised": raised},
        )
    if command.status and command.status != state.status:
        change = {"from": state.status, "to": command.status}
        add("status-changed", f"status {state.status} -> {command.status}", change)
    if command.action == "update" and (command.note or command.expected_resolution):
        expected = command.expected_resolution
        when = f" (resolution expected: {expected})" if expected else ""
        add("update", f"{command.note or 'update'}{when}", words)
    if command.action == "resolve":
        add("resolved", f"resolved by {by}{said}", {"note": command.note})
    if not events:  # e.g. an update to the status it already has
        add("update", f"{command.action}: nothing changed", {})
    return events


def rejected_event(
    sent: IncidentCommand | None, key: str, reason: str, now: datetime
) -> TimelineEvent:
    """The event recording a command the run could not apply, and why."""
    who = (sent.by if sent else "") or "someone"
    return TimelineEvent(
        at=now,
        kind="command-rejected",
        actor=who,
        text=f"a command from {who} was not applied: {reason}",
        data={"command": key, "reason": reason},
    )


# -- sending (the CLI, other services) -------------------------------------------------------


class SentCommand(BaseModel):
    """Where a command went: the incident, its run, and the run input's key."""

    incident_id: str
    run_id: str
    run_name: str
    run_state: str
    key: str


def api_url() -> str:
    """The Prefect API this process talks to (named in every error about it)."""
    return str(PREFECT_API_URL.value() or "the ephemeral Prefect API (PREFECT_API_URL unset)")


def incident_runs(incident_id: str) -> list[FlowRun]:
    """The flow runs tagged for ``incident_id``, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[incident_tag(incident_id)])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=RUNS_LOOKED_AT,
        )


def responding_run(incident_id: str, runs: list[FlowRun]) -> FlowRun:
    """The run a command for ``incident_id`` goes to: the newest one still alive, else the
    newest (its continuation reads what was sent to it).

    Raises:
        UnknownIncident: no run is tagged for the incident.
        RefusedError: the incident is resolved (a run of it completed).
    """
    if not runs:
        raise UnknownIncident(
            f"no incident {incident_id!r}: no flow run is tagged {incident_tag(incident_id)!r} "
            f"on the Prefect API {api_url()}",
            hint="check the id with `runbook incident list`, and that PREFECT_API_URL is the "
            "API the incident runs on",
        )
    completed = [r for r in runs if r.state is not None and r.state.type == StateType.COMPLETED]
    if completed:
        raise RefusedError(
            f"incident {incident_id} is resolved (run {completed[0].name!r} completed, on the "
            f"Prefect API {api_url()}); nothing was sent",
            hint="if the problem is back, open a new incident (incident-response/on-demand)",
        )
    alive = [r for r in runs if r.state is not None and not r.state.is_final()]
    return (alive or runs)[0]


def send_command(incident_id: str, command: Command) -> SentCommand:
    """Send ``command`` to the run responding to ``incident_id`` (a Prefect run input).

    Raises:
        UnknownIncident, RefusedError: as ``responding_run``; nothing is sent.
    """
    run = responding_run(incident_id, incident_runs(incident_id))
    key = f"{INPUT_PREFIX}-{uuid4()}"
    create_flow_run_input_from_model(key=key, model_instance=command.as_input(), flow_run_id=run.id)
    return SentCommand(
        incident_id=incident_id,
        run_id=str(run.id),
        run_name=run.name,
        run_state=run.state_name or "",
        key=key,
    )


def wait_until_applied(
    store: IncidentStore, incident_id: str, key: str, timeout_s: float
) -> list[TimelineEvent]:
    """The events the command with ``key`` caused, once the run applied it (polling the store
    every 0.2 s); none if it was not applied within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [e for e in store.timeline(incident_id) if e.data.get("command") == key]
        if events or time.monotonic() >= deadline:
            return events
        time.sleep(0.2)
