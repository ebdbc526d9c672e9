"""``runbook incident``: the open incidents, and acting on one.

``list`` and ``show`` read the incident store. ``ack``, ``update`` and ``resolve`` send a
command to the incident's run through the Prefect API (a run input: see
``tasks.incidents.commands``), then wait until the run has recorded it on the timeline, when
the store is reachable from here. With no Prefect API exported (``RUNBOOK_PREFECT_API_URL`` or
``PREFECT_API_URL``), both are the sandbox's, found the way ``runbook demo`` finds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from prefect.exceptions import PrefectHTTPStatusError

from tasks.core.errors import RefusedError, RunbookError
from tasks.core.settings import IncidentSettings, load_system
from tasks.core.units import exact_duration
from tasks.incidents.commands import (
    IncidentCommand,
    api_url,
    check_command,
    send_command,
    wait_until_applied,
)
from tasks.incidents.policy import next_due
from tasks.incidents.store import DirectoryStore, incident_state, open_incidents

incident_app = typer.Typer(
    no_args_is_help=True, help="Incidents: list, show, acknowledge, update, resolve."
)

By = Annotated[str, typer.Option("--by", help="who acts (recorded on the timeline)")]
Note = Annotated[str, typer.Option(help="what you found or did")]
NewStatus = Annotated[str, typer.Option(help="investigating, identified or monitoring")]
NewSeverity = Annotated[str, typer.Option(help="P0..P3; raising it pages again")]
Expected = Annotated[str, typer.Option(help="when you expect it resolved, in your words")]
Wait = Annotated[float, typer.Option(help="seconds to wait for the run to apply it (0: none)")]


def _use_prefect_and_settings() -> None:
    """The exported Prefect API and settings; with none exported, the sandbox's."""
    from deployments.cli import _configured_api_url, _reexec_with, _sandbox

    if _configured_api_url() is not None:
        return
    box = _sandbox()
    if not box.config_file.exists():
        _fail(
            RefusedError(
                f"no Prefect API is exported and there is no sandbox in {box.root}",
                hint="export PREFECT_API_URL (and RUNBOOK_CONFIG for the incident store), or "
                "start the sandbox with `runbook sandbox up`",
            )
        )
    _reexec_with(box.prefect_env())


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _store() -> DirectoryStore:
    try:
        return DirectoryStore(load_system(IncidentSettings).state_dir)
    except RunbookError as exc:
        _fail(exc)


@incident_app.command("list")
def list_open() -> None:
    """One line per open incident: id, severity, service, status, summary."""
    _use_prefect_and_settings()
    store = _store()
    try:
        states = open_incidents(store)
    except RunbookError as exc:
        _fail(exc)
    if not states:
        typer.echo(f"no open incidents (store {store.root})")
    for state in states:
        r = state.record
        typer.echo(
            f"{r.id}  {state.severity}  {r.service:<16} {state.status:<13} {r.mark}{r.summary}"
        )


@incident_app.command("show")
def show(incident_id: str) -> None:
    """The incident: what opened it, where it stands, what is due next, and its timeline."""
    _use_prefect_and_settings()
    store = _store()
    try:
        state = incident_state(store, incident_id)
        run = store.liveness(incident_id)
    except RunbookError as exc:
        _fail(exc)
    r = state.record
    upcoming = next_due(state)
    lines = [
        f"{r.mark}{r.id}  {state.severity} (opened as {r.severity})  {r.service}: {r.summary}",
        f"  status       {state.status}",
        f"  opened       {r.opened_at:%Y-%m-%d %H:%M:%S %Z} by {r.source}",
        f"  acknowledged {state.acknowledged_by or 'not yet'}",
        "  next due     "
        + (f"{upcoming.at:%H:%M:%S} {upcoming.what} {upcoming.level}" if upcoming else "-"),
    ]
    if run:
        lines.append(f"  run          {run.run_name} ({run.run_id}), seen {run.last_seen:%H:%M:%S}")
    if state.resolved_at:
        took = exact_duration((state.resolved_at - r.opened_at).total_seconds())
        lines.append(f"  resolved     by {state.resolved_by} after {took}")
    lines += ["", "timeline:"]
    lines += [f"  {e.at:%H:%M:%S}  {e.actor:<18} {e.kind:<16} {e.text}" for e in state.events]
    typer.echo("\n".join(lines))


def _act(incident_id: str, sent: IncidentCommand, wait: float) -> None:
    """Check the command, send it to the incident's run, and wait until it is applied."""
    _use_prefect_and_settings()
    try:
        command = check_command(sent)
        delivered = send_command(incident_id, command)
    except RunbookError as exc:
        _fail(exc)
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        _fail(
            RunbookError(
                f"the Prefect API {api_url()} did not take the command: {exc}",
                hint="check that the API is up and that PREFECT_API_URL names it",
            )
        )
    typer.echo(
        f"sent {command.action} for {incident_id} to run {delivered.run_name} "
        f"({delivered.run_state}) on {api_url()}"
    )
    store = _store()
    if wait <= 0 or not Path(store.root).is_dir():
        return
    applied = wait_until_applied(store, incident_id, delivered.key, wait)
    for event in applied:
        typer.echo(f"  {event.at:%H:%M:%S}  {event.text}")
    if not applied:
        typer.echo(
            f"not applied within {wait:g} s: the run may be restarting (the incident-watchdog "
            f"continues a dead one within a minute, and it applies this then); check with "
            f"`runbook incident show {incident_id}`"
        )


def _command(name: str, action: str, summary: str) -> None:
    """Register ``runbook incident <name>``, sending ``action`` with its options."""

    def send(
        incident_id: str,
        by: By = "",
        note: Note = "",
        status: NewStatus = "",
        severity: NewSeverity = "",
        expected_resolution: Expected = "",
        wait: Wait = 30,
    ) -> None:
        fields = {"note": note, "status": status, "severity": severity}
        sent = IncidentCommand(
            action=action, by=by, expected_resolution=expected_resolution, **fields
        )
        _act(incident_id, sent, wait)

    incident_app.command(name, help=summary)(send)


_command(
    "ack", "acknowledge", "Acknowledge: stops the escalation (a raise of severity pages again)."
)
_command("update", "update", "Record progress: a note (current actions), status, severity, ETA.")
_command("resolve", "resolve", "Resolve: the team is told, the report is written, the run ends.")
