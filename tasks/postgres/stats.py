"""What PostgreSQL says about itself: status, sessions, statements, tables and indexes.

Each function runs read-only catalog and statistics queries through ``tasks.postgres.sql.connect``
(connect and statement timeouts) and returns typed rows; judging them is the checks' business
(``tasks.postgres.health``). Query texts are shortened and their string literals masked, so a
password in an ``UPDATE`` never reaches a report.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, TypeVar

from psycopg.rows import class_row
from pydantic import BaseModel, SecretStr, field_validator

from tasks.postgres.sql import PostgresError, connect

APPLICATION_NAME = "runbook"  # what tasks.postgres.sql.connect sets

STATEMENT_TIMEOUT_MS = 15_000  # catalog queries: a health check must not hang on a busy server
QUERY_TEXT_CHARS = 160
_LITERAL_RE = re.compile(r"'(?:[^']|'')*'")
_SPACE_RE = re.compile(r"\s+")
M = TypeVar("M", bound=BaseModel)


def masked_query(text: str | None, limit: int = QUERY_TEXT_CHARS) -> str:
    """One line, string literals replaced by ``'?'``, at most ``limit`` characters."""
    flat = _SPACE_RE.sub(" ", _LITERAL_RE.sub("'?'", text or "")).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fetch(dsn: SecretStr, model: type[M], query: str, params: tuple[object, ...] = ()) -> list[M]:
    """Rows of ``query`` as ``model`` instances (columns named as its fields: ``class_row``)."""
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        return conn.cursor(row_factory=class_row(model)).execute(query, params).fetchall()


class _MaskedQuery(BaseModel):
    """A model whose ``query`` is masked whatever built it, so no literal reaches a report."""

    query: str

    @field_validator("query", mode="before")
    @classmethod
    def _mask(cls, value: str | None) -> str:
        return masked_query(value)


# -- status ---------------------------------------------------------------------------------------


class Standby(BaseModel):
    """One row of ``pg_stat_replication``: a standby, its state, and its replay lag in seconds."""

    name: str
    client_addr: str | None
    state: str
    sync_state: str
    replay_lag_s: float | None


class ServerStatus(BaseModel):
    """A server's version, start time, uptime (s), recovery, replay delay (s) and standbys."""

    version: str
    started_at: datetime
    uptime_s: float
    in_recovery: bool
    replay_delay_s: float | None  # on a standby: now - last replayed commit
    standbys: list[Standby] = []


def server_status(dsn: SecretStr) -> ServerStatus:
    """Version, start time, uptime (s), recovery, replay delay (s) and standbys (with lag, s)."""
    (status,) = _fetch(
        dsn,
        ServerStatus,
        "SELECT current_setting('server_version') AS version,"
        " pg_postmaster_start_time() AS started_at,"
        " extract(epoch FROM now() - pg_postmaster_start_time()) AS uptime_s,"
        " pg_is_in_recovery() AS in_recovery,"
        " CASE WHEN pg_is_in_recovery() THEN"
        "  extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END AS replay_delay_s",
    )
    status.standbys = _fetch(
        dsn,
        Standby,
        "SELECT application_name AS name, client_addr::text AS client_addr, state, sync_state,"
        " extract(epoch FROM replay_lag) AS replay_lag_s FROM pg_stat_replication ORDER BY 1",
    )
    return status


# -- sessions -------------------------------------------------------------------------------------


class Session(_MaskedQuery):
    """One client session of ``pg_stat_activity``; ``seconds`` in its state, query masked."""

    pid: int
    user: str | None
    application: str
    state: str
    seconds: float  # in this state (idle in transaction) or running this query (active)
    blocked_by: list[int] = []


class BlockedSession(BaseModel):
    """A session waiting for a lock, and the sessions holding it (``pg_blocking_pids``)."""

    blocked: Session
    blocking: list[Session]


class ConnectionPool(BaseModel):
    """Client connections by state (``pg_stat_activity``), the limits, and sessions worth a look."""

    max_connections: int
    reserved_connections: int
    by_state: dict[str, int]
    idle_in_transaction: list[Session]
    long_running: list[Session]
    blocked: list[BlockedSession]

    @property
    def total(self) -> int:
        """Client connections: every one but the runbook's, plus the one that counted them."""
        return sum(self.by_state.values())


_SESSIONS = (
    "SELECT pid, usename AS user, coalesce(application_name, '') AS application,"
    " coalesce(state, 'unknown') AS state,"
    " coalesce(extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start"
    "   ELSE state_change END), 0) AS seconds, query, pg_blocking_pids(pid) AS blocked_by"
    " FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    # the runbook's other connections (checks running at once) are not the platform's
    "  AND application_name IS DISTINCT FROM %s"
)


def connection_pool(
    dsn: SecretStr, idle_in_transaction_s: float, long_query_s: float
) -> ConnectionPool:
    """Client connections by state, and the sessions worth a look: idle in transaction for
    longer than ``idle_in_transaction_s``, active for longer than ``long_query_s``, blocked."""
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        settings = conn.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
        ).fetchone()
        sessions = (
            conn.cursor(row_factory=class_row(Session))
            .execute(_SESSIONS, (APPLICATION_NAME,))
            .fetchall()
        )
        # our own connection counts against max_connections too
        own = conn.execute(
            "SELECT coalesce(state, 'unknown') FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert settings is not None
    by_state: dict[str, int] = {}
    for state in [s.state for s in sessions] + [str(own[0]) if own else "active"]:
        by_state[state] = by_state.get(state, 0) + 1
    by_pid = {s.pid: s for s in sessions}
    return ConnectionPool(
        max_connections=int(settings[0]),
        reserved_connections=int(settings[1]),
        by_state=by_state,
        idle_in_transaction=[
            s
            for s in sessions
            if s.state.startswith("idle in transaction") and s.seconds >= idle_in_transaction_s
        ],
        long_running=[s for s in sessions if s.state == "active" and s.seconds >= long_query_s],
        blocked=[
            BlockedSession(blocked=s, blocking=[by_pid[p] for p in s.blocked_by if p in by_pid])
            for s in sessions
            if s.blocked_by
        ],
    )


# -- statements -----------------------------------------------------------------------------------


class StatementsUnavailable(PostgresError):
    """pg_stat_statements is not installed in this database or not preloaded."""


class Statement(_MaskedQuery):
    """One row of ``pg_stat_statements``, cumulative since its last reset.

    ``total_ms`` and ``mean_ms`` are execution times in milliseconds.
    """

    queryid: int
    calls: int
    total_ms: float
    mean_ms: float
    rows: int


def require_pg_stat_statements(dsn: SecretStr) -> None:
    """Raise StatementsUnavailable, saying how to enable it, unless the view can be read."""
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('shared_preload_libraries'),"
            " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
        ).fetchone()
    assert row is not None
    database, preload, created = str(row[0]), str(row[1]), bool(row[2])
    steps = []
    if "pg_stat_statements" not in preload:
        steps.append(
            "add pg_stat_statements to shared_preload_libraries in postgresql.conf (or the RDS "
            "parameter group) and restart"
        )
    if not created:
        steps.append(f"run CREATE EXTENSION pg_stat_statements; in database {database}")
    if steps:
        raise StatementsUnavailable(
            f"pg_stat_statements is not enabled in database {database}", hint="; then ".join(steps)
        )


def statements(
    dsn: SecretStr, order_by: Literal["total", "mean"], limit: int, min_calls: int = 1
) -> list[Statement]:
    """The database's top statements by total or mean execution time."""
    column = "total_exec_time" if order_by == "total" else "mean_exec_time"
    return _fetch(
        dsn,
        Statement,
        "SELECT queryid, query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms,"
        " rows"
        " FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "  AND queryid IS NOT NULL AND calls >= %s"
        f" ORDER BY {column} DESC LIMIT %s",
        (min_calls, limit),
    )


# -- tables and indexes ---------------------------------------------------------------------------


class TableStat(BaseModel):
    """One table of ``pg_stat_user_tables``: size (bytes), rows, scans, last vacuum and analyze."""

    name: str
    total_bytes: int
    live_rows: int
    dead_rows: int
    seq_scan: int
    seq_rows_read: int
    idx_scan: int
    last_vacuum: datetime | None
    last_analyze: datetime | None
    modified_since_analyze: int

    @property
    def dead_ratio(self) -> float:
        """Dead rows / (live + dead rows), 0..1, from the estimates n_dead_tup and n_live_tup."""
        return self.dead_rows / max(self.live_rows + self.dead_rows, 1)


class TableStats(BaseModel):
    """The database's size in bytes, its statistics reset time, and its tables, largest first."""

    database_bytes: int
    stats_reset: datetime | None
    tables: list[TableStat] = []


def table_stats(dsn: SecretStr) -> TableStats:
    """The database's size (bytes) and its user tables, largest first (sizes in bytes)."""
    (stats,) = _fetch(
        dsn,
        TableStats,
        "SELECT pg_database_size(current_database()) AS database_bytes, stats_reset"
        " FROM pg_stat_database WHERE datname = current_database()",
    )
    stats.tables = _fetch(
        dsn,
        TableStat,
        "SELECT schemaname || '.' || relname AS name, pg_total_relation_size(relid) AS total_bytes,"
        " n_live_tup AS live_rows, n_dead_tup AS dead_rows, seq_scan,"
        " seq_tup_read AS seq_rows_read, coalesce(idx_scan, 0) AS idx_scan,"
        " greatest(last_vacuum, last_autovacuum) AS last_vacuum,"
        " greatest(last_analyze, last_autoanalyze) AS last_analyze,"
        " n_mod_since_analyze AS modified_since_analyze"
        " FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC",
    )
    return stats


class IndexStat(BaseModel):
    """One index of ``pg_stat_user_indexes``: size (bytes), scans since the reset, uniqueness."""

    table: str
    name: str
    bytes: int
    scans: int
    unique: bool


class IndexStats(BaseModel):
    """Every user index, and the groups of indexes that duplicate each other (by name)."""

    indexes: list[IndexStat]
    duplicates: list[list[str]]  # groups of indexes with the same table, columns, opclasses


def index_stats(dsn: SecretStr) -> IndexStats:
    """Every user index (size in bytes, scans since the statistics reset) and the groups of
    indexes that duplicate each other (same table, columns, operator classes, expressions)."""
    indexes = _fetch(
        dsn,
        IndexStat,
        "SELECT s.schemaname || '.' || s.relname AS table,"
        " s.schemaname || '.' || s.indexrelname AS name, pg_relation_size(s.indexrelid) AS bytes,"
        " s.idx_scan AS scans, i.indisunique OR i.indisprimary AS unique"
        " FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid"
        " ORDER BY 1, 2",
    )
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        groups = conn.execute(
            "SELECT array_agg(i.indexrelid::regclass::text ORDER BY i.indexrelid::regclass::text)"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " GROUP BY i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text,"
            "  coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),"
            "  coalesce(pg_get_expr(i.indpred, i.indrelid), '')"
            " HAVING count(*) > 1 ORDER BY 1"
        ).fetchall()
    return IndexStats(indexes=indexes, duplicates=[list(g[0]) for g in groups])
