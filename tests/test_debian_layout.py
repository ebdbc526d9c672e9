"""A live cluster laid out the Debian way (``pg_createcluster``: postgresql.conf, pg_hba.conf and
pg_ident.conf under /etc/postgresql/15/NAME, none in the data directory) restores, verifies and
switches over, with a pgBackRest stanza of its own; the cluster is dropped afterwards."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import SecretStr

from flows.recovery.restore_backup import restore_backup
from tasks.backups.base import BackupKind
from tasks.backups.pgbackrest import PgBackRest
from tasks.core.process import run_command
from tasks.core.settings import CONFIG_ENV
from tasks.postgres.cluster import find_bin_dir, free_port, make_owned_dir
from tasks.postgres.layout import read_layout
from tests.recovery_support import APPROVE, APPROVE_2, decisions, stage_at
from tests.restored import set_stage

pytestmark = pytest.mark.skipif(
    shutil.which("pg_createcluster") is None, reason="needs postgresql-common (pg_createcluster)"
)
STANZA = "debian"


def sh(*args: object) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def debian_cluster(pg_tmp: Path) -> Iterator[tuple[Path, Path, SecretStr]]:
    """A cluster made with pg_createcluster on a free port, archiving into its own stanza, with
    a full backup taken; yields (settings file, its config directory, DSN). Dropped afterwards."""
    name = f"runbook_{uuid4().hex[:8]}"
    port, data_dir = free_port(), pg_tmp / "data"
    etc = Path("/etc/postgresql/15") / name
    repo = pg_tmp / "pgbackrest"
    for sub in ("repo", "log", "lock", "spool"):
        make_owned_dir(repo / sub, "postgres")
    config = repo / "pgbackrest.conf"
    config.write_text(
        f"[global]\nrepo1-path={repo / 'repo'}\nlog-path={repo / 'log'}\n"
        f"lock-path={repo / 'lock'}\nspool-path={repo / 'spool'}\n"
        "start-fast=y\nlog-level-console=warn\n\n"
        f"[{STANZA}]\npg1-path={data_dir}\npg1-port={port}\npg1-socket-path=/var/run/postgresql\n"
    )
    sh("pg_createcluster", "15", name, "-d", data_dir, "-p", port, "--locale=C.UTF-8")
    try:
        (etc / "conf.d" / "runbook.conf").write_text(
            "listen_addresses = '127.0.0.1'\nwal_level = replica\narchive_mode = on\n"
            f"archive_command = 'pgbackrest --config={config} --stanza={STANZA} archive-push %p'\n"
        )
        sh("pg_ctlcluster", "15", name, "start")
        password = secrets.token_urlsafe(12)
        run_command(
            [
                find_bin_dir() / "psql",
                "-h",
                "/var/run/postgresql",
                "-p",
                str(port),
                "-c",
                f"ALTER USER postgres PASSWORD '{password}'",
            ],
            timeout=30,
            user="postgres",
        )
        dsn = SecretStr(f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres")
        engine = PgBackRest(stanza=STANZA, config=config, bin_dir=find_bin_dir())
        run_command(
            ["pgbackrest", f"--config={config}", f"--stanza={STANZA}", "stanza-create"],
            timeout=60,
            user="postgres",
        )
        set_stage(dsn, 1)
        engine.take_backup(BackupKind.FULL)
        set_stage(dsn, 2)
        settings_file = pg_tmp / "runbook.toml"
        settings_file.write_text(
            f"[postgres]\ndsn = {json.dumps(dsn.get_secret_value())}\n"
            f"data_dir = {json.dumps(str(data_dir))}\n\n"
            f"[backup]\nstanza = {json.dumps(STANZA)}\nconfig = {json.dumps(str(config))}\n"
            f"scratch_dir = {json.dumps(str(pg_tmp / 'scratch'))}\n"
        )
        yield settings_file, etc, dsn
    finally:
        subprocess.run(["pg_dropcluster", "--stop", "15", name], capture_output=True, timeout=120)
        shutil.rmtree(etc, ignore_errors=True)  # pg_dropcluster leaves the conf.d file we added


def test_a_debian_cluster_restores_verifies_and_switches_over(
    prefect_server, debian_cluster, monkeypatch
):
    settings_file, etc, dsn = debian_cluster
    monkeypatch.setenv(CONFIG_ENV, str(settings_file))
    before = read_layout(dsn)
    assert before.config_file == etc / "postgresql.conf" and before.external_config_file
    assert not (before.data_directory / "postgresql.conf").exists()

    config = settings_file.parent / "pgbackrest" / "pgbackrest.conf"
    label = (
        PgBackRest(stanza=STANZA, config=config, bin_dir=find_bin_dir()).list_backups()[-1].label
    )
    with decisions("restore-backup", ("restore", APPROVE), ("switchover", APPROVE_2)):
        result = restore_backup(backup_label=label, mode="replace")

    assert result.outcome == "replaced" and result.verified
    assert result.plan.restore_to.config_file == etc / "postgresql.conf"
    assert stage_at(dsn) == 1
    after = read_layout(dsn)
    assert after == before  # same files, same data directory path: still the Debian layout
    assert after.hba_file == etc / "pg_hba.conf"
    assert not (after.data_directory / "postgresql.conf").exists()
    assert result.switchover.proof.timeline == 2
