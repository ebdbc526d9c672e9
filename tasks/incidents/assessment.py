"""The initial assessment (RUNBOOK.md "Initial Assessment"): the checks that already exist,
aimed at the incident's service, started once the primary is paged and attached to the
timeline within a minute of opening.

- the HTTP health of the service's endpoints (``tasks.http.health``),
- PostgreSQL status and connection pool (``tasks.postgres.health``),
- error-log counts for the last hour (``tasks.aws.logs``),
- recent deployments: not yet available (application recovery fills ``recent_deployments``),
- the last backup and its last verification (``tasks.backups.freshness``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import SecretStr

from tasks.aws.logs import run_logs_checks
from tasks.backups.base import BackupEngine
from tasks.backups.freshness import (
    LAST_FAILURE,
    check_last_backup,
    check_last_verification,
    read_last_verification,
)
from tasks.backups.operations import build_engine
from tasks.core.checking import run_concurrently
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.settings import IncidentSettings, PostgresThresholds, Settings
from tasks.http.health import run_health_checks
from tasks.incidents.models import RUNBOOK_ACTOR, TimelineEvent
from tasks.postgres.health import check_connection_pool, check_status

SYSTEM = "assessment"
LOGS_WINDOW_MINUTES = 60  # RUNBOOK: error rates over the last hour
SystemChecks = tuple[Callable[..., list[CheckResult]], tuple[Any, ...]]


def assessment_checks(
    service: str, platform: Settings, incidents: IncidentSettings
) -> dict[str, SystemChecks]:
    """Each system's checks task with its arguments, for ``flows.checks.start_task``."""
    wanted = incidents.service_endpoints.get(service)
    endpoints = [e for e in platform.http.endpoints if wanted is None or e.name in wanted]
    thresholds = platform.maintenance.postgres
    return {
        "http": (run_health_checks, (platform.http.model_copy(update={"endpoints": endpoints}),)),
        "postgres": (assess_database, (platform.live_dsn(), thresholds)),
        "logs": (
            run_logs_checks,
            (platform.aws.model_copy(update={"logs_window_minutes": LOGS_WINDOW_MINUTES}),),
        ),
        "deployments": (recent_deployments, (service,)),
        "backups": (assess_backups, (build_engine(platform), thresholds)),
    }


@ops_task("assess-database")
def assess_database(dsn: SecretStr, thresholds: PostgresThresholds) -> list[CheckResult]:
    """PostgreSQL ``status`` and ``connection-pool`` (tasks.postgres.health), at once; never
    raises: an unreachable server is a failed result with its hint."""
    return run_concurrently(
        "postgres",
        [
            ("status", partial(check_status, dsn, thresholds)),
            ("connection-pool", partial(check_connection_pool, dsn, thresholds)),
        ],
    )


@ops_task("assess-backups")
def assess_backups(engine: BackupEngine, thresholds: PostgresThresholds) -> list[CheckResult]:
    """The last backup and the last verification (tasks.backups.freshness); never raises."""
    now = datetime.now(UTC)
    return run_concurrently(
        "postgres",  # as the daily check reports them: the database's backups
        [
            ("last-backup", partial(check_last_backup, engine, thresholds, now)),
            (
                "last-verification",
                lambda: check_last_verification(
                    read_last_verification(), thresholds, now, read_last_verification(LAST_FAILURE)
                ),
            ),
        ],
    )


@ops_task("assess-recent-deployments")
def recent_deployments(service: str) -> list[CheckResult]:
    """The service's recent deployments: the one place application recovery will fill in
    (its service platform lists them). Until then, a skipped result saying so."""
    return [
        CheckResult(
            name="recent deployments",
            status="skipped",
            system="deployments",
            detail=f"not yet available for {service}: listing deployments comes with "
            "application recovery",
            hint="look at the service's last deployments by hand (git log --oneline -10, the "
            "deploy pipeline)",
        )
    ]


def not_assessed(detail: str, hint: str) -> list[CheckResult]:
    """The assessment when the platform's settings cannot even be loaded: one failed result."""
    return [CheckResult(name="settings", status="fail", system=SYSTEM, detail=detail, hint=hint)]


def assessment_event(checks: list[CheckResult], started: datetime) -> TimelineEvent:
    """The timeline event carrying every check's result; its text counts them and names the
    ones that failed."""
    failed = [f"{c.system}/{c.name}" for c in checks if c.failed]
    counts = ", ".join(
        f"{sum(c.status == s for c in checks)} {s}" for s in ("fail", "warn", "ok", "skipped")
    )
    took = (datetime.now(UTC) - started).total_seconds()
    text = f"initial assessment in {took:.1f} s: {counts}" + (
        f"; failed: {', '.join(failed)}" if failed else ""
    )
    return TimelineEvent(
        at=datetime.now(UTC),
        kind="assessment",
        actor=RUNBOOK_ACTOR,
        text=text,
        data={"checks": [c.model_dump(mode="json") for c in checks]},
    )
