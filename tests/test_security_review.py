"""The weekly security review on the sandbox: the failed-login bursts, the passwordless role and
the grants to PUBLIC that sandbox/sql/20-seed.sql plants, and the public bucket the AWS seed
plants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from flows.checks import UNHEALTHY
from flows.maintenance.weekly import weekly_security_review
from sandbox.platform import Sandbox
from tasks.core.settings import SecurityThresholds
from tasks.postgres.sql import connect
from tasks.reviews.security import (
    check_database_roles,
    check_failed_logins,
    check_public_grants,
    run_security_checks,
)

DEFAULTS = SecurityThresholds()


@pytest.fixture(scope="module")
def live(platform: Sandbox) -> SecretStr:
    dsn = platform.dsn()
    assert dsn is not None
    return dsn


@pytest.fixture
def empty_database(live: SecretStr) -> Iterator[SecretStr]:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    with connect(live) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield SecretStr(live.get_secret_value().rsplit("/", 1)[0] + f"/{name}")
    with connect(live) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_failed_logins_name_the_two_bursting_addresses_and_not_ordinary_traffic(live):
    result = check_failed_logins(live, DEFAULTS, datetime.now(UTC), "source_addr")
    assert result.status == "fail"
    assert result.detail.startswith("203.0.113.66: 60 failed on 60 accounts")
    assert "198.51.100.23: 35 failed on 1 accounts" in result.detail
    assert "10.20." not in result.detail
    assert result.metrics["addresses_over_threshold"] == 2
    assert "credential stuffing" in result.hint


def test_failed_logins_name_the_account_whose_password_was_guessed(live):
    result = check_failed_logins(live, DEFAULTS, datetime.now(UTC), "account")
    assert result.status == "warn"
    assert result.detail.startswith("user7@linkist.example:")
    assert result.metrics["accounts_over_threshold"] == 1
    assert "password reset" in result.hint


def test_failed_logins_pass_over_a_window_without_bursts(live):
    half_a_day = SecurityThresholds(window_days=0.5)
    for by in ("source_addr", "account"):
        result = check_failed_logins(live, half_a_day, datetime.now(UTC), by)  # type: ignore[arg-type]
        assert result.status == "ok", result.detail
        assert result.metrics["failed_logins"] > 0  # ordinary typos, below the thresholds


def test_roles_audit_flags_the_role_that_logs_in_without_a_password_and_never_expires(live):
    result = check_database_roles(live, DEFAULTS)
    assert result.status == "fail"
    assert "can log in without a password: reporting" in result.detail
    assert "login roles that never expire: reporting" in result.detail
    assert "unexpected superusers" not in result.detail  # postgres is expected


def test_roles_audit_passes_once_the_passwordless_role_cannot_log_in(live):
    with connect(live) as conn:
        conn.execute("ALTER ROLE reporting NOLOGIN")
    try:
        result = check_database_roles(live, DEFAULTS)
    finally:
        with connect(live) as conn:
            conn.execute("ALTER ROLE reporting LOGIN")
    assert result.status == "ok", result.detail
    assert result.hint == ""


def test_roles_audit_fails_on_a_superuser_nobody_expects(live):
    result = check_database_roles(live, SecurityThresholds(expected_superusers=[]))
    assert result.status == "fail"
    assert "unexpected superusers: postgres" in result.detail


def test_public_grants_name_the_table_and_schema_granted_to_everyone(live):
    result = check_public_grants(live)
    assert result.status == "fail"
    assert "schema public: CREATE" in result.detail
    assert "table public.profiles: SELECT" in result.detail
    assert "pg_stat_statements" not in result.detail  # an extension's own grant is its business
    assert "REVOKE" in result.hint


def test_public_grants_pass_on_a_database_without_grants_to_public(empty_database):
    result = check_public_grants(empty_database)
    assert result.status == "ok", result.detail


def test_weekly_security_review_reports_logins_roles_grants_and_only_the_public_bucket_checks(
    prefect_server, platform, use_platform
):
    use_platform(platform)
    state = weekly_security_review(return_state=True)
    assert state.is_completed()
    assert state.name == UNHEALTHY
    report = state.result()
    by_name = {(c.system, c.name): c for c in report.checks}
    for name in ("failed-logins-by-address", "database-roles", "public-grants"):
        assert by_name[("security", name)].status == "fail"
    assert by_name[("s3", "linkist-uploads: public access block")].status == "fail"
    assert by_name[("s3", "linkist-uploads: public policy or ACL")].status == "fail"
    assert by_name[("s3", "linkist-backups: public access block")].status == "ok"
    assert {c.name for c in report.checks if c.system == "s3"} == {
        f"{bucket}: {check}"
        for bucket in ("linkist-uploads", "linkist-backups")
        for check in ("reachable", "public access block", "public policy or ACL")
    }  # no canary written, no encryption or storage checked
    assert "203.0.113.66" in report.markdown()


def test_a_missing_login_log_fails_its_checks_with_the_setting_and_hides_no_other(live):
    checks = {
        c.name: c
        for c in run_security_checks.fn(
            live, SecurityThresholds(login_events_table="no_such_log"), datetime.now(UTC)
        )
    }
    for name in ("failed-logins-by-address", "failed-logins-by-account"):
        assert checks[name].status == "fail"
        assert "no_such_log" in checks[name].detail
        assert "LOGIN_EVENTS_TABLE" in checks[name].hint
    assert checks["database-roles"].status == "fail"  # still ran: the passwordless role
    assert checks["public-grants"].status == "fail"
