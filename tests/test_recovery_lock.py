"""A recovery lock that a dead holder cannot keep, on a real Prefect server with durable lease
storage (the sandbox's), whose runners are killed and which is itself restarted.

Each holder is a recovery in a process of its own, paused at its restore gate; the test kills
that process (SIGKILL: no cleanup runs), as a crashed worker or `runbook sandbox down` would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.approval import answer_gate, wait_for_gate
from flows.lock import (
    LEASE_LOST_S,
    LOCK_LEASE_S,
    STOPPED_RENEWING_S,
    LockHolder,
    check_recovery_lock,
    judge_holder,
    lock_name,
    read_holder,
)
from sandbox.platform import Sandbox
from tasks.backups.base import BackupKind
from tests.conftest import destroy_sandbox, engine_for, make_sandbox, settings_for

REJECT = {"approved": False, "approver": "bob", "reason": "test over"}
WITHIN = LOCK_LEASE_S + 60  # the bound: the lease plus a minute


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    """A sandbox with its own Prefect server (filesystem lease storage), retention of 1 full
    backup (so that an expire that is not deferred shows), and a full backup."""
    sandbox = make_sandbox()
    try:
        conf = sandbox.pgbackrest_conf
        conf.write_text(
            conf.read_text().replace("repo1-retention-full=4", "repo1-retention-full=1")
        )
        engine_for(sandbox).take_backup(BackupKind.FULL)
        sandbox.start_prefect_server()
        yield sandbox
    finally:
        destroy_sandbox(sandbox)


@contextmanager
def api(sandbox: Sandbox) -> Iterator[None]:
    with temporary_settings({PREFECT_API_URL: sandbox.prefect_api_url}):
        yield


def launch(
    sandbox: Sandbox, target: str, run_name: str, lock_wait_s: float = WITHIN, **parameters: object
) -> subprocess.Popen:
    """Run flow ``module:function`` with ``parameters`` in a process of its own, named
    ``run_name``, against the sandbox's Prefect server, waiting up to ``lock_wait_s`` for the
    recovery lock."""
    module, function = target.split(":")
    code = (
        f"import json, sys; from {module} import {function} as f; "
        "f.with_options(flow_run_name=sys.argv[1])(**json.loads(sys.argv[2]))"
    )
    with (sandbox.run_dir / f"{run_name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, run_name, json.dumps(parameters)],
            env={
                **os.environ,
                **sandbox.prefect_env(),
                "RUNBOOK_RECOVERY_APPROVAL_TIMEOUT_S": "900",
                "RUNBOOK_RECOVERY_LOCK_WAIT_S": str(lock_wait_s),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_named(name: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    return runs[0] if runs else None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while (value := condition()) is None or value is False:
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.5)
    return value


def paused_holder(sandbox: Sandbox) -> tuple[subprocess.Popen, FlowRun]:
    """A restore-backup of the newest backup, in its own process, waiting at its restore gate."""
    label = engine_for(sandbox).list_backups()[-1].label
    name = f"holder-{uuid4().hex[:8]}"
    proc = launch(sandbox, "flows.recovery.restore_backup:restore_backup", name, backup_label=label)
    run = wait_for(lambda: run_named(name), 60, "the holder's run to exist")
    wait_for_gate(run.id, "restore", 90)
    return proc, run


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def active_slots(stanza: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(lock_name(stanza)).active_slots


def state_of(name: str) -> str:
    run = run_named(name)
    return run.state.name if run and run.state else ""


def finish(run: FlowRun, proc: subprocess.Popen) -> None:
    """Reject a waiting recovery and let its process end."""
    answer_gate(run.id, step="restore", **REJECT)
    proc.wait(timeout=60)


def test_a_killed_runners_lock_goes_to_exactly_one_of_two_racing_recoveries(box):
    stanza = settings_for(box).backup.stanza
    with api(box):
        holder_proc, holder = paused_holder(box)
        assert active_slots(stanza) == 1
        kill(holder_proc)
        killed_at = time.monotonic()
        label = engine_for(box).list_backups()[-1].label
        names = [f"successor-{i}-{uuid4().hex[:6]}" for i in (1, 2)]
        # Long enough to outlast the dead holder's silence, short enough for the loser to give up
        # soon after the winner holds the lock.
        wait = STOPPED_RENEWING_S + 30
        procs = [
            launch(box, "flows.recovery.restore_backup:restore_backup", n, wait, backup_label=label)
            for n in names
        ]
        winner_name = wait_for(
            lambda: next((n for n in names if state_of(n) == "Paused"), None),
            WITHIN + 30,
            "a successor to hold the lock and wait for approval",
        )
        assert time.monotonic() - killed_at < WITHIN
        loser_name = names[1 - names.index(winner_name)]
        loser = procs[names.index(loser_name)]
        loser.wait(timeout=WITHIN + 60)
        loser_run = run_named(loser_name)
        assert loser_run.state.is_failed()
        assert f"run '{winner_name}'" in loser_run.state.message  # refused, naming the holder
        assert active_slots(stanza) == 1  # never two at once
        dead = run_named(holder.name)
        assert dead.state.name == "Crashed" and "taken over" in dead.state.message
        winner = run_named(winner_name)
        finish(winner, procs[names.index(winner_name)])
        assert active_slots(stanza) == 0 and read_holder(stanza) is None


def test_a_restarted_prefect_server_does_not_wedge_the_lock(box):
    stanza = settings_for(box).backup.stanza
    with api(box):
        holder_proc, holder = paused_holder(box)
        kill(holder_proc)
        killed_at = time.monotonic()
        server = box.daemon("prefect-server")
        server.stop()
        box.start_prefect_server()
        assert active_slots(stanza) == 1  # the lease survived the restart (filesystem storage)
        label = engine_for(box).list_backups()[-1].label
        name = f"after-restart-{uuid4().hex[:6]}"
        proc = launch(box, "flows.recovery.restore_backup:restore_backup", name, backup_label=label)
        wait_for(
            lambda: state_of(name) == "Paused", WITHIN + 30, "the next recovery to hold the lock"
        )
        assert time.monotonic() - killed_at < WITHIN
        assert run_named(holder.name).state.name == "Crashed"
        finish(run_named(name), proc)
        assert active_slots(stanza) == 0


def test_the_daily_check_reports_a_dead_paused_recovery_and_frees_its_lock(box):
    stanza = settings_for(box).backup.stanza
    with api(box):
        holder_proc, holder = paused_holder(box)
        (alive,) = check_recovery_lock.fn(stanza)
        assert alive.status == "ok" and alive.figure == "recovery in progress"
        kill(holder_proc)
        time.sleep(STOPPED_RENEWING_S + 2)
        (report,) = check_recovery_lock.fn(stanza)
        assert report.status == "fail" and holder.name in report.detail
        assert "stopped renewing" in report.detail and "start it again" in report.hint
        assert run_named(holder.name).state.name == "Crashed"  # no longer looks approvable
        assert active_slots(stanza) == 0


def test_take_backup_defers_its_expire_and_verify_backup_skips_while_a_recovery_holds(box):
    engine = engine_for(box)
    with api(box):
        holder_proc, holder = paused_holder(box)
        kept = engine.list_backups()[-1].label  # the one the paused recovery plans to restore
        name = f"backup-{uuid4().hex[:6]}"
        launch(box, "flows.maintenance.take_backup:take_backup_flow", name, kind="full").wait(120)
        assert run_named(name).state.is_completed()
        labels = [b.label for b in engine.list_backups()]
        assert kept in labels and len(labels) == 2, "retention 1 expired a backup a recovery holds"
        name = f"verify-{uuid4().hex[:6]}"
        launch(box, "flows.recovery.verify_backup:verify_backup", name).wait(120)
        skipped = run_named(name).state
        assert skipped.is_completed() and skipped.name == "Skipped"
        assert "holds stanza" in skipped.message
        finish(holder, holder_proc)
        name = f"backup-{uuid4().hex[:6]}"
        launch(box, "flows.maintenance.take_backup:take_backup_flow", name, kind="full").wait(120)
        assert kept not in [b.label for b in engine.list_backups()]  # the expire ran again


def test_a_holder_is_judged_by_its_run_state_and_renewals_never_by_a_process():
    from datetime import UTC, datetime, timedelta
    from uuid import UUID

    from prefect.client.schemas.objects import FlowRun as Run
    from prefect.states import Cancelling, Completed, Paused, Running

    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    def holder(quiet_s: float) -> LockHolder:
        renewed = now - timedelta(seconds=quiet_s)
        return LockHolder(
            stanza="s",
            flow_run_id=UUID(int=1),
            run_name="r",
            lease_id=UUID(int=2),
            since=renewed,
            renewed_at=renewed,
            host="h",
        )

    def run(state) -> Run:
        state.timestamp = now - timedelta(seconds=5)
        return Run(id=UUID(int=1), flow_id=UUID(int=3), name="r", state=state)

    assert not judge_holder(holder(10), run(Paused()), now).dead
    assert judge_holder(holder(STOPPED_RENEWING_S + 1), run(Paused()), now).dead
    assert not judge_holder(holder(STOPPED_RENEWING_S + 1), run(Running()), now).dead
    assert judge_holder(holder(LEASE_LOST_S + 1), run(Running()), now).dead
    assert judge_holder(holder(1), run(Completed()), now).dead
    assert judge_holder(holder(1), None, now).dead
    assert judge_holder(holder(STOPPED_RENEWING_S + 1), run(Cancelling()), now).dead
    stuck = run(Cancelling())
    stuck.state.timestamp = now - timedelta(seconds=LEASE_LOST_S + 1)
    assert judge_holder(holder(1), stuck, now).dead


def test_runbook_approve_from_a_sandbox_checkout_finds_its_prefect_server(box, tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".sandbox").symlink_to(box.root)  # as `make demo` leaves it in a checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    unknown = "00000000-0000-4000-8000-000000000000"
    runbook = str(Path(sys.executable).parent / "runbook")
    answered = subprocess.run(
        [runbook, "approve", unknown, "--approver", "dave", "--reason", "INC-1"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answered.returncode == 2
    assert f"no flow run {unknown} at {box.prefect_api_url}" in answered.stderr
