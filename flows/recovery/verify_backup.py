"""Runbook, Daily Tasks: "Verify backup completion" — restore a backup and prove it is good."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Completed, State

from flows.lock import recovery_in_progress
from tasks.backups.base import RestoreRequest
from tasks.backups.freshness import record_restore_measurement, record_verification_failure
from tasks.backups.operations import build_engine, restore_to_directory, select_backup
from tasks.core.errors import RunbookError
from tasks.core.events import emit_flow_failure
from tasks.core.reports import CheckResult, first_failure, publish_markdown
from tasks.core.runlog import run_logger
from tasks.core.settings import load_settings
from tasks.postgres.scratch import plan_scratch_cluster, remove_scratch_cluster, start_and_promote
from tasks.postgres.sql import with_port
from tasks.postgres.verification import VerificationReport, verify_restored_cluster

SKIPPED = "Skipped"


class VerificationFailed(RunbookError):
    """A verification check failed; the message names it."""


@flow(name="verify-backup", persist_result=True, on_failure=[emit_flow_failure])
def verify_backup(backup_label: str | None = None) -> VerificationReport | State[Any]:
    """Restore a backup (the newest, or ``backup_label``) beside live and verify it.

    The scratch cluster never archives into the live repository and is always removed.
    Fails, naming the check, when any check fails. While a recovery holds the stanza it skips
    (Completed, named ``Skipped``), leaving the host's disk and I/O to the recovery; it never
    takes the recovery lock.
    """
    logger = run_logger()
    settings = load_settings()
    holder = recovery_in_progress(settings.backup.stanza)
    if holder is not None:
        message = (
            f"skipped: recovery run {holder.run_name} ({holder.flow_run_id}) holds stanza "
            f"{settings.backup.stanza}; the next scheduled verification runs as usual"
        )
        logger.info("%s", message)
        return Completed(name=SKIPPED, message=message)
    engine = build_engine(settings)
    live = settings.live_dsn()
    backup = select_backup(engine, backup_label)
    scratch = plan_scratch_cluster(settings, "verify")
    report = VerificationReport(backup_label=backup.label, backup_kind=backup.kind, checks=[])
    phase = "restore"
    try:
        restored = restore_to_directory(
            engine, RestoreRequest(backup_label=backup.label, destination=str(scratch.data_dir))
        )
        report.restore_seconds, report.bytes_restored = restored.seconds, restored.bytes_restored
        report.checks.append(
            CheckResult(
                name="restore",
                status="ok",
                seconds=restored.seconds,
                detail=f"{restored.bytes_restored / 1e6:.1f} MB",
            )
        )
        phase = "promote"
        report.promote_seconds = start_and_promote(
            scratch, live, settings.backup.recovery_deadline_s
        )
        report.checks.append(
            CheckResult(
                name="promote",
                status="ok",
                seconds=report.promote_seconds,
                detail="pg_is_in_recovery() is false",
            )
        )
        report.checks += verify_restored_cluster(
            with_port(live, scratch.port),
            live,
            scratch.cluster().log_file,
            settings.postgres.tables,
            settings.postgres.row_count_tolerance,
        )
    except RunbookError as exc:
        report.checks.append(
            CheckResult(name=phase, status="fail", detail=exc.message, hint=exc.hint)
        )
    finally:
        remove_scratch_cluster(scratch)
        report.scratch_removed = not scratch.root.exists()

    publish_markdown("verify-backup-report", report.markdown(), description=report.summary())
    logger.info("%s", report.summary())
    failed = first_failure(report.checks)
    if failed is not None:
        record_verification_failure(report)
        raise VerificationFailed(
            f"verify-backup failed: check {failed.name!r}: {failed.detail}", hint=failed.hint
        )
    record_restore_measurement(report)
    return report
