"""Proof that a restored cluster holds good data: every check runs and reports, none hides another.

Checks: recovery reached consistency (server log), ``amcheck`` on every btree index, row counts
against the live database within a tolerance, and the Great Expectations suite.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr

from tasks.backups.base import BackupKind, RecoveryTarget
from tasks.core.reports import CheckResult, Status, checks_table, first_failure, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import TableCheck
from tasks.postgres.quality import run_table_suite
from tasks.postgres.sql import PostgresUnreachable, amcheck_btree_indexes, fetch_value, row_counts

CONSISTENT_MARKER = "consistent recovery state reached"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def check_consistency(server_log: str) -> CheckResult:
    """The ``consistency`` check: fails unless the server log says consistency was reached."""
    ok = CONSISTENT_MARKER in server_log
    return CheckResult(
        name="consistency",
        status="ok" if ok else "fail",
        detail="server log: consistent recovery state reached"
        if ok
        else "the server log does not say recovery reached a consistent state",
        hint="" if ok else "the backup or its WAL is incomplete; read the server log",
    )


def check_amcheck(dsn: SecretStr) -> CheckResult:
    """The ``amcheck`` check: ``bt_index_check`` on every valid btree index; fails on corruption.

    Creates the amcheck extension if absent: for restored or scratch clusters only.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    result = amcheck_btree_indexes(dsn)
    if result.corrupt:
        return CheckResult(
            name="amcheck",
            status="fail",
            detail=f"{len(result.corrupt)} of {result.indexes_checked} btree indexes corrupt: "
            + "; ".join(result.corrupt[:5]),
            hint="the backup holds corrupt indexes; use an older backup and REINDEX on live",
        )
    return CheckResult(
        name="amcheck", status="ok", detail=f"{result.indexes_checked} btree indexes checked"
    )


def check_row_counts(
    restored: SecretStr,
    live: SecretStr,
    tables: list[TableCheck],
    tolerance: float,
    mismatch: Status = "fail",
) -> CheckResult:
    """Row counts restored vs live; ``mismatch`` is the status of a difference past tolerance
    (a point-in-time recovery differs from live on purpose: there it is a warning to read)."""
    if not tables:
        return CheckResult(
            name="row-counts",
            status="skipped",
            detail="no tables configured",
            hint="set RUNBOOK_PG_TABLES or [postgres].tables",
        )
    names = [t.name for t in tables]
    got = row_counts(restored, names)
    try:
        want = row_counts(live, names)
    except PostgresUnreachable as exc:
        return CheckResult(
            name="row-counts",
            status="warn",
            detail=f"restored: {_counts(got)}; live not compared: {exc.message}",
            hint="compare by hand once the live database is back",
        )
    off = [
        f"{name}: {got[name]} restored vs {want[name]} live"
        for name in names
        if abs(got[name] - want[name]) > tolerance * max(want[name], 1)
    ]
    if off:
        return CheckResult(
            name="row-counts",
            status=mismatch,
            detail=f"outside {tolerance:.0%} of live: " + "; ".join(off),
            hint="rows are missing from the backup, or live changed more than the tolerance"
            if mismatch == "fail"
            else "expected when recovering to an earlier time: check these are the rows you want",
        )
    return CheckResult(
        name="row-counts", status="ok", detail=f"within {tolerance:.0%} of live: {_counts(got)}"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in counts.items())


STOP_MARKERS = ("recovery stopping before", "recovery stopping after")


def check_recovery_target(dsn: SecretStr, server_log: str, target: RecoveryTarget) -> CheckResult:
    """Recovery stopped where asked: the log says so and no later commit was replayed."""
    stopped = [line for line in server_log.splitlines() if any(m in line for m in STOP_MARKERS)]
    if target.type != "time":
        ok = bool(stopped) or CONSISTENT_MARKER in server_log
        return CheckResult(
            name="recovery-target",
            status="ok" if ok else "fail",
            detail=stopped[-1].split("LOG:")[-1].strip() if stopped else "reached consistency",
            hint="" if ok else "the server log shows no recovery stop; read it",
        )
    wanted = datetime.fromisoformat(str(target.value))
    replayed = fetch_value(dsn, "SELECT pg_last_xact_replay_timestamp()")
    last = replayed if isinstance(replayed, datetime) else None
    ok = bool(stopped) and (last is None or last <= wanted)
    return CheckResult(
        name="recovery-target",
        status="ok" if ok else "fail",
        figure=last.isoformat() if last else "",
        detail=(
            f"last replayed commit {last.isoformat() if last else 'none'} <= target "
            f"{wanted.isoformat()}; "
            + (
                stopped[-1].split("LOG:")[-1].strip()
                if stopped
                else "no 'recovery stopping' line in the log"
            )
        ),
        hint="" if ok else "recovery did not stop at the target: do not use this cluster",
    )


def check_expectations(dsn: SecretStr, tables: list[TableCheck]) -> CheckResult:
    """The ``expectations`` check: the Great Expectations suite on ``tables`` (skipped if none).

    Raises:
        DataQualityError: GX could not run. ValueError: a table is listed twice.
    """
    if not tables:
        return CheckResult(
            name="expectations",
            status="skipped",
            detail="no tables configured",
            hint="set RUNBOOK_PG_TABLES or [postgres].tables",
        )
    outcome = run_table_suite(dsn, tables)
    failures = outcome.failures()
    if failures:
        return CheckResult(
            name="expectations",
            status="fail",
            detail="; ".join(
                f"{f.table}.{f.column or '*'} {f.expectation}: {f.observed}" for f in failures[:5]
            ),
            hint="the restored data breaks the configured expectations",
        )
    return CheckResult(
        name="expectations", status="ok", detail=f"{len(outcome.outcomes)} expectations met"
    )


@ops_task("verify-restored-cluster")
def verify_restored_cluster(
    restored: SecretStr,
    live: SecretStr,
    server_log: Path,
    tables: list[TableCheck],
    tolerance: float,
    target: RecoveryTarget | None = None,
    row_count_mismatch: Status = "fail",
) -> list[CheckResult]:
    """Run every check on the restored cluster and return all results.

    With ``target``, also that recovery stopped there (point-in-time recovery).
    """
    logger = run_logger()
    log = _read(server_log)
    checks = [timed_check("consistency", lambda: check_consistency(log))]
    if target is not None:
        checks.append(
            timed_check("recovery-target", lambda: check_recovery_target(restored, log, target))
        )
    checks += [
        timed_check("amcheck", lambda: check_amcheck(restored)),
        timed_check(
            "row-counts",
            lambda: check_row_counts(restored, live, tables, tolerance, row_count_mismatch),
        ),
        timed_check("expectations", lambda: check_expectations(restored, tables)),
    ]
    for check in checks:
        logger.info("Check %s: %s (%s)", check.name, check.status, check.detail)
    return checks


class VerificationReport(BaseModel):
    """What one restore-and-verify measured and found."""

    backup_label: str
    backup_kind: BackupKind
    restore_seconds: float | None = None
    promote_seconds: float | None = None
    bytes_restored: int = 0
    checks: list[CheckResult]
    scratch_removed: bool = False

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings and skipped checks pass)."""
        return all(not c.failed for c in self.checks)

    @property
    def rto_seconds(self) -> float | None:
        """Restore plus promote time in seconds: the measured RTO (None until both are known)."""
        if self.restore_seconds is None or self.promote_seconds is None:
            return None
        return self.restore_seconds + self.promote_seconds

    @property
    def throughput_mb_s(self) -> float | None:
        """Restore throughput in MB/s: ``bytes_restored`` (10^6 bytes) per restore second."""
        if not self.restore_seconds:
            return None
        return self.bytes_restored / 1e6 / self.restore_seconds

    def summary(self) -> str:
        """One line: the backup, PASSED or FAILED (first failed check), RTO (s) and throughput."""
        verdict = "PASSED" if self.passed else f"FAILED ({first_failure(self.checks).name})"  # type: ignore[union-attr]
        rto = f"{self.rto_seconds:.1f} s" if self.rto_seconds is not None else "n/a"
        mbs = f"{self.throughput_mb_s:.0f} MB/s" if self.throughput_mb_s else "n/a"
        return f"backup {self.backup_label}: {verdict}; restore+promote {rto}; throughput {mbs}"

    def markdown(self) -> str:
        """The report as markdown: a heading, the summary line and the checks table."""
        return f"# Backup verification\n\n{self.summary()}\n\n{checks_table(self.checks)}\n"
