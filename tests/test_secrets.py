"""Secrets stay home: child processes get an allow-listed environment, and a DSN is shown only
without its password, in every artifact, log line, result and message.

The end-to-end test puts the sandbox's secrets in this process's environment, as a worker's
would be, runs verify-backup and a point-in-time recovery, and reads ``/proc/<pid>/environ`` of
every process those runs start (their own children, and the restored PostgreSQL servers with
theirs) while they run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from flows.recovery.pitr import point_in_time_recovery
from flows.recovery.verify_backup import verify_backup
from sandbox.platform import Sandbox
from tasks.core.process import child_environment, run_command
from tasks.postgres.scratch import remove_scratch_cluster
from tasks.postgres.sql import (
    PostgresUnreachable,
    connect,
    describe,
    fetch_value,
    mask_password,
    redact_dsn,
    with_port,
)
from tests.recovery_support import APPROVE, decisions
from tests.test_backups import commit_and_archive

# -- showing a DSN ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "shown", "short"),
    [
        (
            "postgresql://postgres:s3cret@127.0.0.1:5433/linkist",
            "user=postgres dbname=linkist host=127.0.0.1 port=5433",
            "127.0.0.1:5433/linkist",
        ),
        (
            "postgresql://app@[2001:db8::7]:6432/linkist?password=s3cret&sslmode=require",
            "user=app dbname=linkist host=2001:db8::7 port=6432 sslmode=require",
            "[2001:db8::7]:6432/linkist",
        ),
        (
            "postgresql://app:s3cret%40x@[::1]/linkist?password=s3cret",
            "user=app dbname=linkist host=::1",
            "[::1]:5432/linkist",
        ),
        (
            "host=db1,db2 port=5432,5433 user=app password=s3cret dbname=linkist",
            "user=app dbname=linkist host=db1,db2 port=5432,5433",
            "db1:5432,db2:5433/linkist",
        ),
    ],
    ids=["user-info", "query-and-ipv6", "both-and-encoded", "key-value-multi-host"],
)
def test_a_shown_dsn_drops_its_password_wherever_it_is_and_keeps_ipv6_hosts(dsn, shown, short):
    assert redact_dsn(SecretStr(dsn)) == shown
    assert describe(SecretStr(dsn)) == short
    assert "s3cret" not in redact_dsn(dsn) + describe(dsn)


def test_an_unparseable_dsn_is_shown_as_nothing_of_itself():
    dsn = "postgresql://app:s3cret@host:notaport/db"
    assert "s3cret" not in redact_dsn(dsn) and "s3cret" not in describe(dsn)


def test_a_vendor_error_echoing_the_password_is_masked_in_every_form():
    dsn = SecretStr("postgresql://app:p%40ss%2Fw0rd@127.0.0.1:5432/db")
    echoed = "invalid value 'p@ss/w0rd' near 'p%40ss%2Fw0rd'"
    assert mask_password(echoed, dsn) == "invalid value '***' near '***'"


def test_a_connection_error_names_the_server_but_never_the_password():
    dsn = SecretStr("postgresql://app:hunter2hunter2@127.0.0.1:1/db?password=hunter2hunter2")
    with pytest.raises(PostgresUnreachable) as refused:
        fetch_value(dsn, "SELECT 1")
    assert "127.0.0.1:1/db" in str(refused.value)
    assert "hunter2" not in str(refused.value) + repr(refused.value)


# -- the environment of a child process ---------------------------------------------------------


def test_a_child_gets_the_allow_list_and_what_it_is_given_never_our_secrets(monkeypatch):
    monkeypatch.setenv("RUNBOOK_PG_DSN", "postgresql://postgres:topsecret@127.0.0.1/db")
    monkeypatch.setenv("RUNBOOK_STRIPE_API_KEY", "sk_test_topsecret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-topsecret")
    monkeypatch.setenv("PGBACKREST_REPO1_S3_KEY_SECRET", "s3-topsecret")
    monkeypatch.setenv("LC_MESSAGES", "C.UTF-8")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    result = run_command(
        ["sh", "-c", "cat /proc/$$/environ"], timeout=10, env={"TZ": "UTC", "GIVEN": "yes"}
    )
    env = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    assert "topsecret" not in result.stdout
    assert env["PATH"] == os.environ["PATH"] and env["LC_MESSAGES"] == "C.UTF-8"
    assert env["TZ"] == "UTC" and env["GIVEN"] == "yes"
    assert "HTTPS_PROXY" not in env, "a proxy is only for tools that say they need the network"
    proxied = child_environment(inherit=("HTTPS_PROXY",))
    assert proxied["HTTPS_PROXY"] == "http://proxy.internal:3128"


def test_a_child_run_as_the_cluster_user_gets_that_users_home():
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    result = run_command(["sh", "-c", "echo $HOME $USER"], timeout=10, user="postgres")
    assert result.stdout.split() == [os.path.expanduser("~postgres"), "postgres"]


# -- end to end: verify-backup and a point-in-time recovery -------------------------------------


@dataclass
class Seen:
    """One process seen running: its command line and its environment, as /proc shows them."""

    pid: int
    argv: list[str]
    environ: str


@dataclass
class ChildWatcher:
    """Reads ``/proc/<pid>/environ`` of every process started while it runs that is ours: a
    descendant of this test process, or of a PostgreSQL server whose ``postmaster.pid`` lies
    under ``root`` (restored servers outlive the ``pg_ctl`` that started them). Nothing else on
    the machine is read. A process still running our interpreter (forked, not yet exec'd: it
    shows our own environment) is read again later."""

    root: Path
    seen: dict[int, Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._before = set(self._pids())
        self._ours = os.path.realpath(sys.executable)

    @staticmethod
    def _pids() -> list[int]:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]

    def _ancestors(self, pid: int) -> list[int]:
        chain = []
        while pid > 1 and len(chain) < 64:
            chain.append(pid)
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        return chain

    def _roots(self) -> set[int]:
        roots = {os.getpid()}
        # os.walk, not Path.glob: clusters are removed while we look, and a
        # directory gone between listing and entering must not end the watch.
        for directory, subdirectories, files in os.walk(self.root):
            if "postmaster.pid" not in files:
                continue
            subdirectories.clear()  # a data directory holds no other cluster
            try:
                roots.add(int(Path(directory, "postmaster.pid").read_text().split()[0]))
            except (OSError, IndexError, ValueError):
                continue
        return roots

    def _poll(self) -> None:
        roots = self._roots()
        for pid in self._pids():
            if pid in self._before or pid in self.seen:
                continue
            try:
                if not roots & set(self._ancestors(pid)[1:] + [pid]):
                    continue
                if os.readlink(f"/proc/{pid}/exe") == self._ours:
                    continue  # not exec'd yet, or one of our own threads' forks: later
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue  # gone already
            self.seen[pid] = Seen(pid, argv.split("\0"), environ)

    @contextmanager
    def watching(self) -> Iterator[ChildWatcher]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            time.sleep(0.002)

    def programs(self) -> set[str]:
        return {Path(s.argv[0]).name for s in self.seen.values() if s.argv and s.argv[0]}


def sandbox_secrets(box: Sandbox) -> dict[str, str]:
    """The sandbox's secrets, by the variable a worker would get each from."""
    services = json.loads(box.services().state_file.read_text())
    dsn = box.dsn()
    assert dsn is not None
    return {
        "RUNBOOK_PG_DSN": dsn.get_secret_value(),
        "RUNBOOK_STRIPE_API_KEY": services["stripe_api_key"],
        "RUNBOOK_STRIPE_WEBHOOK_SECRET": services["webhook_secret"],
        "RUNBOOK_AWS_SECRET_ACCESS_KEY": services["aws_secret_access_key"],
        "AWS_SECRET_ACCESS_KEY": services["aws_secret_access_key"],
    }


def what_runs_showed(run_ids: list[UUID]) -> str:
    """Every artifact (data and description) and log line of these flow runs, as one text."""
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
    shown = [f"{a.key} {a.description} {json.dumps(a.data, default=str)}" for a in artifacts]
    return "\n".join(shown + [line.message for line in logs])


def test_no_secret_reaches_a_child_process_an_artifact_or_a_log_line(
    prefect_server, platform, use_platform, monkeypatch
):
    secrets = sandbox_secrets(platform)
    password = str(conninfo_to_dict(secrets["RUNBOOK_PG_DSN"])["password"])
    for name, value in {**secrets, "PGPASSWORD": password}.items():
        monkeypatch.setenv(name, value)
    values = {password, *secrets.values()}  # the password alone, and every whole secret
    dsn = use_platform(platform).live_dsn()
    commit_and_archive(dsn)
    time.sleep(0.5)
    target = datetime.now(UTC).isoformat()
    time.sleep(0.5)
    commit_and_archive(dsn)

    watcher = ChildWatcher(platform.root)
    with watcher.watching():
        verified = verify_backup(return_state=True)
        with decisions("point-in-time-recovery", ("restore", APPROVE)):
            recovered = point_in_time_recovery(target_time=target, return_state=True)
    result = recovered.result()
    try:
        assert verified.is_completed() and result.outcome == "restored"
        assert {"pgbackrest", "pg_ctl", "postgres"} <= watcher.programs(), watcher.programs()
        for process in watcher.seen.values():
            leaked = [v for v in values if v in process.environ]
            assert not leaked, f"{process.argv[:3]} (pid {process.pid}) got a secret"
        shown = what_runs_showed(
            [verified.state_details.flow_run_id, recovered.state_details.flow_run_id]
        )
        assert "recovery-plan" in shown and "verify-backup-report" in shown
        assert result.restored_dsn and result.restored_dsn in shown
        for value in values:
            assert value not in shown
            assert value not in result.model_dump_json()
            assert value not in verified.result().model_dump_json()
    finally:
        remove_scratch_cluster.fn(result.plan.restore_to)


def test_the_sandbox_pgbackrest_configuration_is_private_to_its_user(platform):
    conf = platform.pgbackrest_conf
    assert conf.stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert conf.owner() == "postgres"


def test_sandbox_status_json_keeps_the_full_dsn_for_the_operator(platform):
    data = platform.status().as_json()
    assert data["dsn"] == platform.dsn().get_secret_value()  # type: ignore[union-attr]
    with connect(SecretStr(data["dsn"])) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_restored_dsn_never_keeps_a_host_or_port_that_would_aim_it_at_live():
    live = SecretStr(
        "postgresql://app:pw@db.internal:5432/linkist?host=db.internal&port=5432"
        "&sslmode=require&service=prod&hostaddr=10.0.0.5"
    )
    restored = with_port(live, 6001).get_secret_value()
    assert restored.startswith("postgresql://app:pw@127.0.0.1:6001/linkist?")
    assert restored.endswith("?sslmode=require")  # other options kept
    assert conninfo_to_dict(restored)["host"] == "127.0.0.1"
    assert conninfo_to_dict(restored)["port"] == "6001"
