"""An incident's life in the store: opened (or triggered again), claimed by the run that
responds to it, taken over after a crash. Bad requests are refused before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from pydantic import BaseModel

from tasks.core.errors import RefusedError
from tasks.core.retry import ops_task
from tasks.core.settings import SEVERITIES, IncidentSettings, ServicesSettings
from tasks.incidents.models import (
    RUNBOOK_ACTOR,
    IncidentRecord,
    IncidentRequest,
    RunLiveness,
    TimelineEvent,
    incident_tag,
)
from tasks.incidents.state import IncidentState
from tasks.incidents.store import IncidentStore, incident_state


class RunRef(BaseModel):
    """The flow run acting: its id and name."""

    id: str
    name: str


def check_request(
    severity: str | None,
    service: str | None,
    summary: str,
    source: str,
    dedup_key: str | None,
    drill: bool,
    time_scale: float,
    settings: IncidentSettings,
    services: ServicesSettings,
) -> IncidentRequest:
    """The request, checked.

    Raises:
        RefusedError: naming the bad parameter and the fix (unknown severity or service, no
            summary, ``time_scale`` without ``drill`` or outside 1..max_time_scale).
    """
    if severity not in SEVERITIES:
        raise RefusedError(
            f"unknown severity {severity!r}",
            hint="severity is P0 (critical), P1 (high), P2 (medium) or P3 (low), as in RUNBOOK.md",
        )
    if service not in services.names:
        raise RefusedError(
            f"unknown service {service!r}; configured: {', '.join(services.names) or 'none'}",
            hint="name one of them, or add it to RUNBOOK_SERVICES_NAMES ([services] names)",
        )
    if not summary.strip():
        raise RefusedError("no summary", hint="say in a line what is wrong (summary=...)")
    if time_scale != 1 and not drill:
        raise RefusedError(
            f"time_scale={time_scale:g} without drill=true",
            hint="only a drill runs its timers faster: pass drill=true, or leave time_scale at 1",
        )
    if not 1 <= time_scale <= settings.max_time_scale:
        raise RefusedError(
            f"time_scale={time_scale:g} is outside 1..{settings.max_time_scale:g}",
            hint="choose a time_scale in that range (60: an hour in a minute), or raise "
            "RUNBOOK_INCIDENTS_MAX_TIME_SCALE",
        )
    return IncidentRequest(
        severity=severity,
        service=service,
        summary=summary.strip(),
        source=source.strip() or "unknown",
        dedup_key=dedup_key or None,
        drill=drill,
        time_scale=time_scale,
    )


def new_record(
    request: IncidentRequest, settings: IncidentSettings, now: datetime
) -> IncidentRecord:
    """The record of a new incident (its id is given by the store), with the roster, the timers
    and the paging policy copied from ``settings``."""
    return IncidentRecord(
        id="",
        **request.model_dump(),
        opened_at=now,
        roster=settings.roster.model_copy(deep=True),
        timers={s: t.model_copy() for s, t in settings.timers.items()},
        page_attempts=settings.page_attempts,
        page_retry_s=settings.page_retry_s,
    )


def _seen(run: RunRef, now: datetime) -> RunLiveness:
    return RunLiveness(run_id=run.id, run_name=run.name, last_seen=now)


@ops_task("open-incident")
def open_incident(
    store: IncidentStore, request: IncidentRequest, settings: IncidentSettings, run: RunRef
) -> tuple[IncidentRecord, bool]:
    """Open the incident and make ``run`` its responder; or, while an incident with the same
    ``dedup_key`` is open, record this trigger on its timeline. Returns (record, newly opened).
    Not retried: opening twice would make two incidents."""
    now = datetime.now(UTC)
    drill = " (a drill)" if request.drill else ""
    opened = TimelineEvent(
        at=now,
        kind="opened",
        actor=request.source,
        text=f"{request.severity} on {request.service} opened by {request.source}{drill}: "
        f"{request.summary}",
        data={"run_id": run.id, "dedup_key": request.dedup_key},
    )
    record, created = store.open(new_record(request, settings, now), opened)
    if created:
        store.update_liveness(record.id, lambda _: _seen(run, now))
        return record, True
    store.append(
        record.id,
        TimelineEvent(
            at=now,
            kind="triggered-again",
            actor=request.source,
            text=f"triggered again by {request.source} ({request.severity}): {request.summary}",
            data={"run_id": run.id, "severity": request.severity},
        ),
    )
    return record, False


@ops_task("take-over-incident")
def take_over(store: IncidentStore, incident_id: str, run: RunRef) -> IncidentState:
    """Make ``run`` the incident's responder, after a run that died: pages it attempted without
    recording an outcome are recorded as unknown (never sent again). A resolved incident whose
    report the dead run did not write is taken over to write it.

    Raises:
        UnknownIncident: no such incident. RefusedError: it is resolved and reported.
    """
    state = incident_state(store, incident_id)
    if state.finished:
        raise RefusedError(
            f"incident {incident_id} was resolved at {state.resolved_at:%Y-%m-%d %H:%M:%S %Z} "
            "and its report written",
            hint="open a new incident if the problem is back",
        )
    now = datetime.now(UTC)
    store.update_liveness(incident_id, lambda _: _seen(run, now))
    unknown = [
        TimelineEvent(
            at=now,
            kind="page-unknown",
            actor=RUNBOOK_ACTOR,
            text=f"page to {p.level} through {p.channel} (attempt {p.attempts}): the run "
            "sending it stopped before knowing whether it was delivered; not sent again",
            data={"key": p.key},
        )
        for p in state.pages.values()
        if not p.outcome_recorded
    ]
    resumed = TimelineEvent(
        at=now,
        kind="run-resumed",
        actor=RUNBOOK_ACTOR,
        text=f"run {run.name} responds to the incident from here (timers from the opening)",
        data={"run_id": run.id},
    )
    store.append(incident_id, *unknown, resumed)
    return incident_state(store, incident_id)


def still_responding(
    store: IncidentStore, incident_id: str, run: RunRef, seen: RunLiveness
) -> bool:
    """Refresh the run's last-seen time (and next due item); False when another run has taken
    the incident over, which this run must leave alone."""
    stored = store.update_liveness(
        incident_id, lambda current: seen if current is None or current.run_id == run.id else None
    )
    return stored is not None and stored.run_id == run.id


@ops_task("tag-incident-run", retries=2)
def tag_incident_run(run: RunRef, record: IncidentRecord) -> None:
    """Tag the run ``incident:<id>`` (how commands find it), ``incident`` and, for a drill,
    ``drill``; the run's other tags stay. Idempotent."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(run.id)).tags
        wanted = [incident_tag(record.id), "incident", *(["drill"] if record.drill else [])]
        client.update_flow_run(UUID(run.id), tags=list(dict.fromkeys([*current, *wanted])))


def record_action(
    store: IncidentStore, incident_id: str, actor: str, text: str, run: RunRef | None = None
) -> TimelineEvent:
    """Put something done for an incident on its timeline, with the run that did it: how a
    recovery, restart or rollback started for the incident says so (the report lists these
    under "Actions taken", with links to the runs).

    Raises:
        UnknownIncident: there is no such incident.
    """
    store.record(incident_id)
    event = TimelineEvent(
        at=datetime.now(UTC),
        kind="action",
        actor=actor,
        text=text,
        data={"run_id": run.id, "run_name": run.name} if run else {},
    )
    store.append(incident_id, event)
    return event
