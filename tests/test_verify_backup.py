"""verify-backup and take-backup as flows, on real clusters under a real Prefect server."""

from __future__ import annotations

import random

import pytest
from prefect.client.orchestration import get_client
from prefect.variables import Variable

from flows.maintenance.take_backup import take_backup_flow
from flows.recovery.verify_backup import VerificationFailed, verify_backup
from tasks.backups.base import BackupKind
from tests.conftest import engine_for, scratch_leftovers


def test_take_backup_flow_takes_the_kind_asked_for(prefect_server, platform, use_platform):
    use_platform(platform)
    backup = take_backup_flow(kind=BackupKind.INCR)
    assert backup.kind is BackupKind.INCR
    assert engine_for(platform).list_backups()[-1].label == backup.label


def test_verify_backup_passes_on_a_good_backup_and_removes_the_scratch_cluster(
    prefect_server, platform, use_platform
):
    use_platform(platform)
    label = engine_for(platform).list_backups()[0].label
    repository = engine_for(platform).verify_repository(label)
    assert repository.ok and "status: valid" in repository.detail
    report = verify_backup(backup_label=label)

    assert report.passed and report.backup_label == label
    assert [c.name for c in report.checks] == [
        "restore",
        "promote",
        "consistency",
        "amcheck",
        "row-counts",
        "expectations",
    ]
    assert all(c.status == "ok" for c in report.checks), report.markdown()
    assert report.rto_seconds and report.rto_seconds > 0 and report.throughput_mb_s
    assert report.scratch_removed and scratch_leftovers(platform) == []
    measured = Variable.get("verify-backup-last")
    assert measured["backup_label"] == label and measured["restore_seconds"] > 0


def test_verify_backup_of_a_corrupted_backup_fails_naming_the_check(
    prefect_server, fresh_platform, use_platform
):
    use_platform(fresh_platform)
    backup = engine_for(fresh_platform).take_backup(BackupKind.FULL)
    # Flip bytes in the largest data file of the backup, as a bad disk or a partial upload would.
    files = sorted(
        (fresh_platform.repo / "backup").glob(f"*/{backup.label}/pg_data/base/*/*"),
        key=lambda p: p.stat().st_size,
    )
    victim = files[-1]
    data = bytearray(victim.read_bytes())
    for offset in random.Random(7).sample(range(len(data)), 64):
        data[offset] ^= 0xFF
    victim.write_bytes(bytes(data))
    repository = engine_for(fresh_platform).verify_repository(backup.label)
    assert not repository.ok and "checksum invalid: 1" in repository.detail

    with pytest.raises(VerificationFailed, match=r"check 'restore'"):
        verify_backup(backup_label=backup.label)
    assert scratch_leftovers(fresh_platform) == []
    recorded = Variable.get("verify-backup-last-failure")
    assert recorded["backup_label"] == backup.label and recorded["failed_check"] == "restore"


def test_verify_backup_of_an_unknown_label_is_refused_before_any_restore(
    prefect_server, platform, use_platform
):
    use_platform(platform)
    with pytest.raises(Exception, match="no backup labelled '19990101-000000F'"):
        verify_backup(backup_label="19990101-000000F")
    assert scratch_leftovers(platform) == []


def test_restore_stalled_past_its_deadline_fails_the_run_and_removes_scratch(
    prefect_server, platform, use_platform, monkeypatch
):
    monkeypatch.setenv("RUNBOOK_BACKUP_RESTORE_DEADLINE_S", "0.05")
    use_platform(platform)
    with pytest.raises(VerificationFailed, match="check 'restore'.*deadline"):
        verify_backup()
    assert scratch_leftovers(platform) == []


def test_the_dsn_password_appears_in_no_log_or_artifact(prefect_server, platform, use_platform):
    settings = use_platform(platform)
    password = settings.live_dsn().get_secret_value().split(":")[2].split("@")[0]
    flow_run_state = verify_backup(return_state=True)
    assert flow_run_state.is_completed()

    async def everything_recorded() -> str:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            LogFilter,
            LogFilterFlowRunId,
        )

        run_id = flow_run_state.state_details.flow_run_id
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
            artifacts = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        return "\n".join([line.message for line in logs] + [str(a.data) for a in artifacts])

    import asyncio

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the API in batches: send what is queued first
    recorded = asyncio.run(everything_recorded())
    assert "Restored" in recorded and "Backup verification" in recorded
    assert password not in recorded
