"""Prefect tasks over the backup engine contract: what flows call."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from tasks.backups.base import (
    BackupEngine,
    BackupInfo,
    BackupKind,
    RestoreRequest,
    RestoreResult,
    RestoreWindow,
)
from tasks.backups.pgbackrest import PgBackRest
from tasks.core.reports import markdown_table, publish_markdown, publish_table
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import Settings
from tasks.postgres.cluster import find_bin_dir


def build_engine(settings: Settings) -> BackupEngine:
    """The configured engine (only pgBackRest so far)."""
    backup = settings.backup
    return PgBackRest(
        stanza=backup.stanza,
        config=backup.config,
        bin_dir=find_bin_dir(settings.postgres.bin_dir),
        os_user=settings.postgres.os_user,
        process_max=backup.process_max,
        command_deadline_s=backup.command_deadline_s,
        backup_deadline_s=backup.backup_deadline_s,
        restore_deadline_s=backup.restore_deadline_s,
    )


def scheduled_kind(now: datetime, timezone: str, full_weekday: int) -> BackupKind:
    """The daily schedule's rule: a full backup on the configured weekday, else differential."""
    local = now.astimezone(ZoneInfo(timezone))
    return BackupKind.FULL if local.weekday() == full_weekday else BackupKind.DIFF


@ops_task("list-backups", retries=3)
def list_backups(engine: BackupEngine) -> list[BackupInfo]:
    """The engine's backups, oldest first, also published as the ``backups`` table artifact.

    Retried 3 times on transient errors. The artifact gives sizes in MB (10^6 bytes).

    Raises:
        BackupError (RepositoryUnreachable: transient), CommandError, from the engine.
    """
    backups = engine.list_backups()
    publish_table(
        "backups",
        [
            {
                "label": b.label,
                "type": b.kind.value,
                "started": b.started_at.isoformat(),
                "stopped": b.stopped_at.isoformat(),
                "size_mb": round(b.size_bytes / 1e6, 1),
                "wal": f"{b.wal_start}..{b.wal_stop}",
            }
            for b in backups
        ],
        description="Backups in the repository, oldest first",
    )
    return backups


@ops_task("select-backup", retries=3)
def select_backup(engine: BackupEngine, label: str | None) -> BackupInfo:
    """The named backup, or the newest; an unknown label is refused with the known ones."""
    backup = engine.find_backup(label)
    run_logger().info(
        "Selected backup %s (%s, stopped %s)",
        backup.label,
        backup.kind.value,
        backup.stopped_at.isoformat(),
    )
    return backup


@ops_task("restorable-window", retries=3)
def restorable_window(engine: BackupEngine, timeline: int | None = None) -> RestoreWindow:
    """``engine.restorable_window(timeline)``, retried 3 times on transient errors.

    Raises:
        BackupError: the repository holds no backup, or pgBackRest failed; CommandError.
    """
    return engine.restorable_window(timeline)


@ops_task("take-backup")
def take_backup(engine: BackupEngine, kind: BackupKind, deferred_expire: str = "") -> BackupInfo:
    """Take a ``kind`` backup, log it and publish it as the ``backup-taken`` artifact.

    ``deferred_expire``, when given, is why the backup's automatic expire is skipped this time
    (a recovery holds the stanza and may use any backup); it is said in the log and the artifact.

    Never retried. Returns the new backup as the repository lists it afterwards.

    Raises:
        BackupError, or CommandError (CommandTimedOut past the engine's backup deadline).
    """
    # Not retried: a half-finished backup is resumed or cleaned by pgBackRest itself on the next
    # run, and a blind retry would double the load on the live cluster during an incident.
    logger = run_logger()
    logger.info("Taking a %s backup with %s", kind.value, engine.name)
    if deferred_expire:
        logger.warning("The expire after this backup is deferred: %s", deferred_expire)
    backup = engine.take_backup(kind, expire=not deferred_expire)
    logger.info(
        "Backup %s done in %.1f s, %.1f MB",
        backup.label,
        backup.duration_s,
        backup.size_bytes / 1e6,
    )
    publish_markdown(
        "backup-taken",
        f"# Backup {backup.label}\n\n"
        + markdown_table(
            ["label", "type", "started", "stopped", "seconds", "size MB", "repo MB", "WAL"],
            [
                [
                    backup.label,
                    backup.kind.value,
                    backup.started_at.isoformat(),
                    backup.stopped_at.isoformat(),
                    f"{backup.duration_s:.0f}",
                    f"{backup.size_bytes / 1e6:.1f}",
                    f"{backup.repo_size_bytes / 1e6:.1f}",
                    f"{backup.wal_start}..{backup.wal_stop}",
                ]
            ],
        )
        + (f"\n\nExpire deferred: {deferred_expire}" if deferred_expire else ""),
        description=f"{kind.value} backup taken"
        + (" (expire deferred: a recovery holds the stanza)" if deferred_expire else ""),
    )
    return backup


@ops_task("restore-to-directory")
def restore_to_directory(engine: BackupEngine, request: RestoreRequest) -> RestoreResult:
    """Restore into a new, empty directory; refuses anything else and never deletes."""
    logger = run_logger()
    logger.info(
        "Restoring backup %s into %s (target: %s)",
        request.backup_label,
        request.destination,
        request.target.type,
    )
    result = engine.restore(request)
    logger.info("Restored %.1f MB in %.1f s", result.bytes_restored / 1e6, result.seconds)
    return result
