"""The backup engine contract every engine (pgBackRest, AWS RDS) implements.

Flows speak only this contract, so an engine can be swapped by configuration. A restore
``destination`` is engine-specific text: a data directory for pgBackRest, a new DB instance
identifier for RDS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from tasks.core.errors import RefusedError, RunbookError


class BackupKind(StrEnum):
    """A backup's type: ``full``, ``diff`` (since the last full), ``incr`` (since the last one)."""

    FULL = "full"
    DIFF = "diff"
    INCR = "incr"


class BackupError(RunbookError):
    """The backup engine failed; ``code`` is the engine's own error code where it has one."""

    def __init__(self, message: str, *, hint: str = "", code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class RepositoryUnreachable(BackupError):
    """The backup repository cannot be reached (path, bucket, credentials, network); transient."""

    transient = True


class BackupNotFound(RefusedError):
    """A backup label that the repository does not hold."""


class BackupInfo(BaseModel):
    """One backup set in the repository."""

    label: str
    kind: BackupKind
    started_at: AwareDatetime
    stopped_at: AwareDatetime
    size_bytes: int = Field(description="database size restored from this backup")
    repo_size_bytes: int = Field(description="bytes this backup added to the repository")
    wal_start: str | None = None
    wal_stop: str | None = None
    lsn_start: str | None = None
    lsn_stop: str | None = None
    timeline: int | None = None
    prior: str | None = Field(default=None, description="label this diff/incr depends on")
    system_id: int | None = Field(default=None, description="PostgreSQL system identifier")

    @property
    def duration_s(self) -> float:
        """How long the backup ran, in seconds (``stopped_at - started_at``)."""
        return (self.stopped_at - self.started_at).total_seconds()


class RestoreWindow(BaseModel):
    """The times a point-in-time recovery can reach.

    ``earliest``: the oldest backup's stop time (recovery needs a consistent backup to start).
    ``latest``: the commit time of the last commit in archived WAL (anything later is not in the
    repository yet, so recovery could not reach it).
    """

    earliest: AwareDatetime
    latest: AwareDatetime | None
    oldest_backup: str
    newest_wal_segment: str | None

    def contains(self, moment: datetime) -> bool:
        """Whether ``earliest <= moment <= latest`` (no ``latest``: no upper bound); aware times."""
        return self.earliest <= moment and (self.latest is None or moment <= self.latest)


class RecoveryTarget(BaseModel):
    """Where recovery stops: ``immediate`` (end of the backup), or a time, name, LSN or xid."""

    type: Literal["immediate", "time", "name", "lsn", "xid"] = "immediate"
    value: str | None = None
    inclusive: bool = True
    timeline: int | None = Field(
        default=None, description="follow WAL up to this timeline (default: the latest)"
    )

    @model_validator(mode="after")
    def _value_matches_type(self) -> RecoveryTarget:
        if (self.type == "immediate") != (self.value is None):
            raise ValueError("a target of type 'immediate' takes no value; every other needs one")
        if self.type == "time":
            moment = datetime.fromisoformat(str(self.value))
            if moment.tzinfo is None:
                raise ValueError("a time target needs a UTC offset, e.g. 2026-11-28T10:00:00+00:00")
        return self


class RestoreRequest(BaseModel):
    """What to restore where: one explicit backup set, an engine-specific destination, a target."""

    backup_label: str = Field(description="explicit backup set; never 'whatever is newest'")
    destination: str
    target: RecoveryTarget = RecoveryTarget()
    archive_into_repository: bool = Field(
        default=False, description="false: the restored cluster never archives into our repo"
    )


class RestoreResult(BaseModel):
    """What a restore did: the backup set, where it went, ``seconds`` and ``bytes_restored``.

    ``seconds`` is the restore command's wall time; ``bytes_restored`` is the backup's database
    size (``BackupInfo.size_bytes``), not a count of bytes copied.
    """

    backup_label: str
    destination: str
    seconds: float
    bytes_restored: int


class RepositoryCheck(BaseModel):
    """What ``verify_repository`` found: ``ok``, and the tool's output or error as ``detail``."""

    ok: bool
    detail: str


class BackupEngine(ABC):
    """What every backup engine offers. Methods raise ``BackupError`` subclasses."""

    name: str

    @abstractmethod
    def list_backups(self) -> list[BackupInfo]:
        """Backups in the repository, oldest first."""

    @abstractmethod
    def restorable_window(self, timeline: int | None = None) -> RestoreWindow:
        """Earliest and latest reachable recovery times (see ``RestoreWindow``), following
        ``timeline`` (the live cluster's) when given, else the newest in the repository."""

    @abstractmethod
    def take_backup(self, kind: BackupKind, expire: bool = True) -> BackupInfo:
        """Take a backup and return it as listed afterwards; ``expire=False`` keeps every older
        backup this time (retention applies again at the next backup that expires)."""

    @abstractmethod
    def verify_repository(self, label: str | None = None) -> RepositoryCheck:
        """Check the repository's files against their checksums (one set, or all)."""

    @abstractmethod
    def restore(self, request: RestoreRequest) -> RestoreResult:
        """Restore ``request.backup_label`` into ``request.destination`` (new or empty)."""

    def find_backup(self, label: str | None) -> BackupInfo:
        """The named backup, or the newest one when ``label`` is None."""
        backups = self.list_backups()
        if not backups:
            raise BackupNotFound(
                "the repository holds no backups", hint="take one first (take-backup flow)"
            )
        if label is None:
            return backups[-1]
        for backup in backups:
            if backup.label == label:
                return backup
        known = ", ".join(b.label for b in backups[-10:])
        raise BackupNotFound(
            f"no backup labelled {label!r} in the repository", hint=f"pick one of: {known}"
        )
