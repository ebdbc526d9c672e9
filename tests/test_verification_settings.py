"""Restores verify the same way whatever the live cluster's log settings: with the server log in
``log/`` (``logging_collector=on``), without LOG lines (``log_min_messages=warning``), or in
German (``lc_messages=de_DE.UTF-8``; the machine needs that locale: ``make system`` makes it).

A restored cluster runs with the live cluster's configuration, so each variant is set on live,
backed up, and then verified and recovered. A statement timeout in ``amcheck`` is "could not
check", never "corrupt".
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from flows.recovery.pitr import point_in_time_recovery
from flows.recovery.verify_backup import verify_backup
from sandbox.platform import Sandbox
from tasks.backups.base import BackupKind, RecoveryTarget
from tasks.postgres.scratch import remove_scratch_cluster
from tasks.postgres.sql import connect, fetch_value, with_port
from tasks.postgres.verification import (
    RecoveryEnd,
    check_amcheck,
    check_consistency,
    check_recovery_target,
)
from tasks.postgres.wal import TimelineSwitch
from tests.conftest import destroy_sandbox, engine_for, make_sandbox, settings_for
from tests.recovery_support import APPROVE, decisions, stage_at, write_stages

LOCALE = "de_DE.UTF-8"
VARIANTS = {
    "logging-collector": {"logging_collector": "on"},
    "warnings-only": {"log_min_messages": "warning"},
    "german-messages": {"lc_messages": LOCALE},
}


def locale_installed(name: str) -> bool:
    found = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    return name.lower().replace("utf-8", "utf8") in found.lower()


@pytest.fixture(scope="module")
def live() -> Iterator[Sandbox]:
    """A sandbox of this module's own: its live cluster's settings are changed here."""
    assert locale_installed(LOCALE), f"the {LOCALE} locale is missing: run `make system`"
    box = make_sandbox()
    yield box
    destroy_sandbox(box)


def configure_live(box: Sandbox, settings: dict[str, str]) -> None:
    """``ALTER SYSTEM`` each setting (reset the others), then restart live so all apply."""
    dsn = settings_for(box).live_dsn()
    with connect(dsn) as conn:
        for name in {n for variant in VARIANTS.values() for n in variant}:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    cluster = box.cluster()
    cluster.stop()
    cluster.start(timeout=60)
    for name, value in settings.items():
        assert str(fetch_value(dsn, f"SHOW {name}")) == value


@pytest.mark.parametrize("variant", VARIANTS)
def test_verify_backup_passes_whatever_the_live_log_settings(
    prefect_server, live, use_platform, variant
):
    configure_live(live, VARIANTS[variant])
    use_platform(live)
    backup = engine_for(live).take_backup(BackupKind.FULL)

    report = verify_backup(backup_label=backup.label)

    assert report.passed, report.markdown()
    consistency = next(c for c in report.checks if c.name == "consistency")
    assert consistency.status == "ok" and "backup end replayed" in consistency.detail


def test_point_in_time_recovery_verifies_its_stop_point_with_every_log_setting_at_once(
    prefect_server, live, use_platform
):
    configure_live(live, {k: v for variant in VARIANTS.values() for k, v in variant.items()})
    settings = use_platform(live)
    dsn = settings.live_dsn()
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS status (stage int NOT NULL)")
    engine_for(live).take_backup(BackupKind.INCR)
    stages = write_stages(dsn, 2)

    with decisions("point-in-time-recovery", ("restore", APPROVE)):
        result = point_in_time_recovery(target_time=stages.between(1).isoformat())
    try:
        assert result.verified, result.markdown()
        assert stage_at(with_port(dsn, result.plan.restore_to.port)) == 1
        target = next(c for c in result.checks if c.name == "recovery-target")
        assert target.status == "ok" and target.detail.startswith("stopped before ")
    finally:
        remove_scratch_cluster.fn(result.plan.restore_to)


def test_an_amcheck_statement_timeout_is_could_not_check_never_corrupt(live):
    dsn = settings_for(live).live_dsn()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with connect(dsn) as conn, conn.transaction():
            conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    try:
        assert locked.wait(10)
        check = check_amcheck(dsn, statement_timeout_ms=300)
    finally:
        release.set()
        holder.join(10)
    assert check.status == "warn" and check.hint
    assert "could not check" in check.detail and "users_pkey" in check.detail
    assert "statement timeout" in check.detail and "corrupt" not in check.detail


# -- the verdicts, from what SQL and the history file say ----------------------------------------

BEFORE = "before 2026-11-28 10:00:00.5+00"


def ended(reason: str = BEFORE, **changes: object) -> RecoveryEnd:
    end = RecoveryEnd(
        in_recovery=False,
        timeline=2,
        backup_end_reached=True,
        last_replayed=datetime(2026, 11, 28, 9, 59, 59, tzinfo=UTC),
        stop=TimelineSwitch(parent=1, switchpoint="0/9000108", reason=reason),
    )
    return end.model_copy(update=changes)


TARGET = RecoveryTarget(type="time", value="2026-11-28T10:00:00+00:00", timeline=1)


def test_consistency_is_proven_only_by_promotion_past_the_backup_end():
    assert check_consistency(ended()).status == "ok"
    assert "still in recovery" in check_consistency(ended(in_recovery=True)).detail
    assert "backup's end" in check_consistency(ended(backup_end_reached=False)).detail
    unpromoted = check_consistency(ended(stop=None, history_error="still on timeline 1"))
    assert unpromoted.status == "fail" and "timeline 1" in unpromoted.detail


@pytest.mark.parametrize(
    ("end", "problem"),
    [
        (ended("before 2026-11-28 09:59:58+00"), "wrong side"),
        (ended(last_replayed=datetime(2026, 11, 28, 10, 0, 1, tzinfo=UTC)), "was replayed"),
        (ended("reached consistency"), "did not stop for a time"),
        (ended("no recovery target specified"), "did not stop for a time"),
        (ended(stop=TimelineSwitch(parent=3, switchpoint="0/1", reason=BEFORE)), "timeline 3"),
    ],
    ids=["stopped-too-early", "replayed-past", "immediate", "end-of-wal", "other-timeline"],
)
def test_a_time_target_missed_is_a_failed_check(end, problem):
    check = check_recovery_target(end, TARGET)
    assert check.status == "fail" and problem in check.detail


def test_a_time_target_met_and_an_immediate_one_pass():
    assert check_recovery_target(ended(), TARGET).status == "ok"
    immediate = check_recovery_target(ended("reached consistency"), RecoveryTarget())
    assert immediate.status == "ok"
