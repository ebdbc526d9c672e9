"""S3 objects the runbook writes (post-incident reports): put, with its key and content type."""

from __future__ import annotations

from tasks.aws.clients import aws_client, aws_errors
from tasks.core.settings import AwsSettings


def put_text(settings: AwsSettings, bucket: str, key: str, text: str, content_type: str) -> str:
    """Write ``text`` (UTF-8) to ``s3://bucket/key``, encrypted at rest (SSE-S3); returns the URI.

    Idempotent: writing the same key again replaces the object.

    Raises:
        AwsError (AwsUnreachable: transient; AwsCredentialsError) from PutObject.
    """
    client = aws_client(settings, "s3")
    with aws_errors(f"PutObject s3://{bucket}/{key}"):
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=text.encode(),
            ContentType=content_type,
            ServerSideEncryption="AES256",
        )
    return f"s3://{bucket}/{key}"
