"""A checkout anywhere: the sandbox lives in the checkout, whatever the current directory, or,
when the ``postgres`` OS user cannot reach the checkout (under /root, in a ``mktemp -d``
directory), in a directory under /var/tmp named from it, which every ``runbook`` command run
from that checkout finds again.

The end-to-end test copies this checkout's files (those git tracks or would track, as they are
now) into a 0700 directory and runs that copy's ``runbook`` from other directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

import sandbox.platform
from sandbox.platform import sandbox_location
from tasks.core.errors import RefusedError
from tasks.postgres.cluster import free_port
from tasks.postgres.sql import fetch_value

HERE = Path(__file__).resolve().parents[1]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the postgres OS user matters as root")


@pytest.fixture
def closed_dir() -> Iterator[Path]:
    """A ``mktemp -d`` directory: mode 700, so the postgres OS user cannot enter it."""
    path = Path(tempfile.mkdtemp(prefix="runbook-checkout-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def place_of(checkout: Path) -> Path:
    """Where the sandbox of ``checkout`` lives when the postgres OS user cannot reach it."""
    original = sandbox.platform.CHECKOUT
    sandbox.platform.CHECKOUT = checkout
    try:
        return sandbox_location(None)[0]
    finally:
        sandbox.platform.CHECKOUT = original


@as_root
def test_a_closed_checkout_gets_its_own_sandbox_under_var_tmp_saying_why(closed_dir, monkeypatch):
    checkout = closed_dir / "linkist-runbook"
    (checkout / "pyproject.toml").parent.mkdir()
    (checkout / "pyproject.toml").touch()
    other = closed_dir / "elsewhere" / "linkist-runbook"
    (other / "pyproject.toml").parent.mkdir(parents=True)
    (other / "pyproject.toml").touch()
    monkeypatch.setattr(sandbox.platform, "CHECKOUT", checkout)

    where, note = sandbox_location(None)

    assert where.parent == sandbox.platform.SHARED_TMP and where.name.startswith(
        "runbook-sandbox-linkist-"
    )
    assert f"cannot reach {checkout / '.sandbox'}" in note and str(where) in note
    assert sandbox_location(None) == (where, note), "the same checkout finds the same place"
    assert place_of(other) != where, "two checkouts of one name must not share a sandbox"
    assert sandbox_location(Path("/srv/box")) == (Path("/srv/box"), "")


def test_a_reachable_checkout_keeps_its_sandbox_in_the_checkout_whatever_the_cwd(monkeypatch):
    checkout = Path(tempfile.mkdtemp(prefix="runbook-checkout-", dir="/tmp"))
    try:
        checkout.chmod(0o755)
        (checkout / "pyproject.toml").touch()
        monkeypatch.setattr(sandbox.platform, "CHECKOUT", checkout)
        monkeypatch.chdir("/")
        assert sandbox_location(None) == (checkout / ".sandbox", "")
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


def test_a_sandbox_symlink_in_the_checkout_is_followed(closed_dir, monkeypatch):
    checkout = closed_dir / "linked"
    checkout.mkdir()
    (checkout / "pyproject.toml").touch()
    elsewhere = Path(tempfile.mkdtemp(prefix="runbook-linked-", dir="/tmp"))
    try:
        (checkout / ".sandbox").symlink_to(elsewhere)
        monkeypatch.setattr(sandbox.platform, "CHECKOUT", checkout)
        assert sandbox_location(None) == (elsewhere, "")
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


@as_root
def test_a_squatted_var_tmp_directory_is_refused(closed_dir, monkeypatch):
    checkout = closed_dir / "squatted"
    checkout.mkdir()
    (checkout / "pyproject.toml").touch()
    monkeypatch.setattr(sandbox.platform, "CHECKOUT", checkout)
    where = sandbox_location(None)[0]
    where.symlink_to(closed_dir)
    try:
        with pytest.raises(RefusedError, match="symlink or belongs to another user"):
            sandbox_location(None)
    finally:
        where.unlink()


def copy_checkout(to: Path) -> Path:
    """This checkout's files as they are now (tracked, or untracked and not ignored), at ``to``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=HERE,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = HERE / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


@as_root
def test_runbook_from_a_closed_checkout_runs_the_sandbox_elsewhere_and_finds_it_again(closed_dir):
    checkout = copy_checkout(closed_dir / "linkist-runbook")
    expected = place_of(checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env |= {
        "PYTHONPATH": str(checkout),  # that copy's code, with this environment's packages
        "RUNBOOK_SANDBOX_PG_PORT": str(free_port()),
        "RUNBOOK_SANDBOX_PREFECT_PORT": str(free_port()),
    }

    def runbook(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "deployments.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    try:
        up = runbook("sandbox", "up", cwd="/")
        assert f"sandbox {expected}" in up.stdout and "cannot reach" in up.stdout

        status = json.loads(runbook("sandbox", "status", "--json", cwd=str(closed_dir)).stdout)
        assert Path(status["dir"]) == expected and status["postgres_running"]
        assert fetch_value(SecretStr(status["dsn"]), "SELECT count(*) FROM users")

        runbook("sandbox", "down", cwd=str(checkout / "tasks"))
        after = json.loads(runbook("sandbox", "status", "--json", cwd=str(checkout)).stdout)
        assert not after["postgres_running"] and not any(after["processes"].values())
        assert (expected / "pg" / "data" / "PG_VERSION").exists()
        assert not (checkout / ".sandbox").exists() and not Path("/.sandbox").exists()
    finally:
        subprocess.run(
            [sys.executable, "-P", "-m", "deployments.cli", "sandbox", "down"],
            cwd="/",
            env=env,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(expected, ignore_errors=True)
