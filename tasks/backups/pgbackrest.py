"""pgBackRest engine: drives the ``pgbackrest`` CLI (``--output=json`` where it exists).

The restorable window's ``latest`` end is the commit time of the last COMMIT record in archived
WAL: the newest archived segment is fetched with ``archive-get`` (which works for posix and S3
repositories alike, and decompresses) and read with ``pg_waldump``; if that segment holds no
commit, the segments before it are read, up to ``WALDUMP_SEGMENTS_BACK``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.backups.base import (
    BackupEngine,
    BackupError,
    BackupInfo,
    BackupKind,
    RecoveryTarget,
    RepositoryCheck,
    RepositoryUnreachable,
    RestoreRequest,
    RestoreResult,
    RestoreWindow,
)
from tasks.core.errors import RefusedError
from tasks.core.process import (
    CommandError,
    CommandFailed,
    effective_user,
    require_tool,
    run_command,
)
from tasks.postgres.cluster import is_data_directory, make_owned_dir

INSTALL_HINT = "install pgBackRest (apt-get install pgbackrest) and put it on PATH"
WALDUMP_SEGMENTS_BACK = 16
SEGMENTS_PER_XLOGID = 0x100  # 16 MiB segments, the default and what the sandbox uses
# Error codes (pgBackRest's build/error/error.yaml) that mean "cannot reach the repository".
UNREACHABLE_CODES = {39, 41, 46, 49, 55, 103, 104}
_ERROR_RE = re.compile(r"ERROR: \[(\d+)\]: (.*)", re.DOTALL)
_VERIFY_PROBLEM_RE = re.compile(r"(missing|checksum invalid|size invalid|other): [1-9]")
_COMMIT_RE = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


class PgBackRest(BackupEngine):
    """One stanza of one pgBackRest repository, run as ``os_user`` when we are root."""

    name = "pgbackrest"

    def __init__(
        self,
        *,
        stanza: str,
        config: Path | None,
        bin_dir: Path,
        os_user: str | None = "postgres",
        process_max: int = 2,
        command_deadline_s: float = 300,
        backup_deadline_s: float = 6 * 3600,
        restore_deadline_s: float = 3600,
    ) -> None:
        self.stanza = stanza
        self.config = config
        self.bin_dir = bin_dir
        self.os_user = effective_user(os_user)
        self.process_max = process_max
        self.command_deadline_s = command_deadline_s
        self.backup_deadline_s = backup_deadline_s
        self.restore_deadline_s = restore_deadline_s

    def __repr__(self) -> str:
        return f"PgBackRest(stanza={self.stanza!r}, config={str(self.config)!r})"

    # -- running the CLI -------------------------------------------------------------------------

    def command(self, *args: str | Path) -> list[str]:
        """The full argv for a pgBackRest command on this stanza (for logs and benchmarks)."""
        binary = require_tool("pgbackrest", hint=INSTALL_HINT)
        config = [f"--config={self.config}"] if self.config else []
        return [binary, *config, f"--stanza={self.stanza}", *map(str, args)]

    def _run(self, *args: str | Path, timeout: float, what: str) -> str:
        try:
            return run_command(
                self.command(*args), timeout=timeout, user=self.os_user, what=what
            ).stdout
        except CommandFailed as exc:
            raise _backup_error(what, exc) from None

    def info(self) -> dict[str, Any]:
        """The stanza's ``pgbackrest info --output=json`` record."""
        out = self._run(
            "info", "--output=json", timeout=self.command_deadline_s, what="pgBackRest info"
        )
        stanzas = json.loads(out)
        record: dict[str, Any] = stanzas[0] if stanzas else {}
        status = record.get("status", {})
        if status.get("code") not in (0, 2):  # 2: "no valid backups", still a reachable stanza
            raise RepositoryUnreachable(
                f"pgBackRest stanza {self.stanza!r}: {status.get('message', 'no status')}",
                hint="check the repository path or bucket, and that stanza-create has run",
                code=status.get("code"),
            )
        return record

    # -- the contract ----------------------------------------------------------------------------

    def list_backups(self) -> list[BackupInfo]:
        """The stanza's backups from ``pgbackrest info --output=json``, oldest first.

        Raises:
            RepositoryUnreachable: the stanza's status is not ok, or the repository is unreachable.
            BackupError, ToolMissing, CommandTimedOut (past ``command_deadline_s``).
        """
        return _backups(self.info())

    def restorable_window(self, timeline: int | None = None) -> RestoreWindow:
        """The window from ``pgbackrest info``: from one second after the oldest backup's stop time.

        ``latest`` is the last COMMIT in archived WAL (``archive-get``, then ``pg_waldump``), read
        on ``timeline`` (its newest segment found with ``repo-ls``) when the repository's newest
        segment is on another; None when nothing is archived there, or no commit is in the last
        ``WALDUMP_SEGMENTS_BACK`` segments.

        Raises:
            BackupError: the stanza has no backups, or a command failed (RepositoryUnreachable when
                the repository cannot be reached).
            ToolMissing, CommandTimedOut (each command past ``command_deadline_s``).
        """
        record = self.info()
        backups = _backups(record)
        if not backups:
            raise BackupError(
                f"stanza {self.stanza!r} has no backups, so nothing is restorable",
                hint="take a full backup first",
            )
        archives = record.get("archive", [])
        newest = archives[-1].get("max") if archives else None
        if newest and timeline is not None and int(newest[:8], 16) != timeline:
            # The highest timeline in the repository is not the live one (a switchover that was
            # rolled back leaves its abandoned timeline behind): read the live timeline's WAL.
            newest = self.newest_segment(archives[-1]["id"], timeline)
        return RestoreWindow(
            # info gives whole seconds: the next second is the first target surely past the
            # backup's consistency point.
            earliest=datetime.fromtimestamp(backups[0].stopped_at.timestamp() + 1, UTC),
            latest=self.last_archived_commit(newest, floor=archives[-1].get("min"))
            if newest
            else None,
            oldest_backup=backups[0].label,
            newest_wal_segment=newest,
        )

    def newest_segment(self, archive_id: str, timeline: int) -> str | None:
        """The newest WAL segment archived on ``timeline`` (None when there is none)."""
        base = f"archive/{self.stanza}/{archive_id}"
        listing = json.loads(
            self._run(
                "repo-ls",
                "--output=json",
                base,
                timeout=self.command_deadline_s,
                what="pgBackRest repo-ls",
            )
        )
        prefix = f"{timeline:08X}"
        for directory in sorted((d for d in listing if d.startswith(prefix)), reverse=True):
            names = self._run(
                "repo-ls",
                "--filter=^[0-9A-F]{24}-",
                f"{base}/{directory}",
                timeout=self.command_deadline_s,
                what="pgBackRest repo-ls",
            ).split()
            if names:
                return max(name[:24] for name in names)
        return None

    def take_backup(self, kind: BackupKind, expire: bool = True) -> BackupInfo:
        """Run ``pgbackrest backup --type=<kind>`` and return the new backup ``info`` then lists.

        ``expire=False`` adds ``--no-expire-auto``: the backup's automatic expire is skipped.

        Raises:
            BackupError: the command failed, or no new backup was listed after it.
            RepositoryUnreachable, ToolMissing, CommandTimedOut (past ``backup_deadline_s``).
        """
        before = {b.label for b in self.list_backups()}
        self._run(
            "backup",
            f"--type={kind.value}",
            f"--process-max={self.process_max}",
            *([] if expire else ["--no-expire-auto"]),
            timeout=self.backup_deadline_s,
            what=f"pgBackRest {kind.value} backup",
        )
        new = [b for b in self.list_backups() if b.label not in before]
        if not new:
            raise BackupError("pgBackRest reported success but listed no new backup")
        return new[-1]

    def verify_repository(self, label: str | None = None) -> RepositoryCheck:
        """Run ``pgbackrest verify`` (``--set=<label>`` when given) and read its problem counts.

        A failed command, or output reporting files missing or with an invalid checksum or size,
        gives ``ok=False``; ``detail`` is the error or the output's last 1000 characters.

        Raises:
            RepositoryUnreachable, ToolMissing, CommandTimedOut (past ``restore_deadline_s``).
        """
        args = ["verify", "--output=text", "--verbose"]
        if label:
            args.append(f"--set={label}")
        try:
            out = self._run(*args, timeout=self.restore_deadline_s, what="pgBackRest verify")
        except BackupError as exc:
            if isinstance(exc, RepositoryUnreachable):
                raise
            return RepositoryCheck(ok=False, detail=exc.message)
        # verify reports problems in its output as counts, whatever its exit code says
        bad = "status: invalid" in out or _VERIFY_PROBLEM_RE.search(out) is not None
        return RepositoryCheck(ok=not bad, detail=out.strip()[-1000:] or "ok")

    def restore(self, request: RestoreRequest) -> RestoreResult:
        """Run ``pgbackrest restore --set=<label>`` into ``request.destination`` (new or empty).

        Recovery options come from ``target_options``; ``--archive-mode=off`` unless
        ``archive_into_repository``.

        Raises:
            RefusedError: the destination is a data directory, is not empty, or the OS user cannot
                reach it.
            BackupNotFound: the repository has no such label.
            BackupError, RepositoryUnreachable, ToolMissing, CommandTimedOut (past
                ``restore_deadline_s``).
        """
        destination = Path(request.destination)
        check_restore_destination(destination)
        backup = self.find_backup(request.backup_label)
        make_owned_dir(destination, self.os_user)
        args = [
            "restore",
            f"--pg1-path={destination}",
            f"--set={backup.label}",
            f"--process-max={self.process_max}",
            *target_options(request.target),
        ]
        if not request.archive_into_repository:
            args.append("--archive-mode=off")
        started = time.monotonic()
        self._run(*args, timeout=self.restore_deadline_s, what="pgBackRest restore")
        return RestoreResult(
            backup_label=backup.label,
            destination=str(destination),
            seconds=time.monotonic() - started,
            bytes_restored=backup.size_bytes,
        )

    # -- WAL -------------------------------------------------------------------------------------

    def last_archived_commit(
        self, newest_segment: str, floor: str | None = None
    ) -> datetime | None:
        """Commit time of the last COMMIT in the newest archived segments (None if none found)."""
        waldump = self.bin_dir / "pg_waldump"
        scratch = Path(tempfile.mkdtemp(prefix="runbook-wal-"))
        try:
            make_owned_dir(scratch, self.os_user)
            segment: str | None = newest_segment
            for _ in range(WALDUMP_SEGMENTS_BACK):
                if segment is None or (floor is not None and segment < floor):
                    break
                path = scratch / segment
                self._run(
                    "archive-get",
                    segment,
                    path,
                    timeout=self.command_deadline_s,
                    what="pgBackRest archive-get",
                )
                dump = run_command(
                    [waldump, path],
                    timeout=self.command_deadline_s,
                    user=self.os_user,
                    env={"TZ": "UTC"},
                    check=False,
                    what="pg_waldump",
                )
                path.unlink(missing_ok=True)
                # pg_waldump exits non-zero at the end of a partly filled segment; the records
                # before that point are still valid output.
                commits = _COMMIT_RE.findall(dump.stdout)
                if commits:
                    return datetime.fromisoformat(commits[-1]).replace(tzinfo=UTC)
                segment = previous_segment(segment)
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def check_restore_destination(destination: Path) -> None:
    """Refuse anything but a new or empty directory; never delete what is there."""
    if is_data_directory(destination):
        raise RefusedError(
            f"{destination} is a PostgreSQL data directory; refusing to restore over it",
            hint="restore into a new, empty directory",
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise RefusedError(
            f"restore destination {destination} is not empty; refusing to touch it",
            hint="choose a new directory, or empty this one yourself after checking its contents",
        )


def previous_segment(segment: str) -> str | None:
    """The WAL segment name before ``segment`` on the same timeline (None at the very start)."""
    timeline, log, seg = segment[:8], int(segment[8:16], 16), int(segment[16:24], 16)
    number = log * SEGMENTS_PER_XLOGID + seg - 1
    if number < 0:
        return None
    return f"{timeline}{number // SEGMENTS_PER_XLOGID:08X}{number % SEGMENTS_PER_XLOGID:08X}"


def target_options(target: RecoveryTarget) -> list[str]:
    """The ``pgbackrest restore`` options for ``target``, always with ``--target-action=promote``.

    ``immediate`` gives ``--type=immediate``; any other type ``--type`` and ``--target``, plus
    ``--target-exclusive`` when not inclusive and ``--target-timeline`` when a timeline is set.
    """
    if target.type == "immediate":
        return ["--type=immediate", "--target-action=promote"]
    options = [f"--type={target.type}", f"--target={target.value}", "--target-action=promote"]
    if not target.inclusive:
        options.append("--target-exclusive")
    if target.timeline is not None:
        options.append(f"--target-timeline={target.timeline}")
    return options


def _backups(record: dict[str, Any]) -> list[BackupInfo]:
    system_ids = {db["id"]: db.get("system-id") for db in record.get("db", [])}
    return [
        _backup_info(raw, system_ids.get((raw.get("database") or {}).get("id")))
        for raw in record.get("backup", [])
    ]


def _backup_info(raw: dict[str, Any], system_id: int | None) -> BackupInfo:
    wal_start = (raw.get("archive") or {}).get("start")
    return BackupInfo(
        label=raw["label"],
        kind=BackupKind(raw["type"]),
        started_at=datetime.fromtimestamp(raw["timestamp"]["start"], UTC),
        stopped_at=datetime.fromtimestamp(raw["timestamp"]["stop"], UTC),
        size_bytes=raw["info"]["size"],
        repo_size_bytes=raw["info"]["repository"]["delta"],
        wal_start=wal_start,
        wal_stop=(raw.get("archive") or {}).get("stop"),
        lsn_start=(raw.get("lsn") or {}).get("start"),
        lsn_stop=(raw.get("lsn") or {}).get("stop"),
        timeline=int(wal_start[:8], 16) if wal_start else None,
        prior=raw.get("prior"),
        system_id=system_id,
    )


def _backup_error(what: str, exc: CommandError) -> BackupError:
    """Turn a failed pgBackRest command into a typed error carrying its code and message."""
    output = exc.output if isinstance(exc, CommandFailed) else exc.message
    match = _ERROR_RE.search(output)
    code = int(match.group(1)) if match else None
    detail = " ".join((match.group(2) if match else output).split())
    cls = RepositoryUnreachable if code in UNREACHABLE_CODES else BackupError
    return cls(f"{what} failed: {detail}", code=code, hint=_hint(code))


def _hint(code: int | None) -> str:
    if code in UNREACHABLE_CODES:
        return "check the repository (path, bucket, credentials, network) and pgbackrest.conf"
    return "read pgBackRest's message above and its log for details"
