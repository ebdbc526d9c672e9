"""Switchover: the restored cluster takes the live cluster's place; its rollback; and the repair
of a switchover that was interrupted.

Before anything stops, every witness must name one cluster (``switchover_proof``). The live data
directory is never deleted: it is renamed ``<dir>.replaced-<timestamp>`` and marked as kept, so
it can be put back (``roll_back_switchover``) or discarded. Each step is written to the journal
beside the live data directory before it runs (``switchover_journal``). Whatever interrupts the
switchover where the process lives (an exception, a cancellation, SIGTERM) puts the original
back and starts it before the interruption goes on; a process that died (SIGKILL) leaves the
journal, from which ``repair_switchover`` finishes or undoes it. Both directories must be on one
filesystem, so each move is a rename.
"""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr

from tasks.core.durable import fsync_directory
from tasks.core.errors import RefusedError, RunbookError
from tasks.core.process import effective_user
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import RecoverySettings
from tasks.core.signals import signals_deferred, terminations_raise
from tasks.postgres.auto_conf import clear_restore_settings, keep_archiving_off
from tasks.postgres.cluster import LocalCluster
from tasks.postgres.ownership import mark_owned, read_mark, remove_mark
from tasks.postgres.sql import describe
from tasks.postgres.switchover_journal import REPAIR_HINT, SwitchoverJournal
from tasks.postgres.switchover_proof import (
    SwitchoverProof,
    control_timeline,
    prove_new_live,
    require_one_cluster,
)


class SwitchoverFailed(RunbookError):
    """A switchover step failed; the message says whether the original is back."""


class SwitchoverResult(BaseModel):
    """After a switchover: the data directory live now uses, where the old one is kept, the
    port, and what the new live cluster proved (None for a repair that finished one)."""

    live_data_dir: Path
    kept_data_dir: Path
    port: int
    proof: SwitchoverProof | None = None


class RepairResult(BaseModel):
    """What ``repair_switchover`` did: ``finished`` it, or ``undone`` (the original is back)."""

    action: Literal["finished", "undone"]
    journal: SwitchoverJournal


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


def prepare_restored_data_dir(restored: LocalCluster) -> list[str]:
    """Make a stopped, promoted restored copy fit to run as the live cluster; returns what was
    removed from it.

    Takes out what the restore wrote (recovery settings, ``archive_mode = 'off'``, signal files:
    ``tasks.postgres.auto_conf``) and the socket lock files copied from live, and queues the new
    timeline's WAL for archiving: while it ran beside live it archived nothing, and later
    recoveries must be able to follow it from its timeline history file on. Only segments
    written on its timeline before its last checkpoint are queued: the other files in pg_wal are
    recycled segments holding old data under future names.
    """
    removed = clear_restore_settings(restored.data_dir)
    for stale in restored.data_dir.glob(".s.PGSQL.*"):
        stale.unlink()
    current = restored.control_data()["Latest checkpoint's REDO WAL file"]
    wal = restored.data_dir / "pg_wal"
    timeline = current[:8]
    queued = [
        p.name
        for p in wal.iterdir()
        if p.name == f"{timeline}.history"
        or p.name.endswith(".partial")
        or (len(p.name) == 24 and p.name.startswith(timeline) and p.name < current)
    ]
    status = wal / "archive_status"
    for name in queued:
        if not (status / f"{name}.done").exists():
            _touch_as(status / f"{name}.ready", restored.os_user)
    return removed


def _touch_as(path: Path, os_user: str | None) -> None:
    path.touch()
    user = effective_user(os_user)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def move_into_place(
    incoming: LocalCluster,
    live: LocalCluster,
    live_dsn: SecretStr,
    recovery: RecoverySettings,
    *,
    label: Literal["replaced", "rolled-back"],
    backup_system_id: int | None = None,
) -> SwitchoverResult:
    """Put ``incoming``'s data directory in place of ``live``'s, start it on the live port, and
    prove it (``prove_new_live``). ``incoming`` is a restored copy for ``replaced`` (prepared,
    and it must run on a new timeline), a kept directory for ``rolled-back``.

    Refuses before any change unless every witness names one cluster. Keeps the live directory
    renamed and marked. On any failure or interruption puts everything back and starts the
    original, then raises SwitchoverFailed saying so (an interruption goes on as itself).

    Raises:
        RefusedError: not one cluster, or an earlier switchover is not finished.
        SwitchoverFailed: a step failed (the message says whether the original is back).
    """
    logger = run_logger()
    system_id = require_one_cluster(live, incoming, live_dsn, backup_system_id)
    journal = SwitchoverJournal.begin(
        label=label,
        live_data_dir=live.data_dir,
        incoming_data_dir=incoming.data_dir,
        kept_data_dir=kept_name(live.data_dir, label),
        port=live.port,
        bin_dir=live.bin_dir,
        os_user=live.os_user,
        config_file=live.config_file,
        incoming_is_restored=label == "replaced",
        system_identifier=system_id,
    )
    kept = journal.kept_data_dir
    try:
        with terminations_raise():
            journal.record("stop-incoming")
            incoming.stop(mode="fast")  # a clean shutdown checkpoint bounds the WAL to queue
            if journal.incoming_is_restored:
                journal.record("prepare-incoming")
                for line in prepare_restored_data_dir(incoming):
                    logger.info("Removed from the restored copy: %s", line)
            journal.record("stop-live")
            live.stop(mode="fast")
            journal.record("keep-live", timeline_before=control_timeline(live))
            live.data_dir.rename(kept)
            fsync_directory(kept.parent)
            mark_owned(kept, "kept", f"the live data directory before the {label} switchover")
            journal.record("move-incoming")
            incoming.data_dir.rename(live.data_dir)
            fsync_directory(live.data_dir.parent)
            journal.record("start-live")
            live.start(timeout=recovery.start_deadline_s, private=False)
            journal.record("prove-live")
            proof = prove_new_live(
                live_dsn,
                system_id,
                journal.timeline_before if journal.incoming_is_restored else None,
                recovery.archive_deadline_s,
            )
            journal.record("finish")
            remove_mark(live.data_dir)  # a kept directory put back is live again
    except BaseException as exc:
        step = journal.step
        logger.error("Switchover stopped at step '%s': %r; putting the original back", step, exc)
        outcome = _put_back(journal, recovery.start_deadline_s)
        if not isinstance(exc, Exception):
            raise  # a cancellation or termination goes on, now that the original is back
        raise SwitchoverFailed(
            f"switchover failed at step '{step}': {exc}. {outcome}",
            hint="read the cluster log; the incoming data directory is back where it was",
        ) from exc
    journal.close()
    logger.info(
        "Switchover done: %s serves the new data (timeline %s, WAL archived up to %s); the old "
        "directory is kept at %s",
        describe(live_dsn),
        proof.timeline,
        proof.archived_segment,
        kept,
    )
    return SwitchoverResult(
        live_data_dir=live.data_dir, kept_data_dir=kept, port=live.port, proof=proof
    )


def _put_back(journal: SwitchoverJournal, deadline_s: float) -> str:
    """Undo in this process, holding off termination signals until it is done."""
    try:
        with signals_deferred():
            undo_switchover(journal, deadline_s)
    except Exception as exc:  # noqa: BLE001 - reported to the on-call engineer as it is
        return (
            f"PUTTING THE ORIGINAL BACK FAILED TOO ({exc}); the journal {journal.path} is "
            f"kept: {REPAIR_HINT}"
        )
    return "The original cluster was put back and started with its own data."


def undo_switchover(journal: SwitchoverJournal, deadline_s: float) -> None:
    """Put the original data directory back in place and start it; remove the journal.

    Works from whatever step the switchover stopped at, from the directories as they are: when
    the kept directory exists, whatever is in live's place is the incoming one (stopped and
    moved back); otherwise live's place still holds the original. A restored copy put back gets
    ``archive_mode = 'off'`` again. Running it twice does no harm.

    Raises:
        ClusterError, CommandError, OSError: a step failed; the journal stays.
    """
    live = journal.live()
    kept, incoming = journal.kept_data_dir, journal.incoming_data_dir
    if kept.exists():
        if live.data_dir.exists():
            live.stop(mode="immediate")
            live.data_dir.rename(incoming)
        kept.rename(live.data_dir)
        fsync_directory(live.data_dir.parent)
        remove_mark(live.data_dir)
    if journal.incoming_is_restored and incoming.exists():
        keep_archiving_off(incoming)
    if not live.is_running():
        live.start(timeout=deadline_s, private=False)
    journal.close()
    run_logger().info("Undone: %s runs with its original data again", live.data_dir)


def finish_switchover(journal: SwitchoverJournal, deadline_s: float) -> None:
    """Complete a switchover that proved itself before it was stopped (journal step
    ``finish``): the new data directory runs in live's place, the old one is kept and marked."""
    live = journal.live()
    remove_mark(live.data_dir)
    if journal.kept_data_dir.exists() and read_mark(journal.kept_data_dir) is None:
        mark_owned(
            journal.kept_data_dir,
            "kept",
            f"the live data directory before the {journal.label} switchover",
        )
    if not live.is_running():
        live.start(timeout=deadline_s, private=False)
    journal.close()
    run_logger().info("Finished: %s runs with the new data", live.data_dir)


def repair_action(journal: SwitchoverJournal) -> Literal["finished", "undone"]:
    """What ``repair_switchover`` will do: finish a switchover that had proved itself (step
    ``finish``), undo any other."""
    return "finished" if journal.step == "finish" else "undone"


@ops_task("repair-switchover")
def repair_switchover(journal: SwitchoverJournal, deadline_s: float) -> RepairResult:
    """Finish or undo the interrupted switchover ``journal`` describes (``repair_action``).

    Raises:
        RefusedError: the process that wrote the journal still runs (it is not interrupted).
        ClusterError, CommandError, OSError: a step failed; the journal stays for another try.
    """
    if journal.process_alive():
        raise RefusedError(
            f"the switchover is still running in process {journal.pid} on {journal.host}",
            hint="wait for it to end; repair only a switchover whose process is gone",
        )
    action = repair_action(journal)
    with signals_deferred():
        if action == "finished":
            finish_switchover(journal, deadline_s)
        else:
            undo_switchover(journal, deadline_s)
    return RepairResult(action=action, journal=journal)


@ops_task("switch-over-to-restored")
def switch_over(
    restored: LocalCluster,
    live: LocalCluster,
    live_dsn: SecretStr,
    backup_system_id: int | None,
    recovery: RecoverySettings,
) -> SwitchoverResult:
    """The restored cluster becomes the live one (see ``move_into_place``).

    ``backup_system_id``: the system identifier pgBackRest info gives for the restored backup.

    Raises:
        RefusedError: different filesystems, not one cluster, no backup system identifier, or an
            earlier switchover not finished; SwitchoverFailed.
    """
    require_same_filesystem(restored.data_dir, live.data_dir.parent)
    if backup_system_id is None:
        raise RefusedError(
            "the backup's system identifier is unknown, so nothing proves the restored copy "
            "belongs in place of the live cluster",
            hint="check `pgbackrest info` for the stanza; recover side-by-side meanwhile",
        )
    return move_into_place(
        restored, live, live_dsn, recovery, label="replaced", backup_system_id=backup_system_id
    )


@ops_task("roll-back-switchover")
def roll_back_switchover(
    kept_data_dir: Path, live: LocalCluster, live_dsn: SecretStr, recovery: RecoverySettings
) -> SwitchoverResult:
    """Put a kept data directory back in place; the current one is kept as ``.rolled-back-*``."""
    incoming = LocalCluster(kept_data_dir, live.port, live.bin_dir, live.os_user, live.config_file)
    return move_into_place(incoming, live, live_dsn, recovery, label="rolled-back")


def kept_directories(live_data_dir: Path) -> list[Path]:
    """Directories a switchover kept beside ``live_data_dir``, newest first."""
    pattern = f"{live_data_dir.name}.replaced-*"
    return sorted(live_data_dir.parent.glob(pattern), reverse=True)
