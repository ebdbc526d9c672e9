"""pgBackRest engine: drives the ``pgbackrest`` CLI (``--output=json`` where it exists).

WAL is read from the repository itself: a segment or history file is fetched with
``archive-get`` (which works for posix and S3 repositories alike, and decompresses) and read
with ``pg_waldump``. The times read are those of transaction ends (COMMIT and ABORT records,
and their ``_PREPARED`` forms): the only records a recovery to a time can stop at.

- The restorable window's ``latest`` end is the last transaction end archived on the followed
  timeline: the newest segment, then the ones before it along the timeline's history, up to
  ``WALDUMP_SEGMENTS_BACK``; none found is a refusal (``RestoreWindowUnknown``), never an
  unbounded window.
- A backup's consistent point is the last transaction end before its stop LSN, read the same
  way from the segment holding that LSN backwards.
- The segment size is read from the segments fetched, never assumed.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.backups.base import (
    STOP_SECOND,
    BackupEngine,
    BackupError,
    BackupInfo,
    BackupKind,
    ConsistentPoint,
    RecoveryTarget,
    RepositoryCheck,
    RepositoryUnreachable,
    RestoreRequest,
    RestoreResult,
    RestoreWindow,
    RestoreWindowUnknown,
    on_followed_history,
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
from tasks.postgres.wal import (
    TimelineSwitch,
    WalError,
    parse_history,
    previous_on_history,
    previous_segment,
    segment_number,
    segment_size_of,
)

INSTALL_HINT = "install pgBackRest (apt-get install pgbackrest) and put it on PATH"
WALDUMP_SEGMENTS_BACK = 16
# Error codes (pgBackRest's build/error/error.yaml) that mean "cannot reach the repository".
UNREACHABLE_CODES = {39, 41, 46, 49, 55, 103, 104}
_ERROR_RE = re.compile(r"ERROR: \[(\d+)\]: (.*)", re.DOTALL)
_VERIFY_PROBLEM_RE = re.compile(r"(missing|checksum invalid|size invalid|other): [1-9]")
_XACT_END_RE = re.compile(
    r"desc: (?:COMMIT|ABORT)(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
# pg_waldump prints times in the TZ it runs with, and its own messages in LC_MESSAGES.
_WALDUMP_ENV = {"TZ": "UTC", "LC_ALL": "C"}


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
        """The window on ``timeline`` (default: the newest timeline archived) and its history.

        ``earliest``: the oldest backup on that history, its stop second + 1 s. ``latest``: the
        last transaction end archived on it (see the module docstring).

        Raises:
            RestoreWindowUnknown: nothing is archived on the timeline, its history file is not in
                the repository, or no transaction end is in its last ``WALDUMP_SEGMENTS_BACK``
                segments; each says why and what to do.
            RefusedError: the stanza has no backup on that history.
            BackupError: a command failed (RepositoryUnreachable: the repository cannot be
                reached).
            ToolMissing, CommandTimedOut (each command past ``command_deadline_s``).
        """
        record = self.info()
        backups = _backups(record)
        archives = record.get("archive", [])
        newest = archives[-1].get("max") if archives else None
        if newest is None:
            raise RestoreWindowUnknown(
                f"stanza {self.stanza!r} has no archived WAL, so no time can be recovered to",
                hint="check archive_command and pg_stat_archiver on the live cluster",
            )
        followed = timeline if timeline is not None else int(newest[:8], 16)
        if int(newest[:8], 16) != followed:
            # The highest timeline in the repository is not the live one (a switchover that was
            # rolled back leaves its abandoned timeline behind): read the live timeline's WAL.
            newest = self.newest_segment(archives[-1]["id"], followed)
        if newest is None:
            raise RestoreWindowUnknown(
                f"no WAL of timeline {followed} is archived in stanza {self.stanza!r}",
                hint="check archiving on the live cluster (pg_stat_archiver), then try again",
            )
        history = self.timeline_history(followed)
        on_it = [b for b in backups if on_followed_history(b, followed, history)]
        if not on_it:
            raise RefusedError(
                f"stanza {self.stanza!r} has no backup on timeline {followed} or on its "
                "ancestors before they branched, so nothing is restorable on it",
                hint="take a full backup first (take-backup with kind=full)",
            )
        return RestoreWindow(
            # info gives whole seconds: the next second is the first target surely past the
            # backup's consistency point.
            earliest=on_it[0].stopped_at + STOP_SECOND,
            latest=self.last_transaction_end(newest, history, floor=archives[-1].get("min")),
            oldest_backup=on_it[0].label,
            newest_wal_segment=newest,
            timeline=followed,
            history=history,
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

    def timeline_history(self, timeline: int) -> list[TimelineSwitch]:
        """The ancestors of ``timeline``, from its history file in the repository (none for 1).

        Raises:
            RestoreWindowUnknown: the history file is not in the repository.
            BackupError (RepositoryUnreachable: transient), WalError (a malformed file),
            ToolMissing, CommandTimedOut.
        """
        if timeline == 1:
            return []
        name = f"{timeline:08X}.history"
        with self._wal_files() as fetch:
            path = fetch(name)
            if path is None:
                raise RestoreWindowUnknown(
                    f"the history file {name} of timeline {timeline} is not in the repository, "
                    "so which backups lie on its history is unknown",
                    hint="a promoted cluster archives its history file first: check archiving "
                    "on the live cluster (pg_stat_archiver)",
                )
            return parse_history(path.read_text())

    def last_transaction_end(
        self, newest_segment: str, history: list[TimelineSwitch], floor: str | None = None
    ) -> datetime:
        """The time of the last transaction end archived at or before ``newest_segment``,
        walking back along ``history`` (the followed timeline's) to at most
        ``WALDUMP_SEGMENTS_BACK`` segments, and not before ``floor`` (the oldest archived).

        Raises:
            RestoreWindowUnknown: none found there.
            BackupError, WalError, ToolMissing, CommandTimedOut.
        """
        stopped = f"the {WALDUMP_SEGMENTS_BACK} WAL segments up to {newest_segment}"
        with self._wal_files() as fetch:
            segment: str | None = newest_segment
            size = 0
            for _ in range(WALDUMP_SEGMENTS_BACK):
                if segment is None or (floor and size and _before(segment, floor, size)):
                    stopped = f"the archived WAL from {newest_segment} back to its start"
                    break
                path = fetch(segment)
                if path is None:
                    stopped = f"the archived WAL from {newest_segment} back to {segment}"
                    break
                size = size or segment_size_of(path)
                ends = self._transaction_ends(path)
                if ends:
                    return max(ends)
                segment = previous_on_history(segment, size, history)
        raise RestoreWindowUnknown(
            f"no commit or abort is in {stopped}, so the latest time a recovery can reach is "
            "unknown",
            hint="commit a write on the live cluster and archive it (SELECT pg_switch_wal()), "
            "then try again; or restore a backup set to its end with restore-backup",
        )

    def consistent_point(self, backup: BackupInfo) -> ConsistentPoint:
        """Proven from WAL: the last transaction end before the backup's stop LSN, read from
        the segment holding that LSN backwards (up to ``WALDUMP_SEGMENTS_BACK`` segments, along
        the backup's timeline). The conservative stop second + 1 s when the backup lacks its
        WAL positions, or no transaction end is found there.

        Raises:
            BackupError (RepositoryUnreachable: transient), WalError, ToolMissing,
            CommandTimedOut.
        """
        if not (backup.wal_stop and backup.lsn_stop):
            return super().consistent_point(backup)
        with self._wal_files() as fetch:
            segment: str | None = backup.wal_stop
            end: str | None = backup.lsn_stop  # only the stop segment is cut at the stop LSN
            for _ in range(WALDUMP_SEGMENTS_BACK):
                if segment is None:
                    break
                path = fetch(segment)
                if path is None:
                    break  # not archived (before the stanza's first segment): conservative
                ends = self._transaction_ends(path, end=end)
                if ends:
                    return ConsistentPoint(
                        at=max(ends),
                        proven=True,
                        basis=f"the last commit or abort before its stop LSN {backup.lsn_stop}, "
                        "read from WAL",
                    )
                segment, end = previous_segment(segment, segment_size_of(path)), None
        conservative = super().consistent_point(backup)
        conservative.basis = (
            f"no commit or abort found before its stop LSN in the WAL read: {conservative.basis}"
        )
        return conservative

    @contextmanager
    def _wal_files(self) -> Iterator[Callable[[str], Path | None]]:
        """A private directory for the OS user, and ``fetch(name)`` to ``archive-get`` a WAL file
        into it (None when the repository does not hold it; the file fetched before is deleted
        first); the directory is removed after."""
        scratch = Path(tempfile.mkdtemp(prefix="runbook-wal-"))
        fetched: list[Path] = []

        def fetch(name: str) -> Path | None:
            for old in fetched:
                old.unlink(missing_ok=True)
            path = scratch / name  # pg_waldump reads the timeline and position from the name
            what = f"pgBackRest archive-get {name}"
            try:
                run_command(
                    self.command("archive-get", name, path),
                    timeout=self.command_deadline_s,
                    user=self.os_user,
                    what=what,
                )
            except CommandFailed as exc:
                if exc.returncode == 1 and not _ERROR_RE.search(exc.output):
                    return None  # archive-get's "not in the archive": exit code 1, no error
                raise _backup_error(what, exc) from None
            fetched.append(path)
            return path

        try:
            make_owned_dir(scratch, self.os_user)
            yield fetch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _transaction_ends(self, segment: Path, end: str | None = None) -> list[datetime]:
        """The times of the transaction ends in a fetched segment (before LSN ``end`` if given).

        Raises:
            WalError: pg_waldump could read no record of it.
            ToolMissing, CommandTimedOut.
        """
        dump = run_command(
            [self.bin_dir / "pg_waldump", *([f"--end={end}"] if end else []), segment],
            timeout=self.command_deadline_s,
            user=self.os_user,
            env=_WALDUMP_ENV,
            check=False,
            what="pg_waldump",
        )
        # pg_waldump exits non-zero at the end of a partly filled segment; the records before
        # that point are still valid output. No record at all is a real failure.
        if dump.returncode != 0 and "lsn:" not in dump.stdout:
            raise WalError(
                f"pg_waldump could not read {segment.name}: {dump.stderr.strip()[-300:]}",
                hint="run pgbackrest verify on the repository",
            )
        return [
            datetime.fromisoformat(t).replace(tzinfo=UTC) for t in _XACT_END_RE.findall(dump.stdout)
        ]


def _before(segment: str, floor: str, segment_size: int) -> bool:
    """Whether ``segment`` comes before ``floor`` (by position, whatever their timelines)."""
    return segment_number(segment, segment_size) < segment_number(floor, segment_size)


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
