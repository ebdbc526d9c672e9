"""Restored copies and kept data directories: finding them, judging one for removal, removing it,
and reporting them in the daily check.

What recoveries create carries their mark (``tasks.postgres.ownership``): each restored copy's
directory (a side-by-side recovery's, a switchover that was undone's, an interrupted
verification's) and each data directory a switchover kept. They are looked for in the restore
roots (beside the live data directory, ``RUNBOOK_RECOVERY_RESTORE_ROOT``, the scratch directory);
nothing unmarked is ever listed, and nothing unmarked or live is ever removed.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tasks.core.durable import fsync_directory
from tasks.core.errors import RefusedError
from tasks.core.reports import CheckResult, markdown_table, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import Settings
from tasks.core.units import human_bytes, human_duration
from tasks.postgres.cluster import LocalCluster, find_bin_dir
from tasks.postgres.layout import read_layout
from tasks.postgres.ownership import OwnershipMark, read_mark
from tasks.postgres.sql import PostgresError
from tasks.postgres.switchover_journal import REPAIR_HINT, JournalUnreadable, load_journal

SYSTEM = "postgres"
DISCARD_HINT = (
    "run discard-restored-cluster/on-demand with path=<directory> for each one no longer "
    "needed (dry_run=true shows what it removes)"
)


class Leftover(BaseModel):
    """A marked directory: ``path`` is removed whole; a server may run from ``data_dir``."""

    path: Path
    data_dir: Path
    mark: OwnershipMark
    size_bytes: int
    server_pid: int | None
    server_port: int | None

    @property
    def age_s(self) -> float:
        """Seconds since the mark was made."""
        return (datetime.now(UTC) - self.mark.created_at).total_seconds()

    def describe(self) -> str:
        """One line: kind, path, size, age and whether a server runs there."""
        server = (
            f", server pid {self.server_pid} on port {self.server_port}" if self.server_pid else ""
        )
        return (
            f"{self.mark.kind} {self.path} ({human_bytes(self.size_bytes)}, "
            f"{human_duration(self.age_s)} old{server})"
        )


def leftover_roots(settings: Settings) -> list[Path]:
    """Where recoveries put what they create: beside the live data directory, the restore root,
    the scratch directory (those that are set, each once)."""
    data_dir = settings.postgres.data_dir
    roots = [data_dir.parent if data_dir else None, settings.recovery.restore_root]
    roots.append(settings.backup.scratch_dir)
    return list(dict.fromkeys(root.resolve() for root in roots if root is not None))


def leftover_at(path: Path) -> Leftover | None:
    """The marked directory ``path`` names (a restored copy's root or its ``data``, or a kept
    data directory); None when it carries no mark made for it there."""
    path = path.resolve()
    for unit in (path, path.parent):
        mark = read_mark(unit)
        if mark is None or not mark.matches(unit):
            continue
        data_dir = unit / "data" if mark.kind == "restored" else unit
        if unit == path or path == data_dir:
            pid, port = _postmaster(data_dir)
            return Leftover(
                path=unit,
                data_dir=data_dir,
                mark=mark,
                size_bytes=directory_size(unit),
                server_pid=pid,
                server_port=port,
            )
    return None


def find_leftovers(roots: list[Path]) -> list[Leftover]:
    """Every marked directory directly under ``roots``, oldest first."""
    found: dict[Path, Leftover] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for child in root.iterdir():
            leftover = leftover_at(child) if child.is_dir() and not child.is_symlink() else None
            if leftover is not None and leftover.path == child.resolve():
                found[leftover.path] = leftover
    return sorted(found.values(), key=lambda item: item.mark.created_at)


def directory_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symbolic links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # a running server removed it meanwhile
                continue
    return total


def _postmaster(data_dir: Path) -> tuple[int | None, int | None]:
    """(PID, port) of the postmaster running from ``data_dir``; (None, None) when none runs."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (OSError, IndexError, ValueError):
        return None, None
    return pid, port


class DiscardPlan(BaseModel):
    """What ``discard_leftover`` removes, as shown for approval; the binaries and OS user that
    stop a server running there."""

    leftover: Leftover
    live_data_dir: Path | None
    bin_dir: Path
    os_user: str | None

    def require_same_target(self, again: DiscardPlan) -> None:
        """Refuse when ``again`` (planned after the approval) names another directory or mark."""
        if again.leftover.path != self.leftover.path or again.leftover.mark != self.leftover.mark:
            raise RefusedError(
                f"{self.leftover.path} changed while waiting for approval; nothing was removed",
                hint="run discard-restored-cluster again and approve the plan it shows then",
            )

    def markdown(self) -> str:
        """The plan as markdown: what is removed, its size and age, and the server stopped."""
        item = self.leftover
        server = (
            f"stopped first (pid {item.server_pid}, port {item.server_port})"
            if item.server_pid
            else "none running"
        )
        rows = [
            ["removes", f"{item.path} and everything in it"],
            ["what it is", f"{item.mark.kind}: {item.mark.note}"],
            ["size", human_bytes(item.size_bytes)],
            ["made", f"{item.mark.created_at.isoformat()} ({human_duration(item.age_s)} ago)"],
            ["server", server],
            ["live data directory", f"{self.live_data_dir or 'not configured'} (never touched)"],
        ]
        return f"# Plan: discard {item.path}\n\n" + markdown_table(["", ""], rows)


@ops_task("plan-discard")
def plan_discard(path: Path, settings: Settings) -> DiscardPlan:
    """Judge ``path`` for removal; changes nothing.

    Raises:
        RefusedError: ``path`` is, holds or lies inside the live data directory; the server
            behind the DSN runs from it; it carries no mark made for it there; or a switchover
            of the live cluster is unfinished.
    """
    live_data_dir = settings.postgres.data_dir
    if live_data_dir is not None:
        journal = load_journal(live_data_dir)
        if journal is not None:
            raise RefusedError(
                f"a switchover of {live_data_dir} is unfinished: {journal.describe()}",
                hint=REPAIR_HINT + "; then discard",
            )
        _refuse_live(path.resolve(), live_data_dir.resolve(), "the live data directory")
    try:
        served = read_layout(settings.live_dsn()).data_directory
    except PostgresError:
        served = None  # a live server that is down serves nothing from anywhere
    if served is not None:
        _refuse_live(path.resolve(), served.resolve(), "the data directory the live server runs")
    leftover = leftover_at(path)
    if leftover is None:
        raise RefusedError(
            f"{path} is not a restored copy or kept data directory a recovery made (it carries "
            "no runbook-owner.json made for it there); refusing to remove it",
            hint="pass a restored copy's data directory or a kept data.replaced-* directory "
            "(the daily check lists them); remove anything else by hand",
        )
    if served is not None:
        _refuse_live(leftover.data_dir, served.resolve(), "the data directory the live server runs")
    return DiscardPlan(
        leftover=leftover,
        live_data_dir=live_data_dir,
        bin_dir=find_bin_dir(settings.postgres.bin_dir),
        os_user=settings.postgres.os_user,
    )


def _refuse_live(path: Path, live: Path, what: str) -> None:
    if path == live or path in live.parents or live in path.parents:
        raise RefusedError(
            f"{path} is, holds or lies inside {what} ({live}); refusing to remove it",
            hint="discard only restored copies and kept data directories",
        )


class DiscardResult(BaseModel):
    """A discard: the plan, and whether it was carried out (``discarded``) or only shown."""

    plan: DiscardPlan
    outcome: Literal["planned", "discarded"]


@ops_task("discard-leftover")
def discard_leftover(plan: DiscardPlan) -> DiscardResult:
    """Stop the server running from the planned directory, if any, and remove the directory."""
    item = plan.leftover
    if item.server_pid is not None:
        server = LocalCluster(item.data_dir, item.server_port or 0, plan.bin_dir, plan.os_user)
        server.stop(mode="immediate")
    shutil.rmtree(item.path)
    fsync_directory(item.path.parent)
    run_logger().info("Discarded %s (%s)", item.path, human_bytes(item.size_bytes))
    return DiscardResult(plan=plan, outcome="discarded")


# -- the daily check ---------------------------------------------------------------------------


def check_leftovers(roots: list[Path]) -> CheckResult:
    """The ``restored-copies`` check: warns while restored copies or kept data directories
    remain; metrics ``leftovers`` (count), ``leftover_bytes``, ``oldest_leftover_age_s``."""
    leftovers = find_leftovers(roots)
    if not leftovers:
        return CheckResult(
            name="restored-copies",
            status="ok",
            system=SYSTEM,
            figure="none",
            detail=f"no restored copies or kept data directories in {', '.join(map(str, roots))}",
            metrics={"leftovers": 0.0, "leftover_bytes": 0.0, "oldest_leftover_age_s": 0.0},
        )
    size = sum(item.size_bytes for item in leftovers)
    oldest = max(item.age_s for item in leftovers)
    return CheckResult(
        name="restored-copies",
        status="warn",
        system=SYSTEM,
        figure=f"{len(leftovers)} using {human_bytes(size)}, oldest {human_duration(oldest)}",
        detail="; ".join(item.describe() for item in leftovers),
        hint=DISCARD_HINT,
        metrics={
            "leftovers": float(len(leftovers)),
            "leftover_bytes": float(size),
            "oldest_leftover_age_s": oldest,
        },
    )


def check_switchover_journal(live_data_dir: Path | None) -> CheckResult:
    """The ``switchover`` check: fails when a switchover's journal is left by a process that is
    gone (live may be down or half switched); warns while one runs."""
    if live_data_dir is None:
        return CheckResult(
            name="switchover",
            status="skipped",
            system=SYSTEM,
            detail="not configured",
            hint="set RUNBOOK_PG_DATA_DIR to look for interrupted switchovers",
        )
    try:
        journal = load_journal(live_data_dir)
    except JournalUnreadable as exc:
        return CheckResult(
            name="switchover", status="fail", system=SYSTEM, detail=exc.message, hint=exc.hint
        )
    if journal is None:
        return CheckResult(name="switchover", status="ok", system=SYSTEM, figure="none unfinished")
    if journal.process_alive():
        return CheckResult(
            name="switchover",
            status="warn",
            system=SYSTEM,
            figure=f"running, at step {journal.step}",
            detail=journal.describe(),
            hint="a switchover is running; if it does not end, look at its flow run",
        )
    return CheckResult(
        name="switchover",
        status="fail",
        system=SYSTEM,
        figure=f"interrupted at step {journal.step}",
        detail=journal.describe(),
        hint=REPAIR_HINT,
    )


@ops_task("run-restored-copy-checks")
def run_restored_copy_checks(live_data_dir: Path | None, roots: list[Path]) -> list[CheckResult]:
    """The daily check's view of what recoveries left: an unfinished switchover, and restored
    copies and kept data directories not yet discarded."""
    return [
        timed_check("switchover", lambda: check_switchover_journal(live_data_dir), system=SYSTEM),
        timed_check("restored-copies", lambda: check_leftovers(roots), system=SYSTEM),
    ]
