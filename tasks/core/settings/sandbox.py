"""The embedded sandbox: where it lives and its ports."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class SandboxSettings(SystemSettings):
    """The embedded sandbox (``RUNBOOK_SANDBOX_*``): its state directory and its ports."""

    section = "sandbox"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_SANDBOX_")

    dir: Path | None = Field(
        default=None,
        description="all sandbox state lives here; unset: .sandbox in the checkout, or a "
        "directory under /var/tmp named from the checkout when the postgres OS user cannot "
        "reach the checkout",
    )
    pg_port: int = Field(default=54320, ge=1024, le=65535)
    prefect_port: int = Field(default=54200, ge=1024, le=65535)
    moto_port: int = Field(default=0, ge=0, le=65535, description="0: a free port, then kept")
    stripe_port: int = Field(default=0, ge=0, le=65535, description="0: a free port, then kept")
    app_port: int = Field(default=0, ge=0, le=65535, description="0: a free port, then kept")
