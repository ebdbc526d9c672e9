"""Undo a switchover: repair one that was interrupted (from its journal), or put the data
directory a finished one kept back in the live cluster's place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.states import Cancelled, State
from pydantic import Field

from flows.approval import request_approval
from flows.lock import recovery_lock
from tasks.core.approvals import ApprovalPolicy
from tasks.core.errors import RefusedError
from tasks.core.events import emit_flow_failure
from tasks.core.reports import publish_markdown
from tasks.core.settings import load_settings
from tasks.postgres.layout import live_cluster
from tasks.postgres.switchover import (
    RepairResult,
    SwitchoverResult,
    kept_directories,
    repair_action,
    repair_switchover,
    roll_back_switchover,
)
from tasks.postgres.switchover_journal import SwitchoverJournal, load_journal


@flow(name="rollback-switchover", persist_result=True, on_failure=[emit_flow_failure])
def rollback_switchover(
    kept_data_dir: str | None = Field(
        default=None, description="the kept directory to put back; default: the newest one"
    ),
    dry_run: bool = False,
) -> SwitchoverResult | RepairResult | State[Any]:
    """Repair an interrupted switchover (finish it if it had proved itself, else undo it); with
    none, stop live, keep its directory as ``.rolled-back-*`` and start the kept one in its place.
    """
    settings = load_settings()
    live = live_cluster(settings)
    journal = load_journal(live.data_dir)
    if journal is not None:
        step, plan = "repair", repair_plan(journal, kept_data_dir)
    else:
        kept = choose_kept_directory(live.data_dir, kept_data_dir)
        step, plan = "rollback", rollback_plan(live.data_dir, kept)
    publish_markdown("rollback-switchover-plan", plan, description=f"{step} plan")
    if dry_run:
        return Cancelled(message="dry run: nothing was changed")
    policy = ApprovalPolicy.from_settings(settings.recovery)
    with recovery_lock(settings.backup.stanza, settings.recovery.lock_wait_s) as lock:
        decision = request_approval(step, plan, policy)
        if not decision.approved:
            return Cancelled(message=decision.summary())
        lock.check()
        if journal is not None:
            require_unchanged(journal)
            return repair_switchover(journal, settings.recovery.start_deadline_s)
        return roll_back_switchover(
            choose_kept_directory(live.data_dir, str(kept)),
            live,
            settings.live_dsn(),
            settings.recovery,
        )


def choose_kept_directory(data_dir: Path, asked: str | None) -> Path:
    """``asked``, or the newest kept directory; refuses one a switchover did not keep."""
    kept = Path(asked) if asked else next(iter(kept_directories(data_dir)), None)
    if kept is None or kept not in kept_directories(data_dir):
        raise RefusedError(
            f"{asked or 'no directory'} is not one a switchover kept beside {data_dir}",
            hint="pick one of: " + (", ".join(map(str, kept_directories(data_dir))) or "none"),
        )
    return kept


def rollback_plan(data_dir: Path, kept: Path) -> str:
    """The plan of a rollback, as shown for approval (a list: it wraps in the resume dialog)."""
    return (
        f"### Plan: roll back the switchover of `{data_dir}`\n\n"
        f"- **Puts back:** `{kept}`\n"
        f"- **Live now:** `{data_dir}`, stopped and kept as `{data_dir.name}.rolled-back-<time>`"
    )


def repair_plan(journal: SwitchoverJournal, asked: str | None) -> str:
    """The plan of a repair, as shown for approval; refuses a rollback asked for meanwhile."""
    if asked:
        raise RefusedError(
            f"a switchover of {journal.live_data_dir} was interrupted and must be repaired first",
            hint="run rollback-switchover without kept_data_dir: it repairs that one",
        )
    action = repair_action(journal)
    effect = (
        f"finish it: {journal.live_data_dir} keeps the new data, which had proved itself; "
        f"the old data stays kept at {journal.kept_data_dir}"
        if action == "finished"
        else f"undo it: {journal.live_data_dir} gets its original data back and is started; "
        f"{journal.incoming_data_dir} goes back where it was, stopped"
    )
    return (
        f"### Plan: repair the interrupted switchover of `{journal.live_data_dir}`\n\n"
        f"- **Journal:** {journal.describe()}\n"
        f"- **Repair:** {effect}"
    )


def require_unchanged(journal: SwitchoverJournal) -> None:
    """After the approval: refuse when the journal is no longer the one the plan showed."""
    now = load_journal(journal.live_data_dir)
    if now is None or now.updated_at != journal.updated_at:
        raise RefusedError(
            f"the switchover journal of {journal.live_data_dir} changed while waiting for "
            "approval; nothing was done",
            hint="run rollback-switchover again and approve the plan it shows then",
        )
