"""Settings, one model per system, validated once at flow start.

Precedence, highest first: values passed in code, environment variables
(``RUNBOOK_<SYSTEM>_<FIELD>``), the TOML file named by ``RUNBOOK_CONFIG`` (one table per
system: ``[postgres]``, ``[backup]``, ``[prefect]``, ``[sandbox]``), then the defaults below.
Secrets are ``SecretStr``: they print as ``**********`` in logs, artifacts, exceptions and
reprs. The DSN may instead come from a Prefect ``Secret`` block named by
``RUNBOOK_PG_DSN_SECRET_BLOCK``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tasks.errors import SettingsError
from tasks.quality import TableCheck

CONFIG_ENV = "RUNBOOK_CONFIG"


class _SystemSettings(BaseSettings):
    """Common loading rules; ``section`` is the TOML table, ``env_prefix`` the variable prefix."""

    section: ClassVar[str]
    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        section = _config_file_tables().get(cls.section, {})
        return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=section))

    @classmethod
    def variable(cls, field: str) -> str:
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def _config_file_tables() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(
            f"{CONFIG_ENV} names {path}, which does not exist",
            hint=f"point {CONFIG_ENV} at a TOML file or unset it",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(
            f"{CONFIG_ENV} file {path} is not valid TOML: {exc}", hint="fix the file"
        ) from None


class PostgresSettings(_SystemSettings):
    """The live PostgreSQL cluster the runbook operates on."""

    section = "postgres"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_PG_")

    dsn: SecretStr | None = Field(
        default=None,
        description="libpq URL of the live database: postgresql://user:pw@host:port/db",
    )
    dsn_secret_block: str | None = Field(
        default=None, description="name of a Prefect Secret block holding the DSN"
    )
    data_dir: Path | None = Field(default=None, description="the live cluster's data directory")
    bin_dir: Path | None = Field(
        default=None, description="PostgreSQL server binaries; found with pg_config when unset"
    )
    os_user: str = Field(
        default="postgres", description="OS user that owns the clusters (used when we are root)"
    )
    tables: list[TableCheck] = Field(
        default_factory=list, description="tables whose row counts and keys are verified"
    )
    row_count_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="allowed relative row-count difference vs live"
    )

    @field_validator("dsn")
    @classmethod
    def _dsn_is_a_postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a URL starting with postgresql://")
        return value


class BackupSettings(_SystemSettings):
    """The backup engine and where restores may go."""

    section = "backup"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_BACKUP_")

    engine: Literal["pgbackrest"] = "pgbackrest"
    stanza: str = Field(default="main", pattern=r"^[A-Za-z0-9_.-]+$")
    config: Path | None = Field(default=None, description="pgbackrest.conf to use")
    process_max: int = Field(default=2, ge=1, le=64)
    scratch_dir: Path = Field(
        default=Path("/var/tmp/runbook-scratch"),  # noqa: S108 - a per-run subdirectory, mode 700
        description="where verification restores go (a fresh directory inside it per run)",
    )
    scratch_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    backup_deadline_s: float = Field(default=6 * 3600, gt=0)
    restore_deadline_s: float = Field(default=3600, gt=0)
    recovery_deadline_s: float = Field(default=3600, gt=0)
    command_deadline_s: float = Field(default=300, gt=0, description="info, check, archive-get")
    full_backup_weekday: int = Field(default=6, ge=0, le=6, description="0 Monday .. 6 Sunday")
    timezone: str = "UTC"


class PrefectSettings(_SystemSettings):
    section = "prefect"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_PREFECT_")

    api_url: str | None = Field(default=None, description="Prefect API; unset: a local server")
    port: int = Field(default=4200, ge=1, le=65535, description="port of a local server")


class SandboxSettings(_SystemSettings):
    section = "sandbox"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_SANDBOX_")

    dir: Path = Field(default=Path(".sandbox"), description="all sandbox state lives here")
    pg_port: int = Field(default=54320, ge=1024, le=65535)
    prefect_port: int = Field(default=54200, ge=1024, le=65535)


class Settings(BaseModel):
    """Everything a flow needs, loaded and validated once at flow start."""

    postgres: PostgresSettings
    backup: BackupSettings

    def live_dsn(self) -> SecretStr:
        if self.postgres.dsn is None:
            raise SettingsError(
                "no DSN for the live database",
                hint="set RUNBOOK_PG_DSN (postgresql://...) or RUNBOOK_PG_DSN_SECRET_BLOCK",
            )
        return self.postgres.dsn


def load_system(cls: type[_SystemSettings], **values: Any) -> Any:
    """Load one system's settings, turning validation errors into a message naming variables."""
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{cls.variable(str(err['loc'][0]))}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(
            f"invalid {cls.section} settings: {problems}",
            hint=f"set the variables named, or the [{cls.section}] table of ${CONFIG_ENV}",
        ) from None


def load_settings() -> Settings:
    """Load and validate the settings flows use; resolves the DSN from a Secret block if named."""
    postgres = load_system(PostgresSettings)
    if postgres.dsn is None and postgres.dsn_secret_block:
        postgres = load_system(PostgresSettings, dsn=_read_secret_block(postgres.dsn_secret_block))
    settings = Settings(postgres=postgres, backup=load_system(BackupSettings))
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
