"""Discard what a recovery left: a restored copy (its server stopped) or a data directory a
switchover kept; behind its own approval, never the live cluster, never anything unmarked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Cancelled, State
from pydantic import Field

from flows.approval import request_approval
from flows.lock import recovery_lock
from tasks.core.approvals import ApprovalPolicy
from tasks.core.events import emit_flow_failure
from tasks.core.reports import publish_markdown
from tasks.core.settings import load_settings
from tasks.postgres.restored_copies import DiscardResult, discard_leftover, plan_discard


@flow(name="discard-restored-cluster", persist_result=True, on_failure=[emit_flow_failure])
def discard_restored_cluster(
    path: str = Field(
        description="a restored copy's data directory, or a kept data.replaced-* directory"
    ),
    dry_run: bool = False,
) -> DiscardResult | State[Any]:
    """Show what would be removed and its size; once approved, stop the server running there
    and remove the directory. Refuses the live data directory and anything no recovery made."""
    settings = load_settings()
    plan = plan_discard(Path(path), settings)
    publish_markdown("discard-plan", plan.markdown(), description=f"discard {plan.leftover.path}")
    if dry_run:
        return DiscardResult(plan=plan, outcome="planned")
    policy = ApprovalPolicy.from_settings(settings.recovery)
    with recovery_lock(settings.backup.stanza, settings.recovery.lock_wait_s) as lock:
        decision = request_approval("discard", plan.markdown(), policy)
        if not decision.approved:
            return Cancelled(message=decision.summary())
        lock.check()
        checked = plan_discard(Path(path), settings)  # again: nothing may have changed meanwhile
        plan.require_same_target(checked)
        return discard_leftover(checked)
