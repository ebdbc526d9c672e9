"""What the recovery, approval-gate and lock tests share: a sandbox with a known history
(marker stages), answering gates as a person would, and finding paused runs.

Marker rows, as pgBackRest's own integration test does: a one-row ``status`` table updated per
stage with ``pg_switch_wal()`` between stages; recovering to a time between two stages must give
the earlier stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from flows.approval import answer_gate, wait_for_gate
from tasks.backups.base import BackupKind
from tasks.backups.planning import RecoveryResult
from tasks.postgres.scratch import remove_scratch_cluster
from tasks.postgres.sql import connect, fetch_value, switch_wal
from tests.conftest import engine_for, make_sandbox, settings_for
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


def make_history() -> tuple:
    """A sandbox with a full backup, then stages 1..3 archived after it (``history`` fixture)."""
    box = make_sandbox()
    dsn = settings_for(box).live_dsn()
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE status (stage int NOT NULL); INSERT INTO status VALUES (0)")
    engine_for(box).take_backup(BackupKind.FULL)
    return box, write_stages(dsn, 3)


def answer_at(run_id, step: str, given: dict, timeout: float = 180) -> None:
    """Answer gate ``step`` of ``run_id`` once the run waits there (as a person would)."""
    wait_for_gate(run_id, step, timeout)
    answer_gate(run_id, step=step, **given)


@contextmanager
def decisions(flow_name: str, *answers: tuple[str, dict]) -> Iterator[list]:
    """Answer the next approval gates of ``flow_name``'s paused run, in order, from a thread:
    each answer is ``(step, fields)``."""
    errors: list[BaseException] = []

    def answer() -> None:
        try:
            run_id = wait_for_paused_run(flow_name)
            for step, given in answers:
                answer_at(run_id, step, given)
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
APPROVE_2 = {"approved": True, "approver": "erin", "reason": "INC-42, checked the results"}
REJECT = {"approved": False, "approver": "bob", "reason": "wrong target"}


def restore_dirs(box) -> list[str]:
    return sorted(p.name for p in (box.root / "pg").iterdir())


def cleanup(result: RecoveryResult) -> None:
    remove_scratch_cluster.fn(result.plan.restore_to)
