"""WAL positions, segment names and timeline histories, as PostgreSQL defines them.

An LSN is written ``X/Y`` (the high and low 32 bits, in hex). A WAL segment file is named
``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment number split at
``0x100000000 / segment size``. The segment size (``wal_segment_size``) is chosen at initdb
(1 MiB to 1 GiB, 16 MiB by default): it is read from a segment file, never assumed.

A timeline's history file (``TTTTTTTT.history``) has one line per ancestor, oldest first: the
parent timeline, the LSN at which the child branched off it (the switchpoint), and why. For a
timeline made by recovery the reason is where it stopped: ``before 2026-11-28 10:00:00.1+00``,
``after transaction 1234``, ``reached consistency``... (PostgreSQL writes these in English,
whatever ``lc_messages`` says).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tasks.core.errors import RunbookError

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30


class WalError(RunbookError):
    """A WAL position, segment or history file that does not read as PostgreSQL writes them."""


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` as an integer byte position.

    Raises:
        WalError: not an ``X/Y`` LSN.
    """
    high, sep, low = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError(text)
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise WalError(f"{text!r} is not a WAL position (LSN) like 16/B374D848") from None


def segment_size_of(path: Path) -> int:
    """The WAL segment size in bytes, read from a (decompressed) segment file: its length.

    Raises:
        WalError: the length is not a power of two from 1 MiB to 1 GiB (not a whole segment).
    """
    size = path.stat().st_size
    if not (MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE and size & (size - 1) == 0):
        raise WalError(
            f"{path.name} is {size} bytes, not a whole WAL segment (a power of two, 1 MiB-1 GiB)",
            hint="the repository holds a truncated or partial segment; run pgbackrest verify",
        )
    return size


def _segments_per_id(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, position: int, segment_size: int) -> str:
    """The name of the segment holding byte ``position`` on ``timeline``."""
    number = position // segment_size
    per_id = _segments_per_id(segment_size)
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def segment_number(segment: str, segment_size: int) -> int:
    """The segment's number (its start position is ``number * segment_size``)."""
    return int(segment[8:16], 16) * _segments_per_id(segment_size) + int(segment[16:24], 16)


def previous_segment(segment: str, segment_size: int) -> str | None:
    """The segment before ``segment`` on the same timeline (None at the very start)."""
    number = segment_number(segment, segment_size) - 1
    if number < 0:
        return None
    return segment_name(int(segment[:8], 16), number * segment_size, segment_size)


class TimelineSwitch(BaseModel):
    """One line of a timeline history file: ``parent`` was followed up to ``switchpoint`` (an
    LSN, the first position of the child), then left ``reason``-ing where recovery stopped."""

    parent: int
    switchpoint: str
    reason: str


def parse_history(text: str) -> list[TimelineSwitch]:
    """A timeline history file's lines, oldest ancestor first (comments and blanks skipped).

    Raises:
        WalError: a line is not ``parent<TAB>switchpoint<TAB>reason``.
    """
    switches = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t", 2) if "\t" in line else line.split(None, 2)
        try:
            parent = int(fields[0])
            parse_lsn(fields[1])
        except (IndexError, ValueError, WalError):
            raise WalError(
                f"timeline history line {line!r} is not parent, switchpoint, reason"
            ) from None
        switches.append(
            TimelineSwitch(parent=parent, switchpoint=fields[1], reason=(fields[2:] or [""])[0])
        )
    return switches


def previous_on_history(
    segment: str, segment_size: int, history: list[TimelineSwitch]
) -> str | None:
    """The segment before ``segment`` along a history (``history`` of the timeline followed,
    which ``segment`` lies on): on the same timeline, or on the parent timeline before the
    point where its child branched off. None at the very start of WAL."""
    number = segment_number(segment, segment_size) - 1
    if number < 0:
        return None
    timeline = int(segment[:8], 16)
    parents = [switch.parent for switch in history]
    while True:
        # the switch that started ``timeline``: the one before its own entry, or the last one
        # when it is the timeline followed (which has no entry of its own)
        index = parents.index(timeline) - 1 if timeline in parents else len(history) - 1
        if index < 0 or number >= parse_lsn(history[index].switchpoint) // segment_size:
            return segment_name(timeline, number * segment_size, segment_size)
        timeline = history[index].parent


def on_history(timeline: int, end: int, followed: int, history: list[TimelineSwitch]) -> bool:
    """Whether WAL of ``timeline`` up to byte ``end`` belongs to ``followed``'s history.

    True on ``followed`` itself, and on an ancestor as long as ``end`` is not past the point
    where the history branched off it (the WAL it wrote later is another history).
    """
    if timeline == followed:
        return True
    return any(s.parent == timeline and end <= parse_lsn(s.switchpoint) for s in history)
