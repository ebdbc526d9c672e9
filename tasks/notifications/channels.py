"""Telling people through Prefect notification blocks.

People are told through the blocks named in ``RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS``: a Slack
webhook in production, a custom webhook aimed at the sandbox app's receiver in the sandbox, and
SES email (``tasks.aws.ses_email``) as a second channel. A name alone finds the notification
block of that name whatever its type, so production and the sandbox share the setting.
"""

from __future__ import annotations

import inspect
import re
from functools import partial
from typing import Any, cast

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.utilities.asyncutils import run_coro_as_sync

from tasks.core.checking import in_threads
from tasks.core.errors import RunbookError
from tasks.core.maintenance_report import MaintenanceReport
from tasks.core.reports import CheckResult
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger

SYSTEM = "alerts"


PAGE = 200


class NotificationFailed(RunbookError):
    """A notification block could not be found or could not deliver."""


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
    return load_channels(refs)


def load_channels(refs: list[str]) -> Channels:
    """The notification block of each ref (``type-slug/name`` or a name alone), or a failed
    result saying why it cannot be used; never raises."""
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
            detail=f"delivery failed: {type(exc).__name__}: {without_paths(str(exc))[:200]}",
            hint="check the block's URL or address and that its service is up; the report "
            "artifact and the events still carry every failure",
        )
    return CheckResult(name=name, status="ok", system=SYSTEM, figure="sent")


_URL = re.compile(r"(https?://[^/\s'\"]+)[^\s'\"]*")


def without_paths(text: str) -> str:
    """``text`` with every URL cut to its scheme and host: a webhook's path is its secret
    (Slack, Teams), and HTTP errors quote the URL."""
    return _URL.sub(r"\1/...", text)


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
