"""Which Prefect API the runbook talks to."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class PrefectSettings(SystemSettings):
    """Which Prefect API the runbook uses (``RUNBOOK_PREFECT_*``): a URL, or a local server."""

    section = "prefect"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_PREFECT_")

    api_url: str | None = Field(default=None, description="Prefect API; unset: a local server")
    port: int = Field(default=4200, ge=1, le=65535, description="port of a local server")
