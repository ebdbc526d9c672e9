"""Capacity planning: samples from the checks' metrics, least-squares trends with a known slope,
days left to each limit, and the monthly flow's report with its chart."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from flows.checks import UNHEALTHY
from flows.maintenance.monthly import monthly_capacity_planning
from tasks.core.reports import CheckResult
from tasks.core.settings import MaintenanceSettings
from tasks.reviews.capacity import (
    SAMPLES_FILE,
    CapacitySample,
    capacity_sample,
    capacity_trends,
    forecast,
    judge_trend,
    least_squares,
)

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
GB = 1e9


def daily(values: list[float], end: datetime = NOW) -> list[tuple[datetime, float]]:
    return [(end - timedelta(days=len(values) - 1 - i), v) for i, v in enumerate(values)]


def test_least_squares_recovers_a_known_slope_and_intercept():
    slope, intercept = least_squares([(x, 3.5 * x - 2) for x in range(10)])
    assert slope == pytest.approx(3.5)
    assert intercept == pytest.approx(-2)
    with pytest.raises(ValueError, match="two different times"):
        least_squares([(1.0, 1.0), (1.0, 2.0)])


def test_days_left_is_right_on_samples_growing_one_gigabyte_a_day_with_noise():
    # 10 GB growing 1 GB/day for 30 days, +-0.3 GB alternating noise (cancels in the fit)
    values = [(10 + day + (0.3 if day % 2 else -0.3)) * GB for day in range(30)]
    trend = forecast("database-bytes", "bytes", daily(values), 100 * GB, NOW)
    assert trend.per_day == pytest.approx(1 * GB, rel=0.01)
    assert trend.fitted_now == pytest.approx(39 * GB, rel=0.01)
    assert trend.days_left == pytest.approx(61, abs=0.5)  # (100 - 39) GB at 1 GB/day
    assert judge_trend(trend, warn_days=90, fail_days=30).status == "warn"
    assert judge_trend(trend, warn_days=60, fail_days=30).status == "ok"
    assert judge_trend(trend, warn_days=90, fail_days=62).status == "fail"


def test_a_flat_or_shrinking_series_has_no_days_left_and_one_past_its_limit_has_none_left():
    flat = forecast("connections", "connections", daily([20.0] * 10), 50, NOW)
    assert flat.days_left is None
    shrinking = forecast("s3", "bytes", daily([9.0, 8.0, 7.0, 6.0]), 10, NOW)
    assert shrinking.days_left is None
    assert judge_trend(shrinking, 90, 30).status == "ok"
    over = forecast("ses", "emails", daily([180.0, 190.0, 210.0]), 200, NOW)
    assert over.days_left == 0
    assert judge_trend(over, 90, 30).status == "fail"


def test_a_sample_picks_the_configured_metrics_with_globs_and_limits_from_other_metrics():
    checks = [
        CheckResult(
            name="table-statistics",
            status="ok",
            system="postgres",
            metrics={"database_bytes": 5e8, "table_bytes.public.users": 1e6, "tables": 8},
        ),
        CheckResult(
            name="connection-pool",
            status="ok",
            system="postgres",
            metrics={"connections": 12, "max_connections": 50},
        ),
        CheckResult(
            name="uploads: storage used", status="ok", system="s3", metrics={"s3_bytes": 7e6}
        ),
    ]
    sample = capacity_sample(checks, MaintenanceSettings().capacity_series, NOW)
    assert sample.values == {
        "database-bytes": 5e8,
        "table-bytes.public.users": 1e6,
        "connections": 12,
        "s3-bytes.uploads": 7e6,
    }
    assert sample.limits == {"database-bytes": 100e9, "connections": 50}
    assert sample.units["connections"] == "connections"


def test_trends_need_two_days_and_use_the_newest_limit():
    samples = [
        CapacitySample(at=NOW - timedelta(days=1), values={"a": 1, "b": 5}, limits={"a": 10}),
        CapacitySample(at=NOW, values={"a": 2}, limits={"a": 20}),
    ]
    (trend,) = capacity_trends(samples, NOW)
    assert trend.series == "a"
    assert trend.limit == 20
    assert trend.days_left == pytest.approx(18)


def test_monthly_capacity_planning_reports_days_left_per_limit_with_a_chart(
    prefect_server, monkeypatch, tmp_path
):
    last = datetime.now(UTC) - timedelta(hours=1)
    lines = [
        CapacitySample(
            at=at,
            values={"connections": conns, "database-bytes": 30 * GB + day * 0.5 * GB},
            limits={"connections": 50, "database-bytes": 100 * GB},
            units={"connections": "connections", "database-bytes": "bytes"},
        ).model_dump(mode="json")
        for day, (at, conns) in enumerate(daily([20 + day for day in range(20)], last))
    ]
    (tmp_path / SAMPLES_FILE).write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_STATE_DIR", str(tmp_path))
    state = monthly_capacity_planning(return_state=True)
    assert state.is_completed()
    assert state.name == UNHEALTHY  # connections reach 50 within the fail threshold
    report = state.result()
    checks = {c.name: c for c in report.checks}
    hours_since_last = (report.started_at - last).total_seconds() / 3600
    assert checks["connections"].status == "fail"  # 39 now, +1 a day: 11 days to 50
    assert checks["connections"].metrics["days_left"] == pytest.approx(
        11 - hours_since_last / 24, abs=0.01
    )
    assert checks["database-bytes"].status == "ok"  # 61 GB left at 0.5 GB/day
    assert checks["database-bytes"].metrics["per_day"] == pytest.approx(0.5 * GB)
    (chart,) = (tmp_path / "charts").glob("capacity-*.svg")
    svg = ET.fromstring(chart.read_text())  # noqa: S314 - our own output: well-formed SVG
    groups = [g.get("id", "") for g in svg.iter("{http://www.w3.org/2000/svg}g")]
    assert sorted(g for g in groups if g.startswith(("series-", "forecast-"))) == [
        "forecast-connections",
        "forecast-database-bytes",
        "series-connections",
        "series-database-bytes",
    ]
    with get_client(sync_client=True) as client:
        (artifact, *_) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["monthly-capacity-planning-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            ),
        )
    assert "data:image/svg+xml;base64," in str(artifact.data)
    assert "| connections | 20 |" in str(artifact.data)


def test_monthly_capacity_planning_without_enough_samples_says_how_to_get_them(
    prefect_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_STATE_DIR", str(tmp_path))
    report = monthly_capacity_planning()
    (check,) = report.checks
    assert check.status == "warn"
    assert "daily health check records one sample" in check.hint
