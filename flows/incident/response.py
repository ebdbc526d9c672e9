"""RUNBOOK.md, Incident Response: one ``incident-response`` run per incident, Running from the
alert to the resolution, ending Completed (named ``Resolved``).

1. Alert received: the trigger is checked and the incident opened in the incident store (or,
   while one with the same ``dedup_key`` is open, the trigger is added to its timeline and
   this run ends at once, named ``Triggered again``).
2. Initial assessment: the existing checks run beside the response and land on the timeline.
3. Immediate actions: the primary is paged at once (and management for a P0); without an
   acknowledgement the secondary, then the manager, at the severity's times.
4. Investigation: acknowledge, update and resolve arrive as run inputs (``runbook incident``);
   the team channel hears an update at each update time.
5. Resolution: someone resolves it.
6. Post-incident: the team is told, and the report is written (artifact and S3).

``incident_id`` continues an existing incident instead (the incident-watchdog starts such a run
when an incident's run died): its timers still count from the opening, and nobody already
paged is paged again. ``drill`` marks everything sent as a drill; ``time_scale`` (drills only)
runs every timer that many times faster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.settings import PREFECT_UI_URL
from prefect.states import Cancelled, Completed, State

from flows.incident.respond import (
    Responder,
    carry_out_due,
    respond_until_resolved,
    start_assessment,
    this_run,
)
from tasks.core.errors import RefusedError, RunbookError
from tasks.core.events import emit_flow_failure
from tasks.core.reports import publish_markdown
from tasks.core.settings import (
    IncidentSettings,
    ServicesSettings,
    Settings,
    Severity,
    load_settings,
    load_system,
)
from tasks.incidents.lifecycle import check_request, open_incident, tag_incident_run, take_over
from tasks.incidents.models import RUNBOOK_ACTOR, IncidentOutcome, IncidentRecord, TimelineEvent
from tasks.incidents.paging import deliver_pages, resolved_pages
from tasks.incidents.report import build_report, render_report, report_key, store_report
from tasks.incidents.state import IncidentState
from tasks.incidents.store import DirectoryStore, incident_state

FLOW = "incident-response"
DEPLOYMENT = f"{FLOW}/on-demand"


@flow(name=FLOW, persist_result=True, on_failure=[emit_flow_failure])
def incident_response(
    severity: Severity | None = None,
    service: str | None = None,
    summary: str = "",
    source: str = "a person",
    dedup_key: str | None = None,
    drill: bool = False,
    time_scale: float = 1.0,
    incident_id: str | None = None,
) -> IncidentOutcome | State[Any]:
    """Respond to an incident from its alert to its report (see the module docstring)."""
    settings, services = load_system(IncidentSettings), load_system(ServicesSettings)
    platform = platform_settings()
    store, run = DirectoryStore(settings.state_dir), this_run()
    # 1. Alert received
    if incident_id is None:
        request = check_request(
            severity, service, summary, source, dedup_key, drill, time_scale, settings, services
        )
        record, opened = open_incident(store, request, settings, run)
        if not opened:
            return triggered_again(record)
        state = incident_state(store, record.id)
    else:
        refuse_new_incident_fields(incident_id, severity, service, summary)
        state = take_over(store, incident_id, run)
    responder = Responder(store, state.record.id, run, settings)
    # 3. Immediate actions: the primary (and management, for a P0) before anything else
    carry_out_due(responder, state)
    tag_incident_run(run, state.record)
    # 2. Initial assessment, beside the response
    assessment = start_assessment(state, platform, settings)
    # 4-5. Investigation and resolution
    resolved = respond_until_resolved(responder, assessment)
    if resolved is None:
        return Cancelled(name="Superseded", message="another run responds to the incident now")
    # 6. Post-incident
    return post_incident(responder, resolved, platform)


def platform_settings() -> Settings | str:
    """The platform's settings (for the assessment and the report's S3 copy), or why they
    cannot be loaded: an incident is opened and paged even then."""
    try:
        return load_settings()
    except RunbookError as exc:
        return str(exc)


def refuse_new_incident_fields(
    incident_id: str, severity: str | None, service: str | None, summary: str
) -> None:
    """An ``incident_id`` continues that incident as it is: opening fields with it are refused."""
    fields = {"severity": severity, "service": service, "summary": summary}
    given = [name for name, value in fields.items() if value]
    if given:
        raise RefusedError(
            f"incident_id={incident_id} continues an open incident; {', '.join(given)} "
            "would open a new one",
            hint="pass incident_id alone (change severity with `runbook incident update`), or "
            "leave it out to open a new incident",
        )


def triggered_again(record: IncidentRecord) -> State[Any]:
    """This run's end when its trigger was added to an open incident with the same dedup_key."""
    return Completed(
        name="Triggered again",
        message=f"added to the open incident {record.id} (dedup_key {record.dedup_key!r})",
        data=IncidentOutcome.of(record, "triggered-again"),
    )


def post_incident(
    responder: Responder, state: IncidentState, platform: Settings | str
) -> State[Any]:
    """Tell the team, write the report (the run's artifact, and S3 when configured), end the
    run Completed, named ``Resolved``."""
    record, settings = state.record, responder.settings
    told = [p for p in resolved_pages(state) if p.key not in state.pages]  # once, even if
    deliver_pages(responder.store, state, told)  # a run that died after resolve had begun
    report = build_report(responder.state(), str(PREFECT_UI_URL.value() or ""))
    markdown = render_report(report)
    key = f"incident-{record.id.lower()}-report"
    publish_markdown(key, markdown, description=f"{record.mark}post-incident report {record.id}")
    where, uri = f"the run's artifact {key}", ""
    if settings.report_bucket and isinstance(platform, Settings):
        try:
            uri = store_report(
                platform.aws,
                settings.report_bucket,
                report_key(record, settings.report_prefix),
                markdown,
            )
            where += f" and {uri}"
        except RunbookError as exc:
            where += f"; not stored in S3: {exc}"
    responder.append(
        TimelineEvent(
            at=datetime.now(UTC),
            kind="report",
            actor=RUNBOOK_ACTOR,
            text=f"post-incident report: {where}",
            data={"uri": uri, "artifact": key},
        )
    )
    responder.publish_timeline(responder.state())
    verdicts = "; ".join(f"{t.measure} {t.verdict}" for t in report.targets)
    return Completed(
        name="Resolved",
        message=f"{record.mark}{record.id} resolved by {state.resolved_by}: {verdicts}",
        data=IncidentOutcome.of(record, "resolved", severity=state.severity, report_uri=uri),
    )
