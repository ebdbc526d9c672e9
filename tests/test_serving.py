"""prefect.yaml, `runbook serve` and `runbook sandbox`: as people and other services use them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from deployments.serve import load_specs, runner_deployments
from sandbox.platform import Sandbox
from tasks.cluster import free_port
from tasks.errors import RefusedError
from tasks.settings import SandboxSettings

RUNBOOK = str(Path(sys.executable).parent / "runbook")


def test_prefect_yaml_schedules_parse_and_name_existing_flows_with_valid_parameters():
    specs = load_specs()
    names = {f"{s.load_flow().name}/{s.name}" for s in specs}
    assert {"take-backup/daily", "verify-backup/daily", "verify-backup/on-demand"} <= names
    deployments = runner_deployments(specs)  # validates parameters against each flow
    by_name = {f"{s.load_flow().name}/{s.name}": d for s, d in zip(specs, deployments, strict=True)}
    assert by_name["verify-backup/on-demand"].schedules == []
    for name in ("take-backup/daily", "verify-backup/daily"):
        (schedule,) = by_name[name].schedules
        assert schedule.slug and schedule.schedule.cron
    slugs = [s.slug for spec in specs for s in spec.schedules]
    assert len(slugs) == len(set(slugs))


def test_served_deployment_runs_verify_backup_as_another_service_would(
    prefect_server, platform, tmp_path
):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
        "RUNBOOK_CONFIG": str(platform.config_file),
    }
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [RUNBOOK, "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wanted = f"{prefect_server}/deployments/name/verify-backup/on-demand"
    try:
        deadline = time.monotonic() + 90
        while httpx.get(wanted).status_code != 200:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "deployments were not registered in 90 s"
            time.sleep(0.5)
        run = run_deployment(
            "verify-backup/on-demand",
            parameters={},
            timeout=300,
            idempotency_key="test-served-verify",
        )
        assert isinstance(run, FlowRun)
        assert run.state.is_completed(), (tmp_path / "serve.log").read_text()[-3000:]
        report = run.state.result()
        assert report.passed
        again = run_deployment(
            "verify-backup/on-demand",
            parameters={},
            timeout=0,
            idempotency_key="test-served-verify",
        )
        assert again.id == run.id  # the same idempotency key does not start a second run
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_sandbox_status_json_gives_dsn_api_repo_and_pids(platform):
    out = subprocess.run(
        [RUNBOOK, "sandbox", "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "RUNBOOK_SANDBOX_DIR": str(platform.root),
            "RUNBOOK_SANDBOX_PG_PORT": str(platform.settings.pg_port),
            "RUNBOOK_SANDBOX_PREFECT_PORT": str(platform.settings.prefect_port),
        },
    ).stdout
    status = json.loads(out)
    assert status["dsn"].startswith("postgresql://")
    assert status["prefect_api_url"].startswith("http://127.0.0.1:")
    assert status["pgbackrest_repo"] == str(platform.repo)
    assert status["postgres_running"] is True
    assert status["processes"]["postgres"] == platform.cluster().pid()


def test_sandbox_up_is_idempotent(platform):
    pid = platform.cluster().pid()
    platform.up()
    assert platform.cluster().pid() == pid


def test_sandbox_on_a_taken_port_is_refused_naming_the_port_and_creating_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        box = Sandbox(SandboxSettings(dir=tmp_path / "box", pg_port=port, prefect_port=free_port()))
        with pytest.raises(RefusedError, match=f"port {port}.*RUNBOOK_SANDBOX_PG_PORT"):
            box.up()
    assert not (tmp_path / "box").exists()
