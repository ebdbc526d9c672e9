"""The ``runbook`` command: the sandbox, serving the deployments, and the demo (main job)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

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

    try:
        return Sandbox(load_system(SandboxSettings))
    except RunbookError as exc:
        _fail(exc)


def _fail(exc: RunbookError) -> NoReturn:
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


def use_prefect_api() -> str:
    """Aim this process at the Prefect API: the configured one, else the sandbox's own server.

    With neither ``RUNBOOK_PREFECT_API_URL`` nor ``PREFECT_API_URL`` set and a sandbox created
    from this checkout, re-runs this command with the sandbox's Prefect environment (Prefect reads
    its settings at import). Returns the API URL used.
    """
    configured = _configured_api_url()
    if configured is not None:
        os.environ.setdefault("PREFECT_API_URL", configured)
        return configured
    box = _sandbox()
    if box.config_file.exists():
        _reexec_with(box.prefect_env())
        return box.prefect_api_url
    return "the Prefect profile's API"


def _decide(run_id: str, approved: bool, approver: str, reason: str, step: str | None) -> None:
    from uuid import UUID

    from flows.approval import answer_gate, read_gate

    try:
        run = UUID(run_id)
    except ValueError:
        typer.echo(f"error: {run_id!r} is not a flow run id (a UUID)", err=True)
        raise typer.Exit(2) from None
    api = use_prefect_api()
    try:
        gate = read_gate(run, step)
        typer.echo(
            f"Run {gate.run_name} ({run}) waits at gate {gate.step!r}, plan {gate.plan_digest} "
            f"(Prefect API {api}):\n\n{gate.plan_markdown}\n"
        )
        gate = answer_gate(run, approved=approved, approver=approver, reason=reason, step=gate.step)
    except RunbookError as exc:
        _fail(exc)
    typer.echo(
        f"{'approval' if approved else 'rejection'} by {approver} delivered to gate "
        f"{gate.step!r} (plan {gate.plan_digest}); the run records its decision as the "
        f"approval-{gate.step} artifact"
    )


StepOption = Annotated[
    str | None,
    typer.Option(help="answer only if the run waits at this gate (restore, switchover, ...)"),
]


@app.command()
def approve(
    run_id: str,
    approver: Annotated[str, typer.Option(help="your name, recorded with the decision")],
    reason: Annotated[str, typer.Option(help="why (incident, ticket)")],
    step: StepOption = None,
) -> None:
    """Approve the gate a run waits at now: prints its step and plan, sends that step and the
    plan's digest, never waits or retries (exit 2 when the run is not waiting there)."""
    _decide(run_id, True, approver, reason, step)


@app.command()
def reject(
    run_id: str,
    approver: Annotated[str, typer.Option(help="your name, recorded with the decision")],
    reason: Annotated[str, typer.Option(help="why")] = "rejected",
    step: StepOption = None,
) -> None:
    """Reject the gate a run waits at now: the run stops, nothing changes (exit 2 when the run
    is not waiting at a gate)."""
    _decide(run_id, False, approver, reason, step)


@app.command()
def demo(
    down: Annotated[bool, typer.Option(help="stop the sandbox at the end")] = False,
    timeout: Annotated[int, typer.Option(help="seconds each flow run may take")] = 900,
    approve_as: Annotated[
        str | None, typer.Option(help="approve the demo's recovery yourself, as this name")
    ] = None,
    keep: Annotated[
        bool, typer.Option(help="keep the restored copy instead of discarding it at the end")
    ] = False,
) -> None:
    """The main job: sandbox, Prefect server, served deployments; a backup taken and verified,
    a point-in-time recovery behind an approval, the daily health check, and the restored copy
    discarded through discard-restored-cluster (unless --keep)."""
    from deployments.demo import run_demo

    box = _sandbox()
    try:
        if not box.config_file.exists():  # the environment below names files `up` creates
            typer.echo(f"==> Creating the sandbox in {box.root} (first run)")
            box.up()
        box.prefect_home.mkdir(parents=True, exist_ok=True)
        _reexec_with(box.prefect_env())
        if box.location_note:
            typer.echo(f"==> {box.location_note}")
        run_demo(box, timeout=timeout, stop_after=down, approve_as=approve_as, keep=keep)
    except RunbookError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
