"""Restored clusters beside the live one: a new directory and port, started, promoted, removed.

A restored cluster never archives into the live repository: pgBackRest writes
``archive_mode=off`` at restore time and the server is started with it again here.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr

from tasks.core.reports import Progress
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import Settings
from tasks.postgres.cluster import (
    LocalCluster,
    find_bin_dir,
    free_port,
    make_owned_dir,
    port_in_use,
)
from tasks.postgres.layout import external_config_file
from tasks.postgres.ownership import mark_owned
from tasks.postgres.sql import (
    PostgresError,
    ServerStoppedError,
    fetch_value,
    wait_until_promoted,
    with_port,
)

PROGRESS_EVERY_S = 2.0


class ScratchCluster(BaseModel):
    """A cluster restored beside live: ``root`` is ours alone and removed whole afterwards.

    ``config_file``: the live cluster's postgresql.conf when it lives outside the data directory
    (a restored copy of such a cluster has none of its own); None otherwise.
    """

    root: Path
    data_dir: Path
    port: int
    bin_dir: Path
    os_user: str | None
    config_file: Path | None = None

    def cluster(self) -> LocalCluster:
        """This location as a ``LocalCluster`` (data directory, port, binaries, OS user, config)."""
        return LocalCluster(self.data_dir, self.port, self.bin_dir, self.os_user, self.config_file)

    def dsn(self, live: SecretStr) -> SecretStr:
        """The live DSN's credentials and database, on this cluster's port."""
        return with_port(live, self.port)

    def create(self) -> ScratchCluster:
        """Create the (empty) run directory for the OS user, marked as a recovery's own (so
        ``discard-restored-cluster`` may remove it); re-pick the port if it got taken."""
        make_owned_dir(self.root.parent, self.os_user, mode=0o711)
        make_owned_dir(self.root, self.os_user)
        mark_owned(self.root, "restored", f"a restored copy ({self.root.name})")
        return self if not port_in_use(self.port) else self.model_copy(update={"port": free_port()})


def restore_location(settings: Settings, purpose: str, root: Path | None = None) -> ScratchCluster:
    """A fresh directory under ``root`` (default: the scratch directory) and a free port.

    Changes nothing: ``ScratchCluster.create`` makes the directory when the restore starts.

    Raises:
        RefusedError: the live cluster's configuration lives outside its data directory in a
            file this machine does not have (``tasks.postgres.layout``).
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    run_root = (root or settings.backup.scratch_dir) / f"{purpose}-{stamp}"
    return ScratchCluster(
        root=run_root,
        data_dir=run_root / "data",
        port=settings.backup.scratch_port or free_port(),
        bin_dir=find_bin_dir(settings.postgres.bin_dir),
        os_user=settings.postgres.os_user,
        config_file=external_config_file(settings),
    )


@ops_task("plan-scratch-cluster")
def plan_scratch_cluster(settings: Settings, purpose: str) -> ScratchCluster:
    """A restore location under the scratch directory, created and ready for a restore."""
    return restore_location(settings, purpose).create()


@ops_task("start-and-promote")
def start_and_promote(
    scratch: ScratchCluster,
    live_dsn: SecretStr,
    deadline_s: float,
    replay_from: datetime | None = None,
    replay_to: datetime | None = None,
) -> float:
    """Start the restored cluster and wait until ``pg_is_in_recovery()`` is false.

    With ``replay_from``/``replay_to`` (a time target), progress is the last replayed commit's
    time between the two. Returns the seconds from start to promoted. On a stall past
    ``deadline_s`` or an exit, the server is stopped and the error carries its log's errors.
    """
    logger = run_logger()
    cluster = scratch.cluster()
    dsn = scratch.dsn(live_dsn)
    progress = Progress(f"Recovery of the restored cluster on port {scratch.port}")
    started = time.monotonic()
    cluster.start(timeout=deadline_s, wait=False, settings={"archive_mode": "off"})
    logger.info("Started restored cluster on port %s; replaying WAL until promoted", scratch.port)
    last_report = [0.0]

    def on_wait(elapsed: float) -> None:
        if elapsed - last_report[0] < PROGRESS_EVERY_S:
            return
        last_report[0] = elapsed
        replayed = _replayed_until(dsn)
        if replay_from and replay_to and replayed:
            span = max((replay_to - replay_from).total_seconds(), 1e-3)
            share = (replayed - replay_from).total_seconds() / span
            progress.update(100 * share)
            logger.info(
                "Replayed commits up to %s (%.0f%% of the way to the target)",
                replayed.isoformat(),
                100 * share,
            )
        else:
            logger.info(
                "Recovering for %.0f s%s",
                elapsed,
                f"; replayed up to {replayed.isoformat()}" if replayed else "",
            )

    try:
        wait_until_promoted(
            dsn, deadline_s=deadline_s, server_alive=cluster.process_alive, on_wait=on_wait
        )
    except ServerStoppedError as exc:
        raise ServerStoppedError(f"{exc.message}: {cluster.log_errors()}", hint=exc.hint) from None
    except PostgresError:
        logger.error("Restored cluster log tail:\n%s", cluster.log_tail())
        cluster.stop(mode="immediate")
        raise
    seconds = time.monotonic() - started
    progress.update(100)
    logger.info("Restored cluster promoted %.2f s after start", seconds)
    return seconds


def _replayed_until(dsn: SecretStr) -> datetime | None:
    """Commit time of the last replayed transaction (None before the server takes connections)."""
    try:
        value = fetch_value(dsn, "SELECT pg_last_xact_replay_timestamp()")
    except PostgresError:
        return None
    return value if isinstance(value, datetime) else None


@ops_task("remove-restored-cluster")
def remove_scratch_cluster(scratch: ScratchCluster) -> None:
    """Stop the restored server and delete its directory (only ever our own ``root``)."""
    scratch.cluster().stop(mode="immediate")
    shutil.rmtree(scratch.root, ignore_errors=True)
    run_logger().info("Removed restored cluster %s", scratch.root)
