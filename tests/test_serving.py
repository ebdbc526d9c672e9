"""prefect.yaml, `runbook serve` and `runbook sandbox`: as people and other services use them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from deployments.serve import load_specs, runner_deployments
from sandbox.platform import Sandbox
from tasks.core.errors import RefusedError
from tasks.core.settings import SandboxSettings
from tasks.postgres.cluster import free_port

RUNBOOK = str(Path(sys.executable).parent / "runbook")


def test_prefect_yaml_schedules_parse_and_name_existing_flows_with_valid_parameters(
    monkeypatch,
):
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_SCHEDULE_TIMEZONE", "Europe/Berlin")
    maintenance = {
        "daily-health-check/daily": "0 7 * * *",
        "weekly-performance-review/weekly": "0 8 * * 1",
        "weekly-security-review/weekly": "30 8 * * 1",
        "monthly-system-updates/monthly": "0 9 1 * *",
        "monthly-capacity-planning/monthly": "30 9 1 * *",
    }
    specs = load_specs()
    names = {f"{s.load_flow().name}/{s.name}" for s in specs}
    assert {"take-backup/daily", "verify-backup/daily", "verify-backup/on-demand"} <= names
    assert set(maintenance) <= names
    deployments = runner_deployments(specs)  # validates parameters against each flow
    by_name = {f"{s.load_flow().name}/{s.name}": d for s, d in zip(specs, deployments, strict=True)}
    assert by_name["verify-backup/on-demand"].schedules == []
    for name in ("take-backup/daily", "verify-backup/daily"):
        (schedule,) = by_name[name].schedules
        assert schedule.slug and schedule.schedule.cron
    for name, cron in maintenance.items():  # in the configured timezone
        (schedule,) = by_name[name].schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, "Europe/Berlin")
    slugs = [s.slug for spec in specs for s in spec.schedules]
    assert len(slugs) == len(set(slugs))


@pytest.fixture(scope="module")
def served(prefect_server, platform, tmp_path_factory) -> Iterator[str]:
    """`runbook serve` in its own process against the test Prefect server; yields the API URL."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
        "RUNBOOK_CONFIG": str(platform.config_file),
    }
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [RUNBOOK, "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        for name in ("verify-backup/on-demand", "point-in-time-recovery/on-demand"):
            while httpx.get(f"{prefect_server}/deployments/name/{name}").status_code != 200:
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "deployments were not registered in 90 s"
                time.sleep(0.5)
        yield prefect_server
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_served_deployment_runs_verify_backup_as_another_service_would(served):
    run = run_deployment(
        "verify-backup/on-demand", parameters={}, timeout=300, idempotency_key="test-served-verify"
    )
    assert isinstance(run, FlowRun)
    assert run.state.is_completed(), run.state.message
    assert run.state.result().passed
    again = run_deployment(
        "verify-backup/on-demand", parameters={}, timeout=0, idempotency_key="test-served-verify"
    )
    assert again.id == run.id  # the same idempotency key does not start a second run


def poll_state(api: str, run_id: str, until: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{api}/flow_runs/{run_id}").json()
        if run["state"]["type"] in until:
            return run
        assert time.monotonic() < deadline, f"run stayed {run['state']['type']}"
        time.sleep(0.3)


def test_another_service_starts_approves_and_reads_a_served_recovery_over_rest(served, platform):
    from prefect.client.orchestration import get_client

    from tasks.postgres.scratch import remove_scratch_cluster
    from tests.conftest import settings_for
    from tests.test_backups import commit_and_archive

    dsn = settings_for(platform).live_dsn()
    commit_and_archive(dsn)
    target = datetime.now(UTC).isoformat()
    time.sleep(1.1)
    commit_and_archive(dsn)
    deployment = httpx.get(f"{served}/deployments/name/point-in-time-recovery/on-demand").json()
    body = {"parameters": {"target_time": target}, "idempotency_key": f"pitr-{target}"}
    created = httpx.post(f"{served}/deployments/{deployment['id']}/create_flow_run", json=body)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    duplicate = httpx.post(f"{served}/deployments/{deployment['id']}/create_flow_run", json=body)
    assert duplicate.json()["id"] == run_id

    poll_state(served, run_id, {"PAUSED"})
    decision = {"approved": True, "approver": "ops-bot", "reason": "test"}
    unbound = httpx.post(f"{served}/flow_runs/{run_id}/resume", json={"run_input": decision})
    assert unbound.json()["status"] == "REJECT"  # no step, no plan digest: refused, still paused
    deadline = time.monotonic() + 30
    while True:  # the README's calls: read the gate from the form's schema, answer it bound
        keyset = httpx.get(f"{served}/flow_runs/{run_id}").json()["state"]["state_details"]
        form = httpx.get(
            f"{served}/flow_runs/{run_id}/input/{keyset['run_input_keyset']['schema']}"
        )
        if form.status_code == 200:  # the run saves its form a moment after it pauses
            break
        assert time.monotonic() < deadline, form.text
        time.sleep(0.3)
    fields = form.json()["properties"]
    decision |= {"step": fields["step"]["default"], "plan_digest": fields["plan_digest"]["default"]}
    resumed = httpx.post(f"{served}/flow_runs/{run_id}/resume", json={"run_input": decision})
    assert resumed.json()["status"] == "ACCEPT", resumed.text

    final = poll_state(served, run_id, {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
    assert final["state"]["type"] == "COMPLETED", final["state"]["message"]
    with get_client(sync_client=True) as client:
        result = client.read_flow_run(run_id).state.result()
    try:
        assert result.outcome == "restored" and result.verified
        assert result.decisions[0].approver == "ops-bot"
    finally:
        remove_scratch_cluster.fn(result.plan.restore_to)


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


def test_demo_health_step_runs_the_served_daily_check_and_returns_its_summary(served, platform):
    from deployments.demo_health import DEPLOYMENT, run_health_check_step

    deadline = time.monotonic() + 60  # serve registers the deployments one after another
    while httpx.get(f"{served}/deployments/name/{DEPLOYMENT}").status_code != 200:
        assert time.monotonic() < deadline, f"{DEPLOYMENT} was not registered in 60 s"
        time.sleep(0.5)
    summary = run_health_check_step(platform, timeout=300)
    assert summary.startswith("final state: Unhealthy\ndaily-health-check: FAIL")
    assert "postgres  status" in summary
    assert "what to do:" in summary
