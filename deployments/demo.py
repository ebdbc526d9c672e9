"""The main job on the sandbox: everything up, a backup taken and verified through deployments."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from sandbox.platform import Sandbox
from sandbox.processes import venv_tool
from tasks.errors import RunbookError

SERVE_READY_TIMEOUT_S = 120
DEPLOYMENTS = ("take-backup/daily", "verify-backup/daily", "verify-backup/on-demand")


class DemoError(RunbookError):
    """A step of the demo did not complete."""


def _say(text: str) -> None:
    typer.echo(f"==> {text}")


def start_serving(box: Sandbox) -> None:
    """Start `runbook serve` in the background and wait until its deployments are registered."""

    def registered() -> bool:
        return all(
            httpx.get(f"{box.prefect_api_url}/deployments/name/{name}", timeout=5).status_code
            == 200
            for name in DEPLOYMENTS
        )

    box.daemon("serve").start(
        [venv_tool("runbook"), "serve"],
        env=box.prefect_env(),
        ready=registered,
        timeout=SERVE_READY_TIMEOUT_S,
    )


def run_and_wait(name: str, parameters: dict[str, Any], timeout: int) -> FlowRun:
    run = run_deployment(name, parameters=parameters, timeout=timeout)
    assert isinstance(run, FlowRun)
    if run.state is None or not run.state.is_completed():
        message = run.state.message if run.state else "no state"
        raise DemoError(
            f"{name} run {run.name} ended {run.state_name}: {message}",
            hint="open the run in the Prefect UI for its logs",
        )
    return run


def run_demo(box: Sandbox, *, timeout: int, stop_after: bool) -> None:
    _say("Starting the sandbox (PostgreSQL 15 + pgBackRest)")
    box.up()
    _say("Starting the Prefect server")
    ui = box.start_prefect_server().removesuffix("/api")
    _say("Serving the deployments of prefect.yaml")
    start_serving(box)
    _say("Taking a full backup through take-backup/daily")
    backup_run = run_and_wait("take-backup/daily", {"kind": "full"}, timeout)
    backup = backup_run.state.result()  # type: ignore[union-attr]
    typer.echo(
        f"    backup {backup.label}: {backup.size_bytes / 1e6:.1f} MB in {backup.duration_s:.0f} s"
    )
    _say("Verifying it through verify-backup/on-demand")
    verify_run = run_and_wait("verify-backup/on-demand", {"backup_label": backup.label}, timeout)
    report = verify_run.state.result()  # type: ignore[union-attr]
    typer.echo(report.markdown())
    typer.echo(f"Prefect UI: {ui}  (flow runs: {ui}/runs)")
    typer.echo(box.describe())
    if stop_after:
        box.down()
        typer.echo("Sandbox stopped.")
        return
    typer.echo(
        "\nNext:\n"
        "  runbook sandbox status            what runs where\n"
        f"  open {ui}/deployments   run verify-backup/on-demand from the UI\n"
        "  runbook sandbox down              stop everything (data stays for the next `up`)\n"
    )
