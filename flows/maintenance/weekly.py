"""Runbook, System Maintenance, Weekly Operations: the performance and security reviews.

Both end Completed, named ``Unhealthy`` when a check failed (see flows.checks), with a
table and a markdown report, and a ``runbook.check.failed`` event per failed check.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.states import State

from flows.checks import final_state, gather_checks, start_task
from tasks.aws.s3 import run_s3_public_access_checks
from tasks.core.events import emit_check_events, emit_flow_failure
from tasks.core.maintenance_report import MaintenanceReport, publish_report
from tasks.core.settings import load_settings
from tasks.reviews.performance import (
    load_performance_baseline,
    review_statements,
    review_tables_and_indexes,
    save_performance_baseline,
)
from tasks.reviews.security import run_security_checks

PERFORMANCE = "weekly-performance-review"
SECURITY = "weekly-security-review"


@flow(name=PERFORMANCE, persist_result=True, on_failure=[emit_flow_failure])
def weekly_performance_review() -> MaintenanceReport | State[Any]:
    """Statements against last week's baseline, table and index advice, then a new baseline."""
    settings = load_settings()
    maintenance, dsn, started = settings.maintenance, settings.live_dsn(), datetime.now(UTC)
    baseline = load_performance_baseline(maintenance.state_dir)
    regressions, updated = review_statements(dsn, baseline, maintenance.performance, started)
    advice = review_tables_and_indexes(dsn, maintenance.postgres)
    report = MaintenanceReport(flow=PERFORMANCE, started_at=started, checks=[regressions, *advice])
    publish_report(report)
    emit_check_events(PERFORMANCE, report.checks)
    if updated is not None:  # the statements could be read: they are next week's baseline
        save_performance_baseline(maintenance.state_dir, updated)
    return final_state(report)


@flow(name=SECURITY, persist_result=True, on_failure=[emit_flow_failure])
def weekly_security_review() -> MaintenanceReport | State[Any]:
    """Failed logins by account and address, database roles and grants, public S3 buckets."""
    settings = load_settings()
    maintenance, started = settings.maintenance, datetime.now(UTC)
    running = {
        "security": start_task(
            run_security_checks, settings.live_dsn(), maintenance.security, started
        ),
        "s3": start_task(run_s3_public_access_checks, settings.aws),
    }
    checks = gather_checks(running, maintenance.check_deadline_s)
    report = MaintenanceReport(flow=SECURITY, started_at=started, checks=checks)
    publish_report(report)
    emit_check_events(SECURITY, report.checks)
    return final_state(report)
