"""Capacity: a sample a day from the health checks' metrics, trends, and days left to each limit.

The daily health check appends one sample (``capacity-samples.jsonl`` in the state dir): the
configured series (``MaintenanceSettings.capacity_series``) picked from its checks' metrics by
``system/check/metric`` key, with their limits. Monthly planning fits a least-squares line
through each series' samples in the window and says when the line meets the limit.
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel

from tasks.core.charts import Line, line_chart, svg_data_uri
from tasks.core.reports import CheckResult, Status, markdown_table, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import CapacitySeries
from tasks.core.state_files import StateFileError, append_line, read_lines, write_text
from tasks.core.units import human_bytes

SAMPLES_FILE = "capacity-samples.jsonl"
SYSTEM = "capacity"
DAY_S = 86400.0


class CapacitySample(BaseModel):
    """One day's sample: each series' value, limit and unit, from the daily checks' metrics."""

    at: AwareDatetime
    values: dict[str, float]
    limits: dict[str, float] = {}
    units: dict[str, str] = {}


def metric_index(checks: list[CheckResult]) -> dict[str, float]:
    """Every metric of every check, keyed ``system/check/metric``."""
    return {f"{c.system}/{c.name}/{key}": value for c in checks for key, value in c.metrics.items()}


def _matches(pattern: str, keys: list[str]) -> list[tuple[str, str]]:
    """(key, what the ``*`` stood for) for each key matching ``pattern``."""
    if "*" not in pattern:
        return [(pattern, "")] if pattern in keys else []
    regex = re.compile(re.escape(pattern).replace(r"\*", "(.+)"))
    return [(k, m.group(1)) for k in keys if (m := regex.fullmatch(k))]


def capacity_sample(
    checks: list[CheckResult], series: list[CapacitySeries], at: datetime
) -> CapacitySample:
    """The configured series found in the checks' metrics (a series not found is left out)."""
    metrics = metric_index(checks)
    keys = sorted(metrics)
    sample = CapacitySample(at=at, values={})
    for spec in series:
        for key, star in _matches(spec.metric, keys):
            name = spec.name.replace("*", star)
            sample.values[name] = metrics[key]
            sample.units[name] = spec.unit
            limit = spec.limit if spec.limit is not None else metrics.get(spec.limit_metric or "")
            if limit:
                sample.limits[name] = limit
    return sample


def record_capacity_sample(
    checks: list[CheckResult], series: list[CapacitySeries], state_dir: Path, at: datetime
) -> CheckResult:
    """Append today's sample to the state dir's samples file; the result says how that went.

    Not a task: a local append with nothing to retry, whose failure is a failed result already.
    """
    path = state_dir / SAMPLES_FILE

    def record() -> CheckResult:
        sample = capacity_sample(checks, series, at)
        append_line(path, sample.model_dump(mode="json"))
        return CheckResult(
            name="sample",
            status="ok",
            figure=f"{len(sample.values)} series",
            detail=f"kept in {path}",
        )

    result = timed_check("sample", record, system=SYSTEM)
    run_logger().info("Capacity sample: %s %s", result.status, result.detail)
    return result


@ops_task("load-capacity-samples")
def load_capacity_samples(state_dir: Path, since: datetime) -> list[CapacitySample]:
    """The samples taken since ``since``, oldest first."""
    samples = [CapacitySample.model_validate(r) for r in read_lines(state_dir / SAMPLES_FILE)]
    return sorted((s for s in samples if s.at >= since), key=lambda s: s.at)


# -- trends and forecast --------------------------------------------------------------------------


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through ``points``
    (``statistics.linear_regression``).

    Raises:
        ValueError: fewer than two distinct x values.
    """
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        raise ValueError("least squares needs samples at two different times at least")
    fit = statistics.linear_regression(xs, [y for _, y in points])
    return fit.slope, fit.intercept


class Trend(BaseModel):
    """A series' least-squares line over the window, and the days until it reaches the limit.

    ``per_day`` is in the series' unit per day; ``days_left`` is None without a limit or growth.
    """

    series: str
    unit: str
    samples: int
    first_at: AwareDatetime
    last_at: AwareDatetime
    latest: float
    per_day: float  # slope of the fitted line
    fitted_now: float
    limit: float | None
    days_left: float | None  # None: no limit, or not growing

    def fmt(self, value: float) -> str:
        """``value`` in the series' unit: binary units for bytes, else one decimal and the unit."""
        return human_bytes(value) if self.unit == "bytes" else f"{value:,.1f} {self.unit}".strip()


def forecast(
    series: str,
    unit: str,
    points: list[tuple[datetime, float]],
    limit: float | None,
    now: datetime,
) -> Trend:
    """Fit ``points`` and, when growing toward ``limit``, the days until the line reaches it."""
    origin = points[0][0]
    xy = [((at - origin).total_seconds() / DAY_S, value) for at, value in points]
    slope, intercept = least_squares(xy)
    x_now = (now - origin).total_seconds() / DAY_S
    fitted_now = intercept + slope * x_now
    days_left: float | None = None
    if limit is not None and fitted_now >= limit:
        days_left = 0.0
    elif limit is not None and slope > 0:
        days_left = (limit - fitted_now) / slope
    return Trend(
        series=series,
        unit=unit,
        samples=len(points),
        first_at=points[0][0],
        last_at=points[-1][0],
        latest=points[-1][1],
        per_day=slope,
        fitted_now=fitted_now,
        limit=limit,
        days_left=days_left,
    )


def capacity_trends(samples: list[CapacitySample], now: datetime) -> list[Trend]:
    """A trend per series seen at two different times at least; the newest limit applies."""
    names = sorted({name for s in samples for name in s.values})
    trends = []
    for name in names:
        points = [(s.at, s.values[name]) for s in samples if name in s.values]
        if len({at for at, _ in points}) < 2:
            continue
        limits = [s.limits[name] for s in samples if name in s.limits]
        units = [s.units.get(name, "") for s in samples if name in s.values]
        trends.append(forecast(name, units[-1], points, limits[-1] if limits else None, now))
    return trends


def judge_trend(trend: Trend, warn_days: float, fail_days: float) -> CheckResult:
    """The check of one trend: fails under ``fail_days`` days left, warns under ``warn_days``.

    A series without a limit, or not growing toward it, is ok. Metrics: ``latest``, ``per_day``
    (unit per day), ``days_left`` (-1 when there is none).
    """
    growth = f"{'+' if trend.per_day >= 0 else '-'}{trend.fmt(abs(trend.per_day))}/day"
    status: Status = "ok"
    if trend.days_left is None:
        figure = f"{trend.fmt(trend.latest)}, {growth}"
        if trend.limit is not None:
            figure += f"; not growing toward {trend.fmt(trend.limit)}"
    else:
        figure = f"{trend.days_left:.0f} days left to {trend.fmt(trend.limit or 0)} ({growth})"
        if trend.days_left < fail_days:
            status = "fail"
        elif trend.days_left < warn_days:
            status = "warn"
    return CheckResult(
        name=trend.series,
        status=status,
        system=SYSTEM,
        figure=figure,
        detail=f"{trend.samples} samples {trend.first_at:%Y-%m-%d}..{trend.last_at:%Y-%m-%d}; "
        f"latest {trend.fmt(trend.latest)}",
        hint=""
        if status == "ok"
        else f"plan the increase now: raise the limit of {trend.series} (storage, "
        "max_connections, SES quota) or reduce the growth (retention, archiving)",
        metrics={
            "latest": trend.latest,
            "per_day": trend.per_day,
            "days_left": -1.0 if trend.days_left is None else trend.days_left,
        },
    )


def usage_chart(
    trends: list[Trend], samples: list[CapacitySample], now: datetime, horizon_days: float
) -> str:
    """SVG: each limited series as % of its limit by day, dashed along its forecast (up to the
    limit, or ``horizon_days`` ahead at most)."""
    limited = [t for t in trends if t.limit]
    origin = min((t.first_at for t in limited), default=now)

    def day(at: datetime) -> float:
        return (at - origin).total_seconds() / DAY_S

    lines = []
    for t in limited:
        limit = t.limit or 1.0
        points = [
            (day(s.at), 100 * s.values[t.series] / limit) for s in samples if t.series in s.values
        ]
        projection: list[tuple[float, float]] = []
        if t.days_left is not None:
            ahead = min(t.days_left, horizon_days)
            projection = [
                (day(now), 100 * t.fitted_now / limit),
                (day(now) + ahead, 100 * (t.fitted_now + t.per_day * ahead) / limit),
            ]
        lines.append(Line(t.series, points, projection))
    return line_chart(
        "Capacity used, % of limit (dashed: least-squares forecast)",
        lines,
        x_label=f"days since {origin:%Y-%m-%d}",
        y_label="% of limit",
        limit_y=100.0,
    )


def trends_table(trends: list[Trend]) -> str:
    """A markdown table of the trends: samples, latest, per day, limit, days left."""
    return markdown_table(
        ["series", "samples", "latest", "per day", "limit", "days left"],
        [
            [
                t.series,
                t.samples,
                t.fmt(t.latest),
                t.fmt(t.per_day),
                t.fmt(t.limit) if t.limit else "-",
                f"{t.days_left:.0f}" if t.days_left is not None else "-",
            ]
            for t in trends
        ],
    )


@ops_task("plan-capacity")
def plan_capacity(
    samples: list[CapacitySample],
    now: datetime,
    warn_days: float,
    fail_days: float,
    chart_dir: Path,
) -> tuple[list[CheckResult], dict[str, str]]:
    """A check per series (days left against the thresholds) and the report's sections: the
    trends table and the chart (embedded, and written to ``chart_dir``)."""
    trends = capacity_trends(samples, now)
    if not trends:
        return [
            CheckResult(
                name="samples",
                status="warn",
                system=SYSTEM,
                figure=f"{len(samples)} samples",
                detail="a trend needs samples from two different days at least",
                hint="the daily health check records one sample per run: let it run, or check "
                "that it can write RUNBOOK_MAINTENANCE_STATE_DIR",
            )
        ], {}
    svg = usage_chart(trends, samples, now, horizon_days=warn_days)
    chart_file = chart_dir / f"capacity-{now:%Y-%m-%d}.svg"
    try:
        write_text(chart_file, svg)
        saved = f"Also saved as `{chart_file}`."
    except StateFileError as exc:
        saved = f"Not saved: {exc.message}"
    checks = [judge_trend(t, warn_days, fail_days) for t in trends]
    return checks, {
        "Trends (least squares over the window)": trends_table(trends),
        "Chart": f"![capacity used, % of limit]({svg_data_uri(svg)})\n\n{saved}",
    }
