"""Benchmark: the ``daily-health-check`` flow against its checks run one after another.

On a sandbox (PostgreSQL 15 + pgBackRest with one full backup, moto, localstripe, the app) and
its Prefect server, one child process (Prefect reads its settings at import) does, per round:

* flow: ``daily_health_check()``, wall time around the call (every system's checks at once,
  then the report, events, notifications and the capacity sample);
* one after another: each system's checks task (``flows.maintenance.daily.daily_checks``)
  called directly (``.fn``), timed one by one: their sum and the slowest.

Prefect's own start-up is printed apart: the wall time of an empty flow run (creating the run,
its state changes, its end) in the same process, and the import time. The target: the flow
takes at most 1.5 x its slowest single check plus Prefect's start-up.

Run from the repository root::

    .venv/bin/python bench/daily.py                 # 3 rounds on a new sandbox
    .venv/bin/python bench/daily.py --rounds 5 --dir /var/tmp/daily-bench --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sandbox.platform import Sandbox
from tasks.backups.base import BackupKind
from tasks.backups.pgbackrest import PgBackRest
from tasks.cluster import free_port
from tasks.settings import CONFIG_ENV, SandboxSettings, load_settings

RESULT_PREFIX = "BENCH-RESULT "
SPAWNED_AT_ENV = "BENCH_SPAWNED_AT"
CHILD_DEADLINE_S = 1800
TARGET_FACTOR = 1.5


def log(message: str) -> None:
    print(f"{datetime.now():%H:%M:%S.%f}"[:-3] + f"  {message}", flush=True)


@dataclass(frozen=True)
class Round:
    flow_s: float
    per_system_s: dict[str, float]
    per_system_cpu_s: dict[str, float]  # this process's CPU time in each system's checks

    @property
    def sequential_s(self) -> float:
        return sum(self.per_system_s.values())

    @property
    def slowest(self) -> tuple[str, float]:
        return max(self.per_system_s.items(), key=lambda item: item[1])


@dataclass(frozen=True)
class Measured:
    import_s: float
    startup_s: float
    rounds: list[Round]


# -- the child: everything measured in one process ------------------------------------------------


def measure(rounds: int) -> None:
    """Child side: import, an empty flow run, then ``rounds`` x (flow, checks one by one)."""
    from prefect import flow

    from flows.maintenance.daily import daily_checks, daily_health_check
    from sandbox.notifications import register_notification_blocks

    imported = time.time() - float(os.environ[SPAWNED_AT_ENV])

    @flow(name="bench-empty-flow")
    def empty() -> None:
        return None

    empty()  # the first run also registers the flow: not counted
    started = time.monotonic()
    empty()
    startup = time.monotonic() - started
    register_notification_blocks(Sandbox(SandboxSettings()))
    results = []
    for _ in range(rounds):
        started = time.monotonic()
        daily_health_check()
        flow_s = time.monotonic() - started
        per_system, per_system_cpu = {}, {}
        for system, (checks, args) in daily_checks(load_settings()).items():
            started, cpu = time.monotonic(), time.process_time()
            getattr(checks, "fn", checks)(*args)
            per_system[system] = time.monotonic() - started
            per_system_cpu[system] = time.process_time() - cpu
        results.append(Round(flow_s, per_system, per_system_cpu))
    print(RESULT_PREFIX + json.dumps(asdict(Measured(imported, startup, results))), flush=True)


# -- the parent: sandbox, Prefect server, the child, the report ----------------------------------


def prepare(box: Sandbox) -> None:
    log("starting the sandbox (PostgreSQL, moto, localstripe, the app)")
    box.up()
    os.environ[CONFIG_ENV] = str(box.config_file)
    settings = load_settings()
    engine = PgBackRest(
        stanza=settings.backup.stanza,
        config=settings.backup.config,
        bin_dir=box.cluster().bin_dir,
        os_user=settings.postgres.os_user,
    )
    if not engine.list_backups():
        log("taking a full backup (so that the backup check has one to find)")
        engine.take_backup(BackupKind.FULL)
    log(f"starting the Prefect server: {box.start_prefect_server()}")


def run_child(box: Sandbox, rounds: int) -> Measured:
    env = {
        **os.environ,
        **box.prefect_env(),
        "RUNBOOK_SANDBOX_DIR": str(box.root),
        "RUNBOOK_SANDBOX_PG_PORT": str(box.settings.pg_port),
        "RUNBOOK_SANDBOX_PREFECT_PORT": str(box.settings.prefect_port),
        "RUNBOOK_MAINTENANCE_STATE_DIR": str(box.root / "state"),
        SPAWNED_AT_ENV: repr(time.time()),
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_S,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr + proc.stdout).splitlines()[-30:])
        raise RuntimeError(f"the measuring process failed (exit {proc.returncode}):\n{tail}")
    raw = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return Measured(raw["import_s"], raw["startup_s"], [Round(**r) for r in raw["rounds"]])


def report(measured: Measured) -> bool:
    """Print every round, the medians, the ratio and the verdict; True when the target holds."""
    rounds = measured.rounds
    systems = list(rounds[0].per_system_s)
    print()
    print(f"{'round':>5} | {'flow':>7} {'one by one':>10} {'ratio':>6} | " + " ".join(
        f"{s:>8}" for s in systems
    ))  # fmt: skip
    for i, r in enumerate(rounds, 1):
        print(
            f"{i:>5} | {r.flow_s:7.2f} {r.sequential_s:10.2f} {r.flow_s / r.sequential_s:6.2f} | "
            + " ".join(f"{r.per_system_s[s]:8.2f}" for s in systems)
        )
    flow = statistics.median(r.flow_s for r in rounds)
    sequential = statistics.median(r.sequential_s for r in rounds)
    slowest_system = max(
        systems, key=lambda s: statistics.median(r.per_system_s[s] for r in rounds)
    )
    slowest = statistics.median(r.per_system_s[slowest_system] for r in rounds)
    limit = TARGET_FACTOR * slowest + measured.startup_s
    print("(seconds; flow: wall time of daily_health_check(); one by one: each system's checks")
    print(" called directly, the sum; the last columns: each system's own time)")
    print()
    print(f"Prefect start-up (an empty flow run)   {measured.startup_s:8.2f} s")
    print(f"Prefect + project import               {measured.import_s:8.2f} s  (not in any figure)")
    print(f"daily-health-check, median             {flow:8.2f} s")
    print(f"checks one after another, median sum   {sequential:8.2f} s")
    print(f"slowest single check, median           {slowest:8.2f} s  ({slowest_system})")
    print(f"ratio flow / one after another         {flow / sequential:8.2f}")
    cpu = statistics.median(sum(r.per_system_cpu_s.values()) for r in rounds)
    print(
        f"CPU of the checks in this process      {cpu:8.2f} s  (one interpreter: checks in "
        "threads share it, a floor under their concurrent time)"
    )
    ok = flow <= limit
    print(
        f"target flow <= {TARGET_FACTOR} x slowest + start-up: {flow:.2f} <= {limit:.2f}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="flow + one-by-one rounds")
    parser.add_argument("--dir", type=Path, help="a new sandbox dir (default: one in /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox dir at the end")
    parser.add_argument("--measure", type=int, metavar="ROUNDS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.dir is not None and args.dir.exists():
        parser.error(f"{args.dir} exists: the benchmark builds its sandbox in a new directory")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        measure(args.measure)
        return 0
    root = args.dir or Path(tempfile.mkdtemp(prefix="runbook-bench-", dir="/var/tmp"))  # noqa: S108
    log(f"sandbox in {root}")
    box = Sandbox(SandboxSettings(dir=root, pg_port=free_port(), prefect_port=free_port()))
    try:
        prepare(box)
        log(f"measuring {args.rounds} rounds in one process")
        return 0 if report(run_child(box, args.rounds)) else 1
    finally:
        log("stopping the sandbox")
        box.down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            log(f"removed {root}")


if __name__ == "__main__":
    sys.exit(main())
