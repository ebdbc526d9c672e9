"""The pgBackRest engine against a real cluster and repository."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.backups.base import (
    BackupKind,
    BackupNotFound,
    RecoveryTarget,
    RepositoryUnreachable,
    RestoreRequest,
)
from tasks.backups.operations import scheduled_kind
from tasks.backups.pgbackrest import PgBackRest
from tasks.core.errors import RefusedError
from tasks.core.process import CommandTimedOut, ToolMissing
from tasks.postgres.cluster import find_bin_dir
from tasks.postgres.sql import archiver_status, connect, switch_wal
from tasks.postgres.wal import previous_segment
from tests.conftest import engine_for, settings_for


def wait_until_archived(dsn, wal: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (archiver_status(dsn).last_archived_wal or "") < wal:
        assert time.monotonic() < deadline, f"{wal} was not archived within {timeout} s"
        time.sleep(0.2)


def commit_and_archive(dsn) -> None:
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO users (email, name) VALUES (%s, 'window')",
            (f"w{time.time_ns()}@example.test",),
        )
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    switch_wal(dsn)
    wait_until_archived(dsn, segment)


def test_backups_are_listed_with_their_types_times_and_chain(fresh_platform):
    engine = engine_for(fresh_platform)
    before = datetime.now(UTC).replace(microsecond=0)
    full = engine.take_backup(BackupKind.FULL)
    diff = engine.take_backup(BackupKind.DIFF)
    incr = engine.take_backup(BackupKind.INCR)

    listed = engine.list_backups()
    assert [b.label for b in listed] == [full.label, diff.label, incr.label]
    assert [b.kind for b in listed] == [BackupKind.FULL, BackupKind.DIFF, BackupKind.INCR]
    assert full.label.endswith("F") and diff.label.endswith("D") and incr.label.endswith("I")
    assert diff.prior == full.label and incr.prior == diff.label
    for backup in listed:
        assert backup.started_at.tzinfo is not None
        assert before <= backup.started_at <= backup.stopped_at <= datetime.now(UTC)
        assert backup.timeline == 1 and backup.wal_start <= backup.wal_stop
        assert backup.size_bytes > 1_000_000
    assert listed[0].started_at <= listed[1].started_at <= listed[2].started_at


def test_restorable_window_moves_forward_when_new_wal_is_archived(platform):
    engine = engine_for(platform)
    dsn = settings_for(platform).live_dsn()
    commit_and_archive(dsn)
    first = engine.restorable_window()
    time.sleep(1.1)
    commit_and_archive(dsn)
    second = engine.restorable_window()

    assert second.latest > first.latest
    assert second.earliest == first.earliest
    assert first.oldest_backup == engine.list_backups()[0].label
    assert first.latest.tzinfo is not None and second.latest <= datetime.now(UTC)


def test_previous_segment_crosses_the_log_file_boundary():
    size = 16 << 20  # 16 MiB: 256 segments per log file
    assert previous_segment("000000010000000200000000", size) == "0000000100000001000000FF"
    assert previous_segment("000000010000000000000005", size) == "000000010000000000000004"
    assert previous_segment("000000010000000000000000", size) is None


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2026-11-29T01:30:00+00:00", BackupKind.FULL),
        ("2026-11-30T01:30:00+00:00", BackupKind.DIFF),
    ],
)
def test_daily_schedule_takes_full_on_sunday_and_diff_otherwise(day, expected):
    assert scheduled_kind(datetime.fromisoformat(day), "UTC", 6) is expected


def test_full_backup_day_is_judged_in_the_configured_timezone():
    # 23:30 UTC on Saturday is already Sunday in Berlin.
    saturday_night = datetime.fromisoformat("2026-11-28T23:30:00+00:00")
    assert scheduled_kind(saturday_night, "UTC", 6) is BackupKind.DIFF
    assert scheduled_kind(saturday_night, "Europe/Berlin", 6) is BackupKind.FULL


# -- bad input and faults: a clear error, and nothing changed ----------------------------------


def test_restore_into_a_non_empty_directory_is_refused_and_left_alone(platform, tmp_path):
    engine = engine_for(platform)
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    label = engine.list_backups()[-1].label
    with pytest.raises(RefusedError, match="not empty"):
        engine.restore(RestoreRequest(backup_label=label, destination=str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert keep.read_text() == "precious"


def test_restore_over_the_live_data_directory_is_refused(platform):
    engine = engine_for(platform)
    live = platform.cluster()
    files_before = sorted(p.name for p in live.data_dir.iterdir())
    label = engine.list_backups()[-1].label
    with pytest.raises(RefusedError, match="PostgreSQL data directory"):
        engine.restore(RestoreRequest(backup_label=label, destination=str(live.data_dir)))
    assert live.is_running()
    assert sorted(p.name for p in live.data_dir.iterdir()) == files_before


def test_unknown_backup_label_is_refused_naming_the_known_ones(platform, tmp_path):
    engine = engine_for(platform)
    known = engine.list_backups()[-1].label
    with pytest.raises(BackupNotFound, match="20200101-000000F") as info:
        engine.restore(
            RestoreRequest(backup_label="20200101-000000F", destination=str(tmp_path / "new"))
        )
    assert known in str(info.value)
    assert not (tmp_path / "new").exists()


def test_time_target_without_an_offset_is_refused():
    with pytest.raises(ValueError, match="offset"):
        RecoveryTarget(type="time", value="2026-11-28T10:00:00")


def test_missing_pgbackrest_is_named_with_how_to_install(platform, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="apt-get install pgbackrest"):
        engine_for(platform).list_backups()


def test_missing_postgresql_binaries_are_named_with_how_to_install():
    with pytest.raises(ToolMissing, match="RUNBOOK_PG_BIN_DIR"):
        find_bin_dir(Path("/nonexistent/postgresql/bin"))


def test_unreachable_repository_is_a_typed_error_with_a_hint(platform, pg_tmp):
    conf = pg_tmp / "pgbackrest.conf"
    text = platform.pgbackrest_conf.read_text()
    conf.write_text(text.replace(str(platform.repo), "/nonexistent/repo"))
    conf.chmod(0o644)
    engine = PgBackRest(stanza="linkist", config=conf, bin_dir=find_bin_dir())
    with pytest.raises(RepositoryUnreachable) as info:
        engine.list_backups()
    assert info.value.hint and "repository" in info.value.hint


def test_restore_past_its_deadline_is_killed(platform, pg_tmp):
    engine = engine_for(platform, restore_deadline_s=0.05)
    destination = pg_tmp / "restore"
    label = engine.list_backups()[-1].label
    with pytest.raises(CommandTimedOut, match="pgBackRest restore did not finish"):
        engine.restore(RestoreRequest(backup_label=label, destination=str(destination)))
    leftover = subprocess.run(["pgrep", "-f", f"pg1-path={destination}"], capture_output=True)
    assert leftover.returncode == 1, f"pgBackRest still runs: {leftover.stdout!r}"
