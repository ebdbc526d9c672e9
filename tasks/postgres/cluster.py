"""Local PostgreSQL clusters driven with initdb and pg_ctl (the sandbox, scratch and restored ones).

PostgreSQL refuses to run as root, so when we are root every binary runs as ``os_user``
(``postgres`` by default), and every directory it uses must be reachable by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import RefusedError, RunbookError
from tasks.core.process import CommandResult, ToolMissing, effective_user, run_command

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
PID_FILE_TIMEOUT_S = 30
INSTALL_HINT = "install PostgreSQL 15 (apt-get install postgresql-15) or set RUNBOOK_PG_BIN_DIR"


class ClusterError(RunbookError):
    """A local cluster did not start or stop as asked."""


def find_bin_dir(configured: Path | None = None) -> Path:
    """The PostgreSQL 15 server binaries: the configured dir, the Debian path or pg_config's."""
    candidates = [configured] if configured else [DEFAULT_BIN_DIR]
    if configured is None and shutil.which("pg_config"):
        out = run_command(["pg_config", "--bindir"], timeout=10, check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    for candidate in candidates:
        if candidate and (candidate / "pg_ctl").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise ToolMissing(
        f"no PostgreSQL server binaries (pg_ctl, postgres) in {', '.join(map(str, candidates))}",
        hint=INSTALL_HINT,
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (picked by the OS; nothing reserves it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1 at ``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def make_owned_dir(path: Path, os_user: str | None, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) owned by the cluster's OS user, and check it can reach it."""
    path.mkdir(parents=True, exist_ok=True)
    user = effective_user(os_user)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        require_reachable(path, user)
    path.chmod(mode)
    return path


def require_reachable(path: Path, user: str) -> None:
    """Refuse a path whose parents the OS user cannot traverse (e.g. anything under /root)."""
    entry = pwd.getpwnam(user)
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        can_enter = (
            (st.st_uid == entry.pw_uid and st.st_mode & 0o100)
            or (st.st_gid == entry.pw_gid and st.st_mode & 0o010)
            or st.st_mode & 0o001
        )
        if not can_enter:
            raise RefusedError(
                f"the {user} OS user cannot reach {path}: {parent} is closed to it",
                hint="put this directory somewhere it can reach, e.g. under /var/tmp",
            )


@dataclass(frozen=True)
class LocalCluster:
    """One cluster on this machine: its data directory, port and log.

    ``config_file``: its postgresql.conf when that lives outside the data directory (the Debian
    layout, ``/etc/postgresql/15/NAME``); None when the data directory holds it.
    """

    data_dir: Path
    port: int
    bin_dir: Path
    os_user: str | None = "postgres"
    config_file: Path | None = None

    @property
    def log_file(self) -> Path:
        """The server log: ``<data_dir>.log``, beside the data directory."""
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket goes: the data directory's parent."""
        # Beside the data directory, never in it: a socket lock file inside would be backed up,
        # restored, and then stop a restored copy from starting on the same port.
        return self.data_dir.parent

    def _pg(
        self, tool: str, *args: str | Path, timeout: float, check: bool = True
    ) -> CommandResult:
        return run_command(
            [self.bin_dir / tool, *args],
            timeout=timeout,
            user=effective_user(self.os_user),
            check=check,
            what=f"{tool} ({self.data_dir})",
        )

    def initdb(self, *, superuser: str, password_file: Path, timeout: float = 120) -> None:
        """Create the cluster: data checksums, UTF8, peer auth locally, scram-sha-256 over TCP.

        Args:
            superuser: the bootstrap superuser's name.
            password_file: a file holding its password (``--pwfile``).
            timeout: seconds before initdb is killed.
        Raises:
            CommandFailed, CommandTimedOut, ToolMissing.
        """
        self._pg(
            "initdb",
            "-D",
            self.data_dir,
            "-U",
            superuser,
            f"--pwfile={password_file}",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--data-checksums",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            timeout=timeout,
        )

    def start(
        self,
        *,
        timeout: float,
        wait: bool = True,
        settings: dict[str, str] | None = None,
        private: bool = True,
    ) -> None:
        """Start the server; ``wait=False`` returns once the postmaster runs.

        ``private`` (restored and scratch clusters) overrides the configuration's port, listen
        address and socket directory with this cluster's own, on 127.0.0.1 only; a live cluster
        is started with ``private=False``, as its own configuration says. With a ``config_file``
        the server reads it (and the pg_hba.conf and pg_ident.conf it names) for this data
        directory; a private copy then writes no ``external_pid_file`` (that one is live's).
        """
        options: dict[str, str] = {}
        if self.config_file is not None:
            options |= {"config_file": str(self.config_file), "data_directory": str(self.data_dir)}
        if private:
            options |= {
                "port": str(self.port),
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(self.socket_dir),
            }
            if self.config_file is not None:
                options["external_pid_file"] = "''"
        options |= settings or {}
        opts = " ".join(f"-c {key}={value}" for key, value in options.items())
        self._pg(
            "pg_ctl",
            "start",
            "-D",
            self.data_dir,
            "-l",
            self.log_file,
            "-o",
            opts,
            "-w" if wait else "-W",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
        )
        if not wait:
            self._wait_for_postmaster(PID_FILE_TIMEOUT_S)

    def _wait_for_postmaster(self, timeout: float) -> None:
        """pg_ctl -W returns before the postmaster writes its PID file: wait for it."""
        deadline = time.monotonic() + timeout
        while not self.process_alive():
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the server in {self.data_dir} did not start: {self.log_errors()}",
                    hint="read the server log",
                )
            time.sleep(0.05)

    def stop(self, *, mode: str = "fast", timeout: float = 120) -> None:
        """Stop the server if it runs; a server that ignores ``fast`` is stopped ``immediate``."""
        if not self.is_running():
            return
        result = self._pg(
            "pg_ctl",
            "stop",
            "-D",
            self.data_dir,
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
            check=False,
        )
        if result.returncode != 0 and self.is_running():
            self._pg("pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", timeout=60)

    def is_running(self) -> bool:
        """True when the postmaster's PID is alive and ``pg_ctl status`` says the server runs."""
        if not self.process_alive():
            return False
        return (
            self._pg("pg_ctl", "status", "-D", self.data_dir, timeout=30, check=False).returncode
            == 0
        )

    def pid(self) -> int | None:
        """The postmaster's PID from ``postmaster.pid``; None when it is absent or unreadable."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def process_alive(self) -> bool:
        """Cheap liveness check for poll loops: the postmaster PID exists."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server log (empty when there is no log yet)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def control_data(self) -> dict[str, str]:
        """``pg_controldata`` of this (stopped or running) cluster, as a dict."""
        out = self._pg("pg_controldata", "-D", self.data_dir, timeout=30).stdout
        return {
            key.strip(): value.strip()
            for key, _, value in (line.partition(":") for line in out.splitlines())
        }

    def system_identifier(self) -> int:
        """The data directory's ``Database system identifier`` (``pg_controldata``)."""
        return int(self.control_data()["Database system identifier"])

    def log_errors(self, lines: int = 5) -> str:
        """The last FATAL/PANIC/ERROR lines of the server log (or its tail), for messages."""
        tail = self.log_tail(200).splitlines()
        errors = [line for line in tail if any(w in line for w in ("FATAL", "PANIC", "ERROR"))]
        return " | ".join((errors or tail)[-lines:]) or "no server log"


def is_data_directory(path: Path) -> bool:
    """A directory that holds (or held) a cluster: never a restore destination."""
    return (path / "PG_VERSION").exists() or (path / "postmaster.pid").exists()
