"""Telling people and Automations about failed checks: Prefect events and notification blocks.

Every failed check emits ``runbook.check.failed`` (resource ``runbook.check.<system>.<check>``),
so an Automation can page on a system or a check. People are told through Prefect notification
blocks named in ``RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS``: a Slack webhook in production, a
custom webhook aimed at the sandbox app's receiver in the sandbox, and SES email
(``SesEmailNotification``, below) as a second channel. A name alone finds the notification
block of that name whatever its type, so production and the sandbox share the setting.
"""

from __future__ import annotations

import inspect
import re
from functools import partial
from typing import Any, cast

import anyio.to_thread
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import Field, SecretStr

from tasks.aws import aws_client, aws_errors
from tasks.checking import in_threads
from tasks.errors import RunbookError
from tasks.health_report import MaintenanceReport
from tasks.reports import CheckResult
from tasks.retry import ops_task
from tasks.runlog import run_logger
from tasks.settings import AwsSettings

CHECK_FAILED_EVENT = "runbook.check.failed"
SYSTEM = "alerts"
PAGE = 200


class NotificationFailed(RunbookError):
    """A notification block could not be found or could not deliver."""


def check_resource_id(check: CheckResult) -> str:
    slug = re.sub(r"[^a-z0-9.-]+", "-", f"{check.system}.{check.name}".lower()).strip("-")
    return f"runbook.check.{slug}"


def emit_check_events(flow_name: str, checks: list[CheckResult]) -> int:
    """One ``runbook.check.failed`` event per failed check (related to this flow run).

    Not a task: ``emit_event`` only queues each event for Prefect's events worker, which sends
    them in the background, so there is nothing to retry or wait for.
    """
    failed = [c for c in checks if c.failed]
    for check in failed:
        emit_event(
            event=CHECK_FAILED_EVENT,
            resource={
                "prefect.resource.id": check_resource_id(check),
                "prefect.resource.name": f"{check.system}: {check.name}",
                "runbook.system": check.system,
                "runbook.check": check.name,
                "runbook.flow": flow_name,
            },
            payload={
                "status": check.status,
                "figure": check.figure,
                "detail": check.detail,
                "hint": check.hint,
            },
        )
    return len(failed)


def _find_by_names(names: list[str]) -> dict[str, list[str]]:
    """``type-slug/name`` of every notification block called one of ``names``, by name (one
    listing for all of them)."""
    found: dict[str, list[str]] = {name: [] for name in names}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_block_documents(offset=offset, limit=PAGE, include_secrets=False)
            for doc in page:
                if (
                    doc.name in found
                    and doc.block_type is not None
                    and doc.block_schema is not None
                    and "notify" in doc.block_schema.capabilities
                ):
                    found[doc.name].append(f"{doc.block_type.slug}/{doc.name}")
            if len(page) < PAGE:
                return found
            offset += PAGE


def _the_one(name: str, slugs: list[str]) -> str:
    if len(slugs) != 1:
        raise NotificationFailed(
            f"{'no' if not slugs else 'more than one'} notification block named {name!r}"
            + (f" ({', '.join(slugs)})" if slugs else ""),
            hint="create it in the Prefect UI (Blocks), or name it as type-slug/name in "
            "RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS",
        )
    return slugs[0]


def load_notification_block(slug: str) -> NotificationBlock:
    """The notification block ``type-slug/name``."""
    try:
        block = Block.load(slug)
    except (ValueError, KeyError) as exc:
        raise NotificationFailed(
            f"notification block {slug!r} cannot be loaded: {exc}",
            hint="create it in the Prefect UI (Blocks), or fix the name in "
            "RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS",
        ) from None
    if not isinstance(block, NotificationBlock):
        raise NotificationFailed(
            f"block {slug!r} is a {type(block).__name__}, not a notification block",
            hint="name a Slack webhook, custom webhook, email or other notification block",
        )
    return block


def _unusable(ref: str, exc: Exception) -> CheckResult:
    if isinstance(exc, NotificationFailed):
        return CheckResult(
            name=f"notify {ref}", status="fail", system=SYSTEM, detail=exc.message, hint=exc.hint
        )
    return CheckResult(
        name=f"notify {ref}",
        status="fail",
        system=SYSTEM,
        detail=f"cannot load the block: {type(exc).__name__}: {str(exc)[:200]}",
        hint="check that the Prefect API is reachable; the report artifact and the events "
        "still carry every failure",
    )


Channels = dict[str, NotificationBlock | CheckResult]  # by ref: the block, or why it is unusable


@ops_task("load-notification-channels", persist_result=False)  # the blocks hold secrets
def load_notification_channels(refs: list[str]) -> Channels:
    """Every configured notification block, loaded before it is needed (the daily flow does
    this while its checks run); a block that cannot be loaded is a failed result, reported on
    every run, not only on the day it is needed. ``refs``: ``type-slug/name``, or a name alone
    (any notification type)."""
    names = [ref for ref in refs if "/" not in ref]
    try:
        found = _find_by_names(names) if names else {}
    except Exception as exc:  # noqa: BLE001 - an API failure is a failed result per channel
        return {ref: _unusable(ref, exc) for ref in refs}

    def load(ref: str) -> NotificationBlock | CheckResult:
        try:
            return load_notification_block(ref if "/" in ref else _the_one(ref, found[ref]))
        except Exception as exc:  # noqa: BLE001 - reported as a failed result, never raised
            return _unusable(ref, exc)

    return dict(zip(refs, in_threads([partial(load, ref) for ref in refs]), strict=True))


def send_notification(ref: str, block: NotificationBlock, subject: str, body: str) -> CheckResult:
    """Deliver through one block; a failure is a failed result naming the block, never raised."""
    name = f"notify {ref}"
    try:
        with block.raise_on_failure():
            sent: Any = block.notify(body=body, subject=subject)
            if inspect.isawaitable(sent):  # blocks whose notify is async only
                run_coro_as_sync(cast(Any, sent))
    except Exception as exc:  # noqa: BLE001 - any delivery error is reported, not raised
        return CheckResult(
            name=name,
            status="fail",
            system=SYSTEM,
            detail=f"delivery failed: {type(exc).__name__}: {str(exc)[:200]}",
            hint="check the block's URL or address and that its service is up; the report "
            "artifact and the events still carry every failure",
        )
    return CheckResult(name=name, status="ok", system=SYSTEM, figure="sent")


@ops_task("notify-on-call")
def notify_on_call(channels: Channels, report: MaintenanceReport) -> list[CheckResult]:
    """When a check failed, or a channel cannot be used, send the failures and their hints
    through every usable channel at once; then a result per channel, in the channels' order.
    Nothing to tell: nothing sent, no results."""
    unusable = [c for c in channels.values() if isinstance(c, CheckResult)]
    if not report.failed and not unusable:
        return []
    told = report.model_copy(update={"checks": [*report.checks, *unusable]})
    subject, body = told.notification()
    usable = {ref: c for ref, c in channels.items() if isinstance(c, NotificationBlock)}
    sent = in_threads(
        [partial(send_notification, ref, block, subject, body) for ref, block in usable.items()]
    )
    by_ref = dict(zip(usable, sent, strict=True))
    results = [c if isinstance(c, CheckResult) else by_ref[ref] for ref, c in channels.items()]
    logger = run_logger()
    for result in results:
        logger.info("%s: %s %s", result.name, result.status, result.detail)
    return results


class SesEmailNotification(NotificationBlock):
    """Send notifications as email through Amazon SES (moto server in the sandbox)."""

    _block_type_name = "SES Email"
    _block_type_slug = "ses-email"

    sender: str = Field(description="a verified SES identity, e.g. runbook@linkist.example")
    recipients: list[str] = Field(min_length=1, description="who gets the email")
    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="unset: the real SES endpoint")
    access_key_id: SecretStr | None = Field(default=None, description="unset: boto3's chain")
    secret_access_key: SecretStr | None = None

    def _send(self, body: str, subject: str | None) -> None:
        settings = AwsSettings.model_construct(  # the block's own fields, not the environment's
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )
        with aws_errors("SendEmail"):
            aws_client(settings, "ses").send_email(
                Source=self.sender,
                Destination={"ToAddresses": self.recipients},
                Message={
                    "Subject": {"Data": subject or "Linkist runbook"},
                    "Body": {"Text": {"Data": body}},
                },
            )

    async def notify(self, body: str, subject: str | None = None) -> None:
        await anyio.to_thread.run_sync(self._send, body, subject)
