"""The incident-watchdog (every minute): continue every open incident whose run has died.

A run responding to an incident writes its last-seen time to the incident store while it
waits; one silent longer than ``RUNBOOK_INCIDENTS_STALE_AFTER_S`` is marked Crashed with the
reason, and a new ``incident-response`` run is started for the same incident. It takes over
from the store: timers from the opening, nobody paged twice, no command lost.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from flows.incident.response import DEPLOYMENT
from tasks.core.events import emit_flow_failure
from tasks.core.reports import publish_table
from tasks.core.runlog import run_logger
from tasks.core.settings import IncidentSettings, load_system
from tasks.incidents.continuation import WATCHDOG, Continuation, continue_incident, find_stalled
from tasks.incidents.store import DirectoryStore


@flow(name=WATCHDOG, on_failure=[emit_flow_failure])
def incident_watchdog() -> list[Continuation]:
    """Find the open incidents whose run stopped answering and continue each in a new run."""
    settings = load_system(IncidentSettings)
    store, now = DirectoryStore(settings.state_dir), datetime.now(UTC)
    stalled = find_stalled(store, now, settings.stale_after_s)
    continued = [continue_incident(store, incident, DEPLOYMENT, now) for incident in stalled]
    for done in continued:
        run_logger().warning("%s: %s (%s)", done.incident_id, done.decision, done.reason)
    if continued:
        publish_table(
            WATCHDOG,
            [done.model_dump() for done in continued],
            description=f"{len(continued)} incident(s) whose run stopped responding",
        )
    return continued
