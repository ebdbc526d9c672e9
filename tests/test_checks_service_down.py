"""A platform service stopped during a run: its checks fail with a hint, the others still report."""

from __future__ import annotations

from tasks.aws.logs import run_logs_checks
from tasks.aws.s3 import run_s3_checks
from tasks.aws.ses import run_ses_checks
from tasks.core.reports import CheckResult
from tasks.http.health import run_health_checks
from tasks.stripe.checks import run_stripe_checks
from tests.conftest import settings_for


def every_check(box) -> dict[str, list[CheckResult]]:
    settings = settings_for(box)
    return {
        "http": run_health_checks.fn(settings.http),
        "s3": run_s3_checks.fn(settings.aws),
        "ses": run_ses_checks.fn(settings.aws),
        "logs": run_logs_checks.fn(settings.aws),
        "stripe": run_stripe_checks.fn(settings.stripe, settings.live_dsn()),
    }


def statuses(results: dict[str, list[CheckResult]]) -> dict[str, list[str]]:
    return {system: [r.status for r in checks] for system, checks in results.items()}


def assert_down(results: list[CheckResult], words: str) -> None:
    failed = [r for r in results if r.status == "fail"]
    assert failed, "a stopped service must fail its checks"
    assert all(r.status in ("fail", "skipped") and r.hint for r in results)
    assert all(words in r.detail for r in failed), [r.detail for r in failed]


def test_each_stopped_service_fails_only_its_own_checks_and_the_others_still_report(
    fresh_platform,
):
    before = statuses(every_check(fresh_platform))
    services = fresh_platform.services()

    services.daemon("moto").stop()
    after = every_check(fresh_platform)
    for system in ("s3", "ses", "logs"):
        assert_down(after[system], "no answer from AWS")
    assert statuses(after)["http"] == before["http"]
    assert statuses(after)["stripe"] == before["stripe"]

    services.daemon("localstripe").stop()
    after = every_check(fresh_platform)
    assert_down(after["stripe"], "Unexpected error communicating with Stripe")
    assert all("RUNBOOK_STRIPE_API_BASE" in r.hint for r in after["stripe"])
    assert statuses(after)["http"] == before["http"]

    services.daemon("app").stop()
    after = every_check(fresh_platform)
    assert_down(after["http"], "cannot connect")


def test_app_health_fails_with_its_503_when_its_database_is_down(fresh_platform):
    settings = settings_for(fresh_platform).http
    fresh_platform.cluster().stop()
    health, route = run_health_checks.fn(settings)
    assert health.status == "fail"
    assert "answered 503" in health.detail and "database" in health.hint
    assert route.status == "ok"  # the app itself is up
