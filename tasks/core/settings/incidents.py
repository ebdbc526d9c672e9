"""Incident response: timers per severity, the on-call roster, where incidents live, drills.

The timers are RUNBOOK.md's severity table (response and escalation times), plus how often the
team hears an update and a resolution target the runbook does not give (ours: set them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from tasks.core.settings.base import SystemSettings

Severity = Literal["P0", "P1", "P2", "P3"]
SEVERITIES: tuple[Severity, ...] = ("P0", "P1", "P2", "P3")  # most severe first
MINUTE, HOUR = 60.0, 3600.0


class SeverityTimers(BaseModel):
    """One severity's timers, in seconds from the moment the incident opened."""

    response_s: float = Field(gt=0, description="no acknowledgement by then: page the secondary")
    escalation_s: float = Field(gt=0, description="still none by then: page the manager")
    update_every_s: float = Field(gt=0, description="the team channel hears an update this often")
    resolve_s: float = Field(gt=0, description="resolution target for the report (not in RUNBOOK)")

    @model_validator(mode="after")
    def _escalation_after_response(self) -> SeverityTimers:
        if self.escalation_s < self.response_s:
            raise ValueError("escalation_s must not be shorter than response_s")
        return self


def _runbook_timers() -> dict[Severity, SeverityTimers]:
    return {
        "P0": SeverityTimers(
            response_s=5 * MINUTE, escalation_s=15 * MINUTE, update_every_s=30 * MINUTE,
            resolve_s=4 * HOUR,
        ),
        "P1": SeverityTimers(
            response_s=15 * MINUTE, escalation_s=HOUR, update_every_s=HOUR, resolve_s=24 * HOUR
        ),
        "P2": SeverityTimers(
            response_s=HOUR, escalation_s=4 * HOUR, update_every_s=4 * HOUR, resolve_s=72 * HOUR
        ),
        "P3": SeverityTimers(
            response_s=4 * HOUR, escalation_s=24 * HOUR, update_every_s=24 * HOUR,
            resolve_s=14 * 24 * HOUR,
        ),
    }  # fmt: skip


class OnCall(BaseModel):
    """A person on the roster, and the Prefect notification blocks that reach them."""

    name: str = Field(min_length=1)
    blocks: list[str] = Field(min_length=1, description="a block name, or type-slug/name")


class Roster(BaseModel):
    """Who is paged, level by level, and the two channels told along the way."""

    primary: OnCall = OnCall(name="primary on-call", blocks=["incident-primary"])
    secondary: OnCall = OnCall(name="secondary on-call", blocks=["incident-secondary"])
    manager: OnCall = OnCall(name="escalation manager", blocks=["incident-manager"])
    team: list[str] = Field(
        default_factory=lambda: ["incident-team"], min_length=1, description="updates go here"
    )
    management: list[str] = Field(
        default_factory=lambda: ["incident-management"],
        min_length=1,
        description="told at once of a P0",
    )


class IncidentSettings(SystemSettings):
    """Incident response (``RUNBOOK_INCIDENTS_*``, ``[incidents]``)."""

    section = "incidents"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_INCIDENTS_")

    state_dir: Path = Field(
        default=Path("/var/lib/runbook/incidents"),
        description="the incident store: every incident's record, timeline and run; production: "
        "a shared volume every worker mounts, never the platform's database",
    )
    timers: dict[Severity, SeverityTimers] = Field(default_factory=_runbook_timers)
    roster: Roster = Field(default_factory=Roster)
    service_endpoints: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per service, the [http] endpoints (by name) its initial assessment "
        "requests; a service not listed gets every endpoint",
    )
    command_poll_s: float = Field(
        default=1, gt=0, le=30, description="how often a waiting run looks for commands"
    )
    heartbeat_s: float = Field(
        default=10, gt=0, description="a waiting run writes its last-seen time this often"
    )
    stale_after_s: float = Field(
        default=90, gt=0, description="incident-watchdog: a run silent this long is dead"
    )
    page_attempts: int = Field(default=3, ge=1, le=10, description="tries per page and channel")
    page_retry_s: float = Field(
        default=60, gt=0, description="first retry after this, doubling (divided by time_scale)"
    )
    assessment_deadline_s: float = Field(
        default=50, gt=0, le=300, description="the initial assessment's checks answer by then"
    )
    max_time_scale: float = Field(
        default=3600, ge=1, description="a drill's time_scale may be at most this"
    )
    report_bucket: str | None = Field(
        default=None, description="S3 bucket for post-incident reports; unset: artifact only"
    )
    report_prefix: str = Field(default="incidents/", description="key prefix in report_bucket")

    @field_validator("timers", mode="before")
    @classmethod
    def _timers_over_the_runbook(cls, value: Any) -> Any:
        """What is given replaces the runbook's values field by field (P0..P3 in any case)."""
        if not isinstance(value, dict):
            return value
        given = {str(k).upper(): _plain(v) for k, v in value.items()}
        return _merged(_plain(_runbook_timers()), given)

    @field_validator("roster", mode="before")
    @classmethod
    def _roster_over_the_defaults(cls, value: Any) -> Any:
        """What is given replaces the default roster field by field (e.g. one level's blocks)."""
        return _merged(_plain(Roster()), _plain(value)) if isinstance(value, dict) else value

    @field_validator("stale_after_s")
    @classmethod
    def _stale_after_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("heartbeat_s")
        if heartbeat is not None and value < 2 * heartbeat:
            raise ValueError(f"must be at least twice heartbeat_s ({heartbeat:g} s)")
        return value


def _plain(value: Any) -> Any:
    """Models (and dicts or lists of them) as plain data."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _merged(base: Any, given: Any) -> Any:
    """``given`` laid over ``base``: dicts merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(given, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in given.items()}}
    return given
