"""Switchover: the restored cluster takes the live cluster's place; and its rollback.

The live data directory is never deleted: it is renamed ``<dir>.replaced-<timestamp>`` and can be
put back (``rollback``). Any failing step puts the original back and starts it before raising.
Both directories must be on one filesystem, so each move is a rename.
"""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr

from tasks.core.errors import RefusedError, RunbookError
from tasks.core.process import effective_user
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.postgres.cluster import LocalCluster
from tasks.postgres.sql import describe, is_in_recovery


class SwitchoverFailed(RunbookError):
    """A switchover step failed; the message says whether the original is back."""


class SwitchoverResult(BaseModel):
    """After a switchover: the data directory live now uses, where the old one is kept, the port."""

    live_data_dir: Path
    kept_data_dir: Path
    port: int


def kept_name(data_dir: Path, label: str) -> Path:
    """The name a data directory is kept under: ``<data_dir>.<label>-<UTC timestamp>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return data_dir.with_name(f"{data_dir.name}.{label}-{stamp}")


def require_same_filesystem(a: Path, b: Path) -> None:
    """Refuse (RefusedError) when ``a`` and ``b`` are on different filesystems.

    Both must exist: FileNotFoundError otherwise.
    """
    if a.stat().st_dev != b.stat().st_dev:
        raise RefusedError(
            f"{a} and {b} are on different filesystems, so a switchover could not be a rename",
            hint="set RUNBOOK_RECOVERY_RESTORE_ROOT to a directory beside the live data directory",
        )


def enable_archiving(restored: LocalCluster) -> None:
    """Undo the restore's ``archive_mode=off`` and queue the new timeline's WAL for archiving.

    While it ran beside live, the restored (now stopped) cluster archived nothing; as the live
    cluster it must, from its timeline history file on, or later recoveries could not follow
    it. Only segments written on its timeline before its last checkpoint are queued: the other
    files in pg_wal are recycled segments holding old data under future names.
    """
    auto = restored.data_dir / "postgresql.auto.conf"
    lines = auto.read_text().splitlines()
    auto.write_text(
        "".join(f"{line}\n" for line in lines if not line.strip().startswith("archive_mode"))
    )
    current = restored.control_data()["Latest checkpoint's REDO WAL file"]
    wal = restored.data_dir / "pg_wal"
    timeline = current[:8]
    queued = [
        p.name
        for p in wal.iterdir()
        if p.name == f"{timeline}.history"
        or (p.name.endswith(".partial"))
        or (len(p.name) == 24 and p.name.startswith(timeline) and p.name < current)
    ]
    status = wal / "archive_status"
    for name in queued:
        if not (status / f"{name}.done").exists():
            _touch_as(status / f"{name}.ready", restored.os_user)


def _touch_as(path: Path, os_user: str | None) -> None:
    path.touch()
    user = effective_user(os_user)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def health_check(dsn: SecretStr) -> None:
    """Raise SwitchoverFailed when the server at ``dsn`` is still in recovery.

    Raises:
        SwitchoverFailed; PostgresUnreachable, PostgresError when it cannot be queried.
    """
    if is_in_recovery(dsn):
        raise SwitchoverFailed(f"{describe(dsn)} came up still in recovery")


def move_into_place(
    incoming: LocalCluster, live: LocalCluster, live_dsn: SecretStr, deadline_s: float, label: str
) -> SwitchoverResult:
    """Put ``incoming``'s data directory in place of ``live``'s and start it on the live port.

    Keeps the live directory renamed; on any failure puts everything back and starts the
    original, then raises SwitchoverFailed saying so.
    """
    logger = run_logger()
    kept = kept_name(live.data_dir, label)
    step = "stop the incoming cluster"
    try:
        incoming.stop(mode="fast")
        step = "stop the live cluster"
        live.stop(mode="fast")
        step = f"keep the live data directory as {kept.name}"
        live.data_dir.rename(kept)
        step = "move the incoming data directory into place"
        incoming.data_dir.rename(live.data_dir)
        step = "start it on the live port"
        live.start(timeout=deadline_s, private=False)
        step = "health-check it"
        health_check(live_dsn)
    except Exception as exc:
        logger.error("Switchover failed at step '%s': %s; putting the original back", step, exc)
        restored = _put_back(incoming, live, kept, deadline_s)
        raise SwitchoverFailed(
            f"switchover failed at step '{step}': {exc}. " + restored,
            hint="read the cluster log; the incoming data directory was left where it was",
        ) from exc
    logger.info(
        "Switchover done: %s serves the new data; the old directory is kept at %s",
        describe(live_dsn),
        kept,
    )
    return SwitchoverResult(live_data_dir=live.data_dir, kept_data_dir=kept, port=live.port)


def _put_back(incoming: LocalCluster, live: LocalCluster, kept: Path, deadline_s: float) -> str:
    try:
        live.stop(mode="immediate")
        if kept.exists():
            if live.data_dir.exists():
                live.data_dir.rename(incoming.data_dir)
            kept.rename(live.data_dir)
        live.start(timeout=deadline_s, private=False)
    except Exception as exc:  # noqa: BLE001 - reported to the on-call engineer as it is
        return (
            f"PUTTING THE ORIGINAL BACK FAILED TOO ({exc}); the original data directory "
            f"is {kept if kept.exists() else live.data_dir}: start it by hand"
        )
    return "The original cluster was put back and started with its own data."


@ops_task("switch-over-to-restored")
def switch_over(
    restored: LocalCluster, live: LocalCluster, live_dsn: SecretStr, deadline_s: float
) -> SwitchoverResult:
    """The restored cluster becomes the live one (see ``move_into_place``)."""
    require_same_filesystem(restored.data_dir, live.data_dir.parent)
    restored.stop(mode="fast")  # a clean shutdown checkpoint: its position bounds the WAL to queue
    enable_archiving(restored)
    for stale in restored.data_dir.glob(".s.PGSQL.*"):  # copied from live by the backup
        stale.unlink()
    return move_into_place(restored, live, live_dsn, deadline_s, "replaced")


@ops_task("roll-back-switchover")
def roll_back_switchover(
    kept_data_dir: Path, live: LocalCluster, live_dsn: SecretStr, deadline_s: float
) -> SwitchoverResult:
    """Put a kept data directory back in place; the current one is kept as ``.rolled-back-*``."""
    incoming = LocalCluster(kept_data_dir, live.port, live.bin_dir, live.os_user)
    return move_into_place(incoming, live, live_dsn, deadline_s, "rolled-back")


def kept_directories(live_data_dir: Path) -> list[Path]:
    """Directories a switchover kept beside ``live_data_dir``, newest first."""
    pattern = f"{live_data_dir.name}.replaced-*"
    return sorted(live_data_dir.parent.glob(pattern), reverse=True)
