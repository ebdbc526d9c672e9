"""The embedded sandbox platform: a PostgreSQL 15 cluster archiving through pgBackRest to a posix
repository, the platform's schema and seed data, and (for ``serve``) a local Prefect server.

All state lives under one directory (``RUNBOOK_SANDBOX_DIR``; by default ``.sandbox/`` in the
checkout, whatever the current directory, or, when we are root and the ``postgres`` OS user
cannot reach the checkout (a home directory under /root, a ``mktemp -d`` directory),
``/var/tmp/runbook-sandbox-<checkout name>-<hash of its path>``: see ``sandbox_location``):

    runbook.toml        settings for flows aimed at the sandbox (holds the DSN: mode 600)
    pg/data, pg/data.log
    pgbackrest/         pgbackrest.conf, repo/, log/, lock/, spool/
    prefect/            the local Prefect server's home (SQLite)
    run/                PID files and logs of background processes
    scratch/            verification restores
    incidents/          the incident store (records, timelines, responding runs)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

from sandbox.processes import Daemon, DaemonError, venv_tool
from sandbox.services import PlatformServices
from tasks.core.errors import RefusedError
from tasks.core.process import effective_user, require_tool, run_command
from tasks.core.settings import CONFIG_ENV, SandboxSettings
from tasks.postgres.cluster import (
    LocalCluster,
    find_bin_dir,
    make_owned_dir,
    port_in_use,
    require_reachable,
)
from tasks.postgres.sql import connect, describe

DATABASE = "linkist"
STANZA = "linkist"
OS_USER = "postgres"
TABLES = [
    {"name": "users", "key_columns": ["id", "email"], "min_rows": 100},
    {"name": "profiles", "key_columns": ["id", "slug"], "min_rows": 100},
    {"name": "nfc_cards", "key_columns": ["id", "uid"], "min_rows": 100},
    {"name": "orders", "key_columns": ["id"], "min_rows": 100},
    {"name": "payments", "key_columns": ["id", "stripe_payment_intent"], "min_rows": 100},
    {"name": "webhook_events", "key_columns": ["id", "stripe_event_id"], "min_rows": 100},
]
PREFECT_START_TIMEOUT_S = 90
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
CHECKOUT = Path(__file__).resolve().parents[1]
SHARED_TMP = Path("/var/tmp")  # noqa: S108 - one directory per checkout, owned and checked


def sandbox_location(configured: Path | None) -> tuple[Path, str]:
    """Where the sandbox lives, and a note saying why when it is not where it would be.

    ``configured`` (``RUNBOOK_SANDBOX_DIR``) wins. Otherwise ``.sandbox`` in the checkout (the
    current directory when running from an installed package, not a checkout; a symlink there
    is followed), unless we are
    root and the ``postgres`` OS user, which runs PostgreSQL and pgBackRest there, cannot reach
    it: then a directory under /var/tmp named from the checkout, the same for every command
    run from this checkout and different for another.

    Raises:
        RefusedError: that /var/tmp directory exists but is a symlink or someone else's.
    """
    if configured is not None:
        return configured.resolve(), ""
    checkout = CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
    default = (checkout / ".sandbox").resolve()  # a .sandbox symlink is followed
    user = effective_user(OS_USER)
    try:
        if user is not None:
            require_reachable(default, user)
        return default, ""
    except RefusedError as closed:
        digest = hashlib.sha256(str(checkout).encode()).hexdigest()[:8]
        elsewhere = SHARED_TMP / f"runbook-sandbox-{checkout.name}-{digest}"
        if elsewhere.is_symlink() or (
            elsewhere.exists() and elsewhere.stat().st_uid != os.geteuid()
        ):
            raise RefusedError(
                f"{elsewhere} is a symlink or belongs to another user: refusing to use it",
                hint=f"remove it, or set {SandboxSettings.variable('dir')} to a directory of yours",
            ) from None
        return elsewhere, f"{closed.message}, so this checkout's sandbox lives in {elsewhere}"


def sql_scripts() -> list[Traversable]:
    """The platform's schema and seed data: ``sandbox/sql/*.sql``, applied in name order."""
    folder = resources.files("sandbox").joinpath("sql")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


class SandboxStatus(BaseModel):
    dir: Path
    config: Path
    postgres_running: bool
    postgres_pid: int | None
    postgres_port: int
    data_dir: Path
    dsn: SecretStr | None
    pgbackrest_config: Path
    pgbackrest_repo: Path
    prefect_api_url: str
    processes: dict[str, int | None]
    services: dict[str, str] = {}  # moto, localstripe, app: their base URLs

    def as_json(self) -> dict[str, Any]:
        data = json.loads(self.model_dump_json())
        data["dsn"] = self.dsn.get_secret_value() if self.dsn else None
        return data


class Sandbox:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.root, self.location_note = sandbox_location(settings.dir)
        self.config_file = self.root / "runbook.toml"
        self.pgbackrest_dir = self.root / "pgbackrest"
        self.pgbackrest_conf = self.pgbackrest_dir / "pgbackrest.conf"
        self.repo = self.pgbackrest_dir / "repo"
        self.prefect_home = self.root / "prefect"
        self.run_dir = self.root / "run"
        self._ready_marker = self.root / "pg" / "initialized"
        self.ports_file = self.root / "ports.json"
        self.pg_port, self.prefect_port = self._ports()

    def _ports(self) -> tuple[int, int]:
        """PostgreSQL's and Prefect's ports: set explicitly (RUNBOOK_SANDBOX_*_PORT), else the
        ones this sandbox was made with (so a new shell finds it), else the defaults."""
        remembered = json.loads(self.ports_file.read_text()) if self.ports_file.exists() else {}
        chosen = self.settings.model_fields_set
        return (
            self.settings.pg_port
            if "pg_port" in chosen
            else int(remembered.get("pg", self.settings.pg_port)),
            self.settings.prefect_port
            if "prefect_port" in chosen
            else int(remembered.get("prefect", self.settings.prefect_port)),
        )

    def _remember_ports(self) -> None:
        self.ports_file.write_text(json.dumps({"pg": self.pg_port, "prefect": self.prefect_port}))

    # -- components ------------------------------------------------------------------------------

    def cluster(self) -> LocalCluster:
        return LocalCluster(self.root / "pg" / "data", self.pg_port, find_bin_dir(), OS_USER)

    def daemon(self, name: str) -> Daemon:
        return Daemon(name, self.run_dir)

    def services(self) -> PlatformServices:
        return PlatformServices(self.root, self.run_dir, self.settings)

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def prefect_env(self) -> dict[str, str]:
        """Environment for every process that talks to the sandbox's Prefect server."""
        return {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # the served runner looks for new runs every second, not every 10 s
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_home / "storage"),
            # the server keeps concurrency leases on disk (under PREFECT_HOME): a restart must
            # not forget who holds the recovery lock (the default, memory, does)
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            CONFIG_ENV: str(self.config_file),
        }

    def dsn(self) -> SecretStr | None:
        if not self.config_file.exists():
            return None
        import tomllib

        value = tomllib.loads(self.config_file.read_text())["postgres"]["dsn"]
        return SecretStr(value)

    # -- lifecycle -------------------------------------------------------------------------------

    def up(self) -> SandboxStatus:
        """Start PostgreSQL (creating cluster, stanza, schema and seed data the first time), with
        moto and localstripe beside it, then the app (see ``sandbox.services``)."""
        find_bin_dir()
        require_tool("pgbackrest", hint="apt-get install pgbackrest")
        cluster = self.cluster()
        if not cluster.is_running() and port_in_use(self.pg_port):
            raise RefusedError(
                f"port {self.pg_port} on 127.0.0.1 is taken by another process",
                hint="stop that process or choose another port with RUNBOOK_SANDBOX_PG_PORT",
            )
        self._prepare_root()
        services = self.services()
        known_dsn = self.dsn() if self._ready_marker.exists() else None
        with ThreadPoolExecutor(max_workers=2) as pool:  # they need no database: start them now
            started = [pool.submit(services.start_backends)]
            if known_dsn is not None:  # not the first time: the app can start now too
                started.append(pool.submit(services.start_app_process, known_dsn))
            if cluster.is_running():
                pass
            elif not self._ready_marker.exists():
                self._create(cluster)
            else:
                cluster.start(timeout=60)
            for future in started:
                future.result()
        dsn = self.dsn()
        assert dsn is not None  # written by _create
        services.start_app(dsn)
        self._write_settings(dsn)
        return self.status()

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        self._remember_ports()
        user = effective_user(OS_USER)
        if user is not None:
            require_reachable(self.root, user)
        if self.pgbackrest_conf.exists():
            _make_private(self.pgbackrest_conf)

    def _create(self, cluster: LocalCluster) -> None:
        """First start: initdb, pgBackRest stanza, schema, seed data, settings file."""
        for stale in (self.root / "pg", self.pgbackrest_dir):  # a half-made earlier attempt
            shutil.rmtree(stale, ignore_errors=True)
        make_owned_dir(self.root / "pg", OS_USER)
        for sub in ("repo", "log", "lock", "spool"):
            make_owned_dir(self.pgbackrest_dir / sub, OS_USER)
        make_owned_dir(self.pgbackrest_dir, OS_USER, mode=0o755)
        # pgBackRest's settings (an S3 key, in production) live in its own file, readable by
        # the OS user it runs as and nobody else: never in an environment variable.
        _write_private(self.pgbackrest_conf, self._pgbackrest_conf(cluster))
        password = secrets.token_urlsafe(18)
        pwfile = self.root / "pg" / "pwfile"
        _write_private(pwfile, password)
        try:
            cluster.initdb(superuser="postgres", password_file=pwfile)
        finally:
            pwfile.unlink(missing_ok=True)
        with (cluster.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(self._postgresql_conf())
        cluster.start(timeout=60)
        dsn = SecretStr(f"postgresql://postgres:{password}@127.0.0.1:{cluster.port}/{DATABASE}")
        admin = SecretStr(dsn.get_secret_value().rsplit("/", 1)[0] + "/postgres")
        with connect(admin) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        with connect(dsn) as conn:
            for script in sql_scripts():
                conn.execute(script.read_text())
        self._pgbackrest("stanza-create")
        self._pgbackrest("check")
        self._write_settings(dsn)
        self._ready_marker.write_text("ok\n")

    def _pgbackrest(self, command: str) -> None:
        run_command(
            ["pgbackrest", f"--config={self.pgbackrest_conf}", f"--stanza={STANZA}", command],
            timeout=120,
            user=effective_user(OS_USER),
            what=f"pgBackRest {command}",
        )

    def _pgbackrest_conf(self, cluster: LocalCluster) -> str:
        p = self.pgbackrest_dir
        return (
            "[global]\n"
            f"repo1-path={p / 'repo'}\nrepo1-retention-full=4\n"
            f"log-path={p / 'log'}\nlock-path={p / 'lock'}\nspool-path={p / 'spool'}\n"
            "log-level-console=warn\nlog-level-file=info\n"
            "compress-type=lz4\nstart-fast=y\nprocess-max=2\n\n"
            f"[{STANZA}]\n"
            f"pg1-path={cluster.data_dir}\npg1-port={cluster.port}\n"
            f"pg1-socket-path={cluster.socket_dir}\n"
        )

    def _postgresql_conf(self) -> str:
        pgbackrest = require_tool("pgbackrest", hint="apt-get install pgbackrest")
        return (
            "\n# runbook sandbox\n"
            f"port = {self.pg_port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.cluster().socket_dir}'\n"
            "wal_level = replica\narchive_mode = on\n"
            f"archive_command = '{pgbackrest} --config={self.pgbackrest_conf} "
            f"--stanza={STANZA} archive-push %p'\n"
            "archive_timeout = 60\nmax_wal_senders = 3\nmax_connections = 50\n"
            "shared_preload_libraries = 'pg_stat_statements'\n"
            "log_line_prefix = '%m [%p] '\nlog_checkpoints = on\n"
        )

    def _write_settings(self, dsn: SecretStr) -> None:
        tables = "\n".join(
            f"[[postgres.tables]]\nname = {json.dumps(t['name'])}\n"
            f"key_columns = {json.dumps(t['key_columns'])}\nmin_rows = {t['min_rows']}\n"
            for t in TABLES
        )
        text = (
            "# Written by `runbook sandbox up`: settings for flows aimed at the sandbox.\n"
            "[postgres]\n"
            f"dsn = {json.dumps(dsn.get_secret_value())}\n"
            f"data_dir = {json.dumps(str(self.cluster().data_dir))}\n"
            f"os_user = {json.dumps(OS_USER)}\n\n"
            f"[backup]\nstanza = {json.dumps(STANZA)}\n"
            f"config = {json.dumps(str(self.pgbackrest_conf))}\n"
            f"scratch_dir = {json.dumps(str(self.root / 'scratch'))}\n\n"
            f"[maintenance]\nstate_dir = {json.dumps(str(self.root / 'state'))}\n\n"
            f"{tables}\n"
            f"{self.services().settings_toml()}"
        )
        self.config_file.touch(mode=0o600)
        self.config_file.write_text(text)

    def start_prefect_server(self) -> str:
        """Start the sandbox's Prefect server (SQLite under the sandbox dir) unless it runs."""
        daemon = self.daemon("prefect-server")
        if daemon.pid() is None and port_in_use(self.prefect_port):
            raise RefusedError(
                f"port {self.prefect_port} on 127.0.0.1 is taken by another process",
                hint="stop it, choose RUNBOOK_SANDBOX_PREFECT_PORT, or set RUNBOOK_PREFECT_API_URL "
                "to use a Prefect server you already run",
            )
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        daemon.start(
            [
                venv_tool("prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.prefect_port),
            ],
            env=self.prefect_env(),
            ready=lambda: _healthy(f"{self.prefect_api_url}/health"),
            timeout=PREFECT_START_TIMEOUT_S,
        )
        return self.prefect_api_url

    def down(self) -> None:
        """Stop everything the sandbox started; its data stays for the next ``up``."""
        failures: list[str] = []
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            try:  # one that will not stop must not keep the others running
                self.daemon(pid_file.stem).stop()
            except OSError as exc:
                failures.append(f"{pid_file.stem}: {exc}")
        if self.root.exists():
            self.cluster().stop()
        # Restored clusters left running: side-by-side recoveries and interrupted verifications.
        for leftover in [*self.root.glob("pg/*/data"), *self.root.glob("scratch/*/data")]:
            LocalCluster(leftover, 0, find_bin_dir(), OS_USER).stop(mode="immediate")
        if failures:
            raise DaemonError(
                "some sandbox processes did not stop: " + "; ".join(failures),
                hint=f"stop them by hand (PIDs in {self.run_dir})",
            )

    def status(self) -> SandboxStatus:
        cluster = self.cluster()
        running = cluster.is_running()
        processes = {"postgres": cluster.pid() if running else None}
        if self.run_dir.exists():
            processes |= {p.stem: self.daemon(p.stem).pid() for p in self.run_dir.glob("*.pid")}
        return SandboxStatus(
            dir=self.root,
            config=self.config_file,
            postgres_running=running,
            postgres_pid=processes["postgres"],
            postgres_port=cluster.port,
            data_dir=cluster.data_dir,
            dsn=self.dsn(),
            pgbackrest_config=self.pgbackrest_conf,
            pgbackrest_repo=self.repo,
            prefect_api_url=self.prefect_api_url,
            processes=processes,
            services=self.services().urls(),
        )

    def describe(self) -> str:
        st = self.status()
        lines = [f"sandbox {st.dir}"]
        if self.location_note:
            lines.append(f"  ({self.location_note})")
        where = describe(st.dsn) if st.dsn else "not created"
        lines.append(
            f"  postgres     {'running' if st.postgres_running else 'stopped'}  {where}"
            f"  pid {st.postgres_pid or '-'}"
        )
        lines.append(f"  pgbackrest   repo {st.pgbackrest_repo}  stanza {STANZA}")
        for name, pid in st.processes.items():
            if name != "postgres":
                url = st.services.get(name, "")
                lines.append(
                    f"  {name:<12} {'running' if pid else 'stopped'}  {url}  pid {pid or '-'}"
                )
        lines.append(f"  prefect api  {st.prefect_api_url}")
        lines.append(f"  settings     {st.config}  (export {CONFIG_ENV}={st.config})")
        return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 600, owned by the clusters' OS user."""
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    _make_private(path)


def _make_private(path: Path) -> None:
    """Mode 600, owned by the clusters' OS user (sandboxes made before kept pgbackrest.conf 644)."""
    if effective_user(OS_USER):
        shutil.chown(path, OS_USER, OS_USER)
    path.chmod(0o600)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
