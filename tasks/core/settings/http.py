"""The platform's HTTP endpoints."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class HttpEndpoint(BaseModel):
    """One endpoint to GET: the status it must answer, its ``timeout_s`` and its ``slow_ms``."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=5, gt=0)
    expect_status: int = Field(default=200, ge=100, le=599)
    slow_ms: float = Field(default=1000, gt=0, description="slower than this is a warning")


class HttpSettings(SystemSettings):
    """The endpoints the daily health check requests (``RUNBOOK_HTTP_ENDPOINTS`` or ``[http]``)."""

    section = "http"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_HTTP_")

    endpoints: list[HttpEndpoint] = Field(default_factory=list)
