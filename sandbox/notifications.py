"""The sandbox's on-call channels: Prefect notification blocks aimed at the sandbox services.

``runbook-oncall`` is a custom webhook posting to the sandbox app's receiver
(``POST /hooks/oncall``, readable with ``GET``); ``runbook-oncall-email`` sends through SES on
moto. They carry the names ``RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS`` names by default; in
production the same names are a Slack webhook block and an SES email block with real addresses.
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


def receiver_url(box: Sandbox) -> str:
    """Where the webhook block posts, and where a test reads what it received."""
    return f"{box.services().urls()['app']}/hooks/{CHANNEL}"


def register_notification_blocks(box: Sandbox) -> list[str]:
    """Create (or update) both blocks on the current Prefect API; returns their names."""
    urls, state = box.services().urls(), box.services().state()
    CustomWebhookNotificationBlock(
        name=WEBHOOK_BLOCK,
        url=receiver_url(box),
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        timeout=10,
    ).save(WEBHOOK_BLOCK, overwrite=True)
    SesEmailNotification(
        sender=f"runbook@{SES_DOMAIN}",
        recipients=[RECIPIENT],
        region=REGION,
        endpoint_url=urls["moto"],
        access_key_id=state.aws_access_key_id,
        secret_access_key=state.aws_secret_access_key,
    ).save(EMAIL_BLOCK, overwrite=True)
    return [WEBHOOK_BLOCK, EMAIL_BLOCK]
