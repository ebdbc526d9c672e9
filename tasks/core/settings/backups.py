"""The backup engine, where restores may go, and recoveries."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    SettingsConfigDict,
)

from tasks.core.settings.base import SystemSettings


class BackupSettings(SystemSettings):
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


class RecoverySettings(SystemSettings):
    """Point-in-time recovery, backup restoration and switchover."""

    section = "recovery"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_RECOVERY_")

    approval_timeout_s: int = Field(
        default=3600, gt=0, description="how long an approval gate waits before giving up"
    )
    distinct_approvers: bool = Field(
        default=True,
        description="four eyes: a later destructive step of a run (the switchover) needs an "
        "approver other than whoever approved an earlier one",
    )
    allowed_approvers: list[str] = Field(
        default_factory=list,
        description="names that may approve or reject at a gate (case-insensitive); empty: anyone",
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
    archive_deadline_s: float = Field(
        default=120,
        gt=0,
        description="after a switchover, how long the new live cluster has to archive a WAL "
        "segment before the switchover is undone",
    )
