"""The escalation policy as pure functions: from an incident's state, what is still to be done
and when. The incident's run carries out whatever is due and sleeps until the next item.

Per round (the opening, and each raise of severity), from the round's start:

- the primary is paged at once, and for a P0 the management channel is told at once;
- no acknowledgement in the round within the severity's response time: the secondary is paged;
- still none at its escalation time: the manager is paged.

Each level is paged once per round, through each of its blocks; a page that failed is tried
again after ``page_retry_s``, doubling, up to ``page_attempts`` tries; a page whose outcome
is unknown (the run died while sending) is never sent again. While unresolved, the team
channel hears an update every ``update_every_s``. Every time is divided by the incident's
``time_scale`` (drills).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from tasks.core.units import exact_duration
from tasks.incidents.models import IncidentRecord, Level
from tasks.incidents.state import IncidentState, PageState

ESCALATION: tuple[Level, ...] = ("secondary", "manager")


class Due(BaseModel):
    """Something the incident's run must do at ``at``: a page (or its retry), or a team update."""

    at: datetime
    what: Literal["page", "retry", "team-update"]
    level: Level
    channel: str = ""  # the notification block, for pages
    key: str = ""  # the page's key, for pages
    reason: str


def page_key(round_: int, level: Level, channel: str) -> str:
    """The key of one page: round, level and block (stable across runs)."""
    return f"r{round_}-{level}-{channel}"


def channels(record: IncidentRecord, level: Level) -> list[str]:
    """The notification blocks that reach ``level`` (from the incident's roster snapshot)."""
    roster = record.roster
    if level == "team":
        return roster.team
    if level == "management":
        return roster.management
    return getattr(roster, level).blocks


def schedule(state: IncidentState) -> list[Due]:
    """Everything still to do for the incident, due now or later, earliest first (none once it
    is resolved)."""
    if state.resolved:
        return []
    return sorted([*_pages(state), *_retries(state), _team_update(state)], key=lambda due: due.at)


def due_now(state: IncidentState, now: datetime) -> list[Due]:
    """What is due at ``now`` or before."""
    return [due for due in schedule(state) if due.at <= now]


def next_due(state: IncidentState) -> Due | None:
    """The earliest item still to do (it may already be due)."""
    return next(iter(schedule(state)), None)


def _pages(state: IncidentState) -> list[Due]:
    record, start = state.record, state.round_started_at
    timers = record.timers[state.severity]
    opening = "opened" if state.round == 1 else f"severity raised to {state.severity}"
    levels: list[tuple[Level, datetime, str]] = [("primary", start, opening)]
    if state.severity == "P0":
        levels.append(("management", start, f"{opening}: a P0 is told to management at once"))
    if state.acknowledged_round < state.round:
        for level, seconds in zip(
            ESCALATION, (timers.response_s, timers.escalation_s), strict=True
        ):
            levels.append(
                (
                    level,
                    start + record.scaled(seconds),
                    f"no acknowledgement within {exact_duration(seconds)}",
                )
            )
    return [
        Due(at=at, what="page", level=level, channel=channel, key=key, reason=reason)
        for level, at, reason in levels
        for channel in channels(record, level)
        if (key := page_key(state.round, level, channel)) not in state.pages
    ]


def retry_at(record: IncidentRecord, page: PageState) -> datetime | None:
    """When a failed page is tried again (None: delivered, unknown, or out of attempts)."""
    if page.settled or page.attempts >= record.page_attempts or page.last_failed_at is None:
        return None
    return page.last_failed_at + record.scaled(record.page_retry_s * 2 ** (page.attempts - 1))


def _retries(state: IncidentState) -> list[Due]:
    retries = []
    for page in state.pages.values():
        at = retry_at(state.record, page)
        current = page.round == state.round or page.level == "team"
        if at is not None and current and page.outcome_recorded:
            retries.append(
                Due(
                    at=at,
                    what="retry",
                    level=page.level,
                    channel=page.channel,
                    key=page.key,
                    reason=f"attempt {page.attempts} failed: {page.last_error}",
                )
            )
    return retries


def _team_update(state: IncidentState) -> Due:
    every = state.record.timers[state.severity].update_every_s
    since = state.last_update_at or state.record.opened_at
    return Due(
        at=since + state.record.scaled(every),
        what="team-update",
        level="team",
        reason=f"update {state.updates_sent + 1}, every {exact_duration(every)}",
    )


def wait_until(state: IncidentState, now: datetime, heartbeat: timedelta) -> datetime:
    """When the run must look again: the next item due, or a heartbeat from now if sooner."""
    upcoming = next_due(state)
    latest = now + heartbeat
    return latest if upcoming is None else min(upcoming.at, latest)
