"""PostgreSQL checks against the sandbox's real cluster: each finds what the seed data plants
(sandbox/sql/20-seed.sql) or what the test itself sets up with live sessions, and passes where
there is nothing to find (a tidy database in the same cluster, or the problem fixed)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prefect.variables import Variable
from pydantic import SecretStr

from sandbox.platform import Sandbox
from tasks.backups.freshness import (
    LAST_MEASUREMENT,
    check_last_backup,
    check_last_verification,
    read_last_verification,
)
from tasks.core.settings import PostgresThresholds
from tasks.postgres.health import (
    check_connection_pool,
    check_index_advice,
    check_slow_queries,
    check_status,
    check_table_statistics,
    check_wal_archiving,
    judge_replication,
    run_postgres_checks,
)
from tasks.postgres.sql import connect, with_port
from tasks.postgres.stats import ServerStatus, Standby, masked_query
from tests.conftest import destroy_sandbox, engine_for, make_sandbox

DEFAULTS = PostgresThresholds()
SESSION_WAIT_S = 1.0


def other_database(dsn: SecretStr, name: str) -> SecretStr:
    return SecretStr(dsn.get_secret_value().rsplit("/", 1)[0] + f"/{name}")


@pytest.fixture(scope="module")
def live(platform: Sandbox) -> SecretStr:
    dsn = platform.dsn()
    assert dsn is not None
    return dsn


@pytest.fixture(scope="module")
def tidy(live: SecretStr) -> Iterator[SecretStr]:
    """A database in the same cluster with nothing wrong: indexed lookups, vacuumed, analyzed."""
    name = f"tidy_{uuid.uuid4().hex[:8]}"
    with connect(live) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = other_database(live, name)
    with connect(dsn) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("CREATE TABLE cards (id bigint PRIMARY KEY, owner bigint NOT NULL)")
        conn.execute("CREATE INDEX cards_owner_idx ON cards (owner)")
        conn.execute("INSERT INTO cards SELECT g, g % 500 FROM generate_series(1, 20000) g")
        conn.execute("VACUUM ANALYZE cards")
        for owner in range(30):
            conn.execute("SELECT count(*) FROM cards WHERE owner = %s", (owner,))
    yield dsn
    with connect(live) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def bare() -> Iterator[Sandbox]:
    """A sandbox of this module's own, without any backup, for checks that damage it."""
    box = make_sandbox()
    yield box
    destroy_sandbox(box)


def test_status_reports_version_uptime_and_a_primary_without_standbys(live):
    result = check_status(live, DEFAULTS)
    assert result.status == "ok"
    assert result.figure.startswith("PostgreSQL 15")
    assert "primary; no standbys" in result.detail
    assert result.metrics["uptime_s"] > 0
    assert result.metrics["in_recovery"] == 0


def _status(*, lags: list[float], in_recovery: bool = False, delay: float | None = None):
    return ServerStatus(
        version="15.8",
        started_at=datetime.now(UTC),
        uptime_s=10,
        in_recovery=in_recovery,
        replay_delay_s=delay,
        standbys=[
            Standby(name=f"s{i}", client_addr=None, state="streaming", sync_state="async",
                    replay_lag_s=lag)
            for i, lag in enumerate(lags)
        ],
    )  # fmt: skip


def test_replication_lag_warns_then_fails_past_its_thresholds_on_primary_and_standby():
    t = PostgresThresholds(replication_lag_warn_s=30, replication_lag_fail_s=300)
    assert judge_replication(_status(lags=[1, 2]), t)[0] == "ok"
    verdict, what, worst = judge_replication(_status(lags=[5, 45]), t)
    assert (verdict, worst) == ("warn", 45)
    assert "2 standby(s)" in what
    assert judge_replication(_status(lags=[400]), t)[0] == "fail"
    verdict, what, _ = judge_replication(_status(lags=[], in_recovery=True, delay=600), t)
    assert verdict == "fail"
    assert what.startswith("standby, replaying")


def test_unreachable_server_fails_status_once_and_skips_the_checks_that_need_it(
    prefect_server, platform, live
):
    closed = with_port(live, 1)  # nothing listens on port 1
    checks = {c.name: c for c in run_postgres_checks.fn(closed, DEFAULTS, engine_for(platform))}
    assert checks["status"].status == "fail"
    assert "cannot connect" in checks["status"].detail
    assert "running" in checks["status"].hint
    for name in ("connection-pool", "slow-queries", "table-statistics", "index-advice"):
        assert checks[name].status == "skipped", name
        assert "status check failed" in checks[name].detail
    assert checks["last-backup"].status == "ok"  # the repository does not need the server
    assert live.get_secret_value() not in str([c.model_dump() for c in checks.values()])


def _session(dsn: SecretStr) -> psycopg.Connection:
    return psycopg.connect(dsn.get_secret_value(), autocommit=True, application_name="test")


def test_connection_pool_names_idle_in_transaction_long_and_blocked_sessions_with_the_blocker(
    live,
):
    holder, waiter, sleeper = _session(live), _session(live), _session(live)
    holder_pid = holder.info.backend_pid
    threads = [
        threading.Thread(
            target=lambda: waiter.execute("UPDATE users SET name = name WHERE id = 2")
        ),
        threading.Thread(target=lambda: sleeper.execute("SELECT pg_sleep(3)")),
    ]
    try:
        holder.execute("BEGIN")
        holder.execute("UPDATE users SET name = 'x' || name WHERE id = 2")
        for thread in threads:
            thread.start()
        time.sleep(SESSION_WAIT_S)
        t = PostgresThresholds(idle_in_transaction_s=0.5, long_query_s=0.5)
        result = check_connection_pool(live, t)
    finally:
        holder.execute("ROLLBACK")
        for thread in threads:
            thread.join(timeout=10)
        for conn in (holder, waiter, sleeper):
            conn.close()
    assert result.status == "warn"
    assert result.metrics["idle_in_transaction"] == 1
    assert result.metrics["blocked"] == 1
    assert result.metrics["long_running"] >= 1  # the sleeper, and the waiter waiting
    assert f"pid {holder_pid}" in result.detail
    assert "UPDATE users SET name = '?' || name WHERE id = 2" in result.detail  # the blocker
    assert "'x'" not in result.detail  # literals are masked
    assert "pg_blocking_pids" not in result.hint and "pg_terminate_backend" in result.hint


def test_connection_pool_fails_near_max_connections(live):
    extra = [_session(live) for _ in range(10)]
    try:
        result = check_connection_pool(live, PostgresThresholds(connections_fail=0.2))
    finally:
        for conn in extra:
            conn.close()
    assert result.status == "fail"
    assert result.metrics["connections"] >= 11
    assert "usable connections in use" in result.detail
    assert "pooler" in result.hint


def test_connection_pool_passes_with_few_short_sessions(live):
    result = check_connection_pool(live, DEFAULTS)
    assert result.status == "ok"
    assert result.metrics["max_connections"] == 50
    assert result.hint == ""


def test_slow_queries_lists_statements_above_the_mean_threshold_by_total_and_mean(live):
    with connect(live) as conn:
        for _ in range(2):
            conn.execute("SELECT pg_sleep(0.3) AS slow_probe")
    result = check_slow_queries(live, PostgresThresholds(slow_query_mean_ms=250))
    assert result.status == "warn"
    assert "slow_probe" in result.detail
    assert "top by total" in result.detail and "top by mean" in result.detail
    assert result.metrics["slowest_mean_ms"] >= 250
    assert "EXPLAIN" in result.hint


def test_slow_queries_pass_when_no_statement_is_slow(tidy):
    result = check_slow_queries(tidy, DEFAULTS)
    assert result.status == "ok"
    assert "cards" in result.detail


def test_missing_pg_stat_statements_is_reported_with_how_to_enable_it(live):
    result = check_slow_queries(other_database(live, "postgres"), DEFAULTS)
    assert result.status == "warn"
    assert "not enabled in database postgres" in result.detail
    assert "CREATE EXTENSION pg_stat_statements" in result.hint
    assert "shared_preload_libraries" not in result.hint  # it is preloaded on the sandbox


def test_table_statistics_find_the_dead_rows_planted_in_profile_views(live):
    result = check_table_statistics(live, DEFAULTS)
    assert result.status == "warn"
    assert "public.profile_views: 30000 dead rows (25%)" in result.detail
    assert result.metrics["database_bytes"] > result.metrics["table_bytes.public.profile_views"]
    assert "VACUUM" in result.hint


def test_index_advice_finds_the_unused_duplicate_and_missing_indexes_planted(live):
    result = check_index_advice(live, DEFAULTS)
    assert result.status == "warn"
    assert "public.profile_views_referrer_idx" in result.detail
    assert "profile_views_viewed_at_copy_idx = profile_views_viewed_at_idx" in result.detail
    assert "large tables read sequentially: public.profile_views" in result.detail
    assert "users_email_key" not in result.detail  # unique indexes enforce, never "unused"
    assert result.metrics["duplicate_groups"] == 1
    assert result.metrics["tables_wanting_index"] == 1


def test_table_statistics_and_index_advice_pass_on_a_tidy_database(tidy):
    tables = check_table_statistics(tidy, PostgresThresholds(dead_tuple_min=1))
    assert tables.status == "ok", tables.detail
    indexes = check_index_advice(tidy, PostgresThresholds(unused_index_min_bytes=0))
    assert indexes.status == "ok", indexes.detail
    assert indexes.hint == ""


def test_wal_archiving_is_healthy_on_the_sandbox(live):
    with connect(live) as conn:
        conn.execute("SELECT pg_switch_wal()")
    result = check_wal_archiving(live, datetime.now(UTC))
    assert result.status == "ok"
    assert result.metrics["archived_count"] >= 1


def test_wal_archiving_fails_with_a_hint_when_the_archive_command_fails(bare):
    dsn = bare.dsn()
    assert dsn is not None
    with connect(dsn) as conn:
        conn.execute("ALTER SYSTEM SET archive_command = 'false'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CREATE TABLE wal_probe AS SELECT 1 AS x")
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    result = check_wal_archiving(dsn, datetime.now(UTC))
    while result.status == "ok" and time.monotonic() < deadline:
        time.sleep(0.5)
        result = check_wal_archiving(dsn, datetime.now(UTC))
    assert result.status == "fail"
    assert "failed at" in result.detail
    assert "archive_command" in result.hint


def test_last_backup_fails_when_the_repository_holds_none(bare):
    result = check_last_backup(engine_for(bare), DEFAULTS, datetime.now(UTC))
    assert result.status == "fail"
    assert "take-backup" in result.hint


def test_last_backup_passes_with_a_fresh_backup_and_fails_once_it_is_too_old(platform):
    engine = engine_for(platform)
    now = datetime.now(UTC)
    fresh = check_last_backup(engine, DEFAULTS, now)
    assert fresh.status == "ok"
    assert fresh.figure.startswith("full backup")
    stale = check_last_backup(engine, DEFAULTS, now + timedelta(hours=DEFAULTS.backup_max_age_h))
    assert stale.status == "fail"
    assert "no backup in 26 h" in stale.hint


@pytest.fixture
def saved_verification(prefect_server) -> Iterator[None]:
    """Put the verify-backup-last Variable back as it was (other tests write it too)."""
    before = Variable.get(LAST_MEASUREMENT)
    yield
    if before is None:
        Variable.unset(LAST_MEASUREMENT)
    else:
        Variable.set(LAST_MEASUREMENT, before, overwrite=True)


def test_last_verification_reads_what_verify_backup_records_and_warns_when_stale(
    saved_verification,
):
    now = datetime.now(UTC)
    Variable.unset(LAST_MEASUREMENT)
    never = check_last_verification(read_last_verification(), DEFAULTS, now)
    assert never.status == "warn"
    assert "verify-backup/on-demand" in never.hint
    Variable.set(
        LAST_MEASUREMENT,
        {
            "backup_label": "20260101-010101F",
            "bytes_restored": 1000,
            "restore_seconds": 4.0,
            "promote_seconds": 1.5,
            "measured_at": (now - timedelta(hours=3)).isoformat(),
        },
        overwrite=True,
    )
    recent = check_last_verification(read_last_verification(), DEFAULTS, now)
    assert recent.status == "ok"
    assert recent.figure == "verified 3 h 0 min ago"
    assert "restore+promote 5.5 s" in recent.detail
    later = now + timedelta(hours=DEFAULTS.verify_max_age_h)
    assert check_last_verification(read_last_verification(), DEFAULTS, later).status == "warn"


def test_last_verification_fails_when_verify_backup_failed_after_its_last_success():
    now = datetime.now(UTC)
    success = {
        "backup_label": "20260101-010101F",
        "restore_seconds": 4.0,
        "promote_seconds": 1.5,
        "measured_at": (now - timedelta(hours=5)).isoformat(),
    }
    failure = {
        "backup_label": "20260102-010101F",
        "failed_check": "amcheck",
        "detail": "1 of 9 btree indexes corrupt",
        "failed_at": (now - timedelta(hours=1)),
    }
    failure["failed_at"] = failure["failed_at"].isoformat()
    failed = check_last_verification(success, DEFAULTS, now, failure)
    assert failed.status == "fail"
    assert "20260102-010101F" in failed.detail and "'amcheck'" in failed.detail and failed.hint
    older = {**failure, "failed_at": (now - timedelta(hours=9)).isoformat()}
    assert check_last_verification(success, DEFAULTS, now, older).status == "ok"


def test_query_texts_are_one_line_short_and_without_string_literals():
    text = "UPDATE users\n   SET password = 'hunter2''s'  WHERE id = 1"
    assert masked_query(text) == "UPDATE users SET password = '?' WHERE id = 1"
    assert len(masked_query("SELECT " + "x, " * 200, limit=50)) == 50
