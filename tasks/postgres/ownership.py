"""The mark on what recoveries create: each restored copy's directory and each data directory a
switchover keeps. Only a marked directory can be discarded, and only where it was marked.

The mark is a small JSON file, ``runbook-owner.json``: in a restored copy's root (beside its
``data/``), and inside a kept data directory (it travels with the directory when renamed;
PostgreSQL ignores files it does not know). A kept directory that becomes live again loses it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ValidationError

from tasks.core.durable import remove_durably, write_durably

MARK_FILE = "runbook-owner.json"
OwnedKind = Literal["restored", "kept"]


class OwnershipMark(BaseModel):
    """Who made a directory and why: ``kind``, the ``path`` it was made at, when, a note."""

    kind: OwnedKind
    path: Path
    created_at: AwareDatetime
    note: str = ""

    def matches(self, directory: Path) -> bool:
        """True when the mark was made for ``directory`` (not copied or moved there)."""
        return self.path.resolve() == directory.resolve()


def mark_owned(directory: Path, kind: OwnedKind, note: str) -> OwnershipMark:
    """Mark ``directory`` (which must exist) as made by a recovery; durable before it returns."""
    mark = OwnershipMark(
        kind=kind, path=directory.resolve(), created_at=datetime.now(UTC), note=note
    )
    write_durably(directory / MARK_FILE, mark.model_dump_json(indent=1) + "\n", mode=0o644)
    return mark


def read_mark(directory: Path) -> OwnershipMark | None:
    """The mark in ``directory``; None when there is none or it is not one of ours."""
    try:
        return OwnershipMark.model_validate_json((directory / MARK_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, ValidationError):
        return None


def remove_mark(directory: Path) -> None:
    """Take the mark out of ``directory`` (a kept directory that becomes live again)."""
    remove_durably(directory / MARK_FILE)
