"""SES: sending quota and its use, bounce and complaint rates, identities verified with DKIM."""

from __future__ import annotations

from functools import partial
from typing import Any

from tasks.aws.clients import aws_client, aws_errors
from tasks.core.checking import Check, not_configured, once, run_concurrently
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.settings import AwsSettings
from tasks.core.units import percent

SYSTEM = "ses"
REPUTATION_HINTS = {
    "bounce": "find the bouncing addresses (SES bounce notifications), suppress them and clean "
    "the list; AWS puts accounts above 10% under review",
    "complaint": "find what recipients report (SES complaint notifications); check opt-in and "
    "the unsubscribe link; AWS puts accounts above 0.5% under review",
}


@ops_task("run-ses-checks")
def run_ses_checks(settings: AwsSettings) -> list[CheckResult]:
    """Quota use, bounce and complaint rates, identities verified, DKIM; never raises.

    Rates are over SES's send statistics (the last 14 days); metrics carry
    ``ses_quota_used_ratio``, ``ses_bounce_rate`` and ``ses_complaint_rate``.
    """
    client = aws_client(settings, "ses")
    statistics = once(partial(_send_statistics, client))
    checks: list[Check] = [
        ("sending quota", lambda: _quota(client, settings.quota_use_max)),
        ("bounce rate", lambda: _rate(statistics(), "bounce", settings.bounce_rate_max)),
        ("complaint rate", lambda: _rate(statistics(), "complaint", settings.complaint_rate_max)),
    ]
    if not settings.ses_identities:
        hint = "list the sending domains in RUNBOOK_AWS_SES_IDENTITIES"
        skipped = [not_configured(SYSTEM, name, hint) for name in ("identities verified", "dkim")]
        return run_concurrently(SYSTEM, checks) + skipped
    checks += [
        ("identities verified", lambda: _verified(client, settings.ses_identities)),
        ("dkim", lambda: _dkim(client, settings.ses_identities)),
    ]
    return run_concurrently(SYSTEM, checks)


def _quota(client: Any, use_max: float) -> CheckResult:
    with aws_errors("GetSendQuota"):
        quota = client.get_send_quota()
    sent, limit = float(quota["SentLast24Hours"]), float(quota["Max24HourSend"])
    used = percent(sent, limit)
    result = CheckResult(
        name="sending quota",
        status="ok",
        figure=f"{used:.0%} of {limit:.0f}/24 h",
        detail=f"{sent:.0f} sent in the last 24 h, max send rate {quota['MaxSendRate']:.0f}/s",
        metrics={"ses_quota_used_ratio": used, "ses_sent_24h": sent, "ses_max_24h": limit},
    )
    if used >= use_max:
        return result.model_copy(
            update={
                "status": "fail" if used >= 1 else "warn",
                "hint": "ask AWS for a higher sending quota (Service Quotas) before mail is "
                "throttled, or find what is sending so much",
            }
        )
    return result


def _send_statistics(client: Any) -> dict[str, int]:
    """Delivery attempts, bounces and complaints summed over SES's data points (14 days)."""
    with aws_errors("GetSendStatistics"):
        points = client.get_send_statistics()["SendDataPoints"]
    keys = {"attempts": "DeliveryAttempts", "bounce": "Bounces", "complaint": "Complaints"}
    return {name: sum(int(p[key]) for p in points) for name, key in keys.items()}


def _rate(statistics: dict[str, int], kind: str, limit: float) -> CheckResult:
    attempts, count = statistics["attempts"], statistics[kind]
    rate = percent(count, attempts)
    result = CheckResult(
        name=f"{kind} rate",
        status="ok",
        figure=f"{rate:.2%}",
        detail=f"{count} {kind}s of {attempts} delivery attempts in 14 days "
        f"(threshold {limit:.2%})",
        metrics={
            f"ses_{kind}_rate": rate,
            f"ses_{kind}s": float(count),
            "ses_delivery_attempts": float(attempts),
        },
    )
    if rate > limit:
        return result.model_copy(update={"status": "fail", "hint": REPUTATION_HINTS[kind]})
    return result


VERIFY_HINT = (
    "verify them: aws ses verify-domain-identity --domain DOMAIN, then publish the TXT record "
    "it returns; or remove them from RUNBOOK_AWS_SES_IDENTITIES"
)
DKIM_HINT = (
    "aws ses verify-domain-dkim --domain DOMAIN and publish its three CNAME records, then "
    "aws ses set-identity-dkim-enabled --identity DOMAIN --dkim-enabled"
)


def _verified(client: Any, identities: list[str]) -> CheckResult:
    with aws_errors("GetIdentityVerificationAttributes"):
        found = client.get_identity_verification_attributes(Identities=identities)
    attributes = found["VerificationAttributes"]
    return _identity_result(
        "identities verified",
        {i: attributes.get(i, {}).get("VerificationStatus", "NotStarted") for i in identities},
        hint=VERIFY_HINT,
    )


def _dkim(client: Any, identities: list[str]) -> CheckResult:
    with aws_errors("GetIdentityDkimAttributes"):
        found = client.get_identity_dkim_attributes(Identities=identities)["DkimAttributes"]
    return _identity_result(
        "dkim", {i: _dkim_status(found.get(i, {})) for i in identities}, hint=DKIM_HINT
    )


def _dkim_status(attributes: dict[str, Any]) -> str:
    if not attributes.get("DkimEnabled"):
        return "disabled"
    return str(attributes.get("DkimVerificationStatus", "NotStarted"))


def _identity_result(name: str, statuses: dict[str, str], *, hint: str) -> CheckResult:
    """ok when every identity's status is Success; else a failure listing the others."""
    bad = {identity: status for identity, status in statuses.items() if status != "Success"}
    figure = f"{len(statuses) - len(bad)} of {len(statuses)}"
    if bad:
        detail = ", ".join(f"{identity}: {status}" for identity, status in bad.items())
        return CheckResult(name=name, status="fail", figure=figure, detail=detail, hint=hint)
    return CheckResult(name=name, status="ok", figure=figure, detail=", ".join(statuses))
