"""Run external tools with a hard deadline, optionally as another OS user.

Prefect's task ``timeout_seconds`` cannot interrupt a blocking call in a worker thread, so every
subprocess gets its own deadline here: on expiry its whole process group is killed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import RunbookError

OUTPUT_TAIL = 2000  # characters of a tool's own output kept in an error message


class CommandError(RunbookError):
    """An external command could not run or did not succeed."""


class ToolMissing(CommandError):
    """The executable is not installed or not on PATH."""


class CommandFailed(CommandError):
    """The command exited non-zero; the message carries the tool's own words."""

    def __init__(self, message: str, *, hint: str = "", returncode: int, output: str) -> None:
        super().__init__(message, hint=hint)
        self.returncode = returncode
        self.output = output


class CommandTimedOut(CommandError):
    """The command ran past its deadline and was killed with its whole process group."""


@dataclass(frozen=True)
class CommandResult:
    """A finished command: its argv, exit code, captured output, and wall time in seconds."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def running_as_root() -> bool:
    """True when this process's effective user id is 0."""
    return os.geteuid() == 0


def effective_user(os_user: str | None) -> str | None:
    """The user to switch to: ``os_user`` only when we are root and it is someone else."""
    if os_user is None or not running_as_root() or os_user == "root":
        return None
    return os_user


def require_tool(path: str | Path, *, hint: str) -> str:
    """Resolve an executable, or raise ToolMissing naming it and how to install it."""
    found = shutil.which(str(path))
    if found is None:
        raise ToolMissing(f"{path} is not installed or not executable", hint=hint)
    return found


def run_command(
    args: Sequence[str | Path],
    *,
    timeout: float,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    check: bool = True,
    what: str = "",
) -> CommandResult:
    """Run ``args`` and wait at most ``timeout`` seconds.

    Args:
        user: switch to this OS user (only meaningful as root; see ``effective_user``).
        env: extra environment variables (secrets go here, never into ``args``).
        what: a few words for error messages, e.g. "pgBackRest restore".
    Raises:
        ToolMissing, CommandTimedOut, CommandFailed (when ``check`` and the exit code is not 0).
    """
    argv = [str(a) for a in args]
    what = what or Path(argv[0]).name
    full_env = dict(os.environ)
    kwargs: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        full_env["HOME"] = entry.pw_dir
    full_env.update(env or {})
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # so a timeout kills the tool and everything it forked
            **kwargs,  # type: ignore[call-overload]
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"{what}: {argv[0]} not found", hint="install it or fix PATH") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as exc:  # a deadline, or our own run being cancelled or interrupted
        _kill_group(proc)
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        raise CommandTimedOut(
            f"{what} did not finish within its {timeout:.0f} s deadline and was killed",
            hint="look for a stalled disk, network or lock; raise the deadline only if it is "
            "simply slow",
        ) from None
    result = CommandResult(tuple(argv), proc.returncode, stdout, stderr, time.monotonic() - started)
    if check and proc.returncode != 0:
        output = (stderr.strip() or stdout.strip())[-OUTPUT_TAIL:]
        raise CommandFailed(
            f"{what} failed with exit code {proc.returncode}: {output}",
            returncode=proc.returncode,
            output=output,
        )
    return result


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
