"""SES checks against the sandbox's moto server (bounces counted from SES's mailbox simulator)."""

from __future__ import annotations

from tasks.aws.ses import run_ses_checks
from tests.conftest import settings_for


def test_ses_checks_find_the_bounce_rate_and_the_unverified_identity(platform):
    results = {r.name: r for r in run_ses_checks.fn(settings_for(platform).aws)}
    assert results["sending quota"].status == "ok"
    assert 0 < results["sending quota"].metrics["ses_quota_used_ratio"] < 0.8
    bounce = results["bounce rate"]
    assert bounce.status == "fail" and bounce.hint
    assert bounce.metrics["ses_bounce_rate"] > 0.05
    assert results["complaint rate"].status == "ok"
    for name in ("identities verified", "dkim"):
        assert results[name].status == "fail"
        assert "mail.linkist.example" in results[name].detail
        assert "linkist.example:" not in results[name].detail.replace("mail.linkist.example", "")


def test_a_verified_domain_with_dkim_and_a_higher_bounce_threshold_pass(platform):
    settings = settings_for(platform).aws.model_copy(
        update={"ses_identities": ["linkist.example"], "bounce_rate_max": 0.5}
    )
    results = run_ses_checks.fn(settings)
    assert [(r.name, r.status) for r in results] == [
        ("sending quota", "ok"),
        ("bounce rate", "ok"),
        ("complaint rate", "ok"),
        ("identities verified", "ok"),
        ("dkim", "ok"),
    ]


def test_unconfigured_identities_are_skipped_with_the_setting_to_set(platform):
    settings = settings_for(platform).aws.model_copy(update={"ses_identities": []})
    skipped = [r for r in run_ses_checks.fn(settings) if r.status == "skipped"]
    assert [r.name for r in skipped] == ["identities verified", "dkim"]
    assert all("RUNBOOK_AWS_SES_IDENTITIES" in r.hint for r in skipped)
