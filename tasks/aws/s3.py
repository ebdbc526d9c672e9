"""S3 buckets: reachable, not public, encrypted, writable (canary), and storage used.

Buckets are checked concurrently; the checks of one bucket run one after another, and when a
bucket cannot be reached its other checks are skipped (with that reason) rather than repeated.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from tasks.aws.clients import AwsError, aws_client, aws_errors
from tasks.core.checking import in_threads, not_configured
from tasks.core.reports import CheckResult, timed_check
from tasks.core.retry import ops_task
from tasks.core.settings import AwsSettings
from tasks.core.units import human_bytes

SYSTEM = "s3"
BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
PUBLIC_GROUPS = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)
CANARY_BYTES = 4096


PUBLIC_ACCESS = ("public access block", "public policy or ACL")


@ops_task("run-s3-checks")
def run_s3_checks(settings: AwsSettings) -> list[CheckResult]:
    """Every check on every configured bucket (``RUNBOOK_AWS_BUCKETS``); never raises.

    Per bucket: reachable, public access block, public policy or ACL, default encryption,
    canary object (put, read back byte-exact, delete), storage used (``metrics["s3_bytes"]``).
    """
    return _every_bucket(settings, public_access_only=False)


@ops_task("run-s3-public-access-checks")
def run_s3_public_access_checks(settings: AwsSettings) -> list[CheckResult]:
    """The weekly security review's part: per bucket, reachable, public access block, and
    public policy or ACL. Writes nothing (no canary); never raises."""
    return _every_bucket(settings, public_access_only=True)


def _every_bucket(settings: AwsSettings, *, public_access_only: bool) -> list[CheckResult]:
    if not settings.buckets:
        return [not_configured(SYSTEM, "buckets", "list the buckets in RUNBOOK_AWS_BUCKETS")]
    client = aws_client(settings, "s3")
    per_bucket = in_threads(
        [
            partial(bucket_checks, client, settings, b, public_access_only=public_access_only)
            for b in settings.buckets
        ]
    )
    return [result for results in per_bucket for result in results]


def bucket_checks(
    client: Any, settings: AwsSettings, bucket: str, *, public_access_only: bool = False
) -> list[CheckResult]:
    """The checks of one bucket, in order (only ``PUBLIC_ACCESS`` after reachable, if asked);
    the rest are skipped when it cannot be reached."""
    reachable = timed_check(
        f"{bucket}: reachable", lambda: _reachable(client, bucket), system=SYSTEM
    )
    checks: list[tuple[str, Callable[[], CheckResult]]] = [
        ("public access block", lambda: _public_access_block(client, bucket)),
        ("public policy or ACL", lambda: _public_policy(client, bucket)),
        ("default encryption", lambda: _encryption(client, bucket)),
        ("canary object", lambda: _canary(client, bucket, settings.canary_prefix)),
        ("storage used", lambda: _storage(client, bucket, settings)),
    ]
    if public_access_only:
        checks = [(name, fn) for name, fn in checks if name in PUBLIC_ACCESS]
    if reachable.failed:
        return [reachable] + [
            CheckResult(
                name=f"{bucket}: {name}",
                status="skipped",
                system=SYSTEM,
                detail="bucket not reachable",
                hint=f"fix '{bucket}: reachable' first",
            )
            for name, _ in checks
        ]
    return [reachable] + [
        timed_check(f"{bucket}: {name}", fn, system=SYSTEM) for name, fn in checks
    ]


def _reachable(client: Any, bucket: str) -> CheckResult:
    started = time.monotonic()
    try:
        with aws_errors(f"HeadBucket {bucket}"):
            client.head_bucket(Bucket=bucket)
    except AwsError as exc:
        if exc.code in ("404", "NoSuchBucket"):
            exc.hint = f"create the bucket or remove {bucket} from RUNBOOK_AWS_BUCKETS"
        raise
    ms = (time.monotonic() - started) * 1000
    return CheckResult(
        name=f"{bucket}: reachable", status="ok", figure=f"{ms:.0f} ms", metrics={"s3_head_ms": ms}
    )


def _public_access_block(client: Any, bucket: str) -> CheckResult:
    name = f"{bucket}: public access block"
    fix = (
        f"aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration "
        "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
    )
    try:
        with aws_errors(f"GetPublicAccessBlock {bucket}"):
            config = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except AwsError as exc:
        if exc.code != "NoSuchPublicAccessBlockConfiguration":
            raise
        return CheckResult(
            name=name,
            status="fail",
            figure="none",
            detail="the bucket has no public access block",
            hint=fix,
        )
    off = [flag for flag in BLOCK_FLAGS if not config.get(flag)]
    if off:
        return CheckResult(
            name=name,
            status="fail",
            figure=f"{len(off)} of 4 off",
            detail="off: " + ", ".join(off),
            hint=fix,
        )
    return CheckResult(name=name, status="ok", figure="all 4 on")


def _public_policy(client: Any, bucket: str) -> CheckResult:
    name = f"{bucket}: public policy or ACL"
    public = _public_statements(client, bucket) + _public_grants(client, bucket)
    if public:
        return CheckResult(
            name=name,
            status="fail",
            figure=f"{len(public)} public",
            detail="; ".join(public),
            hint=f"remove the public statements (aws s3api delete-bucket-policy --bucket {bucket}, "
            "or edit it) and public ACL grants, unless this bucket is meant to be public; "
            "serve public files through CloudFront instead",
            metrics={"s3_public_grants": float(len(public))},
        )
    return CheckResult(name=name, status="ok", figure="private", metrics={"s3_public_grants": 0.0})


def _public_statements(client: Any, bucket: str) -> list[str]:
    try:
        with aws_errors(f"GetBucketPolicy {bucket}"):
            policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    except AwsError as exc:
        if exc.code == "NoSuchBucketPolicy":
            return []
        raise
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    return [
        f"policy statement {st.get('Sid') or i} allows {_actions(st)} to everyone"
        for i, st in enumerate(statements)
        if st.get("Effect") == "Allow"
        and _everyone(st.get("Principal"))
        and not st.get("Condition")
    ]


def _everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        aws = principal.get("AWS")
        return aws == "*" or (isinstance(aws, list) and "*" in aws)
    return False


def _actions(statement: dict[str, Any]) -> str:
    actions = statement.get("Action", "?")
    return ", ".join(actions) if isinstance(actions, list) else str(actions)


def _public_grants(client: Any, bucket: str) -> list[str]:
    with aws_errors(f"GetBucketAcl {bucket}"):
        grants = client.get_bucket_acl(Bucket=bucket).get("Grants", [])
    return [
        f"ACL grants {g.get('Permission')} to {g['Grantee']['URI'].rsplit('/', 1)[-1]}"
        for g in grants
        if g.get("Grantee", {}).get("URI") in PUBLIC_GROUPS
    ]


def _encryption(client: Any, bucket: str) -> CheckResult:
    name = f"{bucket}: default encryption"
    try:
        with aws_errors(f"GetBucketEncryption {bucket}"):
            rules = client.get_bucket_encryption(Bucket=bucket)[
                "ServerSideEncryptionConfiguration"
            ]["Rules"]
    except AwsError as exc:
        if exc.code != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    algorithms = sorted(
        {r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", "") for r in rules}
        - {""}
    )
    if not algorithms:
        return CheckResult(
            name=name,
            status="fail",
            figure="none",
            detail="objects written without encryption headers are stored unencrypted",
            hint=f"aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-"
            'configuration \'{"Rules":[{"ApplyServerSideEncryptionByDefault":'
            '{"SSEAlgorithm":"aws:kms"}}]}\'',
        )
    return CheckResult(name=name, status="ok", figure=", ".join(algorithms))


def _canary(client: Any, bucket: str, prefix: str) -> CheckResult:
    """Put a random object, read it back byte-exact, delete it, and make sure it is gone."""
    name = f"{bucket}: canary object"
    key = f"{prefix}{uuid.uuid4().hex}"
    body = secrets.token_bytes(CANARY_BYTES)
    started = time.monotonic()
    with aws_errors(f"PutObject {bucket}/{key}"):
        client.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        with aws_errors(f"GetObject {bucket}/{key}"):
            read = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    finally:
        with aws_errors(f"DeleteObject {bucket}/{key}"):
            client.delete_object(Bucket=bucket, Key=key)
    ms = (time.monotonic() - started) * 1000
    if read != body:
        return CheckResult(
            name=name,
            status="fail",
            figure="mismatch",
            detail=f"read back {len(read)} bytes that differ from the {len(body)} written",
            hint="S3 or a proxy in between alters objects: check the endpoint and any "
            "transforming Lambda / Object Lambda access point",
        )
    if _exists(client, bucket, key):
        return CheckResult(
            name=name,
            status="fail",
            figure="not deleted",
            detail=f"the canary {key} is still there after DeleteObject",
            hint="check the bucket's versioning / object lock and the principal's s3:DeleteObject",
        )
    return CheckResult(
        name=name,
        status="ok",
        figure=f"{ms:.0f} ms",
        detail=f"put, read back and deleted {CANARY_BYTES} bytes",
        metrics={"s3_canary_ms": ms},
    )


def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        with aws_errors(f"HeadObject {bucket}/{key}"):
            client.head_object(Bucket=bucket, Key=key)
    except AwsError as exc:
        if exc.code in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _storage(client: Any, bucket: str, settings: AwsSettings) -> CheckResult:
    """Bytes and objects, from at most ``storage_max_pages`` pages of the listing."""
    name = f"{bucket}: storage used"
    total = objects = pages = 0
    token: str | None = None
    with aws_errors(f"ListObjectsV2 {bucket}"):
        while pages < settings.storage_max_pages:
            page = client.list_objects_v2(
                Bucket=bucket, **({"ContinuationToken": token} if token else {})
            )
            pages += 1
            for item in page.get("Contents", []):
                total += int(item["Size"])
                objects += 1
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if token is None:
                break
    metrics = {"s3_bytes": float(total), "s3_objects": float(objects)}
    if token is not None:
        return CheckResult(
            name=name,
            status="warn",
            figure=f">= {human_bytes(total)}",
            detail=f"listing stopped after {pages} pages ({objects} objects)",
            hint="raise RUNBOOK_AWS_STORAGE_MAX_PAGES, or read BucketSizeBytes in CloudWatch",
            metrics=metrics,
        )
    return CheckResult(
        name=name,
        status="ok",
        figure=human_bytes(total),
        detail=f"{objects} objects",
        metrics=metrics,
    )
