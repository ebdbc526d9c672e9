"""Background processes the sandbox starts (Prefect server, the served deployments...).

Each runs in its own session with its output in a log file, and is known by a PID file, so that
``down`` from another process can stop it and everything it forked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import RunbookError


def venv_tool(name: str) -> str:
    """A console script beside the running interpreter (works without an activated venv)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


# Popen objects of the daemons this process started: dropping one while its process runs makes
# Popen.__del__ warn (ResourceWarning); ``stop`` waits for it and lets it go.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class DaemonError(RunbookError):
    """A sandbox process did not start or become ready."""


@dataclass(frozen=True)
class Daemon:
    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        ready: Callable[[], bool],
        timeout: float = 60,
    ) -> int:
        """Start unless already running; wait until ``ready()`` or fail with the log tail."""
        pid = self.pid()
        if pid is not None:
            return pid
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        _CHILDREN[proc.pid] = proc
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DaemonError(
                    f"{self.name} did not become ready within {timeout:.0f} s:\n{self.log_tail()}",
                    hint=f"read {self.log_file}",
                )
            time.sleep(0.2)
        return proc.pid

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_group(pid, signal.SIGKILL)
            child = _CHILDREN.pop(pid, None)
            if child is not None:
                child.wait(timeout)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
