"""Files that must survive a crash of the process writing them: the switchover's journal, the
ownership marks of restored copies, a data directory's ``postgresql.auto.conf``.

A write goes to a temporary file beside the target, is fsynced, renamed over the target, and the
directory is fsynced, so after a crash the file holds either the old or the new text, never a
torn one. A file keeps its owner and mode; a new one takes its directory's owner (so a file we
write as root inside a data directory belongs to the cluster's OS user, like the rest).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Make the directory entry changes in ``path`` (renames, new and removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` atomically and durably.

    An existing file keeps its owner and mode; a new one gets ``mode`` and the owner of its
    directory. Raises OSError as the filesystem does.
    """
    try:
        st = path.stat()
        owner, group, mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
    except FileNotFoundError:
        parent = path.parent.stat()
        owner, group = parent.st_uid, parent.st_gid
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(handle.fileno(), owner, group)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (if it exists) and make the removal durable."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_directory(path.parent)
