"""Prefect events for failures, so Automations can page, notify or start a follow-up run."""

from __future__ import annotations

import re
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.states import State

from tasks.core.reports import CheckResult

FAILED_EVENT = "runbook.flow.failed"


def emit_flow_failure(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """``on_failure`` hook: emit ``runbook.flow.failed`` with the reason."""
    emit_event(
        event=FAILED_EVENT,
        resource={
            "prefect.resource.id": f"runbook.flow-run.{flow_run.id}",
            "prefect.resource.name": flow_run.name,
            "runbook.flow": flow.name,
        },
        payload={"message": state.message or "", "flow_run_id": str(flow_run.id)},
    )


CHECK_FAILED_EVENT = "runbook.check.failed"


def check_resource_id(check: CheckResult) -> str:
    """A check's event resource id: ``runbook.check.<system>.<name>``, lowercased and slugged."""
    slug = re.sub(r"[^a-z0-9.-]+", "-", f"{check.system}.{check.name}".lower()).strip("-")
    return f"runbook.check.{slug}"


def emit_check_events(flow_name: str, checks: list[CheckResult]) -> int:
    """One ``runbook.check.failed`` event per failed check (related to this flow run).

    Not a task: ``emit_event`` only queues each event for Prefect's events worker, which sends
    them in the background, so there is nothing to retry or wait for.
    """
    failed = [c for c in checks if c.failed]
    for check in failed:
        emit_event(
            event=CHECK_FAILED_EVENT,
            resource={
                "prefect.resource.id": check_resource_id(check),
                "prefect.resource.name": f"{check.system}: {check.name}",
                "runbook.system": check.system,
                "runbook.check": check.name,
                "runbook.flow": flow_name,
            },
            payload={
                "status": check.status,
                "figure": check.figure,
                "detail": check.detail,
                "hint": check.hint,
            },
        )
    return len(failed)
