"""S3, SES, CloudWatch and CloudWatch Logs through boto3."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class ErrorPattern(BaseModel):
    """A CloudWatch Logs filter pattern whose count over the window is compared to a baseline."""

    name: str = Field(pattern=r"^[a-z0-9-]+$", description="short name, e.g. webhook-signature")
    pattern: str = Field(min_length=1, description='filter pattern, e.g. "\\"ERROR S3 upload\\""')
    baseline_per_hour: float = Field(
        default=0, ge=0, description="known normal rate; the measured baseline is used if higher"
    )


class AwsSettings(SystemSettings):
    """S3, SES, CloudWatch and CloudWatch Logs through boto3 (moto server in the sandbox)."""

    section = "aws"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_AWS_")

    endpoint_url: str | None = Field(default=None, description="unset: the real AWS endpoints")
    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    access_key_id: SecretStr | None = Field(default=None, description="unset: boto3's chain")
    secret_access_key: SecretStr | None = None
    connect_timeout_s: float = Field(default=5, gt=0)
    read_timeout_s: float = Field(default=15, gt=0)
    max_attempts: int = Field(default=2, ge=1, le=10, description="botocore attempts per call")
    buckets: list[str] = Field(default_factory=list, description="buckets checked every day")
    canary_prefix: str = Field(default="runbook-canary/", description="key prefix of canaries")
    storage_max_pages: int = Field(
        default=50, ge=1, description="listing pages (1000 keys each) summed for storage used"
    )
    ses_identities: list[str] = Field(
        default_factory=list, description="domains or addresses that must be verified with DKIM"
    )
    bounce_rate_max: float = Field(default=0.05, ge=0, le=1)
    complaint_rate_max: float = Field(default=0.001, ge=0, le=1)
    quota_use_max: float = Field(default=0.8, gt=0, le=1, description="24 h send quota use")
    log_group: str | None = Field(default=None, description="the application's log group")
    error_patterns: list[ErrorPattern] = Field(default_factory=list)
    logs_window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    logs_baseline_hours: int = Field(default=7 * 24, ge=1, le=14 * 24)
    spike_ratio: float = Field(default=3.0, gt=1, description="window rate / baseline that fails")
    spike_min_count: int = Field(default=5, ge=1, description="fewer errors never fail")
