"""Investigation and resolution (RUNBOOK.md steps 2 to 5), inside the incident's run.

The run carries out whatever the escalation policy says is due (pages, escalations, retries,
team updates), then waits for a command until the next item is due or a heartbeat passes, and
writes its last-seen time to the store each time round, until someone resolves the incident.
The initial assessment runs beside it and lands on the timeline when its checks answer. Every
event is in the store before anything is done about it, and the timeline artifact is kept
current.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.context import FlowRunContext

from flows.checks import gather_checks, start_task
from flows.incident.inbox import CommandInbox, Received
from tasks.core.errors import RefusedError
from tasks.core.reports import CheckResult, publish_table
from tasks.core.runlog import run_logger
from tasks.core.settings import IncidentSettings, Settings
from tasks.incidents.assessment import assessment_checks, assessment_event, not_assessed
from tasks.incidents.commands import check_command, command_events, rejected_event
from tasks.incidents.lifecycle import RunRef, still_responding
from tasks.incidents.models import RUNBOOK_ACTOR, RunLiveness, TimelineEvent
from tasks.incidents.paging import deliver_pages, pages_for, team_update, who
from tasks.incidents.policy import ESCALATION, due_now, next_due, wait_until
from tasks.incidents.state import IncidentState
from tasks.incidents.store import IncidentStore, incident_state

ASSESSMENT_POLL = timedelta(seconds=1)  # while the assessment runs, look at it this often


def this_run() -> RunRef:
    """The flow run we are in."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("incident-response must run as a Prefect flow run")
    return RunRef(id=str(context.flow_run.id), name=context.flow_run.name)


@dataclass
class Responder:
    """The incident's run: where the incident lives, and how this run waits and pages."""

    store: IncidentStore
    incident_id: str
    run: RunRef
    settings: IncidentSettings
    published: int = field(default=0, init=False)  # timeline events already in the artifact

    def state(self) -> IncidentState:
        return incident_state(self.store, self.incident_id)

    def append(self, *events: TimelineEvent) -> None:
        self.store.append(self.incident_id, *events)

    def publish_timeline(self, state: IncidentState) -> None:
        """The ``incident-<id>-timeline`` table artifact, when the timeline grew."""
        if len(state.events) == self.published:
            return
        self.published = len(state.events)
        publish_table(
            f"incident-{state.record.id.lower()}-timeline",
            [
                {"time": f"{e.at:%H:%M:%S}", "actor": e.actor, "event": e.kind, "text": e.text}
                for e in state.events
            ],
            description=f"{state.record.mark}{state.record.id} {state.severity} "
            f"{state.record.service}: {state.status}",
        )


# -- carrying out what is due -------------------------------------------------------------------


def carry_out_due(responder: Responder, state: IncidentState) -> None:
    """Page, escalate, retry and update the team for whatever is due now (nothing if nothing)."""
    now = datetime.now(UTC)
    due = due_now(state, now)
    if not due:
        return
    events = [
        TimelineEvent(
            at=now,
            kind="escalated",
            actor=RUNBOOK_ACTOR,
            text=f"escalated to {level} ({who(state, level)}): {reason}",
            data={"level": level, "round": state.round},
        )
        for level, reason in dict.fromkeys(
            (d.level, d.reason) for d in due if d.what == "page" and d.level in ESCALATION
        )
    ]
    pages = pages_for(state, due)
    for item in (d for d in due if d.what == "team-update"):
        event, to_team = team_update(state, item, now)
        events.append(event)
        pages += to_team
    responder.append(*events)
    deliver_pages(responder.store, state, pages)


# -- commands -------------------------------------------------------------------------------------


def apply_received(responder: Responder, received: Received) -> None:
    """Apply a command once (its key already on the timeline: skipped); a command that cannot
    be applied is recorded as rejected, with why."""
    state = responder.state()
    if received.key in state.commands:
        return
    now = datetime.now(UTC)
    if received.sent is None:
        events = [rejected_event(None, received.key, received.error, now)]
    else:
        try:
            command = check_command(received.sent)
        except RefusedError as exc:
            events = [rejected_event(received.sent, received.key, str(exc), now)]
        else:
            events = command_events(state, command, received.key, now)
    responder.append(*events)
    for event in events:
        run_logger().info("%s %s", responder.incident_id, event.text)


# -- the initial assessment -----------------------------------------------------------------------


@dataclass
class Assessment:
    """The initial assessment: its checks run beside the incident's run, gathered within the
    deadline in a thread of their own (``flows.checks.gather_checks``)."""

    started: datetime
    gathered: Future[list[CheckResult]]

    def result(self) -> list[CheckResult] | None:
        """Every check's result (those that did not answer in time as failed), or None while
        they are still running."""
        return self.gathered.result() if self.gathered.done() else None


def start_assessment(
    state: IncidentState, platform: Settings | str, settings: IncidentSettings
) -> Assessment | None:
    """Start the assessment's checks (None when the timeline already has one, or the incident
    is resolved: a take-over).

    ``platform`` is the platform's settings, or why they could not be loaded.
    """
    if state.assessed or state.resolved:
        return None
    started = datetime.now(UTC)
    if isinstance(platform, str):
        failed: Future[list[CheckResult]] = Future()
        hint = "fix the settings named; until then assess by hand (RUNBOOK.md Initial Assessment)"
        failed.set_result(not_assessed(platform, hint))
        return Assessment(started, failed)
    futures = {
        system: start_task(checks, *args)
        for system, (checks, args) in assessment_checks(
            state.record.service, platform, settings
        ).items()
    }
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="incident-assessment")
    gathered = pool.submit(
        contextvars.copy_context().run, gather_checks, futures, settings.assessment_deadline_s
    )
    pool.shutdown(wait=False)  # the thread ends by itself: gathering is bounded by the deadline
    return Assessment(started, gathered)


# -- the loop -------------------------------------------------------------------------------------


def respond_until_resolved(
    responder: Responder, assessment: Assessment | None
) -> IncidentState | None:
    """Carry out what is due and apply commands until the incident is resolved; returns its
    resolved state, or None when another run took the incident over (this one must stop)."""
    settings = responder.settings
    state = responder.state()
    earlier = [UUID(run_id) for run_id in state.run_ids if run_id != responder.run.id]
    inbox = CommandInbox(state.commands, settings.command_poll_s, earlier)
    for earlier_command in inbox.earlier():
        apply_received(responder, earlier_command)
    while True:
        now, state = datetime.now(UTC), responder.state()
        seen = _seen(responder, state, now)  # alive, and the incident still ours?
        if not still_responding(responder.store, responder.incident_id, responder.run, seen):
            run_logger().warning(
                "%s: another run has taken the incident over; this one stops",
                responder.incident_id,
            )
            return None
        if assessment is not None and (checks := assessment.result()) is not None:
            responder.append(assessment_event(checks, assessment.started))
            assessment, state = None, responder.state()
        if state.resolved:
            responder.publish_timeline(state)
            return state
        carry_out_due(responder, state)
        state = responder.state()
        responder.publish_timeline(state)
        until = wait_until(state, now, timedelta(seconds=settings.heartbeat_s))
        if assessment is not None:
            until = min(until, now + ASSESSMENT_POLL)
        received = inbox.wait((until - datetime.now(UTC)).total_seconds())
        if received is not None:
            apply_received(responder, received)


def _seen(responder: Responder, state: IncidentState, now: datetime) -> RunLiveness:
    """What the run writes each time round: it is alive, and what is due next."""
    upcoming = next_due(state)
    return RunLiveness(
        run_id=responder.run.id,
        run_name=responder.run.name,
        last_seen=now,
        next_due_at=upcoming.at if upcoming else None,
        next_due=f"{upcoming.what} {upcoming.level}: {upcoming.reason}" if upcoming else "",
    )
