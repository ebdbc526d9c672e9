"""The weekly performance review: statements against a stored baseline, then a new baseline.

pg_stat_statements counts from its last reset, so a week's figures are differences between two
snapshots: the baseline keeps each top statement's cumulative ``calls`` and ``total_ms`` and its
mean over the previous period. A statement regressed when this period's mean time grew by
``regression_factor`` (and ``regression_min_ms``), or its calls by ``calls_factor``. A reset
between runs (fewer calls than before) makes the current figures the period.

The baseline is ``performance-baseline.json`` in the state dir.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, SecretStr

from tasks.core.checking import run_concurrently
from tasks.core.errors import RunbookError
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import PerformanceThresholds, PostgresThresholds
from tasks.core.state_files import read_json, write_json
from tasks.postgres.health import check_index_advice, check_slow_queries, check_table_statistics
from tasks.postgres.stats import (
    Statement,
    require_pg_stat_statements,
    statements,
)

BASELINE_FILE = "performance-baseline.json"
SYSTEM = "performance"
LISTED = 10


class QueryFigures(BaseModel):
    """One statement's figures in the baseline.

    ``calls`` and ``total_ms`` are cumulative, as pg_stat_statements had them; ``period_calls``
    and ``period_mean_ms`` are the period's calls and mean execution time (ms).
    """

    query: str
    calls: int  # cumulative, as pg_stat_statements had it
    total_ms: float  # cumulative
    period_calls: int
    period_mean_ms: float


class PerformanceBaseline(BaseModel):
    """The top statements' figures at ``taken_at``, by queryid (``performance-baseline.json``)."""

    taken_at: AwareDatetime
    queries: dict[str, QueryFigures]  # by queryid


class Regression(BaseModel):
    """A statement whose mean time (ms) or calls this period grew past the thresholds."""

    queryid: str
    query: str
    kind: Literal["mean time", "calls"]
    before: float
    after: float


@ops_task("load-performance-baseline")
def load_performance_baseline(state_dir: Path) -> PerformanceBaseline | None:
    """The stored baseline, or None before the first review.

    Raises:
        StateFileError: the file cannot be read or is not JSON. ValidationError: not a baseline.
    """
    raw = read_json(state_dir / BASELINE_FILE)
    return None if raw is None else PerformanceBaseline.model_validate(raw)


@ops_task("save-performance-baseline")
def save_performance_baseline(state_dir: Path, baseline: PerformanceBaseline) -> None:
    """Replace the stored baseline (``performance-baseline.json``) atomically.

    Raises:
        StateFileError: the state dir cannot be written.
    """
    write_json(state_dir / BASELINE_FILE, baseline.model_dump(mode="json"))
    run_logger().info(
        "Baseline of %d statements saved to %s", len(baseline.queries), state_dir / BASELINE_FILE
    )


def period_figures(current: Statement, before: QueryFigures | None) -> QueryFigures:
    """This period's calls and mean: the difference from ``before``, unless stats were reset."""
    if before is None or current.calls < before.calls:
        calls, total = current.calls, current.total_ms
    else:
        calls, total = current.calls - before.calls, current.total_ms - before.total_ms
    return QueryFigures(
        query=current.query,
        calls=current.calls,
        total_ms=current.total_ms,
        period_calls=calls,
        period_mean_ms=total / calls if calls else 0.0,
    )


def next_baseline(
    current: list[Statement], baseline: PerformanceBaseline | None, taken_at: datetime
) -> PerformanceBaseline:
    """The baseline after this run: this period's figures of the current top statements."""
    old = baseline.queries if baseline else {}
    return PerformanceBaseline(
        taken_at=taken_at,
        queries={str(s.queryid): period_figures(s, old.get(str(s.queryid))) for s in current},
    )


def find_regressions(
    baseline: PerformanceBaseline, updated: PerformanceBaseline, t: PerformanceThresholds
) -> list[Regression]:
    """Statements whose mean time or calls this period grew past the thresholds."""
    found = []
    for queryid, now in updated.queries.items():
        before = baseline.queries.get(queryid)
        if before is None or now.period_calls < t.min_calls:
            continue
        slower = (
            before.period_calls
            and now.period_mean_ms >= before.period_mean_ms * t.regression_factor
            and now.period_mean_ms - before.period_mean_ms >= t.regression_min_ms
        )
        busier = now.period_calls >= max(before.period_calls, 1) * t.calls_factor
        found += [
            Regression(queryid=queryid, query=now.query, kind=kind, before=old, after=new)
            for kind, grew, old, new in (
                ("mean time", slower, before.period_mean_ms, now.period_mean_ms),
                ("calls", busier, before.period_calls, now.period_calls),
            )
            if grew
        ]
    return found


def _describe(r: Regression) -> str:
    if r.kind == "calls":
        return f"calls {r.before:.0f} -> {r.after:.0f}: {r.query}"
    return f"mean {r.before:.1f} -> {r.after:.1f} ms: {r.query}"


@ops_task("review-statements")
def review_statements(
    dsn: SecretStr,
    baseline: PerformanceBaseline | None,
    thresholds: PerformanceThresholds,
    now: datetime,
) -> tuple[CheckResult, PerformanceBaseline | None]:
    """The regressions check against ``baseline``, and the baseline to store once the review
    is reported (None when the statements could not be read: keep the old one)."""
    try:
        require_pg_stat_statements(dsn)
        current = statements(dsn, "total", thresholds.baseline_queries)
    except RunbookError as exc:
        return CheckResult(
            name="query-regressions",
            status="fail",
            system=SYSTEM,
            detail=exc.message,
            hint=exc.hint,
        ), None
    return compare_with_baseline(current, baseline, thresholds, now)


def compare_with_baseline(
    current: list[Statement],
    baseline: PerformanceBaseline | None,
    thresholds: PerformanceThresholds,
    now: datetime,
) -> tuple[CheckResult, PerformanceBaseline]:
    """The regressions check, and the baseline after this run."""
    updated = next_baseline(current, baseline, now)
    if baseline is None:
        return CheckResult(
            name="query-regressions",
            status="ok",
            system=SYSTEM,
            figure="baseline created",
            detail=f"no baseline yet: this run's {len(current)} statements become it",
        ), updated
    regressions = find_regressions(baseline, updated, thresholds)
    slower = [r for r in regressions if r.kind == "mean time"]
    busier = [r for r in regressions if r.kind == "calls"]
    since = f"since {baseline.taken_at:%Y-%m-%d %H:%M}"
    return CheckResult(
        name="query-regressions",
        status="warn" if regressions else "ok",
        system=SYSTEM,
        figure=f"{len(slower)} slower, {len(busier)} called more often {since}",
        detail="; ".join(_describe(r) for r in regressions[:LISTED])
        or f"{len(updated.queries)} statements within the thresholds",
        hint="EXPLAIN (ANALYZE, BUFFERS) the slower statements and compare plans (a lost "
        "index, stale statistics, grown data); a jump in calls is often an N+1 loop or a "
        "retry storm in a recent release"
        if regressions
        else "",
        metrics={
            "statements": float(len(updated.queries)),
            "slower": float(len(slower)),
            "more_calls": float(len(busier)),
        },
    ), updated


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
