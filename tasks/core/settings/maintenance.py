"""The maintenance flows: thresholds, state, alerts, schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class PostgresThresholds(BaseModel):
    """When a PostgreSQL health finding is a warning or a failure."""

    connections_warn: float = Field(default=0.75, gt=0, le=1, description="of max_connections")
    connections_fail: float = Field(default=0.9, gt=0, le=1, description="of max_connections")
    idle_in_transaction_s: float = Field(default=60, gt=0)
    long_query_s: float = Field(default=300, gt=0, description="active longer than this")
    replication_lag_warn_s: float = Field(default=30, ge=0)
    replication_lag_fail_s: float = Field(default=300, ge=0)
    slow_query_mean_ms: float = Field(default=500, gt=0, description="mean time that is slow")
    top_queries: int = Field(default=5, ge=1, le=50, description="queries listed by total/mean")
    dead_tuple_ratio: float = Field(default=0.2, gt=0, le=1, description="dead / (live + dead)")
    dead_tuple_min: int = Field(default=10_000, ge=0, description="fewer dead tuples never warn")
    unused_index_min_bytes: int = Field(default=1_000_000, ge=0, description="smaller: ignored")
    seq_scan_min_rows: int = Field(default=50_000, ge=1, description="a table this large wants one")
    seq_scan_min_count: int = Field(default=10, ge=1, description="sequential scans since reset")
    backup_max_age_h: float = Field(default=26, gt=0, description="newest backup older: fail")
    verify_max_age_h: float = Field(default=50, gt=0, description="last verify-backup older: warn")


class SecurityThresholds(BaseModel):
    """The weekly security review's window, thresholds and expected roles."""

    window_days: float = Field(default=7, gt=0)
    login_events_table: str = Field(
        default="login_events",
        pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$",
        description="the platform's login log: account, source_addr, success, at",
    )
    failed_logins_per_address: int = Field(default=20, ge=1, description="more is suspicious")
    failed_logins_per_account: int = Field(default=10, ge=1, description="more is suspicious")
    expected_superusers: list[str] = Field(default_factory=lambda: ["postgres"])
    roles_without_expiry: list[str] = Field(
        default_factory=lambda: ["postgres"], description="login roles allowed to never expire"
    )


class PerformanceThresholds(BaseModel):
    """What the weekly review calls a regression against the stored baseline."""

    regression_factor: float = Field(default=1.5, gt=1, description="mean time grew this much")
    regression_min_ms: float = Field(default=5, ge=0, description="and by at least this")
    calls_factor: float = Field(default=3, gt=1, description="calls per week grew this much")
    min_calls: int = Field(default=20, ge=1, description="fewer calls in the week: not compared")
    baseline_queries: int = Field(default=200, ge=1, description="queries kept in the baseline")


class CapacitySeries(BaseModel):
    """A capacity series taken from the daily checks' metrics, with its limit.

    ``metric`` is ``system/check/metric``; a ``*`` in it makes one series per match, named by
    ``name`` with its ``*`` replaced. The limit is a number or another metric (``limit_metric``).
    """

    name: str = Field(pattern=r"^[a-z0-9_.*-]+$")
    metric: str = Field(pattern=r"^[^/]+/[^/]+/.+$")
    unit: str = ""
    limit: float | None = Field(default=None, gt=0)
    limit_metric: str | None = Field(default=None, pattern=r"^[^/]+/[^/]+/.+$")


def _default_capacity_series() -> list[CapacitySeries]:
    return [
        CapacitySeries(
            name="database-bytes",
            metric="postgres/table-statistics/database_bytes",
            unit="bytes",
            limit=100e9,
        ),
        CapacitySeries(
            name="table-bytes.*", metric="postgres/table-statistics/table_bytes.*", unit="bytes"
        ),
        CapacitySeries(
            name="connections",
            metric="postgres/connection-pool/connections",
            unit="connections",
            limit_metric="postgres/connection-pool/max_connections",
        ),
        CapacitySeries(name="s3-bytes.*", metric="s3/*: storage used/s3_bytes", unit="bytes"),
        CapacitySeries(
            name="ses-sent-24h",
            metric="ses/sending quota/ses_sent_24h",
            unit="emails",
            limit_metric="ses/sending quota/ses_max_24h",
        ),
    ]


class MaintenanceSettings(SystemSettings):
    """The daily, weekly and monthly maintenance flows: thresholds, state, alerts, schedules."""

    section = "maintenance"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_MAINTENANCE_")

    state_dir: Path = Field(
        default=Path("/var/tmp/runbook-state"),  # noqa: S108 - durable in production: a volume
        description="performance baseline and capacity samples (JSON files) live here",
    )
    schedule_timezone: str = Field(default="UTC", description="of the maintenance schedules")
    check_deadline_s: float = Field(
        default=120, gt=0, description="daily checks not answered by then fail as timed out"
    )
    notification_blocks: list[str] = Field(
        default_factory=lambda: ["runbook-oncall", "runbook-oncall-email"],
        description="Prefect notification blocks told of failures: a name, or type-slug/name",
    )
    lock_files: list[Path] = Field(
        default_factory=list,
        description="requirements*.txt (pip-audit) and package-lock.json (npm audit) to audit",
    )
    audit_deadline_s: float = Field(default=300, gt=0, description="per lock file")
    python_audit_service: Literal["pypi", "osv"] = Field(
        default="pypi", description="pip-audit's vulnerability service"
    )
    osv_url: str | None = Field(default=None, description="OSV API for python_audit_service=osv")
    npm_registry: str | None = Field(default=None, description="unset: npm's configured registry")
    postgres: PostgresThresholds = Field(default_factory=PostgresThresholds)
    security: SecurityThresholds = Field(default_factory=SecurityThresholds)
    performance: PerformanceThresholds = Field(default_factory=PerformanceThresholds)
    capacity_series: list[CapacitySeries] = Field(default_factory=_default_capacity_series)
    capacity_window_days: int = Field(default=90, ge=2, description="samples used for trends")
    capacity_warn_days: float = Field(default=90, gt=0, description="days left below: warn")
    capacity_fail_days: float = Field(default=30, gt=0, description="days left below: fail")

    @field_validator("schedule_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name, e.g. UTC") from None
        return value
