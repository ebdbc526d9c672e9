"""The main job on the sandbox: everything up; a backup taken, verified, and used for a
point-in-time recovery behind an approval; the daily health check; then what it restored is
discarded (unless kept); all through deployments."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import typer
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from deployments.serve import load_specs
from flows.approval import answer_gate, wait_for_gate
from sandbox.platform import Sandbox
from sandbox.processes import venv_tool
from tasks.core.errors import RunbookError
from tasks.core.settings import CONFIG_ENV
from tasks.postgres.sql import connect, fetch_value, switch_wal, with_port

SERVE_READY_TIMEOUT_S = 180
PITR = "point-in-time-recovery/on-demand"
DISCARD = "discard-restored-cluster/on-demand"


class DemoError(RunbookError):
    """A step of the demo did not complete."""


def _say(text: str) -> None:
    typer.echo(f"==> {text}")


def start_serving(box: Sandbox) -> None:
    """(Re)start `runbook serve` so it serves this checkout's prefect.yaml, and wait until every
    deployment is registered."""
    names = [f"{spec.load_flow().name}/{spec.name}" for spec in load_specs()]

    def registered() -> bool:
        return all(
            httpx.get(f"{box.prefect_api_url}/deployments/name/{name}", timeout=5).status_code
            == 200
            for name in names
        )

    serve = box.daemon("serve")
    serve.stop()
    serve.start(
        [venv_tool("runbook"), "serve"],
        env=box.prefect_env(),
        ready=registered,
        timeout=SERVE_READY_TIMEOUT_S,
    )


def run_and_wait(name: str, parameters: dict[str, Any], timeout: int) -> FlowRun:
    run = run_deployment(name, parameters=parameters, timeout=timeout)
    assert isinstance(run, FlowRun)
    return _completed(name, run)


def _completed(name: str, run: FlowRun) -> FlowRun:
    if run.state is None or not run.state.is_completed():
        message = run.state.message if run.state else "no state"
        raise DemoError(
            f"{name} run {run.name} ended {run.state_name}: {message}",
            hint="open the run in the Prefect UI for its logs",
        )
    return run


def write_marker(box: Sandbox) -> tuple[str, str]:
    """Commit a marker row and archive its WAL; return (a time just before it, the marker)."""
    dsn = box.dsn()
    assert dsn is not None
    with connect(dsn) as conn:  # the table exists before the target; the marker after it
        conn.execute(
            "CREATE TABLE IF NOT EXISTS runbook_markers "
            "(note text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
        )
    time.sleep(1.1)
    before = datetime.now(UTC)
    time.sleep(1.1)
    marker = f"demo-marker-{before:%Y%m%dT%H%M%S}"
    with connect(dsn) as conn:
        conn.execute("INSERT INTO runbook_markers (note) VALUES (%s)", (marker,))
    segment = str(fetch_value(dsn, "SELECT pg_walfile_name(pg_current_wal_lsn())"))
    switch_wal(dsn)
    deadline = time.monotonic() + 60
    while str(fetch_value(dsn, "SELECT last_archived_wal FROM pg_stat_archiver")) < segment:
        if time.monotonic() > deadline:
            raise DemoError(
                "the marker's WAL was not archived within 60 s",
                hint="check archive_command in the sandbox's postgresql.conf",
            )
        time.sleep(0.2)
    return before.isoformat(), marker


def wait_for_state(run_id: UUID, states: set[str], timeout: int) -> FlowRun:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state_name in states or (run.state and run.state.is_final()):
                return run
            if time.monotonic() > deadline:
                raise DemoError(f"run {run.name} is still {run.state_name} after {timeout} s")
            time.sleep(0.5)


def recovery_step(box: Sandbox, ui: str, approve_as: str | None, timeout: int) -> Path | None:
    """Recover side by side to just before a new marker row; returns the restored copy's data
    directory (None when the run was left waiting for a person's approval)."""
    _say("Writing a marker row, then recovering side by side to just before it")
    target, marker = write_marker(box)
    run = run_deployment(PITR, parameters={"target_time": target}, timeout=0)
    assert isinstance(run, FlowRun)
    paused = wait_for_state(run.id, {"Paused"}, timeout)
    if paused.state_name != "Paused":
        _completed(PITR, paused)
    typer.echo(f"    run {run.name} waits for approval of its plan: {ui}/runs/flow-run/{run.id}")
    approve_line = f"runbook approve {run.id} --approver NAME --reason TEXT"
    if approve_as is None:
        typer.echo(f"    approve it in the UI, or: {approve_line}")
        return None
    typer.echo(f"    approving as {approve_as}  (what `{approve_line}` does)")
    wait_for_gate(run.id, "restore", timeout)
    answer_gate(run.id, approved=True, approver=approve_as, reason="runbook demo", step="restore")
    done = _completed(PITR, wait_for_state(run.id, set(), timeout))
    result = done.state.result()  # type: ignore[union-attr]
    typer.echo(result.markdown())
    restored = with_port(box.dsn(), result.plan.restore_to.port)  # type: ignore[arg-type]
    found = fetch_value(restored, "SELECT count(*) FROM runbook_markers WHERE note = %s", (marker,))
    typer.echo(
        f"    marker {marker}: {'present' if found else 'absent'} in the restored "
        "cluster (recovered to just before it); the live cluster keeps it"
    )
    return result.plan.restore_to.data_dir


def discard_step(restored: Path, approve_as: str, timeout: int) -> None:
    """Remove the demo's restored copy through the discard deployment, approving it."""
    _say(f"Discarding the restored copy through {DISCARD}")
    run = run_deployment(DISCARD, parameters={"path": str(restored)}, timeout=0)
    assert isinstance(run, FlowRun)
    paused = wait_for_state(run.id, {"Paused"}, timeout)
    if paused.state_name != "Paused":
        _completed(DISCARD, paused)
    typer.echo(f"    approving as {approve_as}")
    wait_for_gate(run.id, "discard", timeout)
    answer_gate(
        run.id, approved=True, approver=approve_as, reason="runbook demo cleanup", step="discard"
    )
    _completed(DISCARD, wait_for_state(run.id, set(), timeout))
    typer.echo(f"    removed {restored.parent} (its server stopped first)")


def health_step(box: Sandbox, timeout: int) -> None:
    from deployments.demo_health import run_health_check_step

    _say("Running the daily health check through daily-health-check/daily")
    typer.echo(run_health_check_step(box, timeout))


def run_demo(
    box: Sandbox, *, timeout: int, stop_after: bool, approve_as: str | None, keep: bool = False
) -> None:
    _say("Starting the sandbox (PostgreSQL 15 + pgBackRest + platform services)")
    box.up()
    _say("Starting the Prefect server")
    ui = box.start_prefect_server().removesuffix("/api")
    _say("Serving the deployments of prefect.yaml")
    start_serving(box)
    _say("Taking a full backup through take-backup/daily")
    backup = run_and_wait("take-backup/daily", {"kind": "full"}, timeout).state.result()  # type: ignore[union-attr]
    typer.echo(
        f"    backup {backup.label}: {backup.size_bytes / 1e6:.1f} MB in {backup.duration_s:.0f} s"
    )
    _say("Verifying it through verify-backup/on-demand")
    verify = run_and_wait("verify-backup/on-demand", {"backup_label": backup.label}, timeout)
    typer.echo(verify.state.result().markdown())  # type: ignore[union-attr]
    restored = recovery_step(box, ui, approve_as, timeout)
    health_step(box, timeout)
    if restored is not None and approve_as is not None and not keep:
        discard_step(restored, approve_as, timeout)
    elif restored is not None:
        typer.echo(
            f"    kept the restored copy {restored}; remove it with {DISCARD} "
            f"(parameter path={restored})"
        )
    typer.echo(f"Prefect UI: {ui}  (flow runs: {ui}/runs)")
    typer.echo(box.describe())
    if stop_after:
        box.down()
        typer.echo("Sandbox stopped.")
        return
    typer.echo(
        "\nNext:\n"
        "  .venv/bin/runbook sandbox status           what runs where\n"
        f"  open {ui}/deployments  run a recovery from its form\n"
        f"  export {CONFIG_ENV}={box.config_file}  then run flows from Python against the sandbox\n"
        "  .venv/bin/runbook sandbox down             stop everything (data stays for `up`)\n"
    )
