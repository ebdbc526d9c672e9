"""Restored clusters beside the live one: a new directory and port, started, promoted, removed.

A restored cluster never archives into the live repository: pgBackRest writes
``archive_mode=off`` at restore time and the server is started with it again here.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect.logging import get_run_logger
from pydantic import BaseModel, SecretStr

from tasks.cluster import LocalCluster, find_bin_dir, free_port, make_owned_dir
from tasks.postgres import ServerStoppedError, wait_until_promoted, with_port
from tasks.reports import Progress
from tasks.retry import ops_task
from tasks.settings import Settings


class ScratchCluster(BaseModel):
    """Where a restore goes: ``root`` is ours alone and removed whole afterwards."""

    root: Path
    data_dir: Path
    port: int
    bin_dir: Path
    os_user: str | None

    def cluster(self) -> LocalCluster:
        return LocalCluster(self.data_dir, self.port, self.bin_dir, self.os_user)


@ops_task("plan-scratch-cluster")
def plan_scratch_cluster(settings: Settings, purpose: str) -> ScratchCluster:
    """Pick a fresh directory under the scratch root and a free port (creates only the root)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    root = settings.backup.scratch_dir / f"{purpose}-{stamp}"
    make_owned_dir(settings.backup.scratch_dir, settings.postgres.os_user, mode=0o711)
    make_owned_dir(root, settings.postgres.os_user)
    return ScratchCluster(
        root=root,
        data_dir=root / "data",
        port=settings.backup.scratch_port or free_port(),
        bin_dir=find_bin_dir(settings.postgres.bin_dir),
        os_user=settings.postgres.os_user,
    )


@ops_task("start-and-promote")
def start_and_promote(scratch: ScratchCluster, live_dsn: SecretStr, deadline_s: float) -> float:
    """Start the restored cluster and wait until ``pg_is_in_recovery()`` is false.

    Returns the seconds from start to promoted. On a stall past ``deadline_s`` the server is
    stopped (the caller removes the directory) and PostgresError is raised.
    """
    logger = get_run_logger()
    cluster = scratch.cluster()
    progress = Progress(f"Recovery of the restored cluster on port {scratch.port}")
    started = time.monotonic()
    cluster.start(timeout=deadline_s, wait=False, settings={"archive_mode": "off"})
    logger.info("Started restored cluster on port %s; waiting until promoted", scratch.port)
    last_log = [0.0]

    def on_wait(elapsed: float) -> None:
        if elapsed - last_log[0] >= 10:
            last_log[0] = elapsed
            logger.info("Still recovering after %.0f s", elapsed)
            progress.update(100 * elapsed / deadline_s)

    try:
        wait_until_promoted(
            with_port(live_dsn, scratch.port),
            deadline_s=deadline_s,
            server_alive=cluster.process_alive,
            on_wait=on_wait,
        )
    except ServerStoppedError as exc:
        raise ServerStoppedError(f"{exc.message}: {cluster.log_errors()}", hint=exc.hint) from None
    except Exception:
        logger.error("Restored cluster log tail:\n%s", cluster.log_tail())
        cluster.stop(mode="immediate")
        raise
    progress.update(100)
    seconds = time.monotonic() - started
    logger.info("Restored cluster promoted %.2f s after start", seconds)
    return seconds


@ops_task("remove-scratch-cluster")
def remove_scratch_cluster(scratch: ScratchCluster) -> None:
    """Stop the scratch server and delete its directory (only ever our own ``root``)."""
    scratch.cluster().stop(mode="immediate")
    shutil.rmtree(scratch.root, ignore_errors=True)
    get_run_logger().info("Removed scratch cluster %s", scratch.root)
