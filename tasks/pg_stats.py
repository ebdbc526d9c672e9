"""What PostgreSQL says about itself: status, sessions, statements, tables and indexes.

Each function runs read-only catalog and statistics queries through ``tasks.postgres.connect``
(connect and statement timeouts) and returns typed rows; judging them is the checks' business
(``tasks.database_health``). Query texts are shortened and their string literals masked, so a
password in an ``UPDATE`` never reaches a report.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from tasks.postgres import PostgresError, connect

APPLICATION_NAME = "runbook"  # what tasks.postgres.connect sets

STATEMENT_TIMEOUT_MS = 15_000  # catalog queries: a health check must not hang on a busy server
QUERY_TEXT_CHARS = 160
_LITERAL_RE = re.compile(r"'(?:[^']|'')*'")
_SPACE_RE = re.compile(r"\s+")


def masked_query(text: str | None, limit: int = QUERY_TEXT_CHARS) -> str:
    """One line, string literals replaced by ``'?'``, at most ``limit`` characters."""
    flat = _SPACE_RE.sub(" ", _LITERAL_RE.sub("'?'", text or "")).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _rows(dsn: SecretStr, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        return list(conn.execute(query, params).fetchall())


# -- status ---------------------------------------------------------------------------------------


class Standby(BaseModel):
    name: str
    client_addr: str | None
    state: str
    sync_state: str
    replay_lag_s: float | None


class ServerStatus(BaseModel):
    version: str
    started_at: datetime
    uptime_s: float
    in_recovery: bool
    replay_delay_s: float | None  # on a standby: now - last replayed commit
    standbys: list[Standby]


def server_status(dsn: SecretStr) -> ServerStatus:
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), pg_postmaster_start_time(),"
            " extract(epoch FROM now() - pg_postmaster_start_time()), pg_is_in_recovery(),"
            " CASE WHEN pg_is_in_recovery() THEN"
            "  extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
        ).fetchone()
        standbys = conn.execute(
            "SELECT application_name, client_addr::text, state, sync_state,"
            " extract(epoch FROM replay_lag) FROM pg_stat_replication ORDER BY 1"
        ).fetchall()
    assert row is not None
    return ServerStatus(
        version=str(row[0]),
        started_at=row[1],
        uptime_s=float(row[2]),
        in_recovery=bool(row[3]),
        replay_delay_s=None if row[4] is None else float(row[4]),
        standbys=[
            Standby(
                name=str(s[0]),
                client_addr=s[1],
                state=str(s[2]),
                sync_state=str(s[3]),
                replay_lag_s=None if s[4] is None else float(s[4]),
            )
            for s in standbys
        ],
    )


# -- sessions -------------------------------------------------------------------------------------


class Session(BaseModel):
    pid: int
    user: str | None
    application: str
    state: str
    seconds: float  # in this state (idle in transaction) or running this query (active)
    query: str
    blocked_by: list[int] = []


class BlockedSession(BaseModel):
    blocked: Session
    blocking: list[Session]


class ConnectionPool(BaseModel):
    max_connections: int
    reserved_connections: int
    by_state: dict[str, int]
    idle_in_transaction: list[Session]
    long_running: list[Session]
    blocked: list[BlockedSession]

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


_SESSIONS = (
    "SELECT pid, usename, application_name, coalesce(state, 'unknown'),"
    " extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start"
    "   ELSE state_change END), query, pg_blocking_pids(pid)"
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
        rows = conn.execute(_SESSIONS, (APPLICATION_NAME,)).fetchall()
        # our own connection counts against max_connections too
        own = conn.execute(
            "SELECT coalesce(state, 'unknown') FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert settings is not None
    sessions = [
        Session(
            pid=int(r[0]),
            user=r[1],
            application=str(r[2] or ""),
            state=str(r[3]),
            seconds=float(r[4] or 0),
            query=masked_query(r[5]),
            blocked_by=list(r[6] or []),
        )
        for r in rows
    ]
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


class Statement(BaseModel):
    queryid: int
    query: str
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
    rows = _rows(
        dsn,
        "SELECT queryid, query, calls, total_exec_time, mean_exec_time, rows"
        " FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "  AND queryid IS NOT NULL AND calls >= %s"
        f" ORDER BY {column} DESC LIMIT %s",
        (min_calls, limit),
    )
    return [
        Statement(
            queryid=int(r[0]),
            query=masked_query(str(r[1])),
            calls=int(r[2]),
            total_ms=float(r[3]),
            mean_ms=float(r[4]),
            rows=int(r[5]),
        )
        for r in rows
    ]


# -- tables and indexes ---------------------------------------------------------------------------


class TableStat(BaseModel):
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
        return self.dead_rows / max(self.live_rows + self.dead_rows, 1)


class TableStats(BaseModel):
    database_bytes: int
    stats_reset: datetime | None
    tables: list[TableStat]


def table_stats(dsn: SecretStr) -> TableStats:
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        head = conn.execute(
            "SELECT pg_database_size(current_database()), stats_reset FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        rows = conn.execute(
            "SELECT schemaname || '.' || relname, pg_total_relation_size(relid), n_live_tup,"
            " n_dead_tup, seq_scan, seq_tup_read, coalesce(idx_scan, 0),"
            " greatest(last_vacuum, last_autovacuum), greatest(last_analyze, last_autoanalyze),"
            " n_mod_since_analyze"
            " FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC"
        ).fetchall()
    assert head is not None
    fields = list(TableStat.model_fields)
    return TableStats(
        database_bytes=int(head[0]),
        stats_reset=head[1],
        tables=[TableStat(**dict(zip(fields, r, strict=True))) for r in rows],
    )


class IndexStat(BaseModel):
    table: str
    name: str
    bytes: int
    scans: int
    unique: bool


class IndexStats(BaseModel):
    indexes: list[IndexStat]
    duplicates: list[list[str]]  # groups of indexes with the same table, columns, opclasses


def index_stats(dsn: SecretStr) -> IndexStats:
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        rows = conn.execute(
            "SELECT s.schemaname || '.' || s.relname, s.schemaname || '.' || s.indexrelname,"
            " pg_relation_size(s.indexrelid), s.idx_scan, i.indisunique OR i.indisprimary"
            " FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid"
            " ORDER BY 1, 2"
        ).fetchall()
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
    fields = list(IndexStat.model_fields)
    return IndexStats(
        indexes=[IndexStat(**dict(zip(fields, r, strict=True))) for r in rows],
        duplicates=[list(g[0]) for g in groups],
    )
