"""Runbook, Recovery Procedures: Backup Restoration (and "Database Outage: restore from backup").

List available backups, select one, plan, execute, verify; behind approvals.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State
from pydantic import Field

from flows.recovery.carry_out import carry_out_recovery
from tasks.backups.base import RecoveryTarget
from tasks.backups.operations import build_engine, list_backups, select_backup
from tasks.backups.planning import RecoveryMode, RecoveryResult, plan_recovery
from tasks.core.events import emit_flow_failure
from tasks.core.settings import load_settings


@flow(name="restore-backup", persist_result=True, on_failure=[emit_flow_failure])
def restore_backup(
    backup_label: str = Field(description="the backup set to restore, e.g. 20261128-020000F"),
    mode: RecoveryMode = RecoveryMode.SIDE_BY_SIDE,
    dry_run: bool = False,
) -> RecoveryResult | State[Any]:
    """Restore ``backup_label`` to its end, beside live (or, with ``replace``, in its place)."""
    settings = load_settings()
    engine = build_engine(settings)
    list_backups(engine)  # the table artifact people choose from
    backup = select_backup(engine, backup_label)
    plan = plan_recovery(settings, "backup restoration", backup, RecoveryTarget(), mode)
    return carry_out_recovery(settings, engine, plan, dry_run)
