"""Shared fixtures: real sandboxes (PostgreSQL 15 + pgBackRest) and a real Prefect server.

Sandboxes live under /tmp so that the ``postgres`` OS user can reach them when tests run as root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from sandbox.platform import Sandbox  # noqa: E402
from tasks.backups.base import BackupKind  # noqa: E402
from tasks.backups.pgbackrest import PgBackRest  # noqa: E402
from tasks.core.settings import CONFIG_ENV, SandboxSettings, Settings, load_settings
from tasks.postgres.cluster import free_port


def make_sandbox() -> Sandbox:
    root = Path(tempfile.mkdtemp(prefix="runbook-test-", dir="/tmp"))
    box = Sandbox(SandboxSettings(dir=root, pg_port=free_port(), prefect_port=free_port()))
    try:
        box.up()
    except BaseException:  # a half-started sandbox must not outlive the failed fixture
        destroy_sandbox(box)
        raise
    return box


def destroy_sandbox(box: Sandbox) -> None:
    box.down()
    shutil.rmtree(box.root, ignore_errors=True)


@pytest.fixture(scope="session")
def platform() -> Iterator[Sandbox]:
    """One sandbox for the session, with a full backup; tests leave it as they found it."""
    box = make_sandbox()
    engine_for(box).take_backup(BackupKind.FULL)
    yield box
    destroy_sandbox(box)


@pytest.fixture
def fresh_platform() -> Iterator[Sandbox]:
    """A sandbox of this test's own, for tests that damage or stop it."""
    box = make_sandbox()
    yield box
    destroy_sandbox(box)


def settings_for(box: Sandbox) -> Settings:
    saved = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = str(box.config_file)
    try:
        return load_settings()
    finally:
        if saved is None:
            del os.environ[CONFIG_ENV]
        else:
            os.environ[CONFIG_ENV] = saved


def engine_for(box: Sandbox, **overrides: float) -> PgBackRest:
    settings = settings_for(box)
    return PgBackRest(
        stanza=settings.backup.stanza,
        config=settings.backup.config,
        bin_dir=box.cluster().bin_dir,
        os_user=settings.postgres.os_user,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def use_platform(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sandbox], Settings]:
    """Aim flows at a sandbox (through RUNBOOK_CONFIG) and return its settings."""

    def use(box: Sandbox) -> Settings:
        monkeypatch.setenv(CONFIG_ENV, str(box.config_file))
        return load_settings()

    return use


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (SQLite) for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


def scratch_leftovers(box: Sandbox) -> list[Path]:
    scratch = box.root / "scratch"
    return [p for p in scratch.iterdir()] if scratch.exists() else []


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    """A temporary directory the ``postgres`` OS user can reach (pytest's tmp_path is under a
    0700 directory when we are root)."""
    path = Path(tempfile.mkdtemp(prefix="runbook-tmp-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def history() -> Iterator[tuple]:
    """A sandbox of the requesting module's own: a full backup, then marker stages 1..3 archived
    after it (``tests.recovery_support``); yields ``(box, stages)``."""
    from tests.recovery_support import make_history

    box, stages = make_history()
    yield box, stages
    destroy_sandbox(box)
