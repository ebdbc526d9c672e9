"""Backup choice and the restorable window at their edges, on a real cluster under writes.

pgBackRest records whole seconds, so a backup's stop lies somewhere inside its stop second. A
target inside that second restores only if every commit before the backup's stop LSN is at or
before the target; otherwise recovery would stop before the backup is consistent and the
restored server exits. The reproduction: with writes running, take a differential backup and
recover to its stop time plus 1 ms: the plan takes the earlier backup unless WAL proves the
differential consistent by then, and the restored rows are exactly those committed by the
target (``track_commit_timestamp`` gives each row's commit time on live).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from flows.recovery.pitr import point_in_time_recovery
from sandbox.platform import Sandbox
from tasks.backups.base import (
    BackupEngine,
    BackupInfo,
    BackupKind,
    ConsistentPoint,
    RepositoryCheck,
    RestoreRequest,
    RestoreResult,
    RestoreWindow,
    RestoreWindowUnknown,
)
from tasks.backups.pgbackrest import WALDUMP_SEGMENTS_BACK
from tasks.backups.planning import choose_backup
from tasks.core.errors import RefusedError
from tasks.postgres.scratch import remove_scratch_cluster, restore_location
from tasks.postgres.sql import connect, fetch_value, switch_wal, wait_until_promoted, with_port
from tasks.postgres.wal import (
    WalError,
    parse_history,
    previous_on_history,
    previous_segment,
    segment_name,
    segment_size_of,
)
from tests.conftest import destroy_sandbox, engine_for, make_sandbox, settings_for
from tests.recovery_support import APPROVE, decisions, restore_dirs
from tests.test_backups import wait_until_archived


class Writer:
    """Commits one row at a time into ``ticks`` from a thread, until stopped."""

    def __init__(self, dsn: SecretStr) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        try:
            with connect(self.dsn) as conn:
                while not self.stop.is_set():
                    conn.execute("INSERT INTO ticks DEFAULT VALUES")
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            self.errors.append(exc)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.errors, self.errors


def archive_now(dsn: SecretStr) -> None:
    segment = str(fetch_value(dsn, "SELECT pg_walfile_name(pg_current_wal_lsn())"))
    switch_wal(dsn)
    wait_until_archived(dsn, segment)


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[Sandbox, BackupInfo, BackupInfo]]:
    """A sandbox of this module's own with commit times tracked and no autovacuum (so every
    commit is the writer's): a full backup, then a differential taken while rows are written."""
    box = make_sandbox()
    try:
        dsn = settings_for(box).live_dsn()
        with connect(dsn) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            conn.execute("ALTER SYSTEM SET autovacuum = off")
            conn.execute("CREATE TABLE ticks (id bigserial PRIMARY KEY)")
        box.cluster().stop()
        box.cluster().start(timeout=60)
        engine = engine_for(box)
        full = engine.take_backup(BackupKind.FULL)
        with Writer(dsn):
            time.sleep(1)
            diff = engine.take_backup(BackupKind.DIFF)
            time.sleep(1.5)  # commits past the differential's stop second
        archive_now(dsn)
        yield box, full, diff
    finally:
        destroy_sandbox(box)


def committed_by(dsn: SecretStr, moment: datetime) -> list[int]:
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id FROM ticks WHERE pg_xact_commit_timestamp(xmin) <= %s ORDER BY id",
            (moment,),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_backup_taken_under_writes_is_consistent_at_a_commit_read_from_wal(edge):
    box, _, diff = edge
    point = engine_for(box).consistent_point(diff)
    assert point.proven and "read from WAL" in point.basis
    assert diff.started_at <= point.at < diff.stopped_at + timedelta(seconds=1)
    with connect(settings_for(box).live_dsn()) as conn:
        (committed,) = conn.execute(
            "SELECT count(*) FROM ticks WHERE pg_xact_commit_timestamp(xmin) = %s", (point.at,)
        ).fetchone()
    assert committed == 1, "the consistent point is not the commit time of a row written"


def test_recovery_to_a_backups_stop_second_plus_1ms_restores_exactly_the_rows_committed_by_then(
    prefect_server, edge, use_platform
):
    box, full, diff = edge
    settings = use_platform(box)
    target = diff.stopped_at + timedelta(milliseconds=1)
    point = engine_for(box).consistent_point(diff)
    # The differential serves only if WAL proves it consistent by the target (which it is not
    # unless its stop fell in the first millisecond of its second).
    serving = diff if point.at <= target else full

    planned = point_in_time_recovery(target_time=target.isoformat(), dry_run=True)
    assert planned.plan.backup.label == serving.label

    with decisions("point-in-time-recovery", ("restore", APPROVE)):
        result = point_in_time_recovery(target_time=target.isoformat())
    try:
        assert result.outcome == "restored" and result.verified, result.markdown()
        assert result.plan.backup.label == serving.label
        restored = with_port(settings.live_dsn(), result.plan.restore_to.port)
        expected = committed_by(settings.live_dsn(), target)
        assert expected, "no row was committed before the target"
        assert committed_by(restored, datetime.now(UTC)) == expected
    finally:
        remove_scratch_cluster.fn(result.plan.restore_to)


def test_no_commit_archived_within_reach_is_refused_naming_why(prefect_server, edge, use_platform):
    box, _, _ = edge
    dsn = use_platform(box).live_dsn()
    before = restore_dirs(box)
    for _ in range(WALDUMP_SEGMENTS_BACK + 1):  # none with a commit or abort
        with connect(dsn) as conn:
            conn.execute("CHECKPOINT")
        archive_now(dsn)
    with pytest.raises(RestoreWindowUnknown, match="no commit or abort is in the 16 WAL segments"):
        engine_for(box).restorable_window(1)
    with pytest.raises(RefusedError, match="latest time a recovery can reach is unknown"):
        point_in_time_recovery(target_time=(datetime.now(UTC) - timedelta(seconds=30)).isoformat())
    assert restore_dirs(box) == before


def test_a_branched_timeline_is_followed_through_its_history_file_in_the_repository(
    edge, use_platform
):
    """A copy of the full backup promoted beside live and archiving into the same stanza, as a
    switched-over cluster would: timeline 2 branches off timeline 1 at the full backup's end,
    so the differential taken later on timeline 1 is not on timeline 2's history."""
    box, full, diff = edge
    settings = use_platform(box)
    engine = engine_for(box)
    with connect(settings.live_dsn()) as conn:  # timeline 1 goes on too
        conn.execute("INSERT INTO ticks DEFAULT VALUES")
    archive_now(settings.live_dsn())
    branch = restore_location(settings, "branch").create()
    try:
        engine.restore(
            RestoreRequest(
                backup_label=full.label,
                destination=str(branch.data_dir),
                archive_into_repository=True,
            )
        )
        cluster = branch.cluster()
        cluster.start(timeout=60, wait=False)
        dsn = branch.dsn(settings.live_dsn())
        wait_until_promoted(dsn, deadline_s=60, server_alive=cluster.process_alive)
        archive_push = engine.command(f"--pg1-path={branch.data_dir}", "archive-push", "%p")
        with connect(dsn) as conn:  # its own data directory, not live's, for pgBackRest
            conn.execute(f"ALTER SYSTEM SET archive_command = '{' '.join(archive_push)}'")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("INSERT INTO ticks DEFAULT VALUES")
        archive_now(dsn)

        followed = engine.restorable_window(2)
        (switch,) = followed.history
        assert (switch.parent, switch.switchpoint) == (1, full.lsn_stop)
        assert followed.follows(full) and not followed.follows(diff)
        assert followed.newest_wal_segment.startswith("00000002")
        assert engine.restorable_window().timeline == 2  # live down: the newest timeline
        assert engine.restorable_window(1).newest_wal_segment.startswith("00000001")
        target = followed.latest - timedelta(microseconds=1)
        assert choose_backup.fn(engine, engine.list_backups(), followed, target) == full
    finally:
        remove_scratch_cluster.fn(branch)


# -- the rules, on backups as pgBackRest lists them ---------------------------------------------

T0 = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def backup(
    label: str, stop_s: float, *, timeline: int = 1, lsn_stop: str = "0/5000100"
) -> BackupInfo:
    stopped = T0 + timedelta(seconds=stop_s)
    return BackupInfo(
        label=label,
        kind=BackupKind.FULL if label.endswith("F") else BackupKind.DIFF,
        started_at=stopped - 5 * SECOND,
        stopped_at=stopped,
        size_bytes=1,
        repo_size_bytes=1,
        wal_start=f"{timeline:08X}0000000000000005",
        lsn_stop=lsn_stop,
        timeline=timeline,
    )


FULL = backup("20261128-100000F", 0)
DIFF = backup("20261128-100000F_20261128-100100D", 60)


class FixedConsistentPoints(BackupEngine):
    """A stand-in engine: consistent points given by the test (the real, WAL-proven one is
    exercised above); any other call is a test failure."""

    name = "fixed consistent points (stand-in)"

    def __init__(self, points: dict[str, datetime]) -> None:
        self.points = points
        self.asked: list[str] = []

    def consistent_point(self, backup: BackupInfo) -> ConsistentPoint:
        self.asked.append(backup.label)
        return ConsistentPoint(at=self.points[backup.label], proven=True, basis="given by the test")

    def list_backups(self) -> list[BackupInfo]:
        raise AssertionError("not used")

    def restorable_window(self, timeline: int | None = None) -> RestoreWindow:
        raise AssertionError("not used")

    def take_backup(self, kind: BackupKind) -> BackupInfo:
        raise AssertionError("not used")

    def verify_repository(self, label: str | None = None) -> RepositoryCheck:
        raise AssertionError("not used")

    def restore(self, request: RestoreRequest) -> RestoreResult:
        raise AssertionError("not used")


def window(**changes: object) -> RestoreWindow:
    base = RestoreWindow(
        earliest=FULL.stopped_at + SECOND,
        latest=T0 + timedelta(hours=1),
        oldest_backup=FULL.label,
        newest_wal_segment="000000010000000000000009",
        timeline=1,
    )
    return base.model_copy(update=changes)


def test_a_backup_stopped_a_second_or_more_before_the_target_serves_without_reading_wal():
    engine = FixedConsistentPoints({})
    assert choose_backup.fn(engine, [FULL, DIFF], window(), DIFF.stopped_at + SECOND) == DIFF
    assert engine.asked == []


def test_inside_the_stop_second_the_wal_proven_point_decides():
    target = DIFF.stopped_at + timedelta(milliseconds=1)
    late = FixedConsistentPoints({DIFF.label: DIFF.stopped_at + timedelta(milliseconds=400)})
    assert choose_backup.fn(late, [FULL, DIFF], window(), target) == FULL
    early = FixedConsistentPoints({DIFF.label: DIFF.stopped_at - timedelta(milliseconds=3)})
    assert choose_backup.fn(early, [FULL, DIFF], window(), target) == DIFF


def test_no_backup_consistent_by_the_target_is_refused_with_the_reason():
    only = backup("20261128-100000F", 0)
    target = only.stopped_at + timedelta(milliseconds=500)
    engine = FixedConsistentPoints({only.label: only.stopped_at + timedelta(milliseconds=900)})
    with pytest.raises(RefusedError, match="consistent only at .* after the target"):
        choose_backup.fn(engine, [only], window(earliest=only.stopped_at), target)


HISTORY = parse_history("1\t0/7000000\tbefore 2026-11-28 10:02:00.5+00\n")


def test_backups_off_the_followed_history_are_never_chosen():
    on_ancestor = backup("20261128-100000F", 0, lsn_stop="0/6000100")
    after_branch = backup("20261128-100000F_20261128-100500D", 300, lsn_stop="0/8000100")
    abandoned = backup("20261128-100000F_20261128-100600D", 360, timeline=3)
    followed = window(timeline=2, history=HISTORY)
    engine = FixedConsistentPoints({})
    chosen = choose_backup.fn(
        engine, [on_ancestor, after_branch, abandoned], followed, T0 + 600 * SECOND
    )
    assert chosen == on_ancestor
    assert followed.follows(on_ancestor)
    assert not followed.follows(after_branch) and not followed.follows(abandoned)


def test_the_window_is_never_unbounded_and_its_latest_end_is_not_reachable():
    with pytest.raises(ValidationError, match="latest"):
        RestoreWindow(
            earliest=T0, latest=None, oldest_backup="x", newest_wal_segment="x", timeline=1
        )
    bounded = window()
    assert bounded.contains(bounded.latest - timedelta(microseconds=1))
    assert not bounded.contains(bounded.latest)
    with pytest.raises(RefusedError, match="outside the restorable window"):
        choose_backup.fn(FixedConsistentPoints({}), [FULL], bounded, bounded.latest)


@pytest.mark.parametrize("size_mib", [1, 16, 64, 1024])
def test_segment_names_follow_the_segment_size_read_not_a_16_mib_assumption(size_mib):
    size = size_mib << 20
    per_log = 0x100000000 // size
    last_of_first_log = f"00000001{0:08X}{per_log - 1:08X}"
    assert previous_segment(f"00000001{1:08X}{0:08X}", size) == last_of_first_log
    assert segment_name(1, 0x100000000, size) == f"00000001{1:08X}{0:08X}"


def test_walking_back_crosses_to_the_parent_timeline_before_its_branch_point():
    size = 16 << 20
    assert previous_on_history("000000020000000000000008", size, HISTORY) == (
        "000000020000000000000007"
    )
    assert previous_on_history("000000020000000000000007", size, HISTORY) == (
        "000000010000000000000006"
    )


def test_a_partial_segment_file_is_not_taken_for_a_segment_size(tmp_path: Path):
    partial = tmp_path / "000000010000000000000005"
    partial.write_bytes(b"\0" * 5000)
    with pytest.raises(WalError, match="not a whole WAL segment"):
        segment_size_of(partial)
