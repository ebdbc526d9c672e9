"""Where the live cluster's files are: its data directory and its configuration files.

A cluster made with ``initdb`` keeps postgresql.conf, pg_hba.conf and pg_ident.conf in its data
directory, so a restored copy brings its own. One made the Debian way (``pg_createcluster``)
keeps them under ``/etc/postgresql/15/NAME``: a restored copy has none and must be started with
the live cluster's ``config_file``, and so must the live cluster when a switchover restarts it.
The server says where they are (``SHOW config_file``, ``data_directory``, ``hba_file``,
``ident_file``); ``RUNBOOK_PG_CONFIG_FILE`` says it when the server cannot be asked.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from tasks.core.errors import RefusedError
from tasks.core.runlog import run_logger
from tasks.core.settings import Settings
from tasks.postgres.cluster import LocalCluster, find_bin_dir
from tasks.postgres.sql import PostgresError, connect


class ClusterLayout(BaseModel):
    """Where a running server reads its data and configuration (paths on the server's host)."""

    data_directory: Path
    config_file: Path
    hba_file: Path
    ident_file: Path

    @property
    def external_config_file(self) -> Path | None:
        """``config_file`` when it is outside the data directory (Debian layout), else None."""
        return None if self.config_file.parent == self.data_directory else self.config_file


def read_layout(dsn: SecretStr) -> ClusterLayout:
    """The server's own answer (needs a superuser or ``pg_read_all_settings``).

    Raises:
        PostgresUnreachable, PostgresError.
    """
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('data_directory'), current_setting('config_file'),"
            " current_setting('hba_file'), current_setting('ident_file')"
        ).fetchone()
    assert row is not None  # a SELECT without FROM always returns its row
    return ClusterLayout(
        data_directory=row[0], config_file=row[1], hba_file=row[2], ident_file=row[3]
    )


def external_config_file(settings: Settings) -> Path | None:
    """The live cluster's postgresql.conf when it lives outside the data directory, else None.

    ``RUNBOOK_PG_CONFIG_FILE`` when set, else what the live server says; when the server cannot
    be asked (down, or a user without the right to read file locations), None: the data
    directory is taken to hold its configuration.

    Raises:
        RefusedError: the file is not on this machine (restored copies could not start).
    """
    configured = settings.postgres.config_file
    if configured is None:
        try:
            configured = read_layout(settings.live_dsn()).external_config_file
        except PostgresError as exc:
            run_logger().info(
                "Could not ask the live server where its configuration is (%s); taking it to be "
                "in the data directory (set RUNBOOK_PG_CONFIG_FILE otherwise)",
                exc.message,
            )
            return None
    if configured is not None and not configured.is_file():
        raise RefusedError(
            f"the live cluster's configuration {configured} is not on this machine, and "
            "restored copies of a cluster laid out that way have none of their own",
            hint="copy postgresql.conf (and the pg_hba.conf and pg_ident.conf it names) here "
            "and set RUNBOOK_PG_CONFIG_FILE to it",
        )
    return configured


def live_cluster(settings: Settings) -> LocalCluster:
    """The live cluster as a ``LocalCluster``: data directory, the DSN's port, its configuration.

    Raises:
        RefusedError: no live data directory is configured.
        ToolMissing: no PostgreSQL binaries.
    """
    data_dir = settings.postgres.data_dir
    if data_dir is None:
        raise RefusedError(
            "this needs the live cluster's data directory", hint="set RUNBOOK_PG_DATA_DIR"
        )
    return LocalCluster(
        data_dir,
        urlsplit(settings.live_dsn().get_secret_value()).port or 5432,
        find_bin_dir(settings.postgres.bin_dir),
        settings.postgres.os_user,
        external_config_file(settings),
    )
