"""The incident store: every incident's record, timeline and responding run, kept outside the
platform's database (a P0 "database unavailable" must still be trackable).

``IncidentStore`` is the interface; ``DirectoryStore`` implements it on a directory:

    <state_dir>/.lock                             held while an incident opens (ids, dedup)
    <state_dir>/INC-20261130-0001/record.json     what opening fixed (written once)
    <state_dir>/INC-20261130-0001/timeline.jsonl  one JSON line per event, append-only, fsynced
    <state_dir>/INC-20261130-0001/run.json        the responding run and when it was last seen
    <state_dir>/INC-20261130-0001/.lock           held while that incident's files are written

The sandbox's is a directory under the sandbox dir. In production it is the same directory on
a volume every worker mounts (Amazon EFS or NFS v4, whose locks ``flock`` uses); a store on S3
would implement the same interface with conditional writes. Any process (the incident's run,
the watchdog, another procedure recording an action) may append to a timeline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout
from pydantic import ValidationError

from tasks.core.errors import RefusedError, RunbookError
from tasks.core.state_files import StateFileError, read_json, read_lines, write_json
from tasks.incidents.models import IncidentRecord, RunLiveness, TimelineEvent
from tasks.incidents.state import IncidentState, fold

LOCK_WAIT_S = 10  # a lock held longer than this is a stuck writer: fail rather than hang
HINT = "check that RUNBOOK_INCIDENTS_STATE_DIR exists, is writable by every worker and is not full"


class IncidentStoreError(RunbookError):
    """The store could not be read or written (volume unmounted, full, or a lock held too long)."""

    transient = True


class UnknownIncident(RefusedError):
    """No incident has this id."""


class IncidentStore(Protocol):
    """What the incident's run, the watchdog, the CLI and other procedures need of a store."""

    def open(self, record: IncidentRecord, opened: TimelineEvent) -> tuple[IncidentRecord, bool]:
        """Give ``record`` an id and keep it with its first event; or, while an incident with
        the same ``dedup_key`` is open, return that one. Returns (record, newly opened)."""
        ...

    def record(self, incident_id: str) -> IncidentRecord: ...

    def timeline(self, incident_id: str) -> list[TimelineEvent]: ...

    def append(self, incident_id: str, *events: TimelineEvent) -> None: ...

    def liveness(self, incident_id: str) -> RunLiveness | None: ...

    def update_liveness(
        self, incident_id: str, change: Callable[[RunLiveness | None], RunLiveness | None]
    ) -> RunLiveness | None: ...

    def ids(self) -> list[str]: ...


def incident_state(store: IncidentStore, incident_id: str) -> IncidentState:
    """The incident's record with its timeline folded."""
    return fold(store.record(incident_id), store.timeline(incident_id))


def open_incidents(store: IncidentStore, *, until_reported: bool = False) -> list[IncidentState]:
    """Every incident not resolved yet (``until_reported``: or whose report is not written
    yet), oldest first."""
    states = [incident_state(store, incident_id) for incident_id in store.ids()]
    return [s for s in states if not (s.finished if until_reported else s.resolved)]


class DirectoryStore:
    """``IncidentStore`` on a directory (see the module docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, incident_id: str) -> Path:
        return self.root / incident_id

    # -- opening ---------------------------------------------------------------------------------

    def open(self, record: IncidentRecord, opened: TimelineEvent) -> tuple[IncidentRecord, bool]:
        with _errors(), _locked(self.root / ".lock"):
            if record.dedup_key:
                for state in open_incidents(self):
                    if state.record.dedup_key == record.dedup_key:
                        return state.record, False
            prefix = f"INC-{record.opened_at:%Y%m%d}-"
            taken = [p for p in self.root.iterdir() if p.name.startswith(prefix)]
            record = record.model_copy(update={"id": f"{prefix}{len(taken) + 1:04d}"})
            self._dir(record.id).mkdir(mode=0o700)
            self.append(record.id, opened)  # the first event before the record: a record
            write_json(self._dir(record.id) / "record.json", record.model_dump(mode="json"))
            return record, True

    # -- reading ---------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Every incident's id, oldest first (ids sort by date, then number)."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "record.json").exists())

    def record(self, incident_id: str) -> IncidentRecord:
        """The incident's record.

        Raises:
            UnknownIncident: there is no incident ``incident_id``.
        """
        with _errors():
            path = self._dir(incident_id) / "record.json"
            data = read_json(path) if _valid(incident_id) else None
            if data is not None:
                return IncidentRecord.model_validate(data)
        raise UnknownIncident(
            f"no incident {incident_id!r} in the incident store {self.root}",
            hint="list the open incidents with `runbook incident list`",
        )

    def timeline(self, incident_id: str) -> list[TimelineEvent]:
        """Every event of the incident, oldest first (a line a crash cut short is skipped)."""
        with _errors():
            lines = read_lines(self._dir(incident_id) / "timeline.jsonl")
            return [TimelineEvent.model_validate(line) for line in lines]

    def liveness(self, incident_id: str) -> RunLiveness | None:
        """The responding run and when it was last seen (None before any run claimed it)."""
        with _errors():
            data = read_json(self._dir(incident_id) / "run.json")
            return None if data is None else RunLiveness.model_validate(data)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, incident_id: str, *events: TimelineEvent) -> None:
        """Append events to the timeline, durably (fsync) and in one write under its lock."""
        path = self._dir(incident_id) / "timeline.jsonl"
        text = "".join(event.model_dump_json() + "\n" for event in events)
        with _errors(), _locked(self._dir(incident_id) / ".lock"):
            try:
                with path.open("a+b") as fh:
                    if fh.tell() and _last_byte(fh.fileno()) != b"\n":
                        text = "\n" + text  # a line cut short by a crash stays alone
                    fh.write(text.encode())
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise IncidentStoreError(
                    f"cannot append to {path}: {exc.strerror}", hint=HINT
                ) from None

    def update_liveness(
        self, incident_id: str, change: Callable[[RunLiveness | None], RunLiveness | None]
    ) -> RunLiveness | None:
        """Replace the incident's run record with ``change(current)`` under the incident's lock
        (``change`` returning None leaves it as it is); returns what is stored afterwards."""
        path = self._dir(incident_id) / "run.json"
        with _errors(), _locked(self._dir(incident_id) / ".lock"):
            current = self.liveness(incident_id)
            new = change(current)
            if new is None:
                return current
            write_json(path, new.model_dump(mode="json"))
            return new


def _valid(incident_id: str) -> bool:
    """A plain id, never a path (ids come from people and the Prefect API)."""
    return bool(incident_id) and "/" not in incident_id and not incident_id.startswith(".")


def _last_byte(fd: int) -> bytes:
    return os.pread(fd, 1, os.fstat(fd).st_size - 1)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(path, timeout=LOCK_WAIT_S):
            yield
    except Timeout:
        raise IncidentStoreError(
            f"the incident store lock {path} was held for more than {LOCK_WAIT_S} s",
            hint="a writer is stuck: look for a hung runbook process on the store's volume",
        ) from None


@contextmanager
def _errors() -> Iterator[None]:
    """State file errors (and unreadable files) as IncidentStoreError naming the setting."""
    try:
        yield
    except StateFileError as exc:
        raise IncidentStoreError(exc.message, hint=HINT) from None
    except OSError as exc:
        raise IncidentStoreError(f"incident store: {exc}", hint=HINT) from None
    except ValidationError as exc:
        raise IncidentStoreError(
            f"incident store: a file does not hold what it should: {exc.errors()[0]['msg']}",
            hint="a damaged file: move it aside and look at the timeline by hand",
        ) from None
