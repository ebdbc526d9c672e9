"""What the sandbox's moto server holds: S3 buckets, SES, CloudWatch metrics and logs, IAM.

Planted problems (what the daily checks should find), relative to the time of ``sandbox up``:

- S3 ``linkist-uploads``: public-read bucket policy, no public access block, no default
  encryption. ``linkist-backups`` is locked down (public access block, SSE) and passes, and so
  is ``linkist-incident-reports``, where post-incident reports go.
- SES: ``linkist.example`` verified with DKIM; ``mail.linkist.example`` configured but never
  verified. 30 delivery attempts, 3 of them bounced (10% > 5%), no complaints; quota 30 of 200.
- CloudWatch Logs ``/linkist/app``: 8 days of lines. ``ERROR payment webhook signature`` runs
  at about 1 a day, then at 20 an hour from 30 minutes before ``up`` on (an incident still
  going on: lines are written up to 115 minutes ahead, which CloudWatch accepts, so a 60-minute
  window sees the spike for about two hours after ``up``); ``ERROR S3 upload timeout`` (2/h)
  and ``WARN slow query`` (6/h) are steady and pass.
- CloudWatch metrics ``Linkist/App``: requests, 5xx and p95 latency every 5 minutes for 24 h.

Once seeded, moto checks credentials (its IAM auth): only the access key made here works.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

from sandbox.aws_server import SIMULATOR_BOUNCE
from tasks.aws.clients import aws_client
from tasks.core.checking import in_threads
from tasks.core.settings import AwsSettings, ErrorPattern

REGION = "us-east-1"
UPLOADS = "linkist-uploads"
BACKUPS = "linkist-backups"
INCIDENT_REPORTS = "linkist-incident-reports"
SES_DOMAIN = "linkist.example"
SES_UNVERIFIED = "mail.linkist.example"
LOG_GROUP = "/linkist/app"
METRICS_NAMESPACE = "Linkist/App"
DELIVERED, BOUNCED = 27, 3
ERROR_PATTERNS = [
    ErrorPattern(name="webhook-signature", pattern='"ERROR payment webhook signature"'),
    ErrorPattern(name="s3-upload-timeout", pattern='"ERROR S3 upload timeout"'),
    ErrorPattern(name="slow-query", pattern='"WARN slow query"', baseline_per_hour=6),
]


class AwsKeys(BaseModel):
    access_key_id: SecretStr
    secret_access_key: SecretStr


def seed_aws(endpoint_url: str) -> AwsKeys:
    """Create everything above, then turn on moto's credential checks; returns the only key."""
    settings = AwsSettings.model_construct(
        endpoint_url=endpoint_url,
        region=REGION,
        max_attempts=2,
        # any key will do until moto's credential checks are turned on, at the end
        access_key_id=SecretStr("sandbox-seed"),
        secret_access_key=SecretStr("sandbox-seed"),
    )
    now = datetime.now(UTC)
    in_threads(
        [
            lambda: _seed_s3(aws_client(settings, "s3")),
            lambda: _seed_ses(aws_client(settings, "ses")),
            lambda: _seed_logs(aws_client(settings, "logs"), now),
            lambda: _seed_metrics(aws_client(settings, "cloudwatch"), now),
        ]
    )
    keys = _create_runbook_user(aws_client(settings, "iam"))
    httpx.post(f"{endpoint_url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
    return keys


def _seed_s3(s3: Any) -> None:
    rng = random.Random(4)  # noqa: S311 - sizes of sample files
    for bucket in (UPLOADS, BACKUPS, INCIDENT_REPORTS):
        s3.create_bucket(Bucket=bucket)
    for n in range(1, 13):
        s3.put_object(
            Bucket=UPLOADS, Key=f"profiles/{n}/avatar.jpg", Body=b"\xff" * rng.randint(8, 64) * 1024
        )
    for day in (25, 26, 27):
        s3.put_object(Bucket=BACKUPS, Key=f"db/2026-11-{day}/base.tar.lz4", Body=b"\0" * 200_000)
    # the planted mistake: uploads served straight from the bucket to everyone
    s3.put_bucket_policy(
        Bucket=UPLOADS,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PublicReadForProfileImages",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{UPLOADS}/*",
                    }
                ],
            }
        ),
    )
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    for private in (BACKUPS, INCIDENT_REPORTS):
        s3.put_public_access_block(
            Bucket=private, PublicAccessBlockConfiguration=dict.fromkeys(flags, True)
        )
        s3.put_bucket_encryption(
            Bucket=private,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )


def _seed_ses(ses: Any) -> None:
    ses.verify_domain_identity(Domain=SES_DOMAIN)
    ses.verify_domain_dkim(Domain=SES_DOMAIN)
    for recipients in (
        ["success@simulator.amazonses.com"] * DELIVERED,
        [SIMULATOR_BOUNCE] * BOUNCED,
    ):
        ses.send_email(
            Source=f"noreply@{SES_DOMAIN}",
            Destination={"BccAddresses": recipients},
            Message={
                "Subject": {"Data": "Your Linkist card has shipped"},
                "Body": {"Text": {"Data": "It is on its way."}},
            },
        )


def log_lines(now: datetime) -> list[tuple[datetime, str]]:
    """The application's log lines, oldest first (see the module docstring)."""
    start = now - timedelta(days=8)
    lines: list[tuple[datetime, str]] = []

    def every(step: timedelta, text: str, begin: datetime = start, end: datetime = now) -> None:
        at = begin
        while at < end:
            lines.append((at, text))
            at += step

    every(timedelta(minutes=5), "INFO GET /api/health 200")
    every(timedelta(minutes=10), "WARN slow query: SELECT * FROM profiles WHERE slug = $1 (1.4 s)")
    every(timedelta(minutes=30), "ERROR S3 upload timeout: PUT profiles/avatar.jpg after 30 s")
    every(timedelta(days=1), "ERROR payment webhook signature: no signatures found matching")
    every(
        timedelta(minutes=3),
        "ERROR payment webhook signature: no signatures found matching",
        begin=now - timedelta(minutes=30),
        end=now + timedelta(minutes=115),
    )
    return sorted(lines)


def _seed_logs(logs: Any, now: datetime) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="web-1")
    batches: dict[int, list[dict[str, Any]]] = {}
    for at, message in log_lines(now):  # a batch may not span more than 24 hours
        day = (now - at) // timedelta(days=1)
        batches.setdefault(day, []).append(
            {"timestamp": int(at.timestamp() * 1000), "message": message}
        )
    for _, events in sorted(batches.items(), reverse=True):
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="web-1", logEvents=events)


def _seed_metrics(cloudwatch: Any, now: datetime) -> None:
    rng = random.Random(5)  # noqa: S311 - sample traffic
    data = []
    for step in range(288):
        at = now - timedelta(minutes=5 * step)
        requests = 900 + rng.randint(-100, 100)
        for name, value, unit in (
            ("RequestCount", requests, "Count"),
            ("HTTP5xxCount", rng.randint(0, 4), "Count"),
            ("LatencyP95", 120 + rng.random() * 60, "Milliseconds"),
        ):
            dimensions = [{"Name": "Service", "Value": "web"}]
            data.append(
                {
                    "MetricName": name,
                    "Dimensions": dimensions,
                    "Timestamp": at,
                    "Value": value,
                    "Unit": unit,
                }
            )
    for chunk in range(0, len(data), 500):
        cloudwatch.put_metric_data(
            Namespace=METRICS_NAMESPACE, MetricData=data[chunk : chunk + 500]
        )


def _create_runbook_user(iam: Any) -> AwsKeys:
    iam.create_user(UserName="runbook")
    iam.put_user_policy(
        UserName="runbook",
        PolicyName="runbook-checks",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="runbook")["AccessKey"]
    return AwsKeys(
        access_key_id=SecretStr(key["AccessKeyId"]),
        secret_access_key=SecretStr(key["SecretAccessKey"]),
    )
