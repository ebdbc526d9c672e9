"""Stripe through the official library."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class StripeSettings(SystemSettings):
    """Stripe through the official library (localstripe in the sandbox)."""

    section = "stripe"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_STRIPE_")

    api_key: SecretStr | None = Field(default=None, description="a restricted read key is enough")
    api_base: str | None = Field(default=None, description="unset: https://api.stripe.com")
    webhook_secret: SecretStr | None = Field(default=None, description="whsec_... of the endpoint")
    timeout_s: float = Field(default=10, gt=0)
    max_network_retries: int = Field(default=1, ge=0, le=5)
    decline_window_hours: float = Field(default=24, gt=0)
    decline_rate_max: float = Field(default=0.15, ge=0, le=1)
    events_lookback_hours: float = Field(default=72, gt=0, le=30 * 24)
    event_grace_s: float = Field(
        default=300, ge=0, description="younger events may still be in delivery: not counted"
    )
    event_types: list[str] = Field(
        default_factory=lambda: ["payment_intent.succeeded", "payment_intent.payment_failed"],
        description="event types the platform's webhook endpoint must record",
    )
    max_events: int = Field(default=5000, ge=1, description="events listed at most per check")
