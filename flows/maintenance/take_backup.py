"""Runbook, Daily Tasks: take the night's backup (full on the configured weekday, else diff)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.backups.base import BackupInfo, BackupKind
from tasks.backups.operations import build_engine, scheduled_kind, take_backup
from tasks.core.events import emit_flow_failure
from tasks.core.settings import load_settings


@flow(name="take-backup", persist_result=True, on_failure=[emit_flow_failure])
def take_backup_flow(kind: BackupKind | None = None) -> BackupInfo:
    """Take a backup of ``kind``; without one, the schedule's rule picks full or diff."""
    settings = load_settings()
    engine = build_engine(settings)
    chosen = kind or scheduled_kind(
        datetime.now(UTC), settings.backup.timezone, settings.backup.full_backup_weekday
    )
    return take_backup(engine, chosen)
