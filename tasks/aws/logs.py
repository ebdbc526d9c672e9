"""Application errors: counts by pattern in CloudWatch Logs over a window, against a baseline.

For each configured pattern: the count in the last ``logs_window_minutes``, and the hourly rate
over the ``logs_baseline_hours`` before that window. The expected count in the window is the
higher of the measured baseline rate and the pattern's configured ``baseline_per_hour``; a
count above ``spike_ratio`` times that (and at least ``spike_min_count``) fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pydantic import BaseModel

from tasks.aws.clients import AwsError, aws_client, aws_errors
from tasks.core.checking import Check, not_configured, run_concurrently
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.settings import AwsSettings, ErrorPattern

SYSTEM = "logs"
MAX_PAGES = 20  # of up to 10,000 events each: enough to see a spike, bounded in time


class EventCount(BaseModel):
    """Events ``count_events`` counted (FilterLogEvents); a lower bound unless ``complete``."""

    count: int
    complete: bool  # False when MAX_PAGES was reached: the count is a lower bound


@ops_task("run-logs-checks")
def run_logs_checks(settings: AwsSettings, now: datetime | None = None) -> list[CheckResult]:
    """One result per configured error pattern, counted over the window ending at ``now``.

    Never raises. Metrics: ``log_errors_window``, ``log_errors_baseline_per_hour``.
    """
    if not settings.log_group or not settings.error_patterns:
        hint = "set RUNBOOK_AWS_LOG_GROUP and RUNBOOK_AWS_ERROR_PATTERNS"
        return [not_configured(SYSTEM, "error patterns", hint)]
    client = aws_client(settings, "logs")
    end = now or datetime.now(UTC)
    checks: list[Check] = [
        (pattern.name, partial(count_against_baseline, client, settings, pattern, end))
        for pattern in settings.error_patterns
    ]
    return run_concurrently(SYSTEM, checks)


def count_against_baseline(
    client: Any, settings: AwsSettings, pattern: ErrorPattern, end: datetime
) -> CheckResult:
    """One pattern's check: its count in the window ending at ``end`` against its baseline rate.

    The window is ``logs_window_minutes`` long; the baseline is the hourly rate over the
    ``logs_baseline_hours`` before it, or the pattern's ``baseline_per_hour`` when higher. Fails
    when the count exceeds both ``spike_ratio`` times the expected count and ``spike_min_count``.

    Args:
        client: a boto3 ``logs`` client (``aws_client(settings, "logs")``).
    Returns:
        The result, with metrics ``log_errors_window`` (events in the window) and
        ``log_errors_baseline_per_hour`` (the measured rate, events per hour).
    Raises:
        AwsError (or a subclass) from FilterLogEvents; ``run_logs_checks`` makes it a result.
    """
    group = settings.log_group or ""
    window = timedelta(minutes=settings.logs_window_minutes)
    baseline = timedelta(hours=settings.logs_baseline_hours)
    start = end - window
    in_window = count_events(client, group, pattern.pattern, start, end)
    before = count_events(client, group, pattern.pattern, start - baseline, start)
    measured_per_hour = before.count / settings.logs_baseline_hours
    per_hour = max(measured_per_hour, pattern.baseline_per_hour)
    window_hours = settings.logs_window_minutes / 60
    expected = per_hour * window_hours
    limit = max(expected * settings.spike_ratio, float(settings.spike_min_count))
    at_least = "" if in_window.complete else ">= "
    result = CheckResult(
        name=pattern.name,
        status="ok",
        figure=f"{at_least}{in_window.count} in {settings.logs_window_minutes} min",
        detail=f"{pattern.pattern} in {group}: {at_least}{in_window.count} in the window, "
        f"expected {expected:.1f} (baseline {per_hour:.2f}/h over "
        f"{settings.logs_baseline_hours} h), fails above {limit:.1f}",
        metrics={
            "log_errors_window": float(in_window.count),
            "log_errors_baseline_per_hour": measured_per_hour,
        },
    )
    if in_window.count > limit:
        ratio = in_window.count / expected if expected else float("inf")
        return result.model_copy(
            update={
                "status": "fail",
                "hint": f"{pattern.name} is at {ratio:.1f}x its usual rate: read them with "
                f"aws logs filter-log-events --log-group-name {group} --filter-pattern "
                f"'{pattern.pattern}' --start-time {int(start.timestamp() * 1000)}, and check "
                "what changed (deploys, certificates, upstream services)",
            }
        )
    return result


def count_events(
    client: Any, group: str, pattern: str, start: datetime, end: datetime
) -> EventCount:
    """Events matching ``pattern`` with ``start <= timestamp < end`` (pages bounded)."""
    params: dict[str, Any] = {
        "logGroupName": group,
        "filterPattern": pattern,
        "startTime": int(start.timestamp() * 1000),
        "endTime": int(end.timestamp() * 1000) - 1,
    }
    count = 0
    try:
        with aws_errors(f"FilterLogEvents {group}"):
            for _ in range(MAX_PAGES):
                page = client.filter_log_events(**params)
                count += len(page.get("events", []))
                if not page.get("nextToken"):
                    return EventCount(count=count, complete=True)
                params["nextToken"] = page["nextToken"]
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            exc.hint = "create the log group or fix RUNBOOK_AWS_LOG_GROUP"
        raise
    return EventCount(count=count, complete=False)
