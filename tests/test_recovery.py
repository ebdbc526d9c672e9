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
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ParameterTypeError

from flows.approval import wait_for_gate
from flows.lock import RecoveryBusy, ensure_lock_exists, lock_name
from flows.recovery.pitr import point_in_time_recovery
from flows.recovery.restore_backup import restore_backup
from flows.recovery.rollback_switchover import rollback_switchover
from tasks.core.errors import RefusedError
from tasks.postgres.sql import connect, fetch_value, with_port
from tasks.postgres.switchover import SwitchoverFailed, kept_directories
from tests.conftest import engine_for, settings_for
from tests.recovery_support import (
    APPROVE,
    APPROVE_2,
    REJECT,
    answer_at,
    cleanup,
    decisions,
    restore_dirs,
    stage_at,
    wait_for_paused_run,
)

# -- recovering to the right point ---------------------------------------------------------


@pytest.mark.parametrize("offset", [UTC, timezone(timedelta(hours=5, minutes=30))])
def test_pitr_between_two_stages_recovers_the_earlier_stage(
    prefect_server, history, use_platform, offset
):
    box, stages = history
    settings = use_platform(box)
    target = stages.between(2).astimezone(offset).isoformat()
    with decisions("point-in-time-recovery", ("restore", APPROVE)):
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
    with decisions("restore-backup", ("restore", APPROVE)):
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
    assert "Replaces" in result.plan.markdown() and "nothing" in result.plan.replaces
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
    with decisions("point-in-time-recovery", ("restore", REJECT)):
        state = point_in_time_recovery(target_time=stages.between(1).isoformat(), return_state=True)
    assert state.is_cancelled() and "rejected by bob: wrong target" in state.message
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
    answer_at(holder, "restore", REJECT)
    thread.join(timeout=60)
    assert first and first[0].is_cancelled()


def test_lock_held_by_no_recorded_run_is_refused_saying_so(
    prefect_server, history, use_platform, monkeypatch
):
    box, stages = history
    monkeypatch.setenv("RUNBOOK_RECOVERY_LOCK_WAIT_S", "1")
    stanza = use_platform(box).backup.stanza
    with get_client(sync_client=True) as client:
        ensure_lock_exists(client, lock_name(stanza))
    before = restore_dirs(box)
    with (
        concurrency(lock_name(stanza), strict=True),
        pytest.raises(RecoveryBusy, match="no living run is recorded as holding it") as refused,
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
    with (
        decisions("point-in-time-recovery", ("restore", APPROVE)),
        pytest.raises(Exception, match="deadline"),
    ):
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
    wait_for_gate(UUID(run_id), "restore", 60)
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
    assert again.returncode == 2 and "not paused at an approval gate" in again.stderr
    assert prefect_server in again.stderr  # errors name the API they used


# -- replace, its failure, and its rollback ------------------------------------------------


def test_replace_switches_live_to_the_recovered_data_and_rollback_puts_it_back(
    prefect_server, history, use_platform
):
    box, stages = history
    settings = use_platform(box)
    live = settings.live_dsn()
    with decisions("point-in-time-recovery", ("restore", APPROVE), ("switchover", APPROVE_2)):
        result = point_in_time_recovery(target_time=stages.between(2).isoformat(), mode="replace")
    assert result.outcome == "replaced"
    assert stage_at(live) == 2, "the live port does not serve the recovered data"
    kept = kept_directories(settings.postgres.data_dir)
    assert kept and result.switchover.kept_data_dir == kept[0]
    assert (kept[0] / "PG_VERSION").exists()
    assert not result.plan.restore_to.root.exists()
    with connect(live) as conn:  # the new live cluster archives again
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "on"

    with decisions("rollback-switchover", ("rollback", APPROVE)):
        rolled = rollback_switchover()
    assert stage_at(live) == 3
    assert rolled.kept_data_dir.name.startswith("data.rolled-back-")


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
            answer_at(run_id, "restore", APPROVE)
            wait_for_gate(run_id, "switchover", 180)
            # The restored cluster passed its checks; now make it unable to start on the live
            # port, as a bad disk or a wrong setting would.
            (conf,) = (box.root / "pg").glob("pitr-*/data/postgresql.auto.conf")
            with conf.open("a") as handle:
                handle.write("shared_buffers = 'not-a-size'\n")
            answer_at(run_id, "switchover", APPROVE_2)
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
