"""Run external tools with a hard deadline, optionally as another OS user, in an allow-listed
environment.

Prefect's task ``timeout_seconds`` cannot interrupt a blocking call in a worker thread, so every
subprocess gets its own deadline here: on expiry its whole process group is killed.

Our own environment holds secrets (``RUNBOOK_PG_DSN``, API keys, AWS credentials) that no tool
needs, and a child's environment is readable in ``/proc/<pid>/environ`` for as long as it runs
(a PostgreSQL server: for months). So a child gets only ``BASE_ENVIRONMENT``, the names its
caller says the tool documents it needs (``inherit``), and the variables given explicitly
(``env``); nothing else of ours.
"""

from __future__ import annotations

import contextlib
import fnmatch
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
# What every child gets from our environment: where programs are, the home directory, the locale
# and the timezone. ``NAME_*`` is a prefix pattern.
BASE_ENVIRONMENT = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR")
# What a tool that speaks HTTPS needs to get out: proxies and CA bundles (pip-audit, npm).
NETWORK_ENVIRONMENT = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
)


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


def child_environment(
    *,
    inherit: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> dict[str, str]:
    """The environment a child process gets: never a copy of ours.

    Args:
        inherit: names (or ``NAME_*`` prefixes) of our variables the tool documents it needs,
            on top of ``BASE_ENVIRONMENT``.
        env: variables given explicitly; they win over inherited ones.
        user: the OS user the child runs as: ``HOME``, ``USER`` and ``LOGNAME`` become theirs.
    """
    patterns = (*BASE_ENVIRONMENT, *inherit)
    child = {
        name: value
        for name, value in os.environ.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }
    if user is not None:
        child |= {"HOME": pwd.getpwnam(user).pw_dir, "USER": user, "LOGNAME": user}
    return child | dict(env or {})


def run_command(
    args: Sequence[str | Path],
    *,
    timeout: float,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    inherit: Sequence[str] = (),
    cwd: str | Path | None = None,
    check: bool = True,
    what: str = "",
) -> CommandResult:
    """Run ``args`` and wait at most ``timeout`` seconds, in ``child_environment``.

    Args:
        user: switch to this OS user (only meaningful as root; see ``effective_user``).
        env: variables the tool gets explicitly (a secret only when this tool needs it; never
            in ``args``, which every local user can read).
        inherit: our variables the tool documents it needs beyond ``BASE_ENVIRONMENT``.
        what: a few words for error messages, e.g. "pgBackRest restore".
    Raises:
        ToolMissing, CommandTimedOut, CommandFailed (when ``check`` and the exit code is not 0).
    """
    argv = [str(a) for a in args]
    what = what or Path(argv[0]).name
    kwargs: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    full_env = child_environment(inherit=inherit, env=env, user=user)
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
