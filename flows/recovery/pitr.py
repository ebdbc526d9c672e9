"""Runbook, Recovery Procedures: Point-in-Time Recovery.

Identify the recovery point, create a recovery plan, execute it, verify it; behind approvals.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import State
from pydantic import Field

from flows.recovery.carry_out import carry_out_recovery
from tasks.backups.base import RecoveryTarget
from tasks.backups.operations import build_engine, list_backups, restorable_window
from tasks.backups.planning import (
    RecoveryMode,
    RecoveryResult,
    choose_backup,
    parse_target_time,
    plan_recovery,
    read_live_timeline,
)
from tasks.core.events import emit_flow_failure
from tasks.core.settings import load_settings


@flow(name="point-in-time-recovery", persist_result=True, on_failure=[emit_flow_failure])
def point_in_time_recovery(
    target_time: str = Field(
        description="ISO 8601 with a UTC offset, e.g. 2026-11-28T10:00:00+00:00"
    ),
    mode: RecoveryMode = RecoveryMode.SIDE_BY_SIDE,
    dry_run: bool = False,
) -> RecoveryResult | State[Any]:
    """Recover the database to ``target_time`` beside live (or, with ``replace``, in its place).

    Refuses naive, unparseable, future or out-of-window times, and times no backup on the
    followed history is consistent by, before anything changes.
    """
    settings = load_settings()
    engine = build_engine(settings)
    moment = parse_target_time(target_time)
    # follow the live cluster's history, not an abandoned one (the newest, when live is down)
    window = restorable_window(engine, read_live_timeline(settings.live_dsn()))
    backup = choose_backup(engine, list_backups(engine), window, moment)
    target = RecoveryTarget(type="time", value=moment.isoformat(), timeline=window.timeline)
    plan = plan_recovery(settings, "point-in-time recovery", backup, target, mode)
    return carry_out_recovery(settings, engine, plan, dry_run)
