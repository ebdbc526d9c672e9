"""A Prefect notification block that sends email through Amazon SES (moto server in the sandbox)."""

from __future__ import annotations

import anyio.to_thread
from prefect.blocks.abstract import NotificationBlock
from pydantic import Field, SecretStr

from tasks.aws.clients import aws_client, aws_errors
from tasks.core.settings import AwsSettings


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
        """Email ``body`` as plain text to ``recipients`` through SES SendEmail, in a worker thread.

        ``subject`` defaults to "Linkist runbook".

        Raises:
            AwsError (AwsCredentialsError, AwsUnreachable): SES refused or did not answer.
        """
        await anyio.to_thread.run_sync(self._send, body, subject)
