"""Stripe checks against the sandbox's localstripe and the platform's webhook_events table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from tasks.stripe.checks import FAILED, SUCCEEDED, run_stripe_checks
from tasks.stripe.client import list_events, stripe_client
from tests.conftest import settings_for
from tests.webhooks import post_event


def test_stripe_checks_find_the_undelivered_events_and_the_decline_rate(platform):
    settings = settings_for(platform)
    results = {r.name: r for r in run_stripe_checks.fn(settings.stripe, settings.live_dsn())}
    unprocessed = results["unprocessed events"]
    assert unprocessed.status == "fail" and unprocessed.hint
    assert unprocessed.metrics["stripe_unprocessed_events"] == 4
    declines = results["decline rate"]
    assert declines.status == "fail" and declines.hint
    assert declines.metrics["stripe_decline_rate"] > 0.15
    assert "insufficient_funds 3" in declines.detail


def test_a_window_with_no_payments_has_no_declines(platform):
    settings = settings_for(platform)
    long_ago = datetime.now(UTC) - timedelta(days=3)
    results = {
        r.name: r for r in run_stripe_checks.fn(settings.stripe, settings.live_dsn(), now=long_ago)
    }
    assert results["decline rate"].status == "ok"
    assert results["decline rate"].metrics["stripe_payment_attempts"] == 0


def test_a_wrong_api_key_fails_both_checks_with_a_key_hint_and_never_shows_it(platform):
    settings = settings_for(platform)
    wrong = settings.stripe.model_copy(update={"api_key": SecretStr("not_a_stripe_key_123")})
    results = run_stripe_checks.fn(wrong, settings.live_dsn())
    assert [r.status for r in results] == ["fail", "fail"]
    assert all("RUNBOOK_STRIPE_API_KEY" in r.hint for r in results)
    assert not any("not_a_stripe_key_123" in r.detail for r in results)


def test_resending_the_missed_events_to_the_webhook_makes_the_check_pass(fresh_platform):
    settings = settings_for(fresh_platform)
    with stripe_client(settings.stripe) as client:
        now = datetime.now(UTC)
        listed = list_events(client, [SUCCEEDED, FAILED], now - timedelta(hours=1), now, 100)
    app = fresh_platform.status().services["app"]
    secret = settings.stripe.webhook_secret.get_secret_value()
    statuses = [post_event(app, event, secret).json()["duplicate"] for event in listed.events]
    assert sorted(statuses) == [False] * 4 + [True] * 16  # only the 4 missed ones are new
    results = {r.name: r for r in run_stripe_checks.fn(settings.stripe, settings.live_dsn())}
    assert results["unprocessed events"].status == "ok"
    assert results["unprocessed events"].figure == "0 of 20"


def test_a_listing_cut_at_max_events_warns_instead_of_passing(platform):
    settings = settings_for(platform)
    capped = settings.stripe.model_copy(update={"max_events": 2, "decline_rate_max": 1.0})
    results = {r.name: r for r in run_stripe_checks.fn(capped, settings.live_dsn())}
    declines = results["decline rate"]
    assert declines.status == "warn"
    assert declines.metrics["stripe_payment_attempts"] == 4  # 2 of each type
    assert "RUNBOOK_STRIPE_MAX_EVENTS" in declines.hint
