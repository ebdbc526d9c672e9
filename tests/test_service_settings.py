"""Settings of the platform services (AWS, Stripe, HTTP): defaults, errors, secrets, the file."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr

from tasks.aws.logs import run_logs_checks
from tasks.aws.s3 import run_s3_checks
from tasks.core.errors import SettingsError
from tasks.core.settings import AwsSettings, HttpSettings, StripeSettings, load_settings
from tasks.http.health import run_health_checks
from tasks.stripe.checks import run_stripe_checks

DSN = "postgresql://ops:pw@db.internal:5432/linkist"


@pytest.fixture(autouse=True)
def only_a_dsn(monkeypatch):
    for key in [k for k in os.environ if k.startswith("RUNBOOK_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RUNBOOK_PG_DSN", DSN)


def test_flows_still_load_with_only_a_dsn_and_get_the_documented_thresholds():
    settings = load_settings()
    assert settings.aws.bounce_rate_max == 0.05
    assert settings.aws.complaint_rate_max == 0.001
    assert settings.aws.buckets == [] and settings.http.endpoints == []
    assert settings.stripe.api_key is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RUNBOOK_AWS_BOUNCE_RATE_MAX", "2"),
        ("RUNBOOK_AWS_REGION", "moon"),
        ("RUNBOOK_AWS_ERROR_PATTERNS", '[{"name": "Has Spaces", "pattern": "x"}]'),
        ("RUNBOOK_STRIPE_DECLINE_WINDOW_HOURS", "0"),
        ("RUNBOOK_HTTP_ENDPOINTS", '[{"name": "app", "url": "ftp://app"}]'),
    ],
)
def test_an_invalid_service_setting_names_its_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_service_secrets_never_show_in_reprs_or_messages(monkeypatch):
    monkeypatch.setenv("RUNBOOK_AWS_SECRET_ACCESS_KEY", "aws-very-secret")
    monkeypatch.setenv("RUNBOOK_STRIPE_API_KEY", "sk_test_verysecret")
    monkeypatch.setenv("RUNBOOK_STRIPE_WEBHOOK_SECRET", "whsec_verysecret")
    monkeypatch.setenv("RUNBOOK_STRIPE_TIMEOUT_S", "-1")
    with pytest.raises(SettingsError) as failure:
        load_settings()
    assert "verysecret" not in str(failure.value)
    monkeypatch.delenv("RUNBOOK_STRIPE_TIMEOUT_S")
    shown = repr(load_settings()) + str(load_settings().model_dump())
    assert "very-secret" not in shown and "verysecret" not in shown


def test_unconfigured_systems_are_skipped_with_the_variable_to_set():
    results = [
        *run_s3_checks.fn(AwsSettings()),
        *run_logs_checks.fn(AwsSettings()),
        *run_health_checks.fn(HttpSettings()),
    ]
    assert [r.status for r in results] == ["skipped"] * 3
    for result, variable in zip(
        results,
        ["RUNBOOK_AWS_BUCKETS", "RUNBOOK_AWS_LOG_GROUP", "RUNBOOK_HTTP_ENDPOINTS"],
        strict=True,
    ):
        assert variable in result.hint


def test_no_stripe_key_is_a_failed_check_naming_the_variable():
    results = run_stripe_checks.fn(StripeSettings(), SecretStr(DSN))
    assert [r.status for r in results] == ["fail", "fail"]
    assert all("RUNBOOK_STRIPE_API_KEY" in r.hint for r in results)
