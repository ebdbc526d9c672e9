"""Proof that a restored cluster holds good data: every check runs and reports, none hides another.

Checks: recovery reached consistency and stopped where asked, ``amcheck`` on every btree index,
row counts against the live database within a tolerance, and the Great Expectations suite.

Where recovery ended is read from SQL and the data directory, never from the server log, whose
place, level and language are the live cluster's settings (``logging_collector``,
``log_min_messages``, ``lc_messages``): ``pg_is_in_recovery()``, ``pg_control_recovery()``
(the control file: whether the backup's end was reached), ``pg_last_xact_replay_timestamp()``,
and the new timeline's history file, whose last line records where and why recovery stopped
(PostgreSQL writes it in English whatever ``lc_messages`` says).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr

from tasks.backups.base import BackupKind, RecoveryTarget
from tasks.core.reports import CheckResult, Status, checks_table, first_failure, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import TableCheck
from tasks.postgres.cluster import data_dir_of_log
from tasks.postgres.quality import run_table_suite
from tasks.postgres.sql import (
    STATEMENT_TIMEOUT_MS,
    PostgresUnreachable,
    amcheck_btree_indexes,
    connect,
    row_counts,
)
from tasks.postgres.wal import TimelineSwitch, WalError, parse_history

# The reason a time target stopped recovery, as the history file records it.
_TIME_STOP_RE = re.compile(r"^(before|after) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S*)$")


class RecoveryEnd(BaseModel):
    """Where a restored cluster's recovery ended, read from SQL and its data directory.

    ``backup_end_reached``: the control file no longer waits for the backup's end (its backup
    end LSN is cleared and no end-of-backup record is required). ``stop``: the last line of the
    current timeline's history file (None when there is none: not promoted by recovery), or the
    reason it could not be read in ``history_error``.
    """

    in_recovery: bool
    timeline: int | None
    backup_end_reached: bool
    last_replayed: datetime | None
    stop: TimelineSwitch | None
    history_error: str = ""


def read_recovery_end(dsn: SecretStr, data_dir: Path) -> RecoveryEnd:
    """Read where the restored cluster at ``dsn`` (data directory ``data_dir``) ended recovery.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(),"
            " CASE WHEN NOT pg_is_in_recovery()"
            "  THEN substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,"
            " r.backup_end_lsn = '0/0' AND NOT r.end_of_backup_record_required,"
            " pg_last_xact_replay_timestamp()"
            " FROM pg_control_recovery() r"
        ).fetchone()
    assert row is not None  # pg_control_recovery() has exactly one row
    in_recovery, timeline_hex, backup_end_reached, last_replayed = row
    timeline = int(timeline_hex, 16) if timeline_hex else None
    stop, error = None, ""
    if timeline is not None and timeline > 1:
        history = data_dir / "pg_wal" / f"{timeline:08X}.history"
        try:
            switches = parse_history(history.read_text())
            stop = switches[-1] if switches else None
        except (OSError, WalError) as exc:
            error = f"{history.name}: {exc}"
    elif timeline == 1:
        error = "still on timeline 1: recovery never promoted it"
    return RecoveryEnd(
        in_recovery=bool(in_recovery),
        timeline=timeline,
        backup_end_reached=bool(backup_end_reached),
        last_replayed=last_replayed,
        stop=stop,
        history_error=error,
    )


def check_consistency(end: RecoveryEnd) -> CheckResult:
    """The ``consistency`` check: the server left recovery, its control file says the backup's
    end was replayed, and a new timeline's history file records where recovery ended."""
    if end.in_recovery:
        problem, hint = "the server is still in recovery", "read the restored server's log"
    elif not end.backup_end_reached:
        problem = "the control file still waits for the backup's end record"
        hint = "the backup or its WAL is incomplete: verify the repository (pgbackrest verify)"
    elif end.stop is None:
        problem = f"no record of where recovery ended ({end.history_error or 'no history'})"
        hint = "the server was not promoted by recovery: read its log"
    else:
        return CheckResult(
            name="consistency",
            status="ok",
            detail=f"promoted to timeline {end.timeline} at {end.stop.switchpoint} from timeline "
            f"{end.stop.parent}; backup end replayed (pg_control_recovery)",
        )
    return CheckResult(name="consistency", status="fail", detail=problem, hint=hint)


def check_amcheck(dsn: SecretStr, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> CheckResult:
    """The ``amcheck`` check: ``bt_index_check`` on every valid btree index.

    Fails only on corruption; an index that could not be checked (its statement timed out or
    was blocked) makes it a warning, with a hint. Creates the amcheck extension if absent: for
    restored or scratch clusters only.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    result = amcheck_btree_indexes(dsn, statement_timeout_ms=statement_timeout_ms)
    if result.corrupt:
        return CheckResult(
            name="amcheck",
            status="fail",
            detail=f"{len(result.corrupt)} of {result.indexes_checked} btree indexes corrupt: "
            + "; ".join(result.corrupt[:5]),
            hint="the backup holds corrupt indexes; use an older backup and REINDEX on live",
        )
    if result.unchecked:
        return CheckResult(
            name="amcheck",
            status="warn",
            detail=f"{result.indexes_checked} btree indexes checked; could not check "
            f"{len(result.unchecked)}: " + "; ".join(result.unchecked[:5]),
            hint="these were not checked, not found corrupt: run bt_index_check on them when "
            "the cluster is quiet, or with a longer statement timeout",
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


def check_recovery_target(end: RecoveryEnd, target: RecoveryTarget) -> CheckResult:
    """The ``recovery-target`` check: the history file's stop reason is the one ``target`` asks
    for, on the timeline it follows; for a time, recovery stopped at the first transaction end
    past the target and no later commit was replayed (``pg_last_xact_replay_timestamp()``)."""
    if end.stop is None:
        return CheckResult(
            name="recovery-target",
            status="fail",
            detail=f"no record of where recovery stopped ({end.history_error or 'no history'})",
            hint="do not use this cluster: read its log",
        )
    reason = end.stop.reason
    problems = []
    if target.timeline is not None and end.stop.parent != target.timeline:
        problems.append(f"it followed timeline {end.stop.parent}, not {target.timeline}")
    figure = ""
    if target.type == "time":
        wanted = datetime.fromisoformat(str(target.value))
        stopped = _TIME_STOP_RE.match(reason)
        at = datetime.fromisoformat(stopped.group(2)) if stopped else None
        last = end.last_replayed
        figure = last.isoformat() if last else ""
        if stopped is None or at is None:
            problems.append(f"it did not stop for a time ({reason!r})")
        elif (stopped.group(1) == "before") != (at > wanted if target.inclusive else at >= wanted):
            # "before" a transaction end past the target, or "after" one not past it
            problems.append(f"it stopped {reason}, on the wrong side of {wanted.isoformat()}")
        if last is not None and last > wanted:
            problems.append(f"a commit of {last.isoformat()}, after the target, was replayed")
        detail = (
            f"stopped {reason} (history file of timeline {end.timeline}); last replayed commit "
            f"{last.isoformat() if last else 'none'} <= target {wanted.isoformat()}"
        )
    else:
        expected = {
            "immediate": "reached consistency",
            "name": f'at restore point "{target.value}"',
        }.get(target.type)
        matches = (
            reason == expected
            if expected
            # LSNs are written in upper-case hex
            else reason.startswith(("before ", "after "))
            and str(target.value).upper() in reason.upper()
        )
        if not matches:
            problems.append(f"it stopped {reason!r}, not at the {target.type} target")
        detail = f"stopped: {reason} (history file of timeline {end.timeline})"
    if problems:
        return CheckResult(
            name="recovery-target",
            status="fail",
            figure=figure,
            detail="recovery did not stop where asked: " + "; ".join(problems),
            hint="do not use this cluster",
        )
    return CheckResult(name="recovery-target", status="ok", figure=figure, detail=detail)


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

    ``server_log`` is the restored cluster's ``LocalCluster.log_file``: its data directory (for
    the history file) is found beside it; the log's text decides nothing. With ``target``,
    also that recovery stopped there (point-in-time recovery, backup restoration).
    """
    logger = run_logger()
    data_dir = data_dir_of_log(server_log)
    checks = [
        timed_check("consistency", lambda: check_consistency(read_recovery_end(restored, data_dir)))
    ]
    if target is not None:
        checks.append(
            timed_check(
                "recovery-target",
                lambda: check_recovery_target(read_recovery_end(restored, data_dir), target),
            )
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
