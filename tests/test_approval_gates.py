"""Every answer is bound to its gate: the reproductions of issue 9, on real clusters and a real
Prefect server, each asserting the data (live stage unchanged, or the restored stage right).

A `replace` recovery pauses at its `restore` gate, restores and verifies beside live, then pauses
at its `switchover` gate; only a bound, complete approval by an allowed approver, other than the
restore's, switches live over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from flows.approval import ApprovalError, answer_gate, read_gate, wait_for_gate
from flows.recovery.pitr import point_in_time_recovery
from flows.recovery.restore_backup import restore_backup
from flows.recovery.rollback_switchover import rollback_switchover
from tasks.backups.base import BackupKind
from tasks.backups.planning import PlanChanged
from tasks.core.approvals import Answer, ApprovalPolicy, judge
from tasks.postgres.cluster import LocalCluster
from tests.conftest import engine_for
from tests.recovery_support import (
    APPROVE,
    APPROVE_2,
    REJECT,
    answer_at,
    decisions,
    restore_dirs,
    stage_at,
    wait_for_paused_run,
)

RUNBOOK = str(Path(sys.executable).parent / "runbook")
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


# -- judging answers (pure) -----------------------------------------------------------------------


def answer(**changes: Any) -> Answer:
    fields = {"step": "switchover", "plan_digest": "d1", "approved": True}
    return Answer(**(fields | {"approver": "erin", "reason": "INC-7"} | changes))


def decide(given: Answer | None, policy: ApprovalPolicy | None = None, earlier=()) -> str:
    policy = policy or ApprovalPolicy(timeout_s=60)
    return judge("switchover", "d1", given, policy, earlier, NOW).outcome


def test_only_a_bound_complete_approval_by_someone_allowed_and_new_approves():
    alice = judge(
        "restore",
        "d0",
        answer(step="restore", plan_digest="d0", approver="alice"),
        ApprovalPolicy(timeout_s=60),
        (),
        NOW,
    )
    assert alice.outcome == "approved"
    assert decide(answer()) == "approved"
    assert decide(None) == "timed-out"
    assert decide(answer(step="restore")) == "stray"
    assert decide(answer(plan_digest="d0")) == "stray"
    assert decide(answer(reason=" ")) == "empty"
    assert decide(answer(approver="")) == "empty"
    assert decide(answer(approved=False, approver="", reason="")) == "empty"
    assert decide(answer(approved=False, reason="")) == "rejected"
    assert decide(answer(approver="ALICE"), earlier=[alice]) == "same-approver"
    assert (
        decide(
            answer(approver="alice"),
            ApprovalPolicy(timeout_s=60, distinct_approvers=False),
            [alice],
        )
        == "approved"
    )
    allowed = ApprovalPolicy(timeout_s=60, allowed_approvers=["alice", "Erin"])
    assert decide(answer(approver="mallory"), allowed) == "not-allowed"
    assert decide(answer(approver="mallory", approved=False), allowed) == "not-allowed"
    assert decide(answer(approver="erin"), allowed) == "approved"


# -- against a real recovery ----------------------------------------------------------------------


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list]:
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    thread.start()
    return thread, outcome


def replace_recovery(stages) -> tuple[threading.Thread, list, UUID]:
    """A replace PITR to stage 2, started in a thread and waiting at its restore gate."""
    thread, outcome = in_thread(
        lambda: point_in_time_recovery(
            target_time=stages.between(2).isoformat(), mode="replace", return_state=True
        )
    )
    run_id = wait_for_paused_run("point-in-time-recovery")
    wait_for_gate(run_id, "restore", 60)
    return thread, outcome, run_id


def cli(api: str, verb: str, run_id: UUID, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOK, verb, str(run_id), *args],
        env={**os.environ, "PREFECT_API_URL": api},
        capture_output=True,
        text=True,
        timeout=60,
    )


def raw_resume(api: str, run_id: UUID, run_input: dict) -> dict:
    """POST /flow_runs/{id}/resume as another service would (the README's REST example)."""
    response = httpx.post(f"{api}/flow_runs/{run_id}/resume", json={"run_input": run_input})
    return {"http": response.status_code, **response.json()}


def bound(gate_run: UUID, **fields: Any) -> dict:
    gate = read_gate(gate_run)
    return {"step": gate.step, "plan_digest": gate.plan_digest} | fields


def decisions_recorded(run_id: UUID, step: str) -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"approval-{step}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    return [str(a.description) for a in artifacts]


def end_at_switchover(box, run_id: UUID, thread: threading.Thread, outcome: list) -> None:
    """Reject the switchover (bound), wait for the run, remove the cluster it left beside live."""
    before = set(restore_dirs(box))
    answer_at(run_id, "switchover", REJECT)
    thread.join(timeout=120)
    assert outcome[0].is_cancelled(), outcome[0]
    for name in restore_dirs(box):
        if name.startswith("pitr-") and (box.root / "pg" / name / "data").exists():
            root = box.root / "pg" / name
            LocalCluster(root / "data", 0, box.cluster().bin_dir, "postgres").stop(mode="immediate")
            shutil.rmtree(root)
    assert before >= set(restore_dirs(box))


def test_two_approvals_at_once_open_the_restore_gate_only(prefect_server, history, use_platform):
    box, stages = history
    live = use_platform(box).live_dsn()
    thread, outcome, run_id = replace_recovery(stages)
    both = [
        subprocess.Popen(
            [RUNBOOK, "approve", str(run_id), "--approver", name, "--reason", "INC-9"],
            env={**os.environ, "PREFECT_API_URL": prefect_server},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("oncall-1", "oncall-2")
    ]
    done = [p.communicate(timeout=60) for p in both]
    codes = sorted(p.returncode for p in both)
    assert codes == [0, 2], done
    loser = done[[p.returncode for p in both].index(2)][1]
    assert "did not take the answer" in loser or "not paused" in loser
    wait_for_gate(run_id, "switchover", 180)
    time.sleep(3)  # a late duplicate would have landed by now
    assert read_gate(run_id).pause_key == "approve-switchover-1"  # nothing reached this gate
    assert stage_at(live) == 3, "live was replaced without a switchover approval"
    end_at_switchover(box, run_id, thread, outcome)
    assert stage_at(live) == 3


def test_an_approval_a_moment_later_is_refused_and_reaches_no_other_gate(
    prefect_server, history, use_platform
):
    box, stages = history
    live = use_platform(box).live_dsn()
    thread, outcome, run_id = replace_recovery(stages)
    first = cli(prefect_server, "approve", run_id, "--approver", "oncall-1", "--reason", "INC-9")
    assert first.returncode == 0, first.stderr
    assert "gate 'restore'" in first.stdout and "Backup set" in first.stdout  # the plan shown
    restore_again = ("--approver", "oncall-2", "--reason", "INC-9", "--step", "restore")
    late = cli(prefect_server, "approve", run_id, *restore_again)
    assert late.returncode == 2 and prefect_server in late.stderr
    assert "not paused" in late.stderr or "not 'restore'" in late.stderr
    wait_for_gate(run_id, "switchover", 180)
    later = cli(prefect_server, "approve", run_id, *restore_again)
    assert later.returncode == 2 and "paused at gate 'switchover', not 'restore'" in later.stderr
    assert stage_at(live) == 3
    end_at_switchover(box, run_id, thread, outcome)


def test_a_rest_resume_sent_twice_is_recorded_and_ignored_at_the_next_gate(
    prefect_server, history, use_platform
):
    box, stages = history
    live = use_platform(box).live_dsn()
    thread, outcome, run_id = replace_recovery(stages)
    body = bound(run_id, approved=True, approver="pager-bot", reason="INC-1234")
    assert raw_resume(prefect_server, run_id, body)["status"] == "ACCEPT"
    wait_for_gate(run_id, "switchover", 180)
    again = raw_resume(prefect_server, run_id, body)  # the same call, sent twice
    assert again["status"] == "ACCEPT"  # a well-formed answer: the run itself must refuse it
    gate = wait_for_gate(run_id, "switchover", 60)
    deadline = time.monotonic() + 30
    while gate.pause_key != "approve-switchover-2" and time.monotonic() < deadline:
        time.sleep(0.3)
        gate = read_gate(run_id)
    assert gate.pause_key == "approve-switchover-2", "the run did not wait again at the gate"
    assert any("reached gate 'switchover'" in d for d in decisions_recorded(run_id, "switchover"))
    assert stage_at(live) == 3, "a stray answer switched live over"
    end_at_switchover(box, run_id, thread, outcome)


def test_answers_without_step_or_digest_or_that_approve_nothing_change_nothing(
    prefect_server, history, use_platform
):
    box, stages = history
    use_platform(box)
    before = restore_dirs(box)
    thread, outcome = in_thread(
        lambda: point_in_time_recovery(target_time=stages.between(1).isoformat(), return_state=True)
    )
    run_id = wait_for_paused_run("point-in-time-recovery")
    wait_for_gate(run_id, "restore", 60)
    for unbound in ({}, {"approved": True, "approver": "carol", "reason": "INC-5"}):
        refused = raw_resume(prefect_server, run_id, unbound)
        assert refused["status"] == "REJECT" and "required property" in str(refused["details"])
        assert read_gate(run_id).pause_key == "approve-restore-1"  # still waiting, untouched
    blank = bound(run_id, approved=True, approver="carol", reason=" ")
    assert raw_resume(prefect_server, run_id, blank)["status"] == "ACCEPT"
    deadline = time.monotonic() + 30
    while read_gate_or_none(run_id) != "approve-restore-2":
        assert time.monotonic() < deadline, "the run did not wait again at the same gate"
        time.sleep(0.3)
    assert any("approved nothing" in d for d in decisions_recorded(run_id, "restore"))
    answer_at(run_id, "restore", REJECT)
    thread.join(timeout=60)
    assert outcome[0].is_cancelled() and "rejected by bob" in outcome[0].message
    assert restore_dirs(box) == before


def read_gate_or_none(run_id: UUID) -> str | None:
    try:
        return read_gate(run_id).pause_key
    except ApprovalError:
        return None


def test_the_restore_approver_cannot_approve_the_switchover_and_only_allowed_names_decide(
    prefect_server, history, use_platform, monkeypatch
):
    box, stages = history
    monkeypatch.setenv("RUNBOOK_RECOVERY_ALLOWED_APPROVERS", '["alice", "erin"]')
    live = use_platform(box).live_dsn()
    thread, outcome, run_id = replace_recovery(stages)
    answer_at(run_id, "restore", APPROVE)  # alice
    answer_at(run_id, "switchover", APPROVE)  # alice again: four eyes refuse it
    waits_again = wait_until_pause_key(run_id, "approve-switchover-2")
    assert "other than alice" in waits_again.plan_markdown  # the form says so
    assert stage_at(live) == 3
    answer_gate(run_id, step="switchover", approved=True, approver="mallory", reason="me")
    wait_until_pause_key(run_id, "approve-switchover-3")
    assert stage_at(live) == 3
    summaries = decisions_recorded(run_id, "switchover")
    assert any("four eyes" in s for s in summaries)
    assert any("not an allowed approver" in s for s in summaries)
    answer_at(run_id, "switchover", APPROVE_2)  # erin
    thread.join(timeout=180)
    assert outcome[0].is_completed(), outcome[0]
    assert stage_at(live) == 2, "the recovered data is not live"
    with decisions("rollback-switchover", ("rollback", APPROVE)):
        rollback_switchover()
    assert stage_at(live) == 3


def wait_until_pause_key(run_id: UUID, key: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            gate = read_gate(run_id)
            if gate.pause_key == key:
                return gate
        except ApprovalError:
            pass
        assert time.monotonic() < deadline, f"the run did not pause as {key}"
        time.sleep(0.3)


def test_a_backup_expired_while_the_approval_waits_stops_the_run_before_acting(
    prefect_server, history, use_platform
):
    box, _ = history
    settings = use_platform(box)
    engine = engine_for(box)
    doomed = engine.take_backup(BackupKind.FULL)
    engine.take_backup(BackupKind.FULL)  # pgBackRest expires a set only when it is not the newest
    before = restore_dirs(box)
    thread, outcome = in_thread(
        lambda: restore_backup(backup_label=doomed.label, return_state=True)
    )
    run_id = wait_for_paused_run("restore-backup")
    wait_for_gate(run_id, "restore", 60)
    subprocess.run(
        [
            "pgbackrest",
            f"--config={settings.backup.config}",
            f"--stanza={settings.backup.stanza}",
            "expire",
            f"--set={doomed.label}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
        user=settings.postgres.os_user,
    )
    answer_at(run_id, "restore", APPROVE)
    thread.join(timeout=120)
    state = outcome[0]
    assert state.is_failed()
    with pytest.raises(PlanChanged, match=f"backup set {doomed.label} is no longer in the repo"):
        state.result()
    assert restore_dirs(box) == before
