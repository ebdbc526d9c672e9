"""PostgreSQL health, as the runbook's database investigations ask for it.

Checks: status (reachable, version, uptime, recovery, replication lag), connection pool,
slow queries (pg_stat_statements), table statistics, index advice and WAL archiving; with them,
the backup checks of ``tasks.backups.freshness``. Each returns a ``CheckResult`` with a figure, a
detail, a hint when not ok, and its raw numbers in ``metrics`` (the daily capacity sample reads
them). None hides another: each runs through ``timed_check``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from tasks.backups.base import BackupEngine
from tasks.backups.freshness import (
    LAST_FAILURE,
    age_s,
    check_last_backup,
    check_last_verification,
    read_last_verification,
)
from tasks.core.checking import Check, in_threads, run_concurrently
from tasks.core.errors import RunbookError
from tasks.core.reports import CheckResult, Status, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import PostgresThresholds
from tasks.core.units import human_bytes, human_duration, percent
from tasks.postgres.sql import archiver_status
from tasks.postgres.stats import (
    ConnectionPool,
    ServerStatus,
    connection_pool,
    index_stats,
    require_pg_stat_statements,
    server_status,
    statements,
    table_stats,
)

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
    """The ``status`` check: version, uptime and replication lag against the thresholds.

    Warns or fails when the worst replay lag (of a primary's standbys, or a standby's own delay)
    reaches ``replication_lag_warn_s`` or ``replication_lag_fail_s``. Metrics: ``uptime_s``,
    ``in_recovery`` (0 or 1), ``standbys``, ``replication_lag_s``.

    Raises:
        PostgresUnreachable, PostgresError (``timed_check`` makes them a failed result).
    """
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
    """The ``connection-pool`` check: connections in use, and the sessions worth a look.

    Problems: connections at ``min(connections_warn, connections_fail)`` of the usable ones
    (``max_connections`` less the superuser-reserved) or more; sessions idle in transaction
    ``idle_in_transaction_s`` or longer; queries active ``long_query_s`` or longer; blocked
    sessions. Any problem warns; it fails once connections reach ``connections_fail`` of the
    usable ones.
    Metrics: ``connections``, ``max_connections``, a count of each kind, ``state.<state>``.

    Raises:
        PostgresUnreachable, PostgresError.
    """
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
    """The ``slow-queries`` check: the top statements of ``pg_stat_statements`` by total and mean.

    Warns when a statement's mean time is ``slow_query_mean_ms`` or more, or when
    pg_stat_statements is not enabled (the hint says how). Metrics (ms): ``slowest_mean_ms``,
    ``top_total_ms``; and ``slow_statements`` (count).

    Raises:
        PostgresUnreachable, PostgresError.
    """
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
    """The ``table-statistics`` check: database size, and dead rows per table (pg_stat_user_tables).

    Warns for tables with ``dead_tuple_min`` dead rows or more and a dead ratio (dead / (live +
    dead)) of ``dead_tuple_ratio`` or more. Metrics: ``database_bytes``, ``tables``,
    ``bloated_tables``, and ``table_bytes.<schema.table>`` (bytes) for each table.

    Raises:
        PostgresUnreachable, PostgresError.
    """
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
    """The ``index-advice`` check: unused, duplicate and missing indexes (since the stats reset).

    Warns for non-unique indexes never scanned of ``unused_index_min_bytes`` or more; groups of
    duplicate indexes; tables of ``seq_scan_min_rows`` live rows or more scanned sequentially
    ``seq_scan_min_count`` times or more, and more often than by index. Metrics: ``indexes``,
    ``unused_indexes``, ``duplicate_groups``, ``tables_wanting_index``.

    Raises:
        PostgresUnreachable, PostgresError.
    """
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


def check_wal_archiving(dsn: SecretStr, now: datetime) -> CheckResult:
    """The ``wal-archiving`` check from ``pg_stat_archiver``: fails when the last attempt failed.

    Metrics: ``archived_count`` and ``failed_count`` (since the statistics reset), and
    ``last_archived_age_s`` (seconds before ``now``; -1 when nothing was archived).

    Raises:
        PostgresUnreachable, PostgresError.
    """
    status = archiver_status(dsn)
    age = age_s(status.last_archived_time, now)
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
