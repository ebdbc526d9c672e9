"""How recent the last backup and the last verification are.

``verify-backup`` keeps its last measurement (the real RTO) and its last failure in Prefect
Variables; the daily check reads them, and the repository's newest backup, here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.variables import Variable

from tasks.backups.base import BackupEngine
from tasks.core.errors import RunbookError
from tasks.core.reports import CheckResult, Status, first_failure
from tasks.core.retry import ops_task
from tasks.core.settings import PostgresThresholds
from tasks.core.units import human_bytes, human_duration
from tasks.postgres.verification import VerificationReport

SYSTEM = "postgres"  # the daily report lists these with the database checks
LAST_MEASUREMENT = "verify-backup-last"  # Prefect Variable: the last verification's RTO
LAST_FAILURE = "verify-backup-last-failure"  # Prefect Variable: the last failed verification


def age_s(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from ``moment`` to ``now``; None when ``moment`` is None."""
    return None if moment is None else (now - moment).total_seconds()


def _nothing_yet(name: str, status: Status, figure: str, detail: str, hint: str) -> CheckResult:
    return CheckResult(
        name=name, status=status, system=SYSTEM, figure=figure, detail=detail, hint=hint
    )


def _freshness(
    name: str, age_s: float, max_age_h: float, stale: Status, hint: str, **fields: Any
) -> CheckResult:
    """ok while ``age_s`` is within ``max_age_h``; else ``stale``, with ``hint``."""
    too_old = age_s > max_age_h * 3600
    return CheckResult(
        name=name,
        status=stale if too_old else "ok",
        system=SYSTEM,
        hint=hint if too_old else "",
        **fields,
    )


def check_last_backup(engine: BackupEngine, t: PostgresThresholds, now: datetime) -> CheckResult:
    """The ``last-backup`` check: fails when the newest backup is older than ``backup_max_age_h``.

    Also fails when the repository holds no backup. Metrics: ``last_backup_age_s`` (seconds),
    ``backups`` (count), ``last_backup_bytes`` (the newest one's database size, bytes).

    Raises:
        BackupError (RepositoryUnreachable: transient), or CommandError (pgBackRest missing or
        past its deadline), from ``engine.list_backups()``.
    """
    backups = engine.list_backups()
    if not backups:
        return _nothing_yet(
            "last-backup",
            "fail",
            "no backups",
            f"the {engine.name} repository holds no backup",
            "run take-backup/daily now and check why the schedule did not",
        )
    newest = max(backups, key=lambda b: b.stopped_at)
    age = (now - newest.stopped_at).total_seconds()
    return _freshness(
        "last-backup",
        age,
        t.backup_max_age_h,
        "fail",
        f"no backup in {t.backup_max_age_h:.0f} h: look at take-backup/daily's last runs and "
        "run it now",
        figure=f"{newest.kind.value} backup {human_duration(age)} old",
        detail=f"{newest.label} stopped {newest.stopped_at.isoformat(timespec='seconds')}, "
        f"{human_bytes(newest.size_bytes)}; {len(backups)} backups in the repository",
        metrics={
            "last_backup_age_s": age,
            "backups": float(len(backups)),
            "last_backup_bytes": float(newest.size_bytes),
        },
    )


def read_last_verification(name: str = LAST_MEASUREMENT) -> dict[str, Any] | None:
    """A Prefect Variable verify-backup writes: ``verify-backup-last`` on success (the default),
    ``verify-backup-last-failure`` on failure."""
    try:
        value = Variable.get(name)
    except Exception as exc:  # noqa: BLE001 - any API failure is "cannot tell", never a crash
        raise RunbookError(
            f"cannot read the Prefect Variable {name}: {type(exc).__name__}",
            hint="check that the Prefect API is reachable",
        ) from None
    return value if isinstance(value, dict) else None


def check_last_verification(
    last: dict[str, Any] | None,
    t: PostgresThresholds,
    now: datetime,
    failure: dict[str, Any] | None = None,
) -> CheckResult:
    """The ``last-verification`` check, from the Prefect Variables ``verify-backup`` writes.

    Args:
        last: the ``verify-backup-last`` record (``read_last_verification()``), or None.
        failure: the ``verify-backup-last-failure`` record, or None.
    Returns:
        fail when ``failure`` is newer than ``last``; warn when nothing was ever verified or the
        last success is older than ``verify_max_age_h``; else ok. Metrics:
        ``last_verification_age_s`` and ``restore_seconds`` (restore + promote, seconds).
    """
    failed_at = datetime.fromisoformat(str(failure["failed_at"])) if failure else None
    if failed_at and (last is None or failed_at > datetime.fromisoformat(str(last["measured_at"]))):
        assert failure is not None
        return CheckResult(
            name="last-verification",
            status="fail",
            figure=f"failed {human_duration((now - failed_at).total_seconds())} ago",
            detail=f"verify-backup of {failure.get('backup_label')} failed check "
            f"{failure.get('failed_check')!r}: {failure.get('detail')}",
            hint="the newest backup may not restore: open the failed verify-backup run, fix "
            "the cause, and take and verify a new backup",
        )
    if last is None:
        return _nothing_yet(
            "last-verification",
            "warn",
            "never verified",
            f"no successful verify-backup recorded (Variable {LAST_MEASUREMENT})",
            "run verify-backup/on-demand: an untested backup is not a backup",
        )
    age = (now - datetime.fromisoformat(str(last["measured_at"]))).total_seconds()
    rto = float(last.get("restore_seconds") or 0) + float(last.get("promote_seconds") or 0)
    return _freshness(
        "last-verification",
        age,
        t.verify_max_age_h,
        "warn",
        "verify-backup has not succeeded since: open its last runs for the failed check",
        figure=f"verified {human_duration(age)} ago",
        detail=f"backup {last.get('backup_label')} restored and verified; "
        f"restore+promote {rto:.1f} s",
        metrics={"last_verification_age_s": age, "restore_seconds": rto},
    )


@ops_task("record-restore-measurement", retries=2)
def record_restore_measurement(report: VerificationReport) -> None:
    """Keep the measured restore time (the real RTO) where later plans can read it."""
    if report.rto_seconds is None:
        return
    Variable.set(
        LAST_MEASUREMENT,
        {
            "backup_label": report.backup_label,
            "bytes_restored": report.bytes_restored,
            "restore_seconds": report.restore_seconds,
            "promote_seconds": report.promote_seconds,
            "measured_at": datetime.now(UTC).isoformat(),
        },
        overwrite=True,
    )


@ops_task("record-verification-failure", retries=2)
def record_verification_failure(report: VerificationReport) -> None:
    """Keep the last failed verification where the daily health check reads it."""
    failed = first_failure(report.checks)
    Variable.set(
        LAST_FAILURE,
        {
            "backup_label": report.backup_label,
            "failed_check": failed.name if failed else "",
            "detail": (failed.detail if failed else "")[:1000],
            "failed_at": datetime.now(UTC).isoformat(),
        },
        overwrite=True,
    )
