"""S3 checks against the sandbox's moto server: what the seed plants, faults, wrong credentials."""

from __future__ import annotations

from botocore.awsrequest import AWSResponse
from pydantic import SecretStr

from tasks.aws.clients import aws_client
from tasks.aws.s3 import bucket_checks, run_s3_checks, run_s3_public_access_checks
from tests.conftest import settings_for


class ServiceUnavailableBody:
    """The raw body botocore reads from an S3 503."""

    def stream(self, **kwargs):
        yield b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"


def by_name(results):
    return {r.name: r for r in results}


def test_s3_checks_find_the_public_unencrypted_uploads_bucket_and_pass_the_backups_bucket(
    platform,
):
    results = by_name(run_s3_checks.fn(settings_for(platform).aws))
    for problem in ("public access block", "public policy or ACL", "default encryption"):
        assert results[f"linkist-uploads: {problem}"].status == "fail"
        assert results[f"linkist-uploads: {problem}"].hint
        assert results[f"linkist-backups: {problem}"].status == "ok"
    assert "PublicReadForProfileImages" in results["linkist-uploads: public policy or ACL"].detail
    for bucket in ("linkist-uploads", "linkist-backups"):
        assert results[f"{bucket}: reachable"].status == "ok"
        assert results[f"{bucket}: canary object"].status == "ok"
        assert results[f"{bucket}: storage used"].metrics["s3_bytes"] > 0
    assert {r.system for r in results.values()} == {"s3"}


def test_canary_objects_are_deleted_after_the_check(platform):
    settings = settings_for(platform).aws
    run_s3_checks.fn(settings)
    s3 = aws_client(settings, "s3")
    for bucket in settings.buckets:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=settings.canary_prefix)
        assert listed.get("KeyCount", 0) == 0


def test_wrong_aws_credentials_fail_each_bucket_with_a_credentials_hint(platform):
    wrong = SecretStr("AKIAWRONGWRONGWRONG1")
    settings = settings_for(platform).aws.model_copy(update={"access_key_id": wrong})
    results = run_s3_checks.fn(settings)
    reachable = [r for r in results if r.name.endswith(": reachable")]
    assert [r.status for r in reachable] == ["fail", "fail"]
    assert all("RUNBOOK_AWS_ACCESS_KEY_ID" in r.hint for r in reachable)
    assert {r.status for r in results} == {"fail", "skipped"}
    assert all(r.hint for r in results)


def test_public_access_checks_alone_skip_the_rest_when_a_bucket_cannot_be_reached(platform):
    wrong = SecretStr("AKIAWRONGWRONGWRONG1")
    settings = settings_for(platform).aws.model_copy(update={"access_key_id": wrong})
    results = run_s3_public_access_checks.fn(settings)
    assert [(r.name, r.status) for r in results if r.name.startswith("linkist-uploads")] == [
        ("linkist-uploads: reachable", "fail"),
        ("linkist-uploads: public access block", "skipped"),
        ("linkist-uploads: public policy or ACL", "skipped"),
    ]
    assert len(results) == 6


def test_an_injected_503_fails_only_the_check_it_hits_with_a_retry_hint(platform):
    """moto has no fault injection: a botocore ``before-send`` hook answers 503 instead."""
    settings = settings_for(platform).aws
    client = aws_client(settings, "s3")

    def service_unavailable(request, **kwargs):  # before-send: returning a response skips sending
        return AWSResponse(request.url, 503, {}, ServiceUnavailableBody())

    client.meta.events.register("before-send.s3.GetBucketEncryption", service_unavailable)
    results = by_name(bucket_checks(client, settings, "linkist-backups"))
    hit = results["linkist-backups: default encryption"]
    assert hit.status == "fail"
    assert "503" in hit.detail and "retry" in hit.hint
    others = [r for name, r in results.items() if name != hit.name]
    assert [r.status for r in others] == ["ok"] * 5
