"""The switchover's journal: a small JSON file beside the live data directory
(``<data_dir>.switchover.json``) naming every directory involved and the step about to run.

It is written and fsynced before each step, so whatever stops the process doing the switchover
(an exception, a cancellation, SIGTERM, SIGKILL, the machine) leaves on disk enough to finish or
undo it (``tasks.postgres.switchover.repair_switchover``). It is removed once the switchover is
finished or undone: a journal that exists is a switchover not yet done.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ValidationError

from tasks.core.durable import remove_durably, write_durably
from tasks.core.errors import RefusedError, RunbookError
from tasks.postgres.cluster import LocalCluster

SwitchoverStep = Literal[
    "begin",
    "stop-incoming",
    "prepare-incoming",
    "stop-live",
    "keep-live",
    "move-incoming",
    "start-live",
    "prove-live",
    "finish",
]
REPAIR_HINT = "run rollback-switchover/on-demand: it reads the journal and finishes or undoes it"


class JournalUnreadable(RunbookError):
    """A journal exists but cannot be read: the switchover's state must be looked at by hand."""


def journal_path(live_data_dir: Path) -> Path:
    """Where the journal of ``live_data_dir``'s switchovers lives: beside it."""
    return live_data_dir.with_name(f"{live_data_dir.name}.switchover.json")


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


class SwitchoverJournal(BaseModel):
    """One switchover: ``incoming_data_dir`` takes ``live_data_dir``'s place, which is kept as
    ``kept_data_dir``; ``step`` is the step about to run (or running) when it was last written."""

    label: Literal["replaced", "rolled-back"]
    live_data_dir: Path
    incoming_data_dir: Path
    kept_data_dir: Path
    port: int
    bin_dir: Path
    os_user: str | None
    config_file: Path | None
    incoming_is_restored: bool
    system_identifier: int
    timeline_before: int | None = None
    step: SwitchoverStep = "begin"
    started_at: AwareDatetime
    updated_at: AwareDatetime
    host: str
    pid: int
    pid_started: str | None

    @classmethod
    def begin(cls, **fields: Any) -> SwitchoverJournal:
        """Write a new journal (step ``begin``).

        Raises:
            RefusedError: a journal already exists: an earlier switchover is not finished.
        """
        now = datetime.now(UTC)
        pid = os.getpid()
        journal = cls(
            started_at=now,
            updated_at=now,
            host=socket.gethostname(),
            pid=pid,
            pid_started=_process_start(pid),
            **fields,
        )
        existing = load_journal(journal.live_data_dir)
        if existing is not None:
            raise RefusedError(
                f"an earlier switchover of {journal.live_data_dir} is not finished (journal at "
                f"step {existing.step!r} since {existing.updated_at.isoformat()})",
                hint=REPAIR_HINT,
            )
        journal._write()
        return journal

    @property
    def path(self) -> Path:
        """This journal's file."""
        return journal_path(self.live_data_dir)

    def record(self, step: SwitchoverStep, **updates: Any) -> None:
        """Write (and fsync) that ``step`` is about to run, with any field ``updates``."""
        for name, value in updates.items():
            setattr(self, name, value)
        self.step = step
        self.updated_at = datetime.now(UTC)
        self._write()

    def close(self) -> None:
        """The switchover is finished or undone: remove the journal."""
        remove_durably(self.path)

    def _write(self) -> None:
        write_durably(self.path, self.model_dump_json(indent=1) + "\n")

    def process_alive(self) -> bool:
        """True when the process that wrote the journal still runs (on this host)."""
        if self.host != socket.gethostname():
            return True  # cannot tell from here: take it as alive
        return self.pid_started is not None and _process_start(self.pid) == self.pid_started

    def live(self) -> LocalCluster:
        """The live cluster (whatever its data directory holds now)."""
        return LocalCluster(
            self.live_data_dir, self.port, self.bin_dir, self.os_user, self.config_file
        )

    def describe(self) -> str:
        """One line for plans, logs and the daily check."""
        return (
            f"{self.label} switchover of {self.live_data_dir} with {self.incoming_data_dir} "
            f"(kept as {self.kept_data_dir.name}), started {self.started_at.isoformat()} by "
            f"process {self.pid} on {self.host}, stopped at step {self.step!r} "
            f"({self.updated_at.isoformat()})"
        )


def load_journal(live_data_dir: Path) -> SwitchoverJournal | None:
    """The journal of an unfinished switchover of ``live_data_dir``; None when there is none.

    Raises:
        JournalUnreadable: the file exists but is not a journal.
    """
    path = journal_path(live_data_dir)
    try:
        return SwitchoverJournal.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise JournalUnreadable(
            f"the switchover journal {path} cannot be read: {exc}",
            hint="look at the live data directory and the directories beside it by hand; "
            "remove the journal once live runs with the data it should",
        ) from None
