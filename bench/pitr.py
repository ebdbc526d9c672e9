"""Benchmark: the ``point-in-time-recovery`` flow against a bare pgBackRest time-target restore.

On a sandbox filled with ``pgbench -i -s SCALE`` (scale 100 is about 1.5 GB) and one full
backup, at least ``--wal-mb`` of WAL is generated after the backup (batches of ``UPDATE
pgbench_accounts``), measured from the backup's stop LSN. The target time is taken after a
committed transaction; one more commits after it, the segment is switched and waited for in the
archive, so the target is inside the restorable window. Each pair then runs, alternately:

* bare: ``pgbackrest restore --type=time --target=... --target-action=promote`` (the flow's
  options, 2 processes) into a new directory, ``pg_ctl start`` and a wait until
  ``pg_is_in_recovery()`` is false, by hand;
* flow: ``point_in_time_recovery(target_time=..., mode="side-by-side")`` in a child process
  against the sandbox's Prefect server. The run pauses for approval; this (separate) process
  polls the API for the paused run and approves it at once with ``answer_gate``. The
  restored cluster is removed after each run.

Besides the table and the verdict of ``bench/verify_backup.py`` (where "flow without checks"
here also leaves out the approval wait: paused until the resume was accepted), it prints the
time the flow took to see the resume (it polls every second), and restore and WAL replay
throughput.

Run from the repository root::

    .venv/bin/python bench/pitr.py                                  # scale 100, 1100 MB, 3 pairs
    .venv/bin/python bench/pitr.py --scale 5 --wal-mb 50 --pairs 1  # quick
    .venv/bin/python bench/pitr.py --dir /var/tmp/pitr --keep       # then, to iterate:
    .venv/bin/python bench/pitr.py --dir /var/tmp/pitr --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from pydantic import SecretStr

from flows.approval import answer_gate, wait_for_gate
from sandbox.platform import OS_USER, Sandbox
from tasks.backups.base import RecoveryTarget
from tasks.backups.pgbackrest import target_options
from tasks.postgres.cluster import free_port, make_owned_dir
from tasks.postgres.scratch import ScratchCluster, remove_scratch_cluster
from tasks.postgres.sql import archiver_status, connect, current_timeline

if __package__ in (None, ""):  # run as ``bench/pitr.py``: make the ``bench`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.verify_backup import (  # noqa: E402
    FLOW_DEADLINE_S,
    RESULT_PREFIX,
    SPAWNED_AT_ENV,
    BareRun,
    FlowRun,
    Prepared,
    bare_restore_argv,
    bench_tables,
    child_result,
    engine_for,
    live_dsn,
    log,
    print_pairs,
    print_summary,
    restore_and_promote,
    run_in_sandbox,
    start_sandbox,
)
from bench.verify_backup import parse_args as parse_sandbox_args  # noqa: E402

FLOW_NAME = "point-in-time-recovery"
ACCOUNTS_PER_SCALE = 100_000  # pgbench_accounts rows per scale unit
UPDATE_BATCH_ROWS = 100_000
WAL_DEADLINE_S = 3600
ARCHIVE_DEADLINE_S = 600
PAUSE_DEADLINE_S = 600  # from spawning the flow's process to its run being paused
PAUSE_POLL_S = 0.1
CHILD_GRACE_S = 60  # for an aborted flow's process to clean up before it is killed
RESUME_SEEN_LIMIT_S = 2.0  # the flow polls every second; Prefect's default would be 10 s


@dataclass(frozen=True)
class Target:
    """The recovery point every pair restores to, and the WAL between the backup and it."""

    time: datetime
    replay_bytes: int  # from the backup's stop LSN to the last commit before ``time``
    timeline: int | None  # the live one, which the flow passes as --target-timeline

    @property
    def iso(self) -> str:
        return self.time.isoformat()


@dataclass(frozen=True)
class PitrFlowRun(FlowRun):
    pre_pause_s: float  # from the call to the run entering Paused (lookups, window, plan)
    approval_wait_s: float  # Paused until the resume was accepted: the approver's time
    resume_seen_s: float  # from the resume being accepted to the flow going on

    @property
    def without_checks_s(self) -> float:
        return self.wall_s - self.checks_s - self.approval_wait_s

    @property
    def rest_s(self) -> float:
        """Neither a phase nor the pause: between steps, the lock's release, result, state."""
        phases = self.restore_s + self.promote_s + self.pre_pause_s + self.resume_seen_s
        return self.without_checks_s - phases


# -- WAL and the target ---------------------------------------------------------------------------


def wal_since(conn: psycopg.Connection, lsn: str) -> int:
    """Bytes of WAL written since ``lsn``."""
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()
    return int(row[0]) if row else 0


def generate_wal(dsn: SecretStr, since_lsn: str, wal_mb: int, accounts: int) -> int:
    """UPDATE batches of pgbench_accounts until ``wal_mb`` MB of WAL follow ``since_lsn``."""
    wanted, batch, low = wal_mb * 1_000_000, min(UPDATE_BATCH_ROWS, accounts), 1
    started = last_report = time.monotonic()
    with connect(dsn) as conn:
        while (done := wal_since(conn, since_lsn)) < wanted:
            if time.monotonic() - started > WAL_DEADLINE_S:
                raise TimeoutError(f"{done / 1e6:.0f} of {wal_mb} MB of WAL in {WAL_DEADLINE_S} s")
            conn.execute(
                "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN %s AND %s",
                (low, low + batch - 1),
            )
            low = low + batch if low + batch <= accounts else 1
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log(f"  {done / 1e6:.0f} of {wal_mb} MB of WAL")
    return done


def take_target(dsn: SecretStr, since_lsn: str) -> Target:
    """A commit, the target time, a commit after it; then the segment is switched and archived."""
    bump = "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1"
    with connect(dsn) as conn:
        conn.execute(bump)
        replay_bytes = wal_since(conn, since_lsn)
        time.sleep(0.2)
        moment = datetime.now(UTC)
        time.sleep(1.0)
        conn.execute(bump)  # after the target: recovery must stop before it
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert row is not None
    wait_archived(dsn, str(row[0]))
    return Target(moment, replay_bytes, current_timeline(dsn))


def wait_archived(dsn: SecretStr, segment: str) -> None:
    deadline = time.monotonic() + ARCHIVE_DEADLINE_S
    while True:
        status = archiver_status(dsn)
        if (status.last_archived_wal or "") >= segment:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"WAL segment {segment} not archived within {ARCHIVE_DEADLINE_S} s "
                f"(last archived {status.last_archived_wal}, last failed {status.last_failed_wal})"
            )
        time.sleep(0.2)


def prepare_target(box: Sandbox, prepared: Prepared, wal_mb: int) -> Target:
    backup = engine_for(box).find_backup(prepared.label)
    if backup.lsn_stop is None:
        raise RuntimeError(f"pgBackRest reports no stop LSN for backup {backup.label}")
    dsn = live_dsn(box)
    log(f"generating {wal_mb} MB of WAL after the backup's stop LSN {backup.lsn_stop}")
    started = time.monotonic()
    done = generate_wal(dsn, backup.lsn_stop, wal_mb, ACCOUNTS_PER_SCALE * prepared.scale)
    log(f"{done / 1e6:.0f} MB of WAL in {time.monotonic() - started:.0f} s; taking the target")
    target = take_target(dsn, backup.lsn_stop)
    log(f"target {target.iso}: {target.replay_bytes / 1e6:.0f} MB of WAL to replay, archived")
    return target


# -- one bare run and one flow run ----------------------------------------------------------------


def pitr_restore_argv(box: Sandbox, destination: Path, label: str, target: Target) -> list[str]:
    """``bare_restore_argv`` with the flow's time-target options in place of the immediate ones
    (the order ``PgBackRest.restore`` uses)."""
    immediate = target_options(RecoveryTarget())
    argv = [a for a in bare_restore_argv(engine_for(box), destination, label) if a not in immediate]
    at = argv.index("--archive-mode=off")
    wanted = RecoveryTarget(type="time", value=target.iso, timeline=target.timeline)
    return [*argv[:at], *target_options(wanted), *argv[at:]]


def run_bare(box: Sandbox, prepared: Prepared, target: Target, index: int) -> BareRun:
    """Restore to the target with the CLI, start, wait until promoted; then remove it all."""
    root = box.root / "scratch" / f"pitr-bare-{index}"
    scratch = ScratchCluster(
        root=root,
        data_dir=root / "data",
        port=free_port(),
        bin_dir=box.cluster().bin_dir,
        os_user=OS_USER,
    ).create()
    make_owned_dir(scratch.data_dir, OS_USER)
    argv = pitr_restore_argv(box, scratch.data_dir, prepared.label, target)
    if index == 1:
        log(f"  bare restore: {' '.join(argv[1:])}")
    try:
        restore_s, promote_s = restore_and_promote(argv, scratch.cluster(), live_dsn(box))
    finally:
        stopping = time.monotonic()
        remove_scratch_cluster.fn(scratch)
    return BareRun(restore_s, promote_s, time.monotonic() - stopping)


def run_flow(box: Sandbox, prepared: Prepared, target: Target, index: int) -> PitrFlowRun:
    """One flow call in a child process; this process approves the pause as soon as it shows."""
    output = box.run_dir / f"bench-pitr-flow-{index}.log"
    env = os.environ | box.prefect_env() | {SPAWNED_AT_ENV: repr(time.time())}
    env["RUNBOOK_PG_TABLES"] = json.dumps(bench_tables(prepared.scale))
    argv = [sys.executable, str(Path(__file__).resolve()), "--flow-once", target.iso]
    spawned = datetime.now(UTC)
    with output.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        paused_at, accepted_at = approve_when_paused(proc, spawned)
        proc.wait(timeout=FLOW_DEADLINE_S)
    except BaseException:
        stop_child(proc)
        log(f"the flow's output ({output}) ends with:\n{tail(output)}")
        raise
    values = child_result(proc.returncode, output.read_text(errors="replace"), "the flow run")
    remove_scratch_cluster.fn(ScratchCluster.model_validate(values.pop("restore_to")))
    statuses = values.pop("statuses")
    log(f"  checks: {', '.join(f'{name} {status}' for name, status in statuses.items())}")
    called_at, decided_at = values.pop("called_at"), values.pop("decided_at")
    return PitrFlowRun(
        **values,
        pre_pause_s=paused_at - called_at,
        approval_wait_s=accepted_at - paused_at,
        resume_seen_s=decided_at - accepted_at,
    )


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the flow removes what it restored), then SIGKILL after a grace period."""
    proc.terminate()
    try:
        proc.wait(timeout=CHILD_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def approve_when_paused(proc: subprocess.Popen[bytes], spawned: datetime) -> tuple[float, float]:
    """Poll the API for the run's pause and approve it; (paused at, resume accepted at), epoch s."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flows = FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
        start_time=FlowRunFilterStartTime(after_=spawned),
    )
    deadline = time.monotonic() + PAUSE_DEADLINE_S
    with get_client(sync_client=True) as client:
        while not (runs := client.read_flow_runs(flow_filter=flows, flow_run_filter=paused)):
            if proc.poll() is not None:
                raise RuntimeError(f"the flow's process exited ({proc.returncode}) before pausing")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no paused {FLOW_NAME} run within {PAUSE_DEADLINE_S} s")
            time.sleep(PAUSE_POLL_S)
    seen, run = time.time(), runs[0]
    assert run.state is not None
    paused_at = run.state.timestamp.timestamp()
    wait_for_gate(run.id, "restore", PAUSE_DEADLINE_S)
    answer_gate(run.id, approved=True, approver="bench", reason="bench", step="restore")
    accepted = time.time()
    log(
        f"  run {run.name} seen Paused {seen - paused_at:.2f} s after it paused;"
        f" resume accepted {accepted - seen:.2f} s later"
    )
    return paused_at, accepted


def flow_once(target_time: str) -> None:
    """Child side of ``run_flow``: import, call the flow, print what it measured."""
    from flows.recovery.pitr import point_in_time_recovery
    from tasks.backups.planning import RecoveryMode, RecoveryResult

    startup_s = time.time() - float(os.environ[SPAWNED_AT_ENV])
    # SIGTERM from the benchmark unwinds the flow, so it removes the cluster it restored.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    called_at, calling = time.time(), time.monotonic()
    result = point_in_time_recovery(target_time=target_time, mode=RecoveryMode.SIDE_BY_SIDE)
    wall_s = time.monotonic() - calling
    if not isinstance(result, RecoveryResult) or not result.decisions:
        raise SystemExit(f"the flow returned {result!r}")
    per_check = {c.name: c.seconds for c in result.checks}
    measured = FlowRun(
        wall_s=wall_s,
        restore_s=result.restore_seconds or 0.0,
        promote_s=result.promote_seconds or 0.0,
        checks_s=sum(per_check.values()),
        startup_s=startup_s,
        bytes_restored=result.plan.backup.size_bytes,
        per_check_s=per_check,
    )
    extra = {
        "called_at": called_at,
        "decided_at": result.decisions[0].decided_at.timestamp(),
        "restore_to": result.plan.restore_to.model_dump(mode="json"),
        "statuses": {c.name: c.status for c in result.checks},
    }
    print(RESULT_PREFIX + json.dumps(asdict(measured) | extra), flush=True)


# -- the report -----------------------------------------------------------------------------------


def print_pitr(pairs: Sequence[tuple[BareRun, PitrFlowRun]], target: Target) -> bool:
    """The point-in-time part: replay throughput and the approval; True when resume was seen
    within ``RESUME_SEEN_LIMIT_S`` every time."""
    mb = target.replay_bytes / 1e6
    print()
    print(
        f"{'pair':>4} | {'bare replay':>14} | {'flow replay':>14} |"
        f" {'pre-pause':>9} {'approval':>8} {'resume':>6} {'rest':>6}"
    )
    for i, (bare, flow) in enumerate(pairs, 1):
        print(
            f"{i:>4} | {mb / bare.promote_s:9.1f} MB/s | {mb / flow.promote_s:9.1f} MB/s |"
            f" {flow.pre_pause_s:9.2f} {flow.approval_wait_s:8.2f} {flow.resume_seen_s:6.2f}"
            f" {flow.rest_s:6.2f}"
        )
    print(f"(replay: {mb:.0f} MB of WAL from the backup's stop LSN to the target over start to")
    print(" promoted; pre-pause: from the call to Paused; approval: Paused until the resume was")
    print(" accepted, not in -checks above; resume: accepted until the flow went on; rest: the")
    print(" flow's time in none of these, restore, promote or checks)")
    flows = [f for _, f in pairs]
    slowest = max(f.resume_seen_s for f in flows)
    print()
    print(f"target time                       {target.iso}")
    print(
        f"replay throughput ({mb:.0f} MB)    "
        f"bare {mb / statistics.median(b.promote_s for b, _ in pairs):.1f} MB/s,"
        f" flow {mb / statistics.median(f.promote_s for f in flows):.1f} MB/s"
    )
    waited = statistics.median(f.approval_wait_s for f in flows)
    print(f"approval wait, median             {waited:8.2f} s  (Paused until resume accepted)")
    ok = slowest <= RESUME_SEEN_LIMIT_S
    print(
        f"resume seen by the flow <= {RESUME_SEEN_LIMIT_S:.0f} s: median"
        f" {statistics.median(f.resume_seen_s for f in flows):.2f}, max {slowest:.2f}:"
        f" {'PASS' if ok else 'FAIL'}"
    )
    return ok


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--wal-mb`` here; the sandbox options (--scale --pairs --dir --keep --reuse) are
    ``bench/verify_backup.py``'s."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="also: --scale N (pgbench scale, 100 = 1.5 GB), --pairs N (3), --dir DIR, --keep,"
        " --reuse, as bench/verify_backup.py takes them",
    )
    parser.add_argument("--wal-mb", type=int, default=1100, help="WAL to replay, MB (1100)")
    parser.add_argument("--flow-once", metavar="TARGET_TIME", help=argparse.SUPPRESS)
    own, rest = parser.parse_known_args(argv)
    if own.wal_mb < 1:
        parser.error("--wal-mb must be at least 1")
    args = parse_sandbox_args(rest)
    args.wal_mb, args.flow_once = own.wal_mb, own.flow_once
    return args


def bench(box: Sandbox, args: argparse.Namespace) -> bool:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prepared = start_sandbox(box, args)
    target = prepare_target(box, prepared, args.wal_mb)
    log(f"starting the Prefect server: {box.start_prefect_server()}")
    pairs: list[tuple[BareRun, PitrFlowRun]] = []
    with temporary_settings(updates={PREFECT_API_URL: box.prefect_api_url}):
        for i in range(1, args.pairs + 1):
            log(f"pair {i}: bare")
            bare = run_bare(box, prepared, target, i)
            log(f"pair {i}: bare {bare.total_s:.2f} s; flow")
            flow = run_flow(box, prepared, target, i)
            log(
                f"pair {i}: flow {flow.wall_s:.2f} s ({flow.checks_s:.2f} s of checks,"
                f" {flow.approval_wait_s:.2f} s waiting for approval)"
            )
            pairs.append((bare, flow))
    print_pairs(pairs)
    resumed_ok = print_pitr(pairs, target)
    return print_summary(pairs, prepared.size_bytes) and resumed_ok


def remove_restored(box: Sandbox) -> None:
    """Restored clusters a failed run left (``Sandbox.down`` has stopped their servers)."""
    for leftover in [*box.root.glob("pg/pitr-*"), *box.root.glob("scratch/pitr-bare-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
        log(f"removed leftover {leftover}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.flow_once:
        flow_once(args.flow_once)
        return 0
    return run_in_sandbox(args, bench, cleanup=remove_restored)


if __name__ == "__main__":
    sys.exit(main())
