"""Point-in-time recovery, backup restoration and switchover on real clusters, behind approvals.

Marker rows, as pgBackRest's own integration test does: a one-row ``status`` table updated per
stage with ``pg_switch_wal()`` between stages; recovering to a time between two stages must give
the earlier stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ParameterTypeError

from flows.approval import answer_approval
from flows.lock import RecoveryBusy, ensure_lock_exists, lock_name
from flows.recovery.pitr import point_in_time_recovery
from flows.recovery.restore_backup import restore_backup
from flows.recovery.rollback_switchover import rollback_switchover
from tasks.backups.base import BackupKind
from tasks.backups.planning import RecoveryResult
from tasks.core.errors import RefusedError
from tasks.postgres.scratch import remove_scratch_cluster
from tasks.postgres.sql import connect, fetch_value, switch_wal, with_port
from tasks.postgres.switchover import SwitchoverFailed, kept_directories
from tests.conftest import destroy_sandbox, engine_for, make_sandbox, settings_for
from tests.test_backups import wait_until_archived


class Stages:
    """The live cluster's history: stage N committed between ``times[N-1]`` and ``times[N]``."""

    def __init__(self) -> None:
        self.times: list[datetime] = []

    def between(self, earlier: int) -> datetime:
        """A moment after stage ``earlier`` committed and before the next one did."""
        return self.times[earlier]


def write_stages(dsn, count: int) -> Stages:
    stages = Stages()
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS status (stage int NOT NULL)")
        conn.execute("TRUNCATE status; INSERT INTO status VALUES (0)")
    for stage in range(1, count + 1):
        time.sleep(0.6)
        stages.times.append(datetime.now(UTC))
        time.sleep(0.6)
        with connect(dsn) as conn:
            conn.execute("UPDATE status SET stage = %s", (stage,))
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        switch_wal(dsn)
        wait_until_archived(dsn, segment)
    return stages


def stage_at(dsn) -> int:
    return int(fetch_value(dsn, "SELECT stage FROM status"))


@pytest.fixture(scope="module")
def history() -> Iterator[tuple]:
    """A sandbox of this module's own: a full backup, then stages 1..3 archived after it."""
    box = make_sandbox()
    dsn = settings_for(box).live_dsn()
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE status (stage int NOT NULL); INSERT INTO status VALUES (0)")
    engine_for(box).take_backup(BackupKind.FULL)
    stages = write_stages(dsn, 3)
    yield box, stages
    destroy_sandbox(box)


@contextmanager
def decisions(flow_name: str, *answers: dict) -> Iterator[list]:
    """Answer the next approval gates of ``flow_name``'s paused run, in order, from a thread."""
    errors: list[BaseException] = []

    def answer() -> None:
        try:
            run_id = wait_for_paused_run(flow_name)
            for given in answers:
                answer_approval(run_id, wait_s=180, **given)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield errors
    thread.join(timeout=200)
    assert not errors, errors


def wait_for_paused_run(flow_name: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
            if runs:
                return runs[0].id
            time.sleep(0.2)
    raise AssertionError(f"no paused {flow_name} run within {timeout} s")


APPROVE = {"approved": True, "approver": "alice", "reason": "INC-42"}
REJECT = {"approved": False, "approver": "bob", "reason": "wrong target"}


def restore_dirs(box) -> list[str]:
    return sorted(p.name for p in (box.root / "pg").iterdir())


def cleanup(result: RecoveryResult) -> None:
    remove_scratch_cluster.fn(result.plan.restore_to)


# -- recovering to the right point ---------------------------------------------------------


@pytest.mark.parametrize("offset", [UTC, timezone(timedelta(hours=5, minutes=30))])
def test_pitr_between_two_stages_recovers_the_earlier_stage(
    prefect_server, history, use_platform, offset
):
    box, stages = history
    settings = use_platform(box)
    target = stages.between(2).astimezone(offset).isoformat()
    with decisions("point-in-time-recovery", APPROVE):
        result = point_in_time_recovery(target_time=target)
    try:
        assert result.outcome == "restored" and result.verified
        restored = with_port(settings.live_dsn(), result.plan.restore_to.port)
        assert stage_at(restored) == 2
        assert stage_at(settings.live_dsn()) == 3, "the live cluster was touched"
        names = [c.name for c in result.checks]
        assert "recovery-target" in names and "amcheck" in names and "expectations" in names
        assert "password" not in (result.restored_dsn or "")
        assert result.restored_dsn.startswith("postgresql://postgres@127.0.0.1:")
    finally:
        cleanup(result)


def test_restore_backup_restores_the_chosen_set_to_its_end(prefect_server, history, use_platform):
    box, _ = history
    settings = use_platform(box)
    label = engine_for(box).list_backups()[0].label
    with decisions("restore-backup", APPROVE):
        result = restore_backup(backup_label=label)
    try:
        assert result.plan.backup.label == label and result.verified
        assert stage_at(with_port(settings.live_dsn(), result.plan.restore_to.port)) == 0
    finally:
        cleanup(result)


def test_dry_run_shows_the_plan_and_changes_nothing(prefect_server, history, use_platform):
    box, stages = history
    use_platform(box)
    before = restore_dirs(box)
    result = point_in_time_recovery(target_time=stages.between(1).isoformat(), dry_run=True)
    assert result.outcome == "planned"
    assert result.plan.backup.label == engine_for(box).list_backups()[0].label
    assert "replaces" in result.plan.markdown() and "nothing" in result.plan.replaces
    assert restore_dirs(box) == before


# -- refused before any change --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("2026-11-28T10:00:00", "no UTC offset"),
        ("yesterday at noon", "not an ISO 8601 time"),
        ((datetime.now(UTC) + timedelta(days=1)).isoformat(), "in the future"),
        ("2001-01-01T00:00:00+00:00", "outside the restorable window"),
    ],
)
def test_bad_targets_are_refused_before_any_change(
    prefect_server, history, use_platform, target, message
):
    box, _ = history
    use_platform(box)
    before = restore_dirs(box)
    with pytest.raises(RefusedError, match=message):
        point_in_time_recovery(target_time=target)
    assert restore_dirs(box) == before


def test_target_after_the_last_archived_commit_is_refused_naming_the_window(
    prefect_server, history, use_platform
):
    box, _ = history
    settings = use_platform(box)
    with connect(settings.live_dsn()) as conn:  # committed, but its WAL is not archived yet
        conn.execute("INSERT INTO users (email, name) VALUES ('late@example.test', 'late')")
    time.sleep(1.1)
    with pytest.raises(RefusedError, match=r"outside the restorable window .* \.\. "):
        point_in_time_recovery(target_time=datetime.now(UTC).isoformat())


def test_unknown_label_and_unknown_mode_are_refused(prefect_server, history, use_platform):
    box, _ = history
    use_platform(box)
    with pytest.raises(RefusedError, match="no backup labelled"):
        restore_backup(backup_label="20000101-000000F")
    with pytest.raises(ParameterTypeError, match="mode"):
        point_in_time_recovery(target_time=datetime.now(UTC).isoformat(), mode="sideways")


def test_not_enough_disk_is_refused(prefect_server, history, use_platform, monkeypatch):
    box, stages = history
    monkeypatch.setenv("RUNBOOK_RECOVERY_DISK_HEADROOM", "1000000")
    use_platform(box)
    with pytest.raises(RefusedError, match="not enough free disk"):
        point_in_time_recovery(target_time=stages.between(1).isoformat())


def test_replace_against_another_cluster_is_refused(
    prefect_server, history, fresh_platform, use_platform, monkeypatch
):
    box, stages = history
    other = settings_for(fresh_platform)
    monkeypatch.setenv("RUNBOOK_PG_DSN", other.live_dsn().get_secret_value())
    monkeypatch.setenv("RUNBOOK_PG_DATA_DIR", str(other.postgres.data_dir))
    use_platform(box)
    with pytest.raises(RefusedError, match="system identifier"):
        point_in_time_recovery(target_time=stages.between(1).isoformat(), mode="replace")
    assert fresh_platform.cluster().is_running()


# -- the approval gate ---------------------------------------------------------------------


def test_rejection_stops_the_run_and_changes_nothing(prefect_server, history, use_platform):
    box, stages = history
    use_platform(box)
    before = restore_dirs(box)
    with decisions("point-in-time-recovery", REJECT):
        state = point_in_time_recovery(target_time=stages.between(1).isoformat(), return_state=True)
    assert state.is_cancelled() and "rejected by bob: wrong target" in state.message
    assert restore_dirs(box) == before


def resume_raw(flow_name: str, run_input: dict, errors: list) -> threading.Thread:
    """Resume the next paused run of ``flow_name`` as the UI would, with ``run_input`` as is."""
    from prefect.flow_runs import resume_flow_run

    def resume() -> None:
        try:
            run_id = wait_for_paused_run(flow_name)
            deadline = time.monotonic() + 30
            while True:  # the form is saved a moment after the run pauses
                try:
                    resume_flow_run(run_id, run_input=run_input)
                    return
                except RuntimeError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=resume, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "run_input",
    [{}, {"approved": True}, {"approved": True, "approver": "carol", "reason": " "}],
    ids=["plain-resume", "ticked-but-anonymous", "no-reason"],
)
def test_empty_or_incomplete_resume_does_not_approve(
    prefect_server, history, use_platform, run_input
):
    box, stages = history
    use_platform(box)
    before = restore_dirs(box)
    errors: list[BaseException] = []
    thread = resume_raw("point-in-time-recovery", run_input, errors)
    state = point_in_time_recovery(target_time=stages.between(1).isoformat(), return_state=True)
    thread.join(timeout=60)
    assert not errors
    assert state.is_cancelled() and "not approved: resumed without" in state.message
    assert restore_dirs(box) == before


def test_approval_timeout_stops_the_run_and_changes_nothing(
    prefect_server, history, use_platform, monkeypatch
):
    box, stages = history
    monkeypatch.setenv("RUNBOOK_RECOVERY_APPROVAL_TIMEOUT_S", "3")
    use_platform(box)
    before = restore_dirs(box)
    state = point_in_time_recovery(target_time=stages.between(1).isoformat(), return_state=True)
    # Prefect ends a run whose pause timed out as Failed, whatever the flow returns.
    assert state.is_failed() and "never resumed" in state.message
    assert "not approved in time" in run_logs(state.state_details.flow_run_id)
    assert restore_dirs(box) == before


def run_logs(flow_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return "\n".join(line.message for line in logs)


def test_second_recovery_is_refused_while_the_first_waits_for_approval(
    prefect_server, history, use_platform, monkeypatch
):
    box, stages = history
    use_platform(box)
    target = stages.between(1).isoformat()
    first: list = []
    thread = threading.Thread(
        target=lambda: first.append(point_in_time_recovery(target_time=target, return_state=True)),
        daemon=True,
    )
    thread.start()
    holder = wait_for_paused_run("point-in-time-recovery")
    with get_client(sync_client=True) as client:
        holder_name = client.read_flow_run(holder).name
    # Only the second run waits briefly: the first must not lose its slot to a slow API answer
    # (a busy SQLite makes the Prefect client retry after 2 s).
    monkeypatch.setenv("RUNBOOK_RECOVERY_LOCK_WAIT_S", "2")
    with pytest.raises(RecoveryBusy, match=f"run '{holder_name}'"):
        restore_backup(backup_label=engine_for(box).list_backups()[0].label)
    answer_approval(holder, **REJECT)
    thread.join(timeout=60)
    assert first and first[0].is_cancelled()


def test_lock_held_by_no_recorded_run_is_refused_saying_so(
    prefect_server, history, use_platform, monkeypatch
):
    box, stages = history
    monkeypatch.setenv("RUNBOOK_RECOVERY_LOCK_WAIT_S", "1")
    stanza = use_platform(box).backup.stanza
    ensure_lock_exists.fn(lock_name(stanza))
    before = restore_dirs(box)
    with (
        concurrency(lock_name(stanza), strict=True),
        pytest.raises(RecoveryBusy, match="no run is recorded as holding it") as refused,
    ):
        point_in_time_recovery(target_time=stages.between(1).isoformat())
    assert "RUNBOOK_RECOVERY_LOCK_WAIT_S" in str(refused.value)
    assert restore_dirs(box) == before


def test_restore_stalled_past_its_deadline_is_killed_and_leaves_nothing(
    prefect_server, history, use_platform, monkeypatch
):
    box, stages = history
    monkeypatch.setenv("RUNBOOK_BACKUP_RESTORE_DEADLINE_S", "0.05")
    settings = use_platform(box)
    before = restore_dirs(box)
    with decisions("point-in-time-recovery", APPROVE), pytest.raises(Exception, match="deadline"):
        point_in_time_recovery(target_time=stages.between(1).isoformat())
    assert restore_dirs(box) == before
    assert stage_at(settings.live_dsn()) == 3


def test_people_decide_from_the_command_line(prefect_server, history, use_platform):
    box, stages = history
    use_platform(box)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    outcome: list = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            point_in_time_recovery(target_time=stages.between(1).isoformat(), return_state=True)
        ),
        daemon=True,
    )
    thread.start()
    run_id = str(wait_for_paused_run("point-in-time-recovery"))
    runbook = str(Path(sys.executable).parent / "runbook")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [runbook, *args, run_id, "--approver", "dave"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = cli("approve", "--reason", " ")
    assert refused.returncode == 2 and "approver and a reason" in refused.stderr
    rejected = cli("reject", "--reason", "not this one")
    assert rejected.returncode == 0, rejected.stderr
    thread.join(timeout=60)
    assert outcome[0].is_cancelled() and "rejected by dave: not this one" in outcome[0].message
    again = cli("approve", "--reason", "x")
    assert again.returncode == 2 and "not waiting for approval" in again.stderr


# -- replace, its failure, and its rollback ------------------------------------------------


def test_replace_switches_live_to_the_recovered_data_and_rollback_puts_it_back(
    prefect_server, history, use_platform
):
    box, stages = history
    settings = use_platform(box)
    live = settings.live_dsn()
    with decisions("point-in-time-recovery", APPROVE, APPROVE):
        result = point_in_time_recovery(target_time=stages.between(2).isoformat(), mode="replace")
    assert result.outcome == "replaced"
    assert stage_at(live) == 2, "the live port does not serve the recovered data"
    kept = kept_directories(settings.postgres.data_dir)
    assert kept and result.switchover.kept_data_dir == kept[0]
    assert (kept[0] / "PG_VERSION").exists()
    assert not result.plan.restore_to.root.exists()
    with connect(live) as conn:  # the new live cluster archives again
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "on"

    with decisions("rollback-switchover", APPROVE):
        rolled = rollback_switchover()
    assert stage_at(live) == 3
    assert rolled.kept_data_dir.name.startswith("data.rolled-back-")


def wait_for_next_pause(run_id, timeout: float = 180) -> None:
    """After a resume: wait until the run has left Paused and paused again."""
    deadline = time.monotonic() + timeout
    seen_running = False
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            seen_running = seen_running or not state.is_paused()
            if seen_running and state.is_paused():
                return
            time.sleep(0.2)
    raise AssertionError("the run did not pause a second time")


def test_switchover_failure_puts_the_original_cluster_back(prefect_server, history, use_platform):
    box, stages = history
    settings = use_platform(box)
    live = settings.live_dsn()
    identity = fetch_value(live, "SELECT system_identifier FROM pg_control_system()")
    kept_before = kept_directories(settings.postgres.data_dir)
    errors: list[BaseException] = []

    def approve_break_approve() -> None:
        try:
            run_id = wait_for_paused_run("point-in-time-recovery")
            answer_approval(run_id, **APPROVE)
            wait_for_next_pause(run_id)
            # The restored cluster passed its checks; now make it unable to start on the live
            # port, as a bad disk or a wrong setting would.
            (conf,) = (box.root / "pg").glob("pitr-*/data/postgresql.auto.conf")
            with conf.open("a") as handle:
                handle.write("shared_buffers = 'not-a-size'\n")
            answer_approval(run_id, **APPROVE)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=approve_break_approve, daemon=True)
    thread.start()
    with pytest.raises(SwitchoverFailed, match="original cluster was put back and started"):
        point_in_time_recovery(target_time=stages.between(1).isoformat(), mode="replace")
    thread.join(timeout=60)
    assert not errors
    assert stage_at(live) == 3
    assert fetch_value(live, "SELECT system_identifier FROM pg_control_system()") == identity
    assert kept_directories(settings.postgres.data_dir) == kept_before  # renamed back in place
