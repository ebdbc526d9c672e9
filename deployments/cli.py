"""The ``runbook`` command: the sandbox, serving the deployments, and the demo (main job)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from deployments.incident_cli import incident_app
from tasks.core.errors import RunbookError
from tasks.core.settings import PrefectSettings, SandboxSettings, load_system

if TYPE_CHECKING:
    from sandbox.platform import Sandbox

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="The Linkist NFC operations runbook as Prefect flows.",
)
sandbox_app = typer.Typer(no_args_is_help=True, help="The embedded sandbox platform.")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(incident_app, name="incident")


def _sandbox() -> Sandbox:
    from sandbox.platform import Sandbox

    return Sandbox(load_system(SandboxSettings))


def _fail(exc: RunbookError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _configured_api_url() -> str | None:
    return load_system(PrefectSettings).api_url or os.environ.get("PREFECT_API_URL")


def _reexec_with(env: dict[str, str]) -> None:
    """Prefect reads its settings at import: re-run this command with the sandbox's environment."""
    if any(os.environ.get(key) != value for key, value in env.items()):
        os.execvpe(sys.argv[0], sys.argv, {**os.environ, **env})  # noqa: S606


@sandbox_app.command("up")
def sandbox_up() -> None:
    """Start the sandbox (creating it the first time); does nothing if it already runs."""
    try:
        box = _sandbox()
        box.up()
    except RunbookError as exc:
        _fail(exc)
    typer.echo(box.describe())


@sandbox_app.command("down")
def sandbox_down() -> None:
    """Stop everything the sandbox started (its data stays for the next `up`)."""
    try:
        _sandbox().down()
    except RunbookError as exc:
        _fail(exc)
    typer.echo("sandbox stopped")


@sandbox_app.command("status")
def sandbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable, with the DSN")] = False,
) -> None:
    """What runs where."""
    box = _sandbox()
    if as_json:
        json.dump(box.status().as_json(), sys.stdout, indent=2)
        typer.echo()
    else:
        typer.echo(box.describe())


@app.command()
def serve() -> None:
    """Serve the deployments of prefect.yaml against the configured Prefect API.

    With no RUNBOOK_PREFECT_API_URL or PREFECT_API_URL, serve the sandbox: start it and a local
    Prefect server on 127.0.0.1 (SQLite under the sandbox directory) first.
    """
    from deployments.serve import serve_all

    try:
        if _configured_api_url() is None:
            box = _sandbox()
            box.up()
            box.start_prefect_server()
            _reexec_with(box.prefect_env())
        serve_all()
    except RunbookError as exc:
        _fail(exc)


def _decide(run_id: str, approved: bool, approver: str, reason: str) -> None:
    from uuid import UUID

    from flows.approval import answer_approval

    try:
        answer_approval(UUID(run_id), approved=approved, approver=approver, reason=reason)
    except ValueError:
        typer.echo(f"error: {run_id!r} is not a flow run id (a UUID)", err=True)
        raise typer.Exit(2) from None
    except RunbookError as exc:
        _fail(exc)
    typer.echo(f"{'approved' if approved else 'rejected'} run {run_id} as {approver}")


@app.command()
def approve(
    run_id: str,
    approver: Annotated[str, typer.Option(help="your name, recorded with the decision")],
    reason: Annotated[str, typer.Option(help="why (incident, ticket)")],
) -> None:
    """Approve the plan a paused recovery is waiting on (through the Prefect API)."""
    _decide(run_id, True, approver, reason)


@app.command()
def reject(
    run_id: str,
    approver: Annotated[str, typer.Option(help="your name, recorded with the decision")],
    reason: Annotated[str, typer.Option(help="why")] = "rejected",
) -> None:
    """Reject the plan a paused recovery is waiting on: the run stops, nothing changes."""
    _decide(run_id, False, approver, reason)


@app.command()
def demo(
    down: Annotated[bool, typer.Option(help="stop the sandbox at the end")] = False,
    timeout: Annotated[int, typer.Option(help="seconds each flow run may take")] = 900,
    approve_as: Annotated[
        str | None, typer.Option(help="approve the demo's recovery yourself, as this name")
    ] = None,
) -> None:
    """The main job: sandbox, Prefect server, served deployments; a backup taken and verified,
    a point-in-time recovery behind an approval, and the daily health check."""
    from deployments.demo import run_demo

    box = _sandbox()
    try:
        if not box.config_file.exists():  # the environment below names files `up` creates
            typer.echo("==> Creating the sandbox (first run)")
            box.up()
        box.prefect_home.mkdir(parents=True, exist_ok=True)
        _reexec_with(box.prefect_env())
        run_demo(box, timeout=timeout, stop_after=down, approve_as=approve_as)
    except RunbookError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
