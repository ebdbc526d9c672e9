"""Small JSON state the maintenance flows keep between runs, under the configured state dir.

Files, not Prefect Variables: a Variable holds at most 5,000 characters of JSON
(``prefect.types.MAX_VARIABLE_VALUE_LENGTH``), less than a performance baseline or a year of
capacity samples. Whole files are replaced atomically (write beside, then rename); samples are
appended one JSON line each. In production the state dir must be storage every worker sees.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tasks.core.errors import RunbookError

HINT = "check that RUNBOOK_MAINTENANCE_STATE_DIR exists, is writable and is not full"


class StateFileError(RunbookError):
    """A state file could not be read or written."""


def _ensure_dir(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateFileError(f"cannot create {path.parent}: {exc.strerror}", hint=HINT) from None


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it does not exist yet."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateFileError(
            f"cannot read state file {path}: {exc}",
            hint="move the damaged file aside; the next run starts it afresh",
        ) from None


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, atomically."""
    _ensure_dir(path)
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except OSError as exc:
        raise StateFileError(f"cannot write state file {path}: {exc.strerror}", hint=HINT) from None


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def append_line(path: Path, record: Any) -> None:
    """Append ``record`` as one JSON line (a single write: lines never interleave)."""
    _ensure_dir(path)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    try:
        with path.open("a") as fh:
            fh.write(line)
    except OSError as exc:
        raise StateFileError(f"cannot append to {path}: {exc.strerror}", hint=HINT) from None


def read_lines(path: Path) -> list[Any]:
    """Every JSON line of ``path`` (none when it does not exist); a torn last line is skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror}", hint=HINT) from None
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a write cut short by a crash: the rest of the history is still good
    return records
