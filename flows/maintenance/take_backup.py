"""Runbook, Daily Tasks: take the night's backup (full on the configured weekday, else diff)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from flows.lock import recovery_in_progress
from tasks.backups.base import BackupInfo, BackupKind
from tasks.backups.operations import build_engine, scheduled_kind, take_backup
from tasks.core.events import emit_flow_failure
from tasks.core.settings import load_settings


@flow(name="take-backup", persist_result=True, on_failure=[emit_flow_failure])
def take_backup_flow(kind: BackupKind | None = None) -> BackupInfo:
    """Take a backup of ``kind``; without one, the schedule's rule picks full or diff.

    While a recovery holds the stanza it still backs up, but defers the expire the backup would
    trigger (the recovery may need any backup set); it never takes the recovery lock.
    """
    settings = load_settings()
    engine = build_engine(settings)
    chosen = kind or scheduled_kind(
        datetime.now(UTC), settings.backup.timezone, settings.backup.full_backup_weekday
    )
    holder = recovery_in_progress(settings.backup.stanza)
    deferred = (
        f"recovery run {holder.run_name} ({holder.flow_run_id}) holds stanza "
        f"{settings.backup.stanza} and may need any backup; the next backup expires as usual"
        if holder
        else ""
    )
    return take_backup(engine, chosen, deferred_expire=deferred)
