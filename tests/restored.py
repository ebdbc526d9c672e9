"""Restored copies beside a sandbox's live cluster, made the way recoveries make them, and the
one-row ``status`` table that tells whose data a server holds (read with
``tests.test_recovery.stage_at``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from sandbox.platform import Sandbox
from tasks.backups.base import BackupKind, RestoreRequest
from tasks.core.settings import Settings
from tasks.postgres.scratch import ScratchCluster, restore_location, start_and_promote
from tasks.postgres.sql import connect
from tests.conftest import destroy_sandbox, engine_for, make_sandbox, settings_for


def set_stage(dsn: SecretStr, stage: int) -> None:
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS status (stage int NOT NULL)")
        conn.execute("TRUNCATE status")
        conn.execute("INSERT INTO status VALUES (%s)", (stage,))


def restored_copy(box: Sandbox, settings: Settings) -> ScratchCluster:
    """The newest backup restored beside live (same filesystem), recovered to its end, promoted,
    and left running on its own port: what a side-by-side recovery leaves."""
    assert settings.postgres.data_dir is not None
    engine = engine_for(box)
    scratch = restore_location(settings, "restore", settings.postgres.data_dir.parent).create()
    engine.restore(
        RestoreRequest(
            backup_label=engine.list_backups()[-1].label, destination=str(scratch.data_dir)
        )
    )
    start_and_promote.fn(scratch, settings.live_dsn(), 120)
    return scratch


@contextmanager
def staged_sandbox() -> Iterator[Sandbox]:
    """A sandbox of its own: stage 1 in a full backup, stage 2 live after it; destroyed after."""
    box = make_sandbox()
    try:
        dsn = settings_for(box).live_dsn()
        set_stage(dsn, 1)
        engine_for(box).take_backup(BackupKind.FULL)
        set_stage(dsn, 2)
        yield box
    finally:
        destroy_sandbox(box)
