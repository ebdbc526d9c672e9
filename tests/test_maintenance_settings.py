"""Maintenance settings: thresholds from the environment or the TOML file, a timezone checked on
load, and the schedules' timezone resolved from them by `runbook serve`."""

from __future__ import annotations

import pytest

from deployments.serve import load_specs, resolve_schedule_timezone
from tasks.core.errors import SettingsError
from tasks.core.settings import MaintenanceSettings, load_system
from tests.test_settings import clean_env  # noqa: F401 - the same clean environment, autouse

PLACEHOLDER = "{{ $RUNBOOK_MAINTENANCE_SCHEDULE_TIMEZONE }}"


def test_an_unknown_timezone_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_SCHEDULE_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match="RUNBOOK_MAINTENANCE_SCHEDULE_TIMEZONE.*IANA"):
        load_system(MaintenanceSettings)


def test_thresholds_come_from_nested_variables_and_the_maintenance_table(monkeypatch, tmp_path):
    config = tmp_path / "runbook.toml"
    config.write_text(
        '[maintenance]\nschedule_timezone = "America/New_York"\n'
        'lock_files = ["a/package-lock.json"]\n'
        "[maintenance.postgres]\nlong_query_s = 30\n"
    )
    monkeypatch.setenv("RUNBOOK_CONFIG", str(config))
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_POSTGRES__IDLE_IN_TRANSACTION_S", "5")
    settings = load_system(MaintenanceSettings)
    assert settings.postgres.long_query_s == 30
    assert settings.postgres.idle_in_transaction_s == 5
    assert settings.postgres.connections_fail == 0.9  # the default
    assert [str(p) for p in settings.lock_files] == ["a/package-lock.json"]
    assert resolve_schedule_timezone(PLACEHOLDER) == "America/New_York"
    daily = next(s for s in load_specs() if s.name == "daily")
    assert daily.schedules[0].timezone == "UTC"  # take-backup's own, not templated
    (health,) = [s for s in load_specs() if "daily_health_check" in s.entrypoint]
    assert health.schedules[0].timezone == "America/New_York"


def test_the_schedules_default_to_utc_and_other_timezones_pass_through():
    assert resolve_schedule_timezone(PLACEHOLDER) == "UTC"
    assert resolve_schedule_timezone("Europe/Berlin") == "Europe/Berlin"
