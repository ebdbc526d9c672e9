"""Paging people and telling channels, through Prefect notification blocks.

Each attempt is written to the store before it is sent and its outcome after: a run that dies
while sending leaves an attempt without an outcome, which the run taking over records as
unknown and never sends again (nobody is paged twice). Every page of a batch is sent at once,
so one failing channel (receiver down, an HTTP 500) neither stops nor delays the others; its
failure is on the timeline and the policy tries it again later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from pydantic import BaseModel

from tasks.core.checking import in_threads
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.units import exact_duration
from tasks.incidents.models import RUNBOOK_ACTOR, Level, TimelineEvent
from tasks.incidents.policy import Due, channels, retry_at
from tasks.incidents.state import IncidentState, PageState
from tasks.incidents.store import IncidentStore
from tasks.notifications.channels import load_channels, send_notification


class Page(BaseModel):
    """One message to send through one notification block, as attempt ``attempt`` of ``key``."""

    key: str
    level: Level
    channel: str
    round: int
    attempt: int
    reason: str
    subject: str
    body: str


def who(state: IncidentState, level: Level) -> str:
    """The person (or channel) ``level`` stands for in the incident's roster snapshot."""
    if level in ("team", "management"):
        return f"the {level} channel"
    return str(getattr(state.record.roster, level).name)


def _headline(state: IncidentState) -> str:
    record = state.record
    return f"{record.mark}[{state.severity}] {record.id} {record.service}: {record.summary}"


def _drill_line(state: IncidentState) -> list[str]:
    record = state.record
    if not record.drill:
        return []
    return [f"DRILL (game day, timers {record.time_scale:g} times faster): act as if it were real."]


def page_message(state: IncidentState, level: Level, reason: str) -> tuple[str, str]:
    """(subject, body) paging ``level``; everything a drill sends starts with ``[DRILL]``."""
    record = state.record
    subject = _headline(state)
    if level in ("secondary", "manager"):
        subject += f" - escalated to {level}"
    lines = [
        *_drill_line(state),
        f"{state.severity} incident {record.id} on {record.service}: {record.summary}",
        f"Opened {record.opened_at:%Y-%m-%d %H:%M:%S %Z} (source: {record.source}); status "
        f"{state.status}.",
    ]
    if level == "management":
        lines.append(f"For your information: {who(state, 'primary')} has been paged ({reason}).")
    else:
        lines += [
            f"You are paged as {level} ({who(state, level)}): {reason}.",
            f"Acknowledge: runbook incident ack {record.id} --by NAME",
        ]
    return subject, "\n".join(lines)


def team_update_message(state: IncidentState, number: int, next_at: datetime) -> tuple[str, str]:
    """(subject, body) of the ``number``-th scheduled update to the team channel: status,
    current actions, expected resolution, and when the next update comes."""
    lines = [
        *_drill_line(state),
        f"Status: {state.status}; acknowledged by {state.acknowledged_by or 'nobody yet'}.",
        f"Current actions: {state.note or 'none recorded yet'}",
        f"Expected resolution: {state.expected_resolution or 'not estimated yet'}",
        f"Next update: {next_at:%Y-%m-%d %H:%M:%S %Z}",
    ]
    return f"{_headline(state)} - update {number}: {state.status}", "\n".join(lines)


def resolved_message(state: IncidentState) -> tuple[str, str]:
    """(subject, body) telling the team the incident is resolved, by whom, after how long."""
    assert state.resolved_at is not None
    took = exact_duration((state.resolved_at - state.record.opened_at).total_seconds())
    lines = [
        *_drill_line(state),
        f"Resolved by {state.resolved_by} after {took}. {state.note}".rstrip(),
        "The post-incident report follows as the run's artifact.",
    ]
    return f"{_headline(state)} - resolved", "\n".join(lines)


def pages_for(state: IncidentState, due: list[Due]) -> list[Page]:
    """The pages to send for the due pages (a new message) and retries (the same message)."""
    pages = []
    for item in due:
        previous = state.pages.get(item.key)
        if item.what == "page":
            subject, body = page_message(state, item.level, item.reason)
        elif item.what == "retry" and previous is not None:
            subject, body = previous.subject, previous.body
        else:
            continue
        pages.append(
            Page(
                key=item.key,
                level=item.level,
                channel=item.channel,
                round=previous.round if previous else state.round,
                attempt=(previous.attempts if previous else 0) + 1,
                reason=item.reason,
                subject=subject,
                body=body,
            )
        )
    return pages


def team_update(state: IncidentState, due: Due, now: datetime) -> tuple[TimelineEvent, list[Page]]:
    """The scheduled team update that is ``due``: its timeline event (status, current actions,
    expected resolution) and a page per team channel."""
    number = state.updates_sent + 1
    every = state.record.timers[state.severity].update_every_s
    subject, body = team_update_message(state, number, due.at + state.record.scaled(every))
    event = TimelineEvent(
        at=now,
        kind="team-update",
        actor=RUNBOOK_ACTOR,
        text=f"update {number} to the team: status {state.status}; current actions: "
        f"{state.note or 'none recorded yet'}",
        data={"number": number, "due_at": due.at.isoformat()},
    )
    return event, _to_team(state, f"u{number}", due.reason, subject, body)


def resolved_pages(state: IncidentState) -> list[Page]:
    """A page per team channel saying the incident is resolved."""
    subject, body = resolved_message(state)
    return _to_team(state, "resolved", "resolved", subject, body)


def _to_team(state: IncidentState, prefix: str, reason: str, subject: str, body: str) -> list[Page]:
    return [
        Page(
            key=f"{prefix}-team-{channel}",
            level="team",
            channel=channel,
            round=state.round,
            attempt=1,
            reason=reason,
            subject=subject,
            body=body,
        )
        for channel in channels(state.record, "team")
    ]


def attempt_event(state: IncidentState, page: Page, now: datetime) -> TimelineEvent:
    """The event written before a page is sent."""
    return TimelineEvent(
        at=now,
        kind="page",
        actor=RUNBOOK_ACTOR,
        text=f"paging {page.level} ({who(state, page.level)}) through {page.channel}, attempt "
        f"{page.attempt}: {page.reason}",
        data={
            "key": page.key,
            "level": page.level,
            "channel": page.channel,
            "round": page.round,
            "attempt": page.attempt,
            "subject": page.subject,
            "body": page.body,
        },
    )


def outcome_event(state: IncidentState, page: Page, sent: CheckResult) -> TimelineEvent:
    """The event written once a page was sent (delivered) or could not be (not delivered,
    saying whether and when it is tried again)."""
    now = datetime.now(UTC)
    data = {"key": page.key, "attempt": page.attempt}
    target = f"{page.level} ({who(state, page.level)}) through {page.channel}"
    if not sent.failed:
        return TimelineEvent(
            at=now, kind="page-delivered", actor=RUNBOOK_ACTOR, text=f"delivered to {target}",
            data=data,
        )  # fmt: skip
    after = PageState(
        key=page.key, level=page.level, channel=page.channel, round=page.round,
        attempts=page.attempt, last_failed_at=now,
    )  # fmt: skip
    again = retry_at(state.record, after)
    then = (
        f"trying again at {again:%H:%M:%S}" if again else f"giving up after {page.attempt} attempts"
    )
    return TimelineEvent(
        at=now,
        kind="page-failed",
        actor=RUNBOOK_ACTOR,
        text=f"NOT delivered to {target} (attempt {page.attempt}): {sent.detail}; {then}",
        data={**data, "error": sent.detail},
    )


def send_page(page: Page) -> CheckResult:
    """Send one page through its notification block; a failure is a failed result, never an
    exception (the block cannot be loaded, the receiver is down or answers an error)."""
    block = load_channels([page.channel])[page.channel]
    if isinstance(block, CheckResult):
        return block
    return send_notification(page.channel, block, page.subject, page.body)


@ops_task("page-on-call")
def deliver_pages(store: IncidentStore, state: IncidentState, pages: list[Page]) -> int:
    """Record each attempt, send every page at once, record each outcome; returns how many
    were delivered. Never raises for a failed delivery (it is on the timeline)."""
    if not pages:
        return 0
    incident_id = state.record.id
    now = datetime.now(UTC)
    store.append(incident_id, *[attempt_event(state, page, now) for page in pages])
    sent = in_threads([partial(send_page, page) for page in pages])
    outcomes = [outcome_event(state, p, result) for p, result in zip(pages, sent, strict=True)]
    store.append(incident_id, *outcomes)
    logger = run_logger()
    for outcome in outcomes:
        logger.info("%s %s", incident_id, outcome.text)
    return sum(o.kind == "page-delivered" for o in outcomes)
