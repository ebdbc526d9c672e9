"""Benchmark: the ``verify-backup`` flow against a bare pgBackRest restore of the same backup.

On a sandbox (PostgreSQL 15 + pgBackRest) filled with ``pgbench -i -s SCALE`` (scale 100 is
about 1.5 GB) and one full backup, each pair runs, alternately:

* bare: ``pgbackrest restore`` (2 processes, the options the flow uses) into a new directory,
  then ``pg_ctl start`` and a wait until ``pg_is_in_recovery()`` is false, by hand;
* flow: ``verify_backup(backup_label=...)`` against the sandbox's running Prefect server, in a
  child process (Prefect reads its settings at import); the wall time is taken around the call
  only, the child's startup (interpreter, imports) is reported apart. The checks (consistency,
  amcheck, row counts, Great Expectations) also cover the pgbench tables; their own time is
  reported apart.

It prints a row per pair, the medians, the ratios flow/bare, restore throughput, and whether
the target holds: flow time without the checks <= 1.1 x bare + 3 s.

Run from the repository root::

    .venv/bin/python bench/verify_backup.py                     # scale 100, 3 pairs
    .venv/bin/python bench/verify_backup.py --scale 5 --pairs 1 # quick
    .venv/bin/python bench/verify_backup.py --dir /var/tmp/vb --keep   # then, to iterate:
    .venv/bin/python bench/verify_backup.py --dir /var/tmp/vb --reuse
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from sandbox.platform import OS_USER, STANZA, TABLES, Sandbox
from tasks.backups.base import BackupKind
from tasks.backups.pgbackrest import PgBackRest
from tasks.core.process import effective_user, run_command
from tasks.core.settings import SandboxSettings
from tasks.postgres.cluster import LocalCluster, free_port, make_owned_dir
from tasks.postgres.sql import fetch_value, wait_until_promoted, with_port

PROCESS_MAX = 2
PHASES = ("restore", "promote")  # report entries that are phases; every other one is a check
STATE_FILE = "bench-state.json"
RESULT_PREFIX = "BENCH-RESULT "
SPAWNED_AT_ENV = "BENCH_SPAWNED_AT"
BACKUP_DEADLINE_S = 3600
RESTORE_DEADLINE_S = 1800
PROMOTE_DEADLINE_S = 600
FLOW_DEADLINE_S = 3600
TARGET_FACTOR, TARGET_SLACK_S = 1.1, 3.0


def log(message: str) -> None:
    print(f"{datetime.now():%H:%M:%S.%f}"[:-3] + f"  {message}", flush=True)


@dataclass(frozen=True)
class Prepared:
    """The backup every pair restores."""

    label: str
    size_bytes: int
    scale: int


@dataclass(frozen=True)
class BareRun:
    restore_s: float
    promote_s: float
    teardown_s: float  # stop and remove: not part of the bare time, shown for comparison

    @property
    def total_s(self) -> float:
        return self.restore_s + self.promote_s


@dataclass(frozen=True)
class FlowRun:
    wall_s: float
    restore_s: float
    promote_s: float
    checks_s: float
    startup_s: float  # from spawning the child to the call: interpreter, Prefect, the flow
    bytes_restored: int
    per_check_s: dict[str, float]

    @property
    def without_checks_s(self) -> float:
        return self.wall_s - self.checks_s


# -- the sandbox and its data --------------------------------------------------------------------


def engine_for(box: Sandbox) -> PgBackRest:
    return PgBackRest(
        stanza=STANZA,
        config=box.pgbackrest_conf,
        bin_dir=box.cluster().bin_dir,
        os_user=OS_USER,
        process_max=PROCESS_MAX,
        backup_deadline_s=BACKUP_DEADLINE_S,
        restore_deadline_s=RESTORE_DEADLINE_S,
    )


def live_dsn(box: Sandbox) -> SecretStr:
    dsn = box.dsn()
    if dsn is None:
        raise RuntimeError(f"sandbox {box.root} has no settings file")
    return dsn


def bench_tables(scale: int) -> list[dict[str, Any]]:
    """The sandbox's tables plus the pgbench ones, so the checks cover the big data."""
    return [
        *TABLES,
        {"name": "pgbench_branches", "key_columns": ["bid"], "min_rows": scale},
        {"name": "pgbench_tellers", "key_columns": ["tid"], "min_rows": 10 * scale},
        {"name": "pgbench_accounts", "key_columns": ["aid"], "min_rows": 100_000 * scale},
    ]


def generate_data(box: Sandbox, scale: int) -> None:
    """``pgbench -i -s scale`` (logged tables) as the postgres OS user, password in the env."""
    parts = urlsplit(live_dsn(box).get_secret_value())
    argv: list[str | Path] = [
        box.cluster().bin_dir / "pgbench",
        "-i",
        "-q",
        "-s",
        str(scale),
        "-h",
        "127.0.0.1",
        "-p",
        str(parts.port),
        "-U",
        unquote(parts.username or "postgres"),
        parts.path.lstrip("/"),
    ]
    run_command(
        argv,
        timeout=600 + 10 * scale,
        user=effective_user(OS_USER),
        env={"PGPASSWORD": unquote(parts.password or "")},
        what="pgbench -i",
    )


def database_mb(box: Sandbox) -> float:
    size = fetch_value(live_dsn(box), "SELECT pg_database_size(current_database())")
    return int(str(size)) / 1e6


def read_state(root: Path) -> dict[str, Any]:
    path = root / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(root: Path, **values: Any) -> None:
    (root / STATE_FILE).write_text(json.dumps(read_state(root) | values) + "\n")


def sandbox_in(root: Path, reuse: bool) -> Sandbox:
    """A sandbox in ``root``: on the PostgreSQL port it was made with when reused."""
    state = read_state(root) if reuse else {}
    if reuse and "label" not in state:
        raise SystemExit(f"{root} holds no generated data: run once with --dir {root} --keep")
    pg_port = state.get("pg_port") or free_port()
    return Sandbox(SandboxSettings(dir=root, pg_port=pg_port, prefect_port=free_port()))


def prepare(box: Sandbox, scale: int, reuse: bool) -> Prepared:
    """Generate the data and take one full backup, or read what an earlier run left."""
    if reuse:
        state = read_state(box.root)
        log(f"reusing backup {state['label']} (scale {state['scale']}) in {box.root}")
        return Prepared(state["label"], state["size_bytes"], state["scale"])
    log(f"generating data: pgbench -i -s {scale}")
    started = time.monotonic()
    generate_data(box, scale)
    log(f"generated {database_mb(box):.0f} MB in {time.monotonic() - started:.0f} s")
    log("taking a full backup")
    started = time.monotonic()
    backup = engine_for(box).take_backup(BackupKind.FULL)
    log(
        f"backup {backup.label}: {backup.size_bytes / 1e6:.0f} MB "
        f"({backup.repo_size_bytes / 1e6:.0f} MB in the repo) in {time.monotonic() - started:.0f} s"
    )
    write_state(box.root, label=backup.label, size_bytes=backup.size_bytes, scale=scale)
    return Prepared(backup.label, backup.size_bytes, scale)


# -- one bare run and one flow run ---------------------------------------------------------------


def bare_restore_argv(engine: PgBackRest, destination: Path, label: str) -> list[str]:
    """What ``PgBackRest.restore`` runs for an immediate target without archiving."""
    return engine.command(
        "restore",
        f"--pg1-path={destination}",
        f"--set={label}",
        f"--process-max={PROCESS_MAX}",
        "--type=immediate",
        "--target-action=promote",
        "--archive-mode=off",
    )


def run_bare(box: Sandbox, prepared: Prepared, index: int) -> BareRun:
    """Restore with the CLI, start with pg_ctl, wait until promoted; then remove it all."""
    root = box.root / "scratch" / f"bare-{index}"
    make_owned_dir(root.parent, OS_USER, mode=0o711)
    make_owned_dir(root, OS_USER)  # the server log goes beside the data directory
    make_owned_dir(root / "data", OS_USER)
    cluster = LocalCluster(root / "data", free_port(), box.cluster().bin_dir, OS_USER)
    argv = bare_restore_argv(engine_for(box), cluster.data_dir, prepared.label)
    try:
        restore_s, promote_s = restore_and_promote(argv, cluster, live_dsn(box))
    finally:
        stopping = time.monotonic()
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    return BareRun(restore_s, promote_s, time.monotonic() - stopping)


def restore_and_promote(
    argv: list[str], cluster: LocalCluster, dsn: SecretStr
) -> tuple[float, float]:
    """The bare path proper; returns (restore seconds, start-to-promoted seconds)."""
    started = time.monotonic()
    run_command(argv, timeout=RESTORE_DEADLINE_S, user=effective_user(OS_USER), what="bare restore")
    restored = time.monotonic()
    cluster.start(timeout=PROMOTE_DEADLINE_S, wait=False, settings={"archive_mode": "off"})
    wait_until_promoted(
        with_port(dsn, cluster.port),
        deadline_s=PROMOTE_DEADLINE_S,
        server_alive=cluster.process_alive,
    )
    return restored - started, time.monotonic() - restored


def run_flow(box: Sandbox, prepared: Prepared) -> FlowRun:
    """One ``verify_backup`` call in a child process talking to the sandbox's Prefect server."""
    env = {
        **os.environ,
        **box.prefect_env(),
        "RUNBOOK_PG_TABLES": json.dumps(bench_tables(prepared.scale)),
        SPAWNED_AT_ENV: repr(time.time()),
    }
    argv = [str(Path(__file__).resolve()), "--flow-once", prepared.label]
    return FlowRun(**run_child(argv, env, FLOW_DEADLINE_S, "the flow run"))


def child_result(returncode: int, output: str, what: str) -> Any:
    """The JSON a measuring child printed last after ``RESULT_PREFIX``; when it failed, a
    RuntimeError naming ``what``, with the end of its output."""
    lines = [ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)]
    if returncode != 0 or not lines:
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {returncode}):\n{tail}")
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def run_child(argv: list[str], env: dict[str, str], timeout_s: float, what: str) -> Any:
    """``python argv...`` in a new process, waited for; its ``child_result``."""
    proc = subprocess.run(
        [sys.executable, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return child_result(proc.returncode, proc.stderr + proc.stdout, what)


def flow_once(label: str) -> None:
    """Child side of ``run_flow``: import, call the flow, print what it measured."""
    from flows.recovery.verify_backup import verify_backup

    startup_s = time.time() - float(os.environ[SPAWNED_AT_ENV])
    calling = time.monotonic()
    report = verify_backup(backup_label=label)
    finished = time.monotonic()
    per_check = {c.name: c.seconds for c in report.checks if c.name not in PHASES}
    result = FlowRun(
        wall_s=finished - calling,
        restore_s=report.restore_seconds or 0.0,
        promote_s=report.promote_seconds or 0.0,
        checks_s=sum(per_check.values()),
        startup_s=startup_s,
        bytes_restored=report.bytes_restored,
        per_check_s=per_check,
    )
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)


# -- the report ----------------------------------------------------------------------------------


def print_pairs(pairs: Sequence[tuple[BareRun, FlowRun]]) -> None:
    print()
    print(
        f"{'pair':>4} | {'bare':>7} {'restore':>7} {'promote':>7} | {'flow':>7} {'restore':>7}"
        f" {'promote':>7} {'checks':>7} {'-checks':>7} {'startup':>7}"
    )
    for i, (bare, flow) in enumerate(pairs, 1):
        print(
            f"{i:>4} | {bare.total_s:7.2f} {bare.restore_s:7.2f} {bare.promote_s:7.2f} |"
            f" {flow.wall_s:7.2f} {flow.restore_s:7.2f} {flow.promote_s:7.2f}"
            f" {flow.checks_s:7.2f} {flow.without_checks_s:7.2f} {flow.startup_s:7.2f}"
        )
    print("(seconds; flow: wall time of the call; -checks: flow minus the checks' own time;")
    print(" startup: from spawning the flow's process to the call, not part of flow)")


def print_summary(pairs: Sequence[tuple[BareRun, FlowRun]], size_bytes: int) -> bool:
    """Print medians, ratios, throughput and the verdict; True when the target holds."""
    bares, flows = [b for b, _ in pairs], [f for _, f in pairs]
    bare = statistics.median(b.total_s for b in bares)
    flow = statistics.median(f.wall_s for f in flows)
    lean = statistics.median(f.without_checks_s for f in flows)
    checks = statistics.median(f.checks_s for f in flows)
    bare_restore = statistics.median(b.restore_s for b in bares)
    flow_restore = statistics.median(f.restore_s for f in flows)
    other = statistics.median(f.without_checks_s - f.restore_s - f.promote_s for f in flows)
    teardown = statistics.median(b.teardown_s for b in bares)
    names = dict.fromkeys(name for f in flows for name in f.per_check_s)
    per_check = ", ".join(
        f"{name} {statistics.median(f.per_check_s.get(name, 0.0) for f in flows):.2f}"
        for name in names
    )
    limit = TARGET_FACTOR * bare + TARGET_SLACK_S
    mb = size_bytes / 1e6
    print()
    print(f"bare median (restore + promote)   {bare:8.2f} s")
    print(f"flow median                       {flow:8.2f} s")
    print(f"flow without checks, median       {lean:8.2f} s")
    print(f"checks median                     {checks:8.2f} s  ({per_check})")
    print(f"flow minus restore, promote, checks {other:6.2f} s  (Prefect, teardown, info calls)")
    print(f"bare teardown (stop + rm), median {teardown:8.2f} s  (not in the bare time)")
    print(f"ratio flow/bare                   {flow / bare:8.2f}")
    print(f"ratio (flow - checks)/bare        {lean / bare:8.2f}")
    print(
        f"restore throughput ({mb:.0f} MB)   bare {mb / bare_restore:.0f} MB/s,"
        f" flow {mb / flow_restore:.0f} MB/s"
    )
    ok = lean <= limit
    print(
        f"target flow without checks <= {TARGET_FACTOR} x bare + {TARGET_SLACK_S:.0f} s:"
        f" {lean:.2f} <= {limit:.2f}: {'PASS' if ok else 'FAIL'}"
    )
    return ok


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100 = 1.5 GB)")
    parser.add_argument("--pairs", type=int, default=3, help="bare/flow pairs (median of them)")
    parser.add_argument("--dir", type=Path, help="sandbox dir (default: a new one in /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox dir at the end")
    parser.add_argument("--reuse", action="store_true", help="reuse --dir's data and backup")
    parser.add_argument("--flow-once", metavar="LABEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reuse and args.dir is None:
        parser.error("--reuse needs --dir")
    if args.scale < 1 or args.pairs < 1:
        parser.error("--scale and --pairs must be at least 1")
    return args


def start_sandbox(box: Sandbox, args: argparse.Namespace) -> Prepared:
    """Start the sandbox, remember its port for ``--reuse``, generate data and back it up."""
    log("starting the sandbox")
    box.up()
    write_state(box.root, pg_port=box.settings.pg_port)
    return prepare(box, args.scale, args.reuse)


def bench(box: Sandbox, args: argparse.Namespace) -> bool:
    prepared = start_sandbox(box, args)
    log(f"starting the Prefect server: {box.start_prefect_server()}")
    pairs: list[tuple[BareRun, FlowRun]] = []
    for i in range(1, args.pairs + 1):
        log(f"pair {i}: bare")
        bare = run_bare(box, prepared, i)
        log(f"pair {i}: bare {bare.total_s:.2f} s; flow")
        flow = run_flow(box, prepared)
        log(f"pair {i}: flow {flow.wall_s:.2f} s ({flow.checks_s:.2f} s of checks)")
        pairs.append((bare, flow))
    print_pairs(pairs)
    return print_summary(pairs, prepared.size_bytes)


def run_in_sandbox(
    args: argparse.Namespace,
    measure: Callable[[Sandbox, argparse.Namespace], bool],
    cleanup: Callable[[Sandbox], None] = lambda box: None,
) -> int:
    """Run ``measure`` in the sandbox ``args`` name (or a new one); always stop it, then run
    ``cleanup`` and remove a sandbox made here unless ``--keep``. Exit code 0 on target met."""
    created = args.dir is None or not args.dir.exists()
    root = args.dir or Path(tempfile.mkdtemp(prefix="runbook-bench-", dir="/var/tmp"))  # noqa: S108
    log(f"sandbox in {root}")
    box = sandbox_in(root, args.reuse)
    try:
        return 0 if measure(box, args) else 1
    finally:
        log("stopping the sandbox")
        try:
            box.down()
        finally:
            cleanup(box)
            if created and not args.keep:
                shutil.rmtree(root, ignore_errors=True)
                log(f"removed {root}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.flow_once:
        flow_once(args.flow_once)
        return 0
    return run_in_sandbox(args, bench)


if __name__ == "__main__":
    sys.exit(main())
