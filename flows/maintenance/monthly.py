"""Runbook, System Maintenance, Monthly Operations: system updates and capacity planning.

The dependency audit proposes upgrades and never changes anything. Capacity planning turns the
daily health check's samples into trends and days left to each limit, with a chart. Both end
Completed, named ``Unhealthy`` when a check failed (see flows.checks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.states import State

from flows.checks import final_state
from tasks.core.events import emit_check_events, emit_flow_failure
from tasks.core.maintenance_report import MaintenanceReport, publish_report
from tasks.core.settings import MaintenanceSettings, load_system
from tasks.reviews.capacity import load_capacity_samples, plan_capacity
from tasks.reviews.dependency_audit import audit_dependencies, proposals_table

UPDATES = "monthly-system-updates"
CAPACITY = "monthly-capacity-planning"


@flow(name=UPDATES, persist_result=True, on_failure=[emit_flow_failure])
def monthly_system_updates() -> MaintenanceReport | State[Any]:
    """Audit the configured lock files for known vulnerabilities; propose the upgrades."""
    maintenance, started = load_system(MaintenanceSettings), datetime.now(UTC)
    checks, findings = audit_dependencies(maintenance)
    report = MaintenanceReport(
        flow=UPDATES,
        started_at=started,
        checks=checks,
        sections={"Proposed upgrades (nothing was changed)": proposals_table(findings)},
    )
    publish_report(report)
    emit_check_events(UPDATES, report.checks)
    return final_state(report)


@flow(name=CAPACITY, persist_result=True, on_failure=[emit_flow_failure])
def monthly_capacity_planning() -> MaintenanceReport | State[Any]:
    """Trends of the daily samples and, per limit, the days left at the current growth."""
    maintenance, started = load_system(MaintenanceSettings), datetime.now(UTC)
    samples = load_capacity_samples(
        maintenance.state_dir, started - timedelta(days=maintenance.capacity_window_days)
    )
    checks, sections = plan_capacity(
        samples,
        started,
        maintenance.capacity_warn_days,
        maintenance.capacity_fail_days,
        maintenance.state_dir / "charts",
    )
    report = MaintenanceReport(flow=CAPACITY, started_at=started, checks=checks, sections=sections)
    publish_report(report)
    emit_check_events(CAPACITY, report.checks)
    return final_state(report)
