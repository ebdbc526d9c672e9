"""Prefect events for failures, so Automations can page, notify or start a follow-up run."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.states import State

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
