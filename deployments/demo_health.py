"""The demo's health-check step: run ``daily-health-check/daily`` as a deployment, print it."""

from __future__ import annotations

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from sandbox.notifications import register_notification_blocks
from sandbox.platform import Sandbox
from tasks.core.errors import RunbookError
from tasks.core.maintenance_report import MaintenanceReport

DEPLOYMENT = "daily-health-check/daily"


class HealthCheckStepFailed(RunbookError):
    """The daily health check did not run to the end (not: a check failed)."""


def run_health_check_step(box: Sandbox, timeout: int) -> str:
    """Register the sandbox's notification blocks, run the deployment (served already) and
    return its printable summary. A check that fails is in the summary; only a run that did not
    complete raises ``HealthCheckStepFailed``."""
    register_notification_blocks(box)
    run = run_deployment(DEPLOYMENT, parameters={}, timeout=timeout)
    assert isinstance(run, FlowRun)
    if run.state is None or not run.state.is_completed():
        raise HealthCheckStepFailed(
            f"{DEPLOYMENT} run {run.name} ended {run.state_name}: "
            f"{run.state.message if run.state else 'no state'}",
            hint="open the run in the Prefect UI for its logs",
        )
    report = run.state.result()
    assert isinstance(report, MaintenanceReport)
    return f"final state: {run.state_name}\n{report.text()}"
