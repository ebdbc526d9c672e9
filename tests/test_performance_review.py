"""The weekly performance review on the sandbox: a baseline stored by one run, a regression
planted before the next (a statement that got slower, one called far more often) and found."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from flows.maintenance.weekly import weekly_performance_review
from sandbox.platform import Sandbox
from tasks.core.settings import PerformanceThresholds
from tasks.postgres.sql import connect
from tasks.postgres.stats import Statement
from tasks.reviews.performance import (
    BASELINE_FILE,
    PerformanceBaseline,
    QueryFigures,
    period_figures,
    review_statements,
)


@pytest.fixture(scope="module")
def live(platform: Sandbox) -> SecretStr:
    dsn = platform.dsn()
    assert dsn is not None
    return dsn


def run_probes(dsn: SecretStr, *, sleep_s: float, sleeps: int, pings: int) -> None:
    with connect(dsn) as conn:
        for _ in range(sleeps):
            conn.execute("SELECT pg_sleep(%s) AS weekly_probe_slower", (sleep_s,))
        for _ in range(pings):
            conn.execute("SELECT %s::int AS weekly_probe_busier", (1,))


def test_weekly_review_detects_a_regression_planted_between_two_runs(
    prefect_server, platform, use_platform, live, monkeypatch, tmp_path
):
    use_platform(platform)
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_STATE_DIR", str(tmp_path))
    run_probes(live, sleep_s=0.001, sleeps=25, pings=30)
    first = weekly_performance_review()
    (created,) = [c for c in first.checks if c.name == "query-regressions"]
    assert created.figure == "baseline created"
    baseline = PerformanceBaseline.model_validate_json((tmp_path / BASELINE_FILE).read_text())
    assert any("weekly_probe_slower" in q.query for q in baseline.queries.values())

    run_probes(live, sleep_s=0.03, sleeps=25, pings=150)  # 30x slower; 5x the calls
    second = weekly_performance_review()
    (regressions,) = [c for c in second.checks if c.name == "query-regressions"]
    assert regressions.status == "warn"
    found = regressions.detail.split("; ")
    (slower,) = [f for f in found if "weekly_probe_slower" in f]
    (busier,) = [f for f in found if "weekly_probe_busier" in f]
    assert slower.startswith("mean ")
    assert busier.startswith("calls 30 -> 150")
    assert "EXPLAIN" in regressions.hint
    names = {c.name for c in second.checks}
    assert {"slow-queries", "table-statistics", "index-advice"} <= names
    updated = PerformanceBaseline.model_validate_json((tmp_path / BASELINE_FILE).read_text())
    assert updated.taken_at > baseline.taken_at  # the baseline moved on after the review


def test_review_without_pg_stat_statements_fails_the_check_and_keeps_the_old_baseline(live):
    postgres_db = SecretStr(live.get_secret_value().rsplit("/", 1)[0] + "/postgres")
    check, updated = review_statements.fn(
        postgres_db, None, PerformanceThresholds(), datetime.now(UTC)
    )
    assert check.status == "fail"
    assert "CREATE EXTENSION pg_stat_statements" in check.hint
    assert updated is None


def test_a_statistics_reset_between_runs_makes_the_current_counts_the_period():
    before = QueryFigures(query="q", calls=1000, total_ms=5000, period_calls=100, period_mean_ms=5)
    after_reset = Statement(queryid=1, query="q", calls=40, total_ms=400, mean_ms=10, rows=40)
    figures = period_figures(after_reset, before)
    assert (figures.period_calls, figures.period_mean_ms) == (40, 10)
    grown = Statement(queryid=1, query="q", calls=1100, total_ms=6000, mean_ms=5.4, rows=1)
    figures = period_figures(grown, before)
    assert (figures.period_calls, figures.period_mean_ms) == (100, 10)
