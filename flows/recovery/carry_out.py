"""The part every recovery shares once its plan is made: show, approve, restore, verify, and on
request switch over. Point-in-time recovery and backup restoration differ only before it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prefect.states import Cancelled, State
from pydantic import SecretStr

from flows.approval import request_approval
from flows.lock import recovery_lock
from tasks.backups.base import BackupEngine, RestoreRequest
from tasks.backups.operations import restore_to_directory
from tasks.backups.planning import RecoveryMode, RecoveryPlan, RecoveryResult, check_plan_again
from tasks.core.approvals import ApprovalPolicy
from tasks.core.errors import RunbookError
from tasks.core.reports import first_failure, publish_markdown
from tasks.core.runlog import run_logger
from tasks.core.settings import Settings
from tasks.postgres.cluster import LocalCluster
from tasks.postgres.scratch import ScratchCluster, remove_scratch_cluster, start_and_promote
from tasks.postgres.switchover import switch_over
from tasks.postgres.verification import verify_restored_cluster


class RecoveryFailed(RunbookError):
    """The restored cluster failed verification; it was removed and nothing live changed."""


def carry_out_recovery(
    settings: Settings, engine: BackupEngine, plan: RecoveryPlan, dry_run: bool
) -> RecoveryResult | State[Any]:
    """Publish the plan; unless ``dry_run``, run it behind approvals under the cluster's lock."""
    publish_markdown("recovery-plan", plan.markdown(), description=f"{plan.kind} plan")
    result = RecoveryResult(plan=plan, outcome="planned")
    if dry_run:
        run_logger().info("Dry run: stopping after the plan")
        return result
    policy = ApprovalPolicy.from_settings(settings.recovery)
    with recovery_lock(plan.stanza, settings.recovery.lock_wait_s) as lock:
        decision = request_approval("restore", plan.markdown(), policy)
        result.decisions.append(decision)
        if not decision.approved:
            return Cancelled(message=decision.summary())
        lock.check()
        check_plan_again(settings, engine, plan)
        restored = restore_and_verify(settings, engine, plan, result)
        if plan.mode is RecoveryMode.SIDE_BY_SIDE:
            return finish(result)
        decision = request_approval("switchover", result.markdown(), policy, result.decisions)
        result.decisions.append(decision)
        if not decision.approved:
            finish(result)
            return Cancelled(
                message=f"{decision.summary()}; the restored cluster stays "
                f"side by side at {result.restored_dsn}"
            )
        lock.check()
        check_plan_again(settings, engine, plan)
        assert plan.live_data_dir is not None
        assert plan.live_port is not None
        live = LocalCluster(
            plan.live_data_dir,
            plan.live_port,
            restored.bin_dir,
            restored.os_user,
            restored.config_file,  # the live cluster's own, when outside its data directory
        )
        result.switchover = switch_over(
            restored.cluster(), live, settings.live_dsn(), plan.backup.system_id, settings.recovery
        )
        remove_scratch_cluster(restored)  # its data directory now lives in the live one's place
        result.outcome = "replaced"
        return finish(result)


def restore_and_verify(
    settings: Settings, engine: BackupEngine, plan: RecoveryPlan, result: RecoveryResult
) -> ScratchCluster:
    """Restore beside live, recover to the target, verify. On any failure the restored cluster
    is removed and the run fails; the live cluster is never touched here."""
    restored = plan.restore_to.create()
    result.plan = plan.model_copy(update={"restore_to": restored})  # the port may be re-picked
    live_dsn = settings.live_dsn()
    try:
        outcome = restore_to_directory(
            engine,
            RestoreRequest(
                backup_label=plan.backup.label,
                destination=str(restored.data_dir),
                target=plan.target,
            ),
        )
        result.restore_seconds = outcome.seconds
        target_time = plan.target.value if plan.target.type == "time" else None
        result.promote_seconds = start_and_promote(
            restored,
            live_dsn,
            settings.backup.recovery_deadline_s,
            replay_from=plan.backup.stopped_at if target_time else None,
            replay_to=_parse(target_time),
        )
        result.checks = verify_restored_cluster(
            restored.dsn(live_dsn),
            live_dsn,
            restored.cluster().log_file,
            settings.postgres.tables,
            settings.postgres.row_count_tolerance,
            target=plan.target,
            row_count_mismatch="warn",
        )
    except BaseException:
        remove_scratch_cluster(restored)
        raise
    failed = first_failure(result.checks)
    if failed is not None:
        remove_scratch_cluster(restored)
        raise RecoveryFailed(
            f"the restored cluster failed check {failed.name!r}: {failed.detail}; it was "
            "removed and nothing live was changed",
            hint=failed.hint,
        )
    result.outcome = "restored"
    result.restored_dsn = _without_password(restored.dsn(live_dsn))
    return restored


def finish(result: RecoveryResult) -> RecoveryResult:
    """Publish ``result`` as the ``recovery-result`` artifact, log its outcome, and return it."""
    publish_markdown(
        "recovery-result",
        result.markdown(),
        description=f"{result.plan.kind}: {result.outcome}",
    )
    run_logger().info("%s: %s", result.plan.kind, result.outcome)
    return result


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _without_password(dsn: SecretStr) -> str:
    parts = urlsplit(dsn.get_secret_value())
    user = parts.username or ""
    netloc = f"{user}@{parts.hostname}:{parts.port}" if user else f"{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
