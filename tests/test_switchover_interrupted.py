"""A switchover interrupted at a chosen step, on real clusters: where the process lives (an
exception, a task cancellation, SIGTERM) the original is put back at once; a process killed
with SIGKILL leaves its journal, which the daily check reports and rollback-switchover repairs.
Each ends with live serving its own data (stage 2) and nothing of the switchover left."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect._internal.concurrency.cancellation import CancelledError, _send_exception_to_thread

from flows.recovery.rollback_switchover import rollback_switchover
from sandbox.platform import Sandbox
from tasks.core.settings import CONFIG_ENV, Settings
from tasks.postgres.layout import live_cluster
from tasks.postgres.ownership import read_mark
from tasks.postgres.restored_copies import check_switchover_journal
from tasks.postgres.scratch import ScratchCluster, remove_scratch_cluster
from tasks.postgres.switchover import SwitchoverFailed, switch_over
from tasks.postgres.switchover_journal import SwitchoverJournal, journal_path, load_journal
from tests.conftest import engine_for
from tests.recovery_support import APPROVE, decisions, stage_at
from tests.restored import restored_copy, staged_sandbox

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with staged_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def copy(box, use_platform) -> Iterator[tuple[Settings, ScratchCluster, int]]:
    """The sandbox's settings, a restored copy (stage 1) running beside live, its backup's id."""
    settings = use_platform(box)
    scratch = restored_copy(box, settings)
    yield settings, scratch, engine_for(box).list_backups()[-1].system_id
    remove_scratch_cluster.fn(scratch)


def assert_original_back_and_nothing_left(settings: Settings, scratch: ScratchCluster) -> None:
    data_dir = settings.postgres.data_dir
    assert stage_at(settings.live_dsn()) == 2, "live does not serve its original data"
    siblings = sorted(p.name for p in data_dir.parent.glob(f"{data_dir.name}.*"))
    assert siblings == [f"{data_dir.name}.log"], siblings  # no journal, no kept directory
    assert read_mark(data_dir) is None
    assert "runbook" not in (data_dir / "postgresql.auto.conf").read_text()
    # the restored copy is back where it was, stopped, and would never archive if started
    assert (scratch.data_dir / "PG_VERSION").exists() and not scratch.cluster().is_running()
    copy_conf = (scratch.data_dir / "postgresql.auto.conf").read_text()
    assert copy_conf.rstrip().endswith("archive_mode = 'off'")


def fail_at(step: str, monkeypatch) -> None:
    record = SwitchoverJournal.record

    def record_then_fail(self: SwitchoverJournal, at: Any, **updates: Any) -> None:
        record(self, at, **updates)
        if at == step:
            raise OSError(f"injected failure at {at}")

    monkeypatch.setattr(SwitchoverJournal, "record", record_then_fail)


@pytest.mark.parametrize("step", ["move-incoming", "prove-live"])
def test_an_exception_at_a_step_puts_the_original_back_at_once(copy, step, monkeypatch):
    settings, scratch, backup_id = copy
    fail_at(step, monkeypatch)
    with pytest.raises(SwitchoverFailed, match=f"at step '{step}'.*original cluster was put back"):
        switch_over.fn(
            scratch.cluster(),
            live_cluster(settings),
            settings.live_dsn(),
            backup_id,
            settings.recovery,
        )
    assert_original_back_and_nothing_left(settings, scratch)


def test_a_task_cancellation_at_a_step_puts_the_original_back_and_goes_on(copy, monkeypatch):
    settings, scratch, backup_id = copy
    live = live_cluster(settings)
    reached, go = threading.Event(), threading.Event()
    record = SwitchoverJournal.record

    def record_then_wait(self: SwitchoverJournal, at: Any, **updates: Any) -> None:
        record(self, at, **updates)
        if at == "start-live":
            reached.set()
            go.wait(60)

    monkeypatch.setattr(SwitchoverJournal, "record", record_then_wait)
    ended: list[BaseException] = []

    def run() -> None:
        try:
            switch_over.fn(
                scratch.cluster(), live, settings.live_dsn(), backup_id, settings.recovery
            )
        except BaseException as exc:  # noqa: BLE001 - the test reads how it ended
            ended.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert reached.wait(120)
    # What Prefect does to a task whose lease it lost (WatcherThreadCancelScope.cancel): raise
    # its CancelledError in the task's thread, at the next bytecode.
    _send_exception_to_thread(worker, CancelledError)
    go.set()
    worker.join(120)
    assert len(ended) == 1 and isinstance(ended[0], CancelledError), ended
    assert_original_back_and_nothing_left(settings, scratch)


def start_halting_child(
    box: Sandbox, scratch: ScratchCluster, step: str, backup_id: int
) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.switchover_child",
            scratch.model_dump_json(),
            step,
            str(backup_id),
        ],
        cwd=PROJECT,
        env={**os.environ, CONFIG_ENV: str(box.config_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], 1)
        if ready:
            line = child.stdout.readline()
            assert line, f"the child ended before step {step}"
            if line.strip() == f"at {step}":
                return child
    kill(child)
    raise AssertionError(f"the child did not reach step {step} within 120 s")


def kill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.communicate(timeout=30)


def test_sigterm_at_a_step_puts_the_original_back_before_the_process_ends(box, copy):
    settings, scratch, backup_id = copy
    child = start_halting_child(box, scratch, "start-live", backup_id)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 3 and "interrupted: Terminated" in out
    assert_original_back_and_nothing_left(settings, scratch)


@pytest.mark.parametrize("step", ["stop-live", "move-incoming", "prove-live"])
def test_sigkill_at_a_step_is_reported_and_undone_by_rollback_switchover(
    prefect_server, box, copy, step
):
    settings, scratch, backup_id = copy
    kill(start_halting_child(box, scratch, step, backup_id))
    journal = load_journal(settings.postgres.data_dir)
    assert journal is not None and journal.step == step and not journal.process_alive()
    reported = check_switchover_journal(settings.postgres.data_dir)
    assert reported.status == "fail" and "rollback-switchover" in reported.hint
    assert f"step {step!r}" in reported.detail

    with decisions("rollback-switchover", ("repair", APPROVE)):
        repaired = rollback_switchover()
    assert repaired.action == "undone"
    assert_original_back_and_nothing_left(settings, scratch)
    assert check_switchover_journal(settings.postgres.data_dir).status == "ok"


def test_sigkill_after_the_proof_is_finished_by_rollback_switchover(prefect_server, box, copy):
    """Last in this module: live then holds the restored data (stage 1)."""
    settings, scratch, backup_id = copy
    data_dir = settings.postgres.data_dir
    kill(start_halting_child(box, scratch, "finish", backup_id))
    with decisions("rollback-switchover", ("repair", APPROVE)):
        repaired = rollback_switchover()
    assert repaired.action == "finished"
    assert stage_at(settings.live_dsn()) == 1
    assert not journal_path(data_dir).exists() and read_mark(data_dir) is None
    kept = repaired.journal.kept_data_dir
    assert read_mark(kept) is not None and read_mark(kept).kind == "kept"
    assert not scratch.data_dir.exists()  # it is the live data directory now
