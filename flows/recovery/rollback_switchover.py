"""Undo a switchover: put the data directory a switchover kept back in the live cluster's place."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect import flow
from prefect.states import Cancelled, State
from pydantic import Field

from flows.approval import request_approval
from flows.lock import recovery_lock
from tasks.backups.planning import PlanChanged
from tasks.core.approvals import ApprovalPolicy
from tasks.core.errors import RefusedError
from tasks.core.events import emit_flow_failure
from tasks.core.reports import publish_markdown
from tasks.core.settings import load_settings
from tasks.postgres.cluster import LocalCluster, find_bin_dir, is_data_directory
from tasks.postgres.switchover import SwitchoverResult, kept_directories, roll_back_switchover


@flow(name="rollback-switchover", persist_result=True, on_failure=[emit_flow_failure])
def rollback_switchover(
    kept_data_dir: str | None = Field(
        default=None, description="the kept directory to put back; default: the newest one"
    ),
    dry_run: bool = False,
) -> SwitchoverResult | State[Any]:
    """Stop live, keep its directory as ``.rolled-back-*``, start the kept one in its place."""
    settings = load_settings()
    live_dsn = settings.live_dsn()
    data_dir = settings.postgres.data_dir
    if data_dir is None:
        raise RefusedError("rollback needs the live data directory", hint="set RUNBOOK_PG_DATA_DIR")
    kept = Path(kept_data_dir) if kept_data_dir else next(iter(kept_directories(data_dir)), None)
    if kept is None or kept not in kept_directories(data_dir):
        raise RefusedError(
            f"{kept_data_dir or 'no directory'} is not one a switchover kept beside {data_dir}",
            hint="pick one of: " + (", ".join(map(str, kept_directories(data_dir))) or "none"),
        )
    plan = (
        f"### Plan: roll back the switchover of `{data_dir}`\n\n"
        f"- **Puts back:** `{kept}`\n"
        f"- **Live now:** `{data_dir}`, stopped and kept as `{data_dir.name}.rolled-back-<time>`"
    )
    publish_markdown("rollback-switchover-plan", plan, description="rollback plan")
    if dry_run:
        return Cancelled(message="dry run: nothing was changed")
    live = LocalCluster(
        data_dir,
        urlsplit(live_dsn.get_secret_value()).port or 5432,
        find_bin_dir(settings.postgres.bin_dir),
        settings.postgres.os_user,
    )
    policy = ApprovalPolicy.from_settings(settings.recovery)
    with recovery_lock(settings.backup.stanza, settings.recovery.lock_wait_s) as lock:
        decision = request_approval("rollback", plan, policy)
        if not decision.approved:
            return Cancelled(message=decision.summary())
        lock.check()
        if kept not in kept_directories(data_dir) or not is_data_directory(data_dir):
            raise PlanChanged(
                f"the plan changed while it waited for approval: {kept} is no longer a kept "
                f"directory beside {data_dir}, or {data_dir} is no longer a data directory; "
                "nothing was changed",
                hint="look at the directories and start the rollback again",
            )
        return roll_back_switchover(kept, live, live_dsn, settings.recovery.start_deadline_s)
