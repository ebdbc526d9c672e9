"""Runbook, System Maintenance, Daily Operations: the morning health check.

Every system's checks run at once (with them, what recoveries left behind: an interrupted
switchover, restored copies and kept data directories); whatever does not answer within the
deadline is a failed check of its own, so one slow or broken system never hides the others. The
report is a table and a markdown summary; each failed check emits ``runbook.check.failed``, and
on-call hears of failures through the notification blocks, loaded while the checks run. Today's
capacity sample is kept for the monthly planning. The run ends Completed, named ``Unhealthy``
when a check failed (flows.checks).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.states import State

from flows.checks import final_state, gather_checks, start_task
from flows.lock import check_recovery_lock
from tasks.aws.logs import run_logs_checks
from tasks.aws.s3 import run_s3_checks
from tasks.aws.ses import run_ses_checks
from tasks.backups.operations import build_engine
from tasks.core.events import emit_check_events, emit_flow_failure
from tasks.core.maintenance_report import MaintenanceReport, publish_report
from tasks.core.reports import CheckResult
from tasks.core.settings import Settings, load_settings
from tasks.http.health import run_health_checks
from tasks.notifications.channels import load_notification_channels, notify_on_call
from tasks.postgres.health import run_postgres_checks
from tasks.postgres.restored_copies import leftover_roots, run_restored_copy_checks
from tasks.reviews.capacity import record_capacity_sample
from tasks.stripe.checks import run_stripe_checks

FLOW = "daily-health-check"
SystemChecks = tuple[Callable[..., list[CheckResult]], tuple[Any, ...]]


def daily_checks(settings: Settings) -> dict[str, SystemChecks]:
    """Each system's checks task with its arguments (bench/daily.py runs them one by one)."""
    dsn = settings.live_dsn()
    return {
        "postgres": (
            run_postgres_checks,
            (dsn, settings.maintenance.postgres, build_engine(settings)),
        ),
        "http": (run_health_checks, (settings.http,)),
        "s3": (run_s3_checks, (settings.aws,)),
        "ses": (run_ses_checks, (settings.aws,)),
        "stripe": (run_stripe_checks, (settings.stripe, dsn)),
        "logs": (run_logs_checks, (settings.aws,)),
        "recoveries": (
            run_restored_copy_checks,
            (settings.postgres.data_dir, leftover_roots(settings)),
        ),
        "recovery": (check_recovery_lock, (settings.backup.stanza,)),
    }


@flow(name=FLOW, persist_result=True, on_failure=[emit_flow_failure])
def daily_health_check() -> MaintenanceReport | State[Any]:
    """Check PostgreSQL, HTTP, S3, SES, Stripe and the error logs at once; report and alert."""
    settings = load_settings()
    maintenance, started = settings.maintenance, datetime.now(UTC)
    channels = start_task(load_notification_channels, maintenance.notification_blocks)
    running = {
        system: start_task(checks, *args)
        for system, (checks, args) in daily_checks(settings).items()
    }
    report = MaintenanceReport(
        flow=FLOW, started_at=started, checks=gather_checks(running, maintenance.check_deadline_s)
    )
    emit_check_events(FLOW, report.checks)
    telling = start_task(notify_on_call, channels.result(), report)  # loaded long ago
    sample = record_capacity_sample(
        report.checks, maintenance.capacity_series, maintenance.state_dir, started
    )
    report.checks = [*report.checks, *telling.result(), sample]  # a new list: tasks read the old
    publish_report(report)
    return final_state(report)
