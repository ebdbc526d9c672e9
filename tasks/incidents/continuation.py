"""Continuing an incident whose run died (what the incident-watchdog does).

A run responding to an incident writes its last-seen time to the store every heartbeat while
it waits; one silent for longer than ``stale_after_s`` is taken for dead, whatever Prefect says
of it (a runner killed with its flow run leaves the run Running). The watchdog marks it
Crashed with the reason and starts a new ``incident-response`` run for the same incident,
which takes over from the store: timers from the opening, nobody paged twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed
from pydantic import BaseModel

from tasks.core.retry import ops_task
from tasks.core.units import exact_duration
from tasks.incidents.models import RunLiveness, TimelineEvent, incident_tag
from tasks.incidents.store import IncidentStore, open_incidents

WATCHDOG = "incident-watchdog"
NOT_STARTED = (StateType.SCHEDULED, StateType.PENDING)


class Stalled(BaseModel):
    """An open incident whose run has not been seen for ``silent_s`` seconds."""

    incident_id: str
    liveness: RunLiveness | None  # None: no run ever claimed it
    silent_s: float


class Continuation(BaseModel):
    """What the watchdog did for a stalled incident, and why."""

    incident_id: str
    decision: Literal["continued", "waiting for a runner"]
    dead_run: str
    new_run: str
    reason: str


def find_stalled(store: IncidentStore, now: datetime, stale_after_s: float) -> list[Stalled]:
    """The incidents not finished (resolved and reported) whose run was last seen more than
    ``stale_after_s`` ago (or, never claimed by a run, opened that long ago)."""
    stalled = []
    for state in open_incidents(store, until_reported=True):
        seen = store.liveness(state.record.id)
        silent = (now - (seen.last_seen if seen else state.record.opened_at)).total_seconds()
        if silent > stale_after_s:
            stalled.append(Stalled(incident_id=state.record.id, liveness=seen, silent_s=silent))
    return stalled


def _read_run(run_id: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return None


def _mark_crashed(run: FlowRun, reason: str) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Crashed(message=reason), force=True)


@ops_task("continue-incident", retries=2)
def continue_incident(
    store: IncidentStore, stalled: Stalled, deployment: str, now: datetime
) -> Continuation:
    """Mark the stalled incident's run Crashed with the reason, start a new run of
    ``deployment`` for the incident and record both on the timeline. Idempotent (retried):
    the new run is created with an idempotency key naming the dead run.

    A run this watchdog started earlier that no runner has picked up yet is left waiting.
    """
    old = stalled.liveness
    dead = _read_run(old.run_id) if old else None
    dead_name = old.run_name if old else "(none)"
    if dead is not None and dead.state is not None and dead.state.type in NOT_STARTED:
        return Continuation(
            incident_id=stalled.incident_id,
            decision="waiting for a runner",
            dead_run=dead_name,
            new_run=dead.name,
            reason=f"run {dead.name} was started for the incident and is still "
            f"{dead.state.name}: is a runner serving {deployment}?",
        )
    reason = (
        f"{WATCHDOG}: no sign of life in the incident store for "
        f"{exact_duration(stalled.silent_s)} (a live run writes there while it waits)"
    )
    if dead is not None and dead.state is not None and not dead.state.is_final():
        _mark_crashed(dead, reason)
    new = run_deployment(
        deployment,
        parameters={"incident_id": stalled.incident_id},
        tags=[incident_tag(stalled.incident_id), "incident"],
        idempotency_key=f"{stalled.incident_id}-after-{old.run_id if old else 'none'}",
        timeout=0,
        as_subflow=False,
    )
    assert isinstance(new, FlowRun)  # sync call: never a coroutine
    store.update_liveness(
        stalled.incident_id,
        lambda current: (
            RunLiveness(run_id=str(new.id), run_name=new.name, last_seen=now)
            if current == old
            else None
        ),  # the new run (or another watchdog) has moved on already
    )
    dead_id = old.run_id if old else ""
    if not any(
        e.kind == "run-crashed" and e.data.get("run_id") == dead_id
        for e in store.timeline(stalled.incident_id)
    ):
        store.append(
            stalled.incident_id,
            TimelineEvent(
                at=now,
                kind="run-crashed",
                actor=WATCHDOG,
                text=f"run {dead_name} stopped responding ({reason}); marked Crashed and "
                f"continued by run {new.name}",
                data={"run_id": dead_id, "continued_by": str(new.id)},
            ),
        )
    return Continuation(
        incident_id=stalled.incident_id,
        decision="continued",
        dead_run=dead_name,
        new_run=new.name,
        reason=reason,
    )
