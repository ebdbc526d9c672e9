"""Settings, one model per system, validated once at flow start.

Precedence, highest first: values passed in code, environment variables
(``RUNBOOK_<SYSTEM>_<FIELD>``), the TOML file named by ``RUNBOOK_CONFIG`` (one table per
system: ``[postgres]``, ``[backup]``, ``[prefect]``, ``[sandbox]``, ``[aws]``, ``[stripe]``,
``[http]``, ``[maintenance]``), then the defaults below.
Secrets are ``SecretStr``: they print as ``**********`` in logs, artifacts, exceptions and
reprs. The DSN may instead come from a Prefect ``Secret`` block named by
``RUNBOOK_PG_DSN_SECRET_BLOCK``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    moto_port: int = Field(default=0, ge=0, le=65535, description="0: a free port, then kept")
    stripe_port: int = Field(default=0, ge=0, le=65535, description="0: a free port, then kept")
    app_port: int = Field(default=0, ge=0, le=65535, description="0: a free port, then kept")


class ErrorPattern(BaseModel):
    """A CloudWatch Logs filter pattern whose count over the window is compared to a baseline."""

    name: str = Field(pattern=r"^[a-z0-9-]+$", description="short name, e.g. webhook-signature")
    pattern: str = Field(min_length=1, description='filter pattern, e.g. "\\"ERROR S3 upload\\""')
    baseline_per_hour: float = Field(
        default=0, ge=0, description="known normal rate; the measured baseline is used if higher"
    )


class AwsSettings(_SystemSettings):
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


class StripeSettings(_SystemSettings):
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


class HttpEndpoint(BaseModel):
    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=5, gt=0)
    expect_status: int = Field(default=200, ge=100, le=599)
    slow_ms: float = Field(default=1000, gt=0, description="slower than this is a warning")


class HttpSettings(_SystemSettings):
    section = "http"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_HTTP_")

    endpoints: list[HttpEndpoint] = Field(default_factory=list)


class RecoverySettings(_SystemSettings):
    """Point-in-time recovery, backup restoration and switchover."""

    section = "recovery"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_RECOVERY_")

    approval_timeout_s: int = Field(
        default=3600, gt=0, description="how long an approval gate waits before giving up"
    )
    lock_wait_s: float = Field(
        default=10, gt=0, description="how long a second recovery waits for the cluster's lock"
    )
    restore_root: Path | None = Field(
        default=None,
        description="where restored clusters go; default: beside the live data directory "
        "(same filesystem, so a switchover is a rename), else the scratch directory",
    )
    disk_headroom: float = Field(
        default=1.2, ge=1, description="free space needed at the restore root, x backup size"
    )
    start_deadline_s: float = Field(default=120, gt=0, description="live restart in switchover")


class PostgresThresholds(BaseModel):
    """When a PostgreSQL health finding is a warning or a failure."""

    connections_warn: float = Field(default=0.75, gt=0, le=1, description="of max_connections")
    connections_fail: float = Field(default=0.9, gt=0, le=1, description="of max_connections")
    idle_in_transaction_s: float = Field(default=60, gt=0)
    long_query_s: float = Field(default=300, gt=0, description="active longer than this")
    replication_lag_warn_s: float = Field(default=30, ge=0)
    replication_lag_fail_s: float = Field(default=300, ge=0)
    slow_query_mean_ms: float = Field(default=500, gt=0, description="mean time that is slow")
    top_queries: int = Field(default=5, ge=1, le=50, description="queries listed by total/mean")
    dead_tuple_ratio: float = Field(default=0.2, gt=0, le=1, description="dead / (live + dead)")
    dead_tuple_min: int = Field(default=10_000, ge=0, description="fewer dead tuples never warn")
    unused_index_min_bytes: int = Field(default=1_000_000, ge=0, description="smaller: ignored")
    seq_scan_min_rows: int = Field(default=50_000, ge=1, description="a table this large wants one")
    seq_scan_min_count: int = Field(default=10, ge=1, description="sequential scans since reset")
    backup_max_age_h: float = Field(default=26, gt=0, description="newest backup older: fail")
    verify_max_age_h: float = Field(default=50, gt=0, description="last verify-backup older: warn")


class SecurityThresholds(BaseModel):
    """The weekly security review's window, thresholds and expected roles."""

    window_days: float = Field(default=7, gt=0)
    login_events_table: str = Field(
        default="login_events",
        pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$",
        description="the platform's login log: account, source_addr, success, at",
    )
    failed_logins_per_address: int = Field(default=20, ge=1, description="more is suspicious")
    failed_logins_per_account: int = Field(default=10, ge=1, description="more is suspicious")
    expected_superusers: list[str] = Field(default_factory=lambda: ["postgres"])
    roles_without_expiry: list[str] = Field(
        default_factory=lambda: ["postgres"], description="login roles allowed to never expire"
    )


class PerformanceThresholds(BaseModel):
    """What the weekly review calls a regression against the stored baseline."""

    regression_factor: float = Field(default=1.5, gt=1, description="mean time grew this much")
    regression_min_ms: float = Field(default=5, ge=0, description="and by at least this")
    calls_factor: float = Field(default=3, gt=1, description="calls per week grew this much")
    min_calls: int = Field(default=20, ge=1, description="fewer calls in the week: not compared")
    baseline_queries: int = Field(default=200, ge=1, description="queries kept in the baseline")


class CapacitySeries(BaseModel):
    """A capacity series taken from the daily checks' metrics, with its limit.

    ``metric`` is ``system/check/metric``; a ``*`` in it makes one series per match, named by
    ``name`` with its ``*`` replaced. The limit is a number or another metric (``limit_metric``).
    """

    name: str = Field(pattern=r"^[a-z0-9_.*-]+$")
    metric: str = Field(pattern=r"^[^/]+/[^/]+/.+$")
    unit: str = ""
    limit: float | None = Field(default=None, gt=0)
    limit_metric: str | None = Field(default=None, pattern=r"^[^/]+/[^/]+/.+$")


def _default_capacity_series() -> list[CapacitySeries]:
    return [
        CapacitySeries(
            name="database-bytes",
            metric="postgres/table-statistics/database_bytes",
            unit="bytes",
            limit=100e9,
        ),
        CapacitySeries(
            name="table-bytes.*", metric="postgres/table-statistics/table_bytes.*", unit="bytes"
        ),
        CapacitySeries(
            name="connections",
            metric="postgres/connection-pool/connections",
            unit="connections",
            limit_metric="postgres/connection-pool/max_connections",
        ),
        CapacitySeries(name="s3-bytes.*", metric="s3/*: storage used/s3_bytes", unit="bytes"),
        CapacitySeries(
            name="ses-sent-24h",
            metric="ses/sending quota/ses_sent_24h",
            unit="emails",
            limit_metric="ses/sending quota/ses_max_24h",
        ),
    ]


class MaintenanceSettings(_SystemSettings):
    """The daily, weekly and monthly maintenance flows: thresholds, state, alerts, schedules."""

    section = "maintenance"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_MAINTENANCE_")

    state_dir: Path = Field(
        default=Path("/var/tmp/runbook-state"),  # noqa: S108 - durable in production: a volume
        description="performance baseline and capacity samples (JSON files) live here",
    )
    schedule_timezone: str = Field(default="UTC", description="of the maintenance schedules")
    check_deadline_s: float = Field(
        default=120, gt=0, description="daily checks not answered by then fail as timed out"
    )
    notification_blocks: list[str] = Field(
        default_factory=lambda: ["runbook-oncall", "runbook-oncall-email"],
        description="Prefect notification blocks told of failures: a name, or type-slug/name",
    )
    lock_files: list[Path] = Field(
        default_factory=list,
        description="requirements*.txt (pip-audit) and package-lock.json (npm audit) to audit",
    )
    audit_deadline_s: float = Field(default=300, gt=0, description="per lock file")
    python_audit_service: Literal["pypi", "osv"] = Field(
        default="pypi", description="pip-audit's vulnerability service"
    )
    osv_url: str | None = Field(default=None, description="OSV API for python_audit_service=osv")
    npm_registry: str | None = Field(default=None, description="unset: npm's configured registry")
    postgres: PostgresThresholds = Field(default_factory=PostgresThresholds)
    security: SecurityThresholds = Field(default_factory=SecurityThresholds)
    performance: PerformanceThresholds = Field(default_factory=PerformanceThresholds)
    capacity_series: list[CapacitySeries] = Field(default_factory=_default_capacity_series)
    capacity_window_days: int = Field(default=90, ge=2, description="samples used for trends")
    capacity_warn_days: float = Field(default=90, gt=0, description="days left below: warn")
    capacity_fail_days: float = Field(default=30, gt=0, description="days left below: fail")

    @field_validator("schedule_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name, e.g. UTC") from None
        return value


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
