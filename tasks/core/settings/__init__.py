"""Settings, one model per system, validated once at flow start.

Precedence, highest first: values passed in code, environment variables
(``RUNBOOK_<SYSTEM>_<FIELD>``), the TOML file named by ``RUNBOOK_CONFIG`` (one table per
system: ``[postgres]``, ``[backup]``, ``[recovery]``, ``[prefect]``, ``[sandbox]``, ``[aws]``,
``[stripe]``, ``[http]``, ``[maintenance]``, ``[incidents]``, ``[services]``), then the
defaults. Secrets are ``SecretStr``: they print as ``**********`` in logs, artifacts,
exceptions and reprs. The DSN may instead come from a Prefect ``Secret`` block named by
``RUNBOOK_PG_DSN_SECRET_BLOCK``.
"""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, Field, SecretStr

from tasks.core.errors import SettingsError
from tasks.core.settings.aws import AwsSettings, ErrorPattern
from tasks.core.settings.backups import BackupSettings, RecoverySettings
from tasks.core.settings.base import CONFIG_ENV, SystemSettings, load_system
from tasks.core.settings.http import HttpEndpoint, HttpSettings
from tasks.core.settings.incidents import (
    SEVERITIES,
    IncidentSettings,
    OnCall,
    Roster,
    Severity,
    SeverityTimers,
)
from tasks.core.settings.maintenance import (
    CapacitySeries,
    MaintenanceSettings,
    PerformanceThresholds,
    PostgresThresholds,
    SecurityThresholds,
)
from tasks.core.settings.orchestration import PrefectSettings
from tasks.core.settings.postgres import PostgresSettings, TableCheck
from tasks.core.settings.sandbox import SandboxSettings
from tasks.core.settings.services import ServicesSettings
from tasks.core.settings.stripe import StripeSettings


class Settings(BaseModel):
    """Everything a flow needs, loaded and validated once at flow start."""

    postgres: PostgresSettings
    backup: BackupSettings
    aws: AwsSettings = Field(default_factory=lambda: load_system(AwsSettings))
    stripe: StripeSettings = Field(default_factory=lambda: load_system(StripeSettings))
    http: HttpSettings = Field(default_factory=lambda: load_system(HttpSettings))
    recovery: RecoverySettings = Field(default_factory=lambda: load_system(RecoverySettings))
    maintenance: MaintenanceSettings = Field(
        default_factory=lambda: load_system(MaintenanceSettings)
    )

    def live_dsn(self) -> SecretStr:
        """The live database's DSN.

        Raises:
            SettingsError: no DSN is set (``RUNBOOK_PG_DSN`` or ``RUNBOOK_PG_DSN_SECRET_BLOCK``).
        """
        if self.postgres.dsn is None:
            raise SettingsError(
                "no DSN for the live database",
                hint="set RUNBOOK_PG_DSN (postgresql://...) or RUNBOOK_PG_DSN_SECRET_BLOCK",
            )
        return self.postgres.dsn


def load_settings() -> Settings:
    """Load and validate the settings flows use; resolves the DSN from a Secret block if named."""
    postgres = load_system(PostgresSettings)
    if postgres.dsn is None and postgres.dsn_secret_block:
        postgres = load_system(PostgresSettings, dsn=_read_secret_block(postgres.dsn_secret_block))
    settings = Settings(
        postgres=postgres,
        backup=load_system(BackupSettings),
        aws=load_system(AwsSettings),
        stripe=load_system(StripeSettings),
        http=load_system(HttpSettings),
        recovery=load_system(RecoverySettings),
        maintenance=load_system(MaintenanceSettings),
    )
    settings.live_dsn()
    return settings


def _read_secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = cast(Secret[str], Secret.load(name)).get()  # sync call: never a coroutine
    except ValueError as exc:
        raise SettingsError(
            f"Prefect Secret block {name!r} could not be loaded: {exc}",
            hint="create the block or fix RUNBOOK_PG_DSN_SECRET_BLOCK",
        ) from None
    return str(value)


__all__ = [
    "AwsSettings",
    "BackupSettings",
    "CONFIG_ENV",
    "CapacitySeries",
    "ErrorPattern",
    "HttpEndpoint",
    "HttpSettings",
    "IncidentSettings",
    "MaintenanceSettings",
    "OnCall",
    "PerformanceThresholds",
    "PostgresSettings",
    "PostgresThresholds",
    "PrefectSettings",
    "RecoverySettings",
    "Roster",
    "SEVERITIES",
    "SandboxSettings",
    "SecurityThresholds",
    "ServicesSettings",
    "Severity",
    "SeverityTimers",
    "Settings",
    "StripeSettings",
    "SystemSettings",
    "TableCheck",
    "load_settings",
    "load_system",
]
