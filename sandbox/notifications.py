"""The sandbox's on-call channels: Prefect notification blocks aimed at the sandbox services.

``runbook-oncall`` is a custom webhook posting to the sandbox app's receiver
(``POST /hooks/oncall``, readable with ``GET``); ``runbook-oncall-email`` sends through SES on
moto. They carry the names ``RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS`` names by default; in
production the same names are a Slack webhook block and an SES email block with real addresses.

The incident roster's blocks (``incident-primary``, ``-secondary``, ``-manager``, ``-team``,
``-management``: the names ``RUNBOOK_INCIDENTS_ROSTER`` uses by default) are custom webhooks
posting to ``/hooks/primary``, ``/hooks/secondary``... In production they are a pager (or
chat) block per person and a Slack block per channel.
"""

from __future__ import annotations

from prefect.blocks.notifications import CustomWebhookNotificationBlock

from sandbox.aws_seed import REGION, SES_DOMAIN
from sandbox.platform import Sandbox
from tasks.aws.ses_email import SesEmailNotification

WEBHOOK_BLOCK = "runbook-oncall"
EMAIL_BLOCK = "runbook-oncall-email"
CHANNEL = "oncall"
RECIPIENT = f"oncall@{SES_DOMAIN}"
INCIDENT_CHANNELS = ("primary", "secondary", "manager", "team", "management")
INCIDENT_BLOCK_TIMEOUT_S = 5  # a hanging receiver delays the other pages of a batch this long


def incident_block(channel: str) -> str:
    """The name of the block that reaches an incident roster level or channel."""
    return f"incident-{channel}"


def receiver_url(box: Sandbox, channel: str = CHANNEL) -> str:
    """Where a webhook block posts, and where a test reads what it received."""
    return f"{box.services().urls()['app']}/hooks/{channel}"


def webhook_block(name: str, url: str, timeout_s: float) -> CustomWebhookNotificationBlock:
    """A custom webhook posting ``{"subject", "text"}`` as JSON to ``url``."""
    return CustomWebhookNotificationBlock(
        name=name,
        url=url,
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        timeout=timeout_s,
    )


def register_notification_blocks(box: Sandbox) -> list[str]:
    """Create (or update) every block on the current Prefect API; returns their names."""
    urls, state = box.services().urls(), box.services().state()
    webhook_block(WEBHOOK_BLOCK, receiver_url(box), 10).save(WEBHOOK_BLOCK, overwrite=True)
    for channel in INCIDENT_CHANNELS:
        name = incident_block(channel)
        url = receiver_url(box, channel)
        webhook_block(name, url, INCIDENT_BLOCK_TIMEOUT_S).save(name, overwrite=True)
    SesEmailNotification(
        sender=f"runbook@{SES_DOMAIN}",
        recipients=[RECIPIENT],
        region=REGION,
        endpoint_url=urls["moto"],
        access_key_id=state.aws_access_key_id,
        secret_access_key=state.aws_secret_access_key,
    ).save(EMAIL_BLOCK, overwrite=True)
    return [WEBHOOK_BLOCK, EMAIL_BLOCK, *map(incident_block, INCIDENT_CHANNELS)]
