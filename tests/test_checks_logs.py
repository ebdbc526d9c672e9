"""Error counts from the sandbox's CloudWatch Logs, a window against the baseline before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.aws.logs import run_logs_checks
from tests.conftest import settings_for


def test_the_webhook_signature_spike_fails_and_the_steady_patterns_pass(platform):
    results = {r.name: r for r in run_logs_checks.fn(settings_for(platform).aws)}
    spike = results["webhook-signature"]
    assert spike.status == "fail"
    assert spike.metrics["log_errors_window"] >= 10
    assert spike.metrics["log_errors_baseline_per_hour"] < 1
    assert "filter-log-events" in spike.hint
    assert results["s3-upload-timeout"].status == "ok"
    assert results["slow-query"].status == "ok"
    assert results["slow-query"].metrics["log_errors_baseline_per_hour"] > 5


def test_a_window_from_before_the_spike_passes(platform):
    earlier = datetime.now(UTC) - timedelta(hours=3)
    results = run_logs_checks.fn(settings_for(platform).aws, now=earlier)
    assert [r.status for r in results] == ["ok", "ok", "ok"]


def test_a_missing_log_group_is_a_failed_check_naming_the_setting(platform):
    settings = settings_for(platform).aws.model_copy(update={"log_group": "/linkist/nope"})
    results = run_logs_checks.fn(settings)
    assert {r.status for r in results} == {"fail"}
    assert all("RUNBOOK_AWS_LOG_GROUP" in r.hint for r in results)
