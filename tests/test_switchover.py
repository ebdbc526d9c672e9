"""A switchover on real clusters leaves nothing of the restore behind, proves the new live
cluster, and refuses before any change when the witnesses do not name one cluster."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.recovery.restore_backup import restore_backup
from sandbox.platform import Sandbox
from tasks.backups.base import BackupKind
from tasks.core.errors import RefusedError
from tasks.postgres.cluster import find_bin_dir
from tasks.postgres.layout import live_cluster
from tasks.postgres.scratch import remove_scratch_cluster
from tasks.postgres.sql import connect, with_port
from tasks.postgres.switchover import kept_directories, switch_over
from tasks.postgres.switchover_journal import journal_path
from tests.conftest import engine_for
from tests.recovery_support import APPROVE, APPROVE_2, decisions, stage_at
from tests.restored import restored_copy, set_stage, staged_sandbox

RESTORE_SETTINGS = ("restore_command", "recovery_target")


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    """A sandbox of this module's own: stage 1 in the full backup, stage 2 live after it."""
    with staged_sandbox() as sandbox:
        yield sandbox


def recovery_settings_in_force(dsn) -> list[str]:
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT name FROM pg_settings WHERE (name = 'restore_command'"
            " OR name LIKE 'recovery_target%') AND source <> 'default'"
        ).fetchall()
    return [row[0] for row in rows]


def assert_nothing_of_the_restore_left(settings) -> None:
    data_dir = settings.postgres.data_dir
    auto = (data_dir / "postgresql.auto.conf").read_text()
    assert not any(word in auto for word in RESTORE_SETTINGS), auto
    assert "pgBackRest" not in auto and "archive_mode = 'off'" not in auto
    assert not (data_dir / "recovery.signal").exists()
    assert not (data_dir / "standby.signal").exists()
    assert not (data_dir / "runbook-owner.json").exists()
    assert not journal_path(data_dir).exists()
    assert recovery_settings_in_force(settings.live_dsn()) == []


def test_replace_and_several_more_leave_no_restore_settings_in_live(
    prefect_server, box, use_platform, pg_tmp
):
    settings = use_platform(box)
    live_dsn = settings.live_dsn()
    label = engine_for(box).list_backups()[-1].label
    with decisions("restore-backup", ("restore", APPROVE), ("switchover", APPROVE_2)):
        result = restore_backup(backup_label=label, mode="replace")
    assert result.outcome == "replaced" and stage_at(live_dsn) == 1
    assert_nothing_of_the_restore_left(settings)
    proof = result.switchover.proof
    assert proof.timeline > proof.timeline_before and proof.archived_segment[:8] == (
        f"{proof.timeline:08X}"
    )
    with connect(live_dsn) as conn:
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "on"
        assert conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0] >= (
            proof.archived_segment
        )

    timelines = [proof.timeline]
    for stage in (3, 4):  # more replaces, each from a backup of the live cluster of the time
        set_stage(live_dsn, stage)
        engine_for(box).take_backup(BackupKind.FULL)
        copy = restored_copy(box, settings)
        switched = switch_over.fn(
            copy.cluster(),
            live_cluster(settings),
            live_dsn,
            engine_for(box).list_backups()[-1].system_id,
            settings.recovery,
        )
        remove_scratch_cluster.fn(copy)
        assert stage_at(live_dsn) == stage
        assert switched.proof.timeline > timelines[-1]
        timelines.append(switched.proof.timeline)
        assert_nothing_of_the_restore_left(settings)
    assert len(kept_directories(settings.postgres.data_dir)) == 3

    clone = pg_tmp / "standby"
    subprocess.run(  # what a standby made from the new live cluster would start with
        [
            find_bin_dir() / "pg_basebackup",
            "-d",
            live_dsn.get_secret_value(),
            "-D",
            clone,
            "-R",
            "-X",
            "none",
            "-c",
            "fast",
            "--no-sync",
        ],
        check=True,
        timeout=120,
        capture_output=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    cloned = (clone / "postgresql.auto.conf").read_text()
    assert "primary_conninfo" in cloned
    assert not any(word in cloned for word in RESTORE_SETTINGS), cloned


def test_a_dsn_that_reaches_another_data_directory_is_refused_before_any_change(
    box, use_platform, monkeypatch
):
    settings = use_platform(box)
    copy = restored_copy(box, settings)
    try:
        live = live_cluster(settings)
        before = stage_at(settings.live_dsn())
        # The restored copy is the same cluster (same system identifier) on another port: only
        # where it runs from tells it apart from live.
        aimed_at_copy = with_port(settings.live_dsn(), copy.port)
        with pytest.raises(RefusedError, match="runs from .* not from the live data directory"):
            switch_over.fn(
                copy.cluster(), live, aimed_at_copy, live.system_identifier(), settings.recovery
            )
        with pytest.raises(RefusedError, match="not one cluster .*the backups"):
            switch_over.fn(copy.cluster(), live, settings.live_dsn(), 42, settings.recovery)
        with pytest.raises(RefusedError, match="system identifier is unknown"):
            switch_over.fn(copy.cluster(), live, settings.live_dsn(), None, settings.recovery)
        assert live.is_running() and copy.cluster().is_running()
        assert stage_at(settings.live_dsn()) == before
        assert not journal_path(live.data_dir).exists()
        assert Path(copy.data_dir, "PG_VERSION").exists()
    finally:
        remove_scratch_cluster.fn(copy)
