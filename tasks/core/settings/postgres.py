"""The live PostgreSQL cluster the runbook operates on, and the tables its checks cover."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from tasks.core.settings.base import SystemSettings

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_COLUMN_NAME = re.compile(_IDENTIFIER)
_TABLE_NAME = re.compile(rf"(?:{_IDENTIFIER}\.)?{_IDENTIFIER}")


class TableCheck(BaseModel):
    """One table the data checks cover.

    Names are plain (unquoted) PostgreSQL identifiers, so they are folded to lower
    case the way PostgreSQL folds them.
    """

    name: str
    key_columns: list[str] = ["id"]
    min_rows: int = Field(default=1, ge=0)
    max_rows: int | None = Field(default=None, ge=0)

    @field_validator("name")
    @classmethod
    def _plain_table_name(cls, value: str) -> str:
        if not _TABLE_NAME.fullmatch(value):
            raise ValueError(f"table name {value!r} is not an identifier or schema.identifier")
        return value.lower()

    @field_validator("key_columns")
    @classmethod
    def _plain_column_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _COLUMN_NAME.fullmatch(value):
                raise ValueError(f"key column {value!r} is not an identifier")
        return [value.lower() for value in values]

    @model_validator(mode="after")
    def _bounds_in_order(self) -> TableCheck:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows {self.max_rows} is below min_rows {self.min_rows}")
        return self


class PostgresSettings(SystemSettings):
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
    config_file: Path | None = Field(
        default=None,
        description="the live cluster's postgresql.conf when it is outside the data directory "
        "(e.g. /etc/postgresql/15/main/postgresql.conf); unset: asked from the server",
    )
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
