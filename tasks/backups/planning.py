"""Recovery planning: the recovery point, the backup set, the plan, and the result's shape.

Everything here validates and describes; nothing changes a cluster. Refusals are
``RefusedError`` with the reason and the fix, raised before any change.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from prefect.exceptions import ObjectNotFound
from prefect.variables import Variable
from pydantic import BaseModel, SecretStr

from tasks.backups.base import BackupEngine, BackupInfo, RecoveryTarget, RestoreWindow
from tasks.backups.freshness import LAST_MEASUREMENT
from tasks.core.approvals import ApprovalDecision
from tasks.core.errors import RefusedError
from tasks.core.reports import CheckResult, checks_list, first_failure
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import Settings
from tasks.postgres.cluster import is_data_directory
from tasks.postgres.scratch import ScratchCluster, restore_location
from tasks.postgres.sql import PostgresUnreachable, current_timeline, describe, system_identifier
from tasks.postgres.switchover import SwitchoverResult, require_same_filesystem

RecoveryKind = Literal["point-in-time recovery", "backup restoration"]
RecoveryOutcome = Literal["planned", "restored", "replaced"]


class RecoveryMode(StrEnum):
    """``side-by-side``: restore beside live and leave it alone; ``replace``: then switch over."""

    SIDE_BY_SIDE = "side-by-side"
    REPLACE = "replace"


def parse_target_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time with a UTC offset, not in the future; refused otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RefusedError(
            f"target_time {text!r} is not an ISO 8601 time",
            hint="write it like 2026-11-28T10:00:00+00:00",
        ) from None
    if moment.tzinfo is None:
        raise RefusedError(
            f"target_time {text!r} has no UTC offset, so it could mean any timezone",
            hint=f"add the offset, e.g. {text.strip()}+00:00",
        )
    if moment > (now or datetime.now(UTC)):
        raise RefusedError(
            f"target_time {moment.isoformat()} is in the future",
            hint="recover to a moment that has passed",
        )
    return moment


def choose_backup(backups: list[BackupInfo], window: RestoreWindow, target: datetime) -> BackupInfo:
    """The newest backup that stopped before ``target``; refuses targets outside the window."""
    if not window.contains(target):
        latest = window.latest.isoformat() if window.latest else "no archived commit yet"
        raise RefusedError(
            f"target {target.isoformat()} is outside the restorable window "
            f"{window.earliest.isoformat()} .. {latest}",
            hint="pick a time inside the window (before the last archived commit, after the "
            "oldest backup finished)",
        )
    candidates = [b for b in backups if b.stopped_at < target]
    if not candidates:
        raise RefusedError(
            f"no backup finished before {target.isoformat()}",
            hint=f"pick a time after {window.earliest.isoformat()}",
        )
    return candidates[-1]


class RecoveryPlan(BaseModel):
    """What a recovery will do, shown before anything happens and approved as shown."""

    kind: RecoveryKind
    mode: RecoveryMode
    backup: BackupInfo
    target: RecoveryTarget
    stanza: str
    restore_to: ScratchCluster
    expected_seconds: float | None
    expected_basis: str
    free_bytes: int
    live: str  # host:port/db of the live database
    live_data_dir: Path | None
    live_port: int | None
    live_system_id: int | None = None  # None: the live server could not be reached when planned

    @property
    def replaces(self) -> str:
        """What the recovery replaces, in words for the plan (nothing, for side-by-side)."""
        if self.mode is RecoveryMode.SIDE_BY_SIDE:
            return "nothing: the live cluster is not touched"
        return (
            f"the live cluster {self.live} (data directory `{self.live_data_dir}`): it is "
            f"stopped and its directory kept as `{self.live_data_dir}.replaced-<time>`, after a "
            "second approval showing the verification results"
        )

    def markdown(self) -> str:
        """The plan as markdown, as published and shown for approval (its sha256 is recorded).

        Sizes in MB and GB (10^6, 10^9 bytes); the expected duration in seconds.
        """
        target = "end of the backup" if self.target.type == "immediate" else self.target.value
        expected = f"~{self.expected_seconds:.0f} s" if self.expected_seconds else "unknown"
        items = [
            (
                "Backup set",
                f"`{self.backup.label}` ({self.backup.kind.value}, stopped "
                f"{self.backup.stopped_at.isoformat()}, {self.backup.size_bytes / 1e6:.0f} MB)",
            ),
            ("Recovery target", f"{self.target.type}: {target}"),
            ("Restores into", f"`{self.restore_to.data_dir}` on port {self.restore_to.port}"),
            ("Expected duration", f"{expected} ({self.expected_basis})"),
            ("Free disk there", f"{self.free_bytes / 1e9:.1f} GB"),
            ("Mode", self.mode.value),
            ("Replaces", self.replaces),
        ]
        # A list, not a table: it wraps inside the Prefect UI's resume dialog.
        return f"### Plan: {self.kind} of stanza {self.stanza}\n\n" + "\n".join(
            f"- **{label}:** {text}" for label, text in items
        )


def expected_duration(backup: BackupInfo) -> tuple[float | None, str]:
    """Restore time scaled from the last verify-backup measurement (the real RTO)."""
    try:
        measured = Variable.get(LAST_MEASUREMENT)
    except (ObjectNotFound, ValueError):
        measured = None
    if not isinstance(measured, dict) or not measured.get("bytes_restored"):
        return None, "no verify-backup measurement yet; run verify-backup to learn it"
    rate = measured["bytes_restored"] / max(measured["restore_seconds"], 1e-3)
    seconds = backup.size_bytes / rate + float(measured["promote_seconds"])
    return seconds, (
        f"verify-backup restored {measured['bytes_restored'] / 1e6:.0f} MB at "
        f"{rate / 1e6:.0f} MB/s on {measured['measured_at'][:16]}; WAL replay comes on top"
    )


def require_free_disk(root: Path, backup: BackupInfo, headroom: float) -> int:
    """Free bytes at ``root`` (or its nearest existing parent); refuses when it would not fit."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = int(backup.size_bytes * headroom)
    if free < needed:
        raise RefusedError(
            f"not enough free disk at {probe}: {free / 1e9:.2f} GB free, the restore of "
            f"{backup.label} needs {needed / 1e9:.2f} GB ({headroom:.1f} x its size)",
            hint="free space there or set RUNBOOK_RECOVERY_RESTORE_ROOT to a larger disk",
        )
    return free


def require_same_cluster(live: SecretStr, backup_system_id: int | None) -> None:
    """Refuse ``replace`` when the live cluster is not the one the backups come from."""
    try:
        actual = system_identifier(live)
    except PostgresUnreachable:
        return  # a live cluster that is down is what a restore is for; its directory is checked
    if backup_system_id is not None and actual != backup_system_id:
        raise RefusedError(
            f"the live database {describe(live)} has system identifier {actual}, but the "
            f"backups are of cluster {backup_system_id}",
            hint="RUNBOOK_PG_DSN or the stanza points at the wrong cluster; fix the settings",
        )


read_live_timeline = ops_task("read-live-timeline", retries=2)(current_timeline)


@ops_task("plan-recovery")
def plan_recovery(
    settings: Settings,
    kind: RecoveryKind,
    backup: BackupInfo,
    target: RecoveryTarget,
    mode: RecoveryMode,
) -> RecoveryPlan:
    """Build and check the plan: where it restores, how long, what it replaces. Changes nothing.

    Refuses ``replace`` without a configured live data directory or against another cluster,
    and any restore that would not fit on disk.
    """
    live = settings.live_dsn()
    data_dir = settings.postgres.data_dir
    if mode is RecoveryMode.REPLACE:
        if data_dir is None or not is_data_directory(data_dir):
            raise RefusedError(
                f"replace needs the live cluster's data directory; {data_dir} is not one",
                hint="set RUNBOOK_PG_DATA_DIR, or recover side-by-side",
            )
        require_same_cluster(live, backup.system_id)
    root = settings.recovery.restore_root or (data_dir.parent if data_dir else None)
    location = restore_location(settings, "pitr" if target.type == "time" else "restore", root)
    free = require_free_disk(location.root.parent, backup, settings.recovery.disk_headroom)
    if mode is RecoveryMode.REPLACE and data_dir is not None:
        require_same_filesystem(location.root.parent, data_dir.parent)
    seconds, basis = expected_duration(backup)
    return RecoveryPlan(
        kind=kind,
        mode=mode,
        backup=backup,
        target=target,
        stanza=settings.backup.stanza,
        restore_to=location,
        expected_seconds=seconds,
        expected_basis=basis,
        free_bytes=free,
        live=describe(live),
        live_data_dir=data_dir,
        live_port=urlsplit(live.get_secret_value()).port or 5432,
        live_system_id=_system_id_or_none(live),
    )


def _system_id_or_none(live: SecretStr) -> int | None:
    try:
        return system_identifier(live)
    except PostgresUnreachable:
        return None


class PlanChanged(RefusedError):
    """What a plan relied on changed while it waited for approval; nothing was changed."""


@ops_task("check-plan-again", retries=2)
def check_plan_again(settings: Settings, engine: BackupEngine, plan: RecoveryPlan) -> None:
    """After an approval, before acting: the plan still holds.

    The backup set is still in the repository, a time target is still inside the restorable
    window (on the planned timeline), the live server is still the cluster planned (system
    identifier), and for ``replace`` the live data directory is still a data directory.

    Raises:
        PlanChanged: naming each change; the run stops before acting.
    """
    changes = []
    labels = {b.label for b in engine.list_backups()}
    if plan.backup.label not in labels:
        changes.append(f"backup set {plan.backup.label} is no longer in the repository")
    elif plan.target.type == "time":
        moment = datetime.fromisoformat(str(plan.target.value))
        window = engine.restorable_window(plan.target.timeline)
        if not window.contains(moment):
            latest = window.latest.isoformat() if window.latest else "unknown"
            changes.append(
                f"target {moment.isoformat()} is no longer inside the restorable window "
                f"{window.earliest.isoformat()} .. {latest}"
            )
    live = settings.live_dsn()
    now = _system_id_or_none(live)
    if plan.live_system_id is not None and now is not None and now != plan.live_system_id:
        changes.append(
            f"the live database {describe(live)} is now cluster {now}, not {plan.live_system_id}"
        )
    if plan.mode is RecoveryMode.REPLACE and (
        plan.live_data_dir is None or not is_data_directory(plan.live_data_dir)
    ):
        changes.append(f"{plan.live_data_dir} is no longer a data directory")
    if changes:
        raise PlanChanged(
            "the plan changed while it waited for approval: "
            + "; ".join(changes)
            + "; nothing was changed",
            hint="start the recovery again: it plans against what is there now",
        )
    run_logger().info("Plan checked again after the approval: it still holds")


class RecoveryResult(BaseModel):
    """What a recovery did: the plan, the decisions, the restored cluster and its checks."""

    plan: RecoveryPlan
    outcome: RecoveryOutcome
    decisions: list[ApprovalDecision] = []
    restore_seconds: float | None = None
    promote_seconds: float | None = None
    checks: list[CheckResult] = []
    restored_dsn: str | None = None  # without the password: the live credentials apply
    switchover: SwitchoverResult | None = None

    @property
    def verified(self) -> bool:
        """True when checks ran and none failed."""
        return bool(self.checks) and first_failure(self.checks) is None

    def markdown(self) -> str:
        """The result as markdown (the ``recovery-result`` artifact), ending with the plan.

        It gives the restored DSN (no password) or the switchover, the restore and promote times
        (seconds), the checks table and each approval decision.
        """
        lines = [f"### {self.plan.kind.capitalize()}: {self.outcome}", ""]
        if self.restored_dsn and self.switchover is None:
            lines += [
                f"Restored cluster (side by side, live untouched): `{self.restored_dsn}` "
                f"(port {self.plan.restore_to.port}, data directory "
                f"`{self.plan.restore_to.data_dir}`), with the live credentials.",
                "",
            ]
        if self.switchover:
            lines += [
                f"Switchover done: the live port {self.switchover.port} serves the recovered "
                f"data from `{self.switchover.live_data_dir}`; the old data directory is kept at "
                f"`{self.switchover.kept_data_dir}` (rollback-switchover puts it back). "
                "Take a full backup now: the new timeline starts here.",
                "",
            ]
        if self.restore_seconds is not None and self.promote_seconds is not None:
            lines += [
                f"Restore {self.restore_seconds:.1f} s, recovery to promoted "
                f"{self.promote_seconds:.1f} s.",
                "",
            ]
        if self.checks:
            lines += [checks_list(self.checks), ""]
        lines += [d.summary() for d in self.decisions]
        return "\n".join(lines) + "\n\n" + self.plan.markdown()
