"""Benchmark: the ``daily-health-check`` flow against its checks run one after another.

On a sandbox (PostgreSQL 15 + pgBackRest with one full backup, moto, localstripe, the app) and
its Prefect server, one child process (Prefect reads its settings at import) does, per round:

* flow: ``daily_health_check()``, wall time around the call (every system's checks at once,
  then the report, events, notifications and the capacity sample);
* one after another: each system's checks task (``flows.maintenance.daily.daily_checks``)
  called directly (``.fn``), timed one by one: their sum and the slowest.

Prefect's own start-up is printed apart: the median wall time of empty flow runs (creating the
run, its state changes, its end) in the same process, and the import time. The target: the flow
takes at most 1.5 x its slowest single check plus Prefect's start-up, with Prefect as deployed.

Two more views, for whoever wants to make it faster:

* the CPU time each process spent during a flow run (this one, the Prefect server, moto,
  localstripe, the app, PostgreSQL), against the machine's cores: on loopback the checks are
  CPU work, so that total over the cores is a floor under the flow's wall time;
* the same runs without Prefect's flow heartbeats. Prefect 3.9 joins its heartbeat thread at
  the end of every sync flow run, which waits for the thread's next one-second tick: an empty
  run takes about 1.1 s, and a flow whose work ends before that tick takes no longer. Without
  heartbeats, what the flow itself costs over an empty run is seen to the millisecond.

Run from the repository root::

    .venv/bin/python bench/daily.py                 # 3 rounds on a new sandbox
    .venv/bin/python bench/daily.py --rounds 5 --dir /var/tmp/daily-bench --keep
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox.platform import Sandbox
from tasks.backups.base import BackupKind
from tasks.backups.pgbackrest import PgBackRest
from tasks.core.settings import CONFIG_ENV, SandboxSettings, load_settings

if __package__ in (None, ""):  # run as ``bench/daily.py``: make the ``bench`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.verify_backup import (  # noqa: E402
    RESULT_PREFIX,
    SPAWNED_AT_ENV,
    log,
    run_child,
    run_in_sandbox,
)

PIDS_ENV = "BENCH_SANDBOX_PIDS"
EMPTY_RUNS = 5
CHILD_DEADLINE_S = 1800
TARGET_FACTOR = 1.5


@dataclass(frozen=True)
class Round:
    flow_s: float
    flow_cpu_s: dict[str, float]  # CPU time of each process during the flow run
    per_system_s: dict[str, float]
    per_system_cpu_s: dict[str, float]  # this process's CPU time in each system's checks

    @property
    def sequential_s(self) -> float:
        return sum(self.per_system_s.values())


@dataclass(frozen=True)
class Measured:
    import_s: float
    startup_s: float  # an empty flow run, median
    rounds: list[Round]
    quiet_startup_s: float  # the same two without flow heartbeats
    quiet_flow_s: list[float]


# -- the child: everything measured in one process ------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """CPU time of ``pid`` and its waited-for children (PostgreSQL's ended backends), in s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # u, s, cu, cs time


def cpu_times(pids: dict[str, int]) -> dict[str, float]:
    return {"this process": time.process_time()} | {
        name: process_cpu_s(pid) for name, pid in pids.items()
    }


def timed(call: Callable[[], object], pids: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Wall time of ``call`` and the CPU time each process spent meanwhile."""
    before, started = cpu_times(pids), time.monotonic()
    call()
    wall, after = time.monotonic() - started, cpu_times(pids)
    return wall, {name: after[name] - before[name] for name in after}


def measure(rounds: int) -> None:
    """Child side: import, empty flow runs, then ``rounds`` x (flow, checks one by one); then
    empty and flow runs again without flow heartbeats."""
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.maintenance.daily import daily_checks, daily_health_check
    from sandbox.notifications import register_notification_blocks

    imported = time.time() - float(os.environ[SPAWNED_AT_ENV])
    pids: dict[str, int] = json.loads(os.environ[PIDS_ENV])

    @flow(name="bench-empty-flow")
    def empty() -> None:
        return None

    def startup() -> float:
        empty()  # the first run also registers the flow: not counted
        return statistics.median(timed(empty, {})[0] for _ in range(EMPTY_RUNS))

    register_notification_blocks(Sandbox(SandboxSettings()))
    as_deployed = startup()
    results = []
    for _ in range(rounds):
        flow_s, flow_cpu = timed(daily_health_check, pids)
        per_system, per_system_cpu = {}, {}
        for system, (checks, args) in daily_checks(load_settings()).items():
            started, cpu = time.monotonic(), time.process_time()
            getattr(checks, "fn", checks)(*args)
            per_system[system] = time.monotonic() - started
            per_system_cpu[system] = time.process_time() - cpu
        results.append(Round(flow_s, flow_cpu, per_system, per_system_cpu))
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        quiet_startup = startup()
        quiet_flow = [timed(daily_health_check, {})[0] for _ in range(rounds)]
    measured = Measured(imported, as_deployed, results, quiet_startup, quiet_flow)
    print(RESULT_PREFIX + json.dumps(asdict(measured)), flush=True)


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


def measure_in_child(box: Sandbox, rounds: int) -> Measured:
    pids = {name: pid for name, pid in box.status().processes.items() if pid is not None}
    env = {
        **os.environ,
        **box.prefect_env(),
        "RUNBOOK_SANDBOX_DIR": str(box.root),
        "RUNBOOK_SANDBOX_PG_PORT": str(box.settings.pg_port),
        "RUNBOOK_SANDBOX_PREFECT_PORT": str(box.settings.prefect_port),
        "RUNBOOK_MAINTENANCE_STATE_DIR": str(box.root / "state"),
        PIDS_ENV: json.dumps(pids),
        SPAWNED_AT_ENV: repr(time.time()),
    }
    argv = [str(Path(__file__).resolve()), "--measure", str(rounds)]
    raw = run_child(argv, env, CHILD_DEADLINE_S, "the measuring process")
    return Measured(**(raw | {"rounds": [Round(**r) for r in raw["rounds"]]}))


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
    print(" called directly, the sum; the last columns: each system's own time. Round 1 is the")
    print(" process's first run: it also loads the AWS and Stripe client models, as every served")
    print(" run does in its own process)")
    print()
    print(f"Prefect start-up (empty flow runs)     {measured.startup_s:8.2f} s  (median)")
    print(f"Prefect + project import               {measured.import_s:8.2f} s  (not in any figure)")
    print(f"daily-health-check, median             {flow:8.2f} s")
    print(f"checks one after another, median sum   {sequential:8.2f} s")
    print(f"slowest single check, median           {slowest:8.2f} s  ({slowest_system})")
    print(f"ratio flow / one after another         {flow / sequential:8.2f}")
    print_cpu(rounds)
    print_without_heartbeats(measured, TARGET_FACTOR * slowest)
    ok = flow <= limit
    print(
        f"target flow <= {TARGET_FACTOR} x slowest + start-up: {flow:.2f} <= {limit:.2f}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def print_cpu(rounds: list[Round]) -> None:
    """Each process's CPU time in a flow run, and in the checks run one by one (this process)."""
    by_process = {
        name: statistics.median(r.flow_cpu_s[name] for r in rounds) for name in rounds[0].flow_cpu_s
    }
    total, cores = sum(by_process.values()), os.cpu_count() or 1
    print()
    print("CPU time during one daily-health-check run, median:")
    for name, seconds in sorted(by_process.items(), key=lambda item: -item[1]):
        print(f"  {name:<36} {seconds:8.2f} s")
    print(
        f"  {'all of them':<36} {total:8.2f} s  over {cores} cores: {total / cores:.2f} s at best"
    )
    checks = statistics.median(sum(r.per_system_cpu_s.values()) for r in rounds)
    print(
        f"  (the checks one by one took {checks:.2f} s of this process's CPU: in one interpreter "
        "their threads share it)"
    )


def print_without_heartbeats(measured: Measured, allowed_s: float) -> None:
    flow = statistics.median(measured.quiet_flow_s)
    own = flow - measured.quiet_startup_s
    print()
    print("Without Prefect's flow heartbeats (their thread is joined at its next 1 s tick):")
    print(f"  empty flow run, median                 {measured.quiet_startup_s:6.2f} s")
    print(f"  daily-health-check, median             {flow:6.2f} s")
    print(
        f"  its own cost over an empty run         {own:6.2f} s  ({TARGET_FACTOR} x slowest: "
        f"{allowed_s:.2f} s; for information, not the target)"
    )
    print()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="flow + one-by-one rounds")
    parser.add_argument("--dir", type=Path, help="a new sandbox dir (default: one in /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox dir at the end")
    parser.add_argument("--measure", type=int, metavar="ROUNDS", help=argparse.SUPPRESS)
    parser.set_defaults(reuse=False)  # run_in_sandbox's: this benchmark always builds its own
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.dir is not None and args.dir.exists():
        parser.error(f"{args.dir} exists: the benchmark builds its sandbox in a new directory")
    return args


def bench(box: Sandbox, args: argparse.Namespace) -> bool:
    prepare(box)
    log(f"measuring {args.rounds} rounds in one process")
    return report(measure_in_child(box, args.rounds))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        measure(args.measure)
        return 0
    return run_in_sandbox(args, bench)


if __name__ == "__main__":
    sys.exit(main())
