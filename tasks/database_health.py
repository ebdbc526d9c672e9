"""PostgreSQL health, as the runbook's database investigations ask for it.

Checks: status (reachable, version, uptime, recovery, replication lag), connection pool,
slow queries (pg_stat_statements), table statistics, index advice, WAL archiving, the last
backup and the last successful verify-backup. Each returns a ``CheckResult`` with a figure, a
detail, a hint when not ok, and its raw numbers in ``metrics`` (the daily capacity sample
reads them). None hides another: each runs through ``timed_check``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect.variables import Variable
from pydantic import SecretStr

from tasks.backups.base import BackupEngine
from tasks.checking import Check, human_bytes, in_threads, percent, run_concurrently
from tasks.errors import RunbookError
from tasks.pg_stats import (
    ConnectionPool,
    ServerStatus,
    connection_pool,
    index_stats,
    require_pg_stat_statements,
    server_status,
    statements,
    table_stats,
)
from tasks.postgres import archiver_status
from tasks.reports import CheckResult, Status, timed_check
from tasks.retry import ops_task
from tasks.runlog import run_logger
from tasks.settings import PostgresThresholds
from tasks.units import human_duration
from tasks.verification import LAST_FAILURE, LAST_MEASUREMENT

SYSTEM = "postgres"
LISTED = 5  # items named in a detail line; the metrics keep the counts


def _result(name: str, problems: list[str], warn: bool, **fields: Any) -> CheckResult:
    status = "ok" if not problems else ("warn" if warn else "fail")
    return CheckResult(name=name, status=status, system=SYSTEM, **fields)


# -- status ---------------------------------------------------------------------------------------


def judge_replication(status: ServerStatus, t: PostgresThresholds) -> tuple[Status, str, float]:
    """(status, what, worst lag in seconds) for the standbys of a primary, or a standby itself."""
    lags = [s.replay_lag_s or 0.0 for s in status.standbys]
    if status.in_recovery:
        lags.append(status.replay_delay_s or 0.0)
    worst = max(lags, default=0.0)
    verdict: Status
    if worst >= t.replication_lag_fail_s:
        verdict = "fail"
    elif worst >= t.replication_lag_warn_s:
        verdict = "warn"
    else:
        verdict = "ok"
    if status.in_recovery:
        what = f"standby, replaying {human_duration(worst)} behind"
    elif status.standbys:
        what = f"{len(status.standbys)} standby(s), worst replay lag {human_duration(worst)}"
    else:
        what = "no standbys"
    return verdict, what, worst


def check_status(dsn: SecretStr, t: PostgresThresholds) -> CheckResult:
    status = server_status(dsn)
    verdict, replication, worst = judge_replication(status, t)
    hint = ""
    if verdict != "ok":
        hint = (
            "replication is behind: look at the standby's I/O and network, and at long "
            "transactions on the primary (pg_stat_replication, pg_stat_activity)"
        )
    return CheckResult(
        name="status",
        status=verdict,
        system=SYSTEM,
        figure=f"PostgreSQL {status.version.split()[0]}, up {human_duration(status.uptime_s)}",
        detail=f"{'in recovery' if status.in_recovery else 'primary'}; {replication}; "
        f"started {status.started_at.isoformat(timespec='seconds')}",
        hint=hint,
        metrics={
            "uptime_s": status.uptime_s,
            "in_recovery": float(status.in_recovery),
            "standbys": float(len(status.standbys)),
            "replication_lag_s": worst,
        },
    )


# -- connection pool ------------------------------------------------------------------------------


def _pool_problems(pool: ConnectionPool, t: PostgresThresholds) -> tuple[list[str], list[str]]:
    problems, hints = [], []
    usable = max(pool.max_connections - pool.reserved_connections, 1)
    if pool.total >= min(t.connections_warn, t.connections_fail) * usable:
        problems.append(f"{pool.total} of {usable} usable connections in use")
        hints.append(
            "look for connection leaks (connections by application in pg_stat_activity); put a "
            "pooler (PgBouncer, RDS Proxy) in front or raise max_connections"
        )
    if pool.idle_in_transaction:
        problems.append(
            f"{len(pool.idle_in_transaction)} idle in transaction ≥ "
            f"{human_duration(t.idle_in_transaction_s)}: "
            + "; ".join(
                f"pid {s.pid} ({s.application or s.user}) {human_duration(s.seconds)}: {s.query}"
                for s in pool.idle_in_transaction[:LISTED]
            )
        )
        hints.append(
            "an application opened a transaction and stopped: fix it to commit or roll back; "
            "set idle_in_transaction_session_timeout; pg_terminate_backend(pid) if it holds locks"
        )
    if pool.long_running:
        problems.append(
            f"{len(pool.long_running)} queries running ≥ {human_duration(t.long_query_s)}: "
            + "; ".join(
                f"pid {s.pid} {human_duration(s.seconds)}: {s.query}"
                for s in pool.long_running[:LISTED]
            )
        )
        hints.append("EXPLAIN the long queries; pg_cancel_backend(pid) if they harm others")
    if pool.blocked:
        problems.append(
            f"{len(pool.blocked)} blocked: "
            + "; ".join(
                f"pid {b.blocked.pid} ({b.blocked.query}) waits {human_duration(b.blocked.seconds)}"
                f" for pid {', '.join(str(s.pid) for s in b.blocking) or '?'}"
                f" ({'; '.join(s.query for s in b.blocking) or 'unknown'})"
                for b in pool.blocked[:LISTED]
            )
        )
        hints.append(
            "end or fix the blocking session (pg_cancel_backend, then pg_terminate_backend); "
            "keep transactions short"
        )
    return problems, hints


def check_connection_pool(dsn: SecretStr, t: PostgresThresholds) -> CheckResult:
    pool = connection_pool(dsn, t.idle_in_transaction_s, t.long_query_s)
    problems, hints = _pool_problems(pool, t)
    usable = max(pool.max_connections - pool.reserved_connections, 1)
    states = ", ".join(f"{state} {n}" for state, n in sorted(pool.by_state.items()))
    return _result(
        "connection-pool",
        problems,
        warn=pool.total < t.connections_fail * usable,
        figure=f"{pool.total} / {pool.max_connections} connections "
        f"({percent(pool.total, pool.max_connections):.0%})",
        detail="; ".join([f"by state: {states}", *problems]),
        hint="; ".join(hints),
        metrics={
            "connections": float(pool.total),
            "max_connections": float(pool.max_connections),
            "idle_in_transaction": float(len(pool.idle_in_transaction)),
            "long_running": float(len(pool.long_running)),
            "blocked": float(len(pool.blocked)),
            **{f"state.{state}": float(n) for state, n in pool.by_state.items()},
        },
    )


# -- slow queries ---------------------------------------------------------------------------------


def check_slow_queries(dsn: SecretStr, t: PostgresThresholds) -> CheckResult:
    try:
        require_pg_stat_statements(dsn)
    except RunbookError as exc:
        return CheckResult(
            name="slow-queries",
            status="warn",
            system=SYSTEM,
            figure="pg_stat_statements missing",
            detail=exc.message,
            hint=exc.hint,
        )
    by_total = statements(dsn, "total", t.top_queries)
    by_mean = statements(dsn, "mean", t.top_queries)
    slow = [s for s in by_mean if s.mean_ms >= t.slow_query_mean_ms]
    top_mean = by_mean[0].mean_ms if by_mean else 0.0
    detail = [
        "top by total: "
        + "; ".join(f"{s.total_ms / 1000:.1f} s in {s.calls} calls: {s.query}" for s in by_total),
        "top by mean: " + "; ".join(f"{s.mean_ms:.1f} ms x {s.calls}: {s.query}" for s in by_mean),
    ]
    if slow:
        detail.insert(0, f"{len(slow)} statements average ≥ {t.slow_query_mean_ms:.0f} ms")
    return _result(
        "slow-queries",
        [s.query for s in slow],
        warn=True,
        figure=f"slowest mean {top_mean:.1f} ms",
        detail="; ".join(detail),
        hint="EXPLAIN (ANALYZE, BUFFERS) the slow statements; add the index they lack or "
        "rewrite them (N+1 patterns show as many calls of one fast statement)"
        if slow
        else "",
        metrics={
            "slowest_mean_ms": top_mean,
            "slow_statements": float(len(slow)),
            "top_total_ms": by_total[0].total_ms if by_total else 0.0,
        },
    )


# -- table statistics and index advice ------------------------------------------------------------


def check_table_statistics(dsn: SecretStr, t: PostgresThresholds) -> CheckResult:
    stats = table_stats(dsn)
    bloated = [
        s
        for s in stats.tables
        if s.dead_rows >= t.dead_tuple_min and s.dead_ratio >= t.dead_tuple_ratio
    ]
    problems = [
        f"{s.name}: {s.dead_rows} dead rows ({s.dead_ratio:.0%}), last vacuum "
        f"{s.last_vacuum.isoformat(timespec='minutes') if s.last_vacuum else 'never'}"
        for s in bloated
    ]
    biggest = "; ".join(
        f"{s.name} {human_bytes(s.total_bytes)} ({s.live_rows} rows, seq {s.seq_scan} / "
        f"idx {s.idx_scan} scans, analyzed "
        f"{s.last_analyze.isoformat(timespec='minutes') if s.last_analyze else 'never'})"
        for s in stats.tables[:LISTED]
    )
    return _result(
        "table-statistics",
        problems,
        warn=True,
        figure=f"database {human_bytes(stats.database_bytes)}, {len(stats.tables)} tables",
        detail="; ".join([*problems, f"largest: {biggest}"]),
        hint="VACUUM (ANALYZE) the tables named; check that autovacuum is enabled for them "
        "and not held back by long transactions"
        if problems
        else "",
        metrics={
            "database_bytes": float(stats.database_bytes),
            "tables": float(len(stats.tables)),
            "bloated_tables": float(len(bloated)),
            **{f"table_bytes.{s.name}": float(s.total_bytes) for s in stats.tables},
        },
    )


def check_index_advice(dsn: SecretStr, t: PostgresThresholds) -> CheckResult:
    indexes, tables = index_stats(dsn), table_stats(dsn)
    unused = [
        i
        for i in indexes.indexes
        if not i.unique and i.scans == 0 and i.bytes >= t.unused_index_min_bytes
    ]
    wanting = [
        s
        for s in tables.tables
        if s.live_rows >= t.seq_scan_min_rows
        and s.seq_scan >= t.seq_scan_min_count
        and s.seq_scan > s.idx_scan
    ]
    since = (
        f" since statistics were reset {tables.stats_reset.isoformat(timespec='minutes')}"
        if tables.stats_reset
        else ""
    )
    problems, hints = [], []
    if unused:
        problems.append(
            f"{len(unused)} unused{since}: "
            + ", ".join(f"{i.name} ({human_bytes(i.bytes)})" for i in unused[:LISTED])
        )
        hints.append("DROP INDEX CONCURRENTLY the unused ones (check replicas use none first)")
    if indexes.duplicates:
        problems.append(
            f"{len(indexes.duplicates)} duplicate groups: "
            + "; ".join(" = ".join(g) for g in indexes.duplicates[:LISTED])
        )
        hints.append("keep one index of each duplicate group and drop the others")
    if wanting:
        problems.append(
            f"{len(wanting)} large tables read sequentially: "
            + "; ".join(
                f"{s.name} ({s.live_rows} rows, {s.seq_scan} seq vs {s.idx_scan} idx scans)"
                for s in wanting[:LISTED]
            )
        )
        hints.append(
            "find their queries in slow-queries and CREATE INDEX CONCURRENTLY on the filtered "
            "columns"
        )
    return _result(
        "index-advice",
        problems,
        warn=True,
        figure=f"{len(unused)} unused, {len(indexes.duplicates)} duplicate, {len(wanting)} missing",
        detail="; ".join(problems) or f"{len(indexes.indexes)} indexes look used and distinct",
        hint="; ".join(hints),
        metrics={
            "indexes": float(len(indexes.indexes)),
            "unused_indexes": float(len(unused)),
            "duplicate_groups": float(len(indexes.duplicates)),
            "tables_wanting_index": float(len(wanting)),
        },
    )


# -- WAL archiving and backups --------------------------------------------------------------------


def _age_s(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (now - moment).total_seconds()


def check_wal_archiving(dsn: SecretStr, now: datetime) -> CheckResult:
    status = archiver_status(dsn)
    age = _age_s(status.last_archived_time, now)
    figure = (
        f"last archived {human_duration(age)} ago" if age is not None else "nothing archived yet"
    )
    metrics = {
        "archived_count": float(status.archived_count),
        "failed_count": float(status.failed_count),
        "last_archived_age_s": age if age is not None else -1.0,
    }
    if status.failing:
        return CheckResult(
            name="wal-archiving",
            status="fail",
            system=SYSTEM,
            figure=figure,
            detail=f"archiving {status.last_failed_wal} failed at "
            f"{status.last_failed_time.isoformat(timespec='seconds') if status.last_failed_time else '?'}"  # noqa: E501
            f" ({status.failed_count} failures in total)",
            hint="WAL is piling up in pg_wal and PITR stops at the last archived segment: read "
            "the server log for the archive_command error (repository reachable? disk full?)",
            metrics=metrics,
        )
    return CheckResult(
        name="wal-archiving",
        status="ok",
        system=SYSTEM,
        figure=figure,
        detail=f"{status.archived_count} segments archived, last {status.last_archived_wal}; "
        f"{status.failed_count} failures, none since",
        metrics=metrics,
    )


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


# -- the task -------------------------------------------------------------------------------------


def _server_checks(dsn: SecretStr, t: PostgresThresholds, now: datetime) -> list[CheckResult]:
    """Status first; the checks that query the server then run at once, or, when the status
    check could not even query it, say so once each instead of repeating its error."""
    status = timed_check("status", lambda: check_status(dsn, t), system=SYSTEM)
    checks: list[Check] = [
        ("connection-pool", lambda: check_connection_pool(dsn, t)),
        ("slow-queries", lambda: check_slow_queries(dsn, t)),
        ("table-statistics", lambda: check_table_statistics(dsn, t)),
        ("index-advice", lambda: check_index_advice(dsn, t)),
        ("wal-archiving", lambda: check_wal_archiving(dsn, now)),
    ]
    if status.failed and not status.metrics:
        return [status] + [
            CheckResult(
                name=name,
                status="skipped",
                system=SYSTEM,
                detail=f"not run: the status check failed ({status.detail})",
                hint=status.hint,
            )
            for name, _ in checks
        ]
    return [status, *run_concurrently(SYSTEM, checks)]


@ops_task("run-postgres-checks")
def run_postgres_checks(
    dsn: SecretStr, thresholds: PostgresThresholds, engine: BackupEngine
) -> list[CheckResult]:
    """Every PostgreSQL check, each with its own result; never raises for an expected failure.

    The server's checks and the backup checks (the repository, the Prefect Variable) run at
    once; each is bounded by the statement timeout or the backup command's deadline.
    """
    now, t = datetime.now(UTC), thresholds
    backups: list[Check] = [
        ("last-backup", lambda: check_last_backup(engine, t, now)),
        (
            "last-verification",
            lambda: check_last_verification(
                read_last_verification(), t, now, read_last_verification(LAST_FAILURE)
            ),
        ),
    ]
    server, repository = in_threads(
        [lambda: _server_checks(dsn, t, now), lambda: run_concurrently(SYSTEM, backups)]
    )
    checks = server + repository
    logger = run_logger()
    for check in checks:
        logger.info("postgres %s: %s %s", check.name, check.status, check.figure)
    return checks


@ops_task("review-tables-and-indexes")
def review_tables_and_indexes(dsn: SecretStr, thresholds: PostgresThresholds) -> list[CheckResult]:
    """The weekly review's database advice: slow queries, table statistics, index advice."""
    return run_concurrently(
        SYSTEM,
        [
            ("slow-queries", lambda: check_slow_queries(dsn, thresholds)),
            ("table-statistics", lambda: check_table_statistics(dsn, thresholds)),
            ("index-advice", lambda: check_index_advice(dsn, thresholds)),
        ],
    )
