"""An incident whose runner is killed mid-incident: the incident-watchdog marks its run Crashed
and continues the incident in a new run of the served ``incident-response/on-demand``; timers
still count from the opening, nobody is paged twice, and a command sent to the dead run is
applied by its successor. Real Prefect server, the served deployment in its own process, the
sandbox app's receivers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client

from deployments.serve import PREFECT_YAML
from flows.incident.response import DEPLOYMENT
from flows.incident.watchdog import incident_watchdog
from tasks.incidents.commands import Command, incident_runs, send_command
from tasks.incidents.continuation import find_stalled
from tasks.incidents.store import DirectoryStore, incident_state
from tests.incidents import (
    FAST,
    TOLERANCE_S,
    Incidents,
    incident_blocks,
    incidents,
    seconds_after,
    wait_for,
)

__all__ = ["incident_blocks", "incidents"]  # fixtures the tests use

PARAMS = 'severity="P1", service="web", summary="{summary}", source="pytest", drill=True'
FIRST_RUN = (
    "from flows.incident.response import incident_response\n"
    f"incident_response({PARAMS}, time_scale=150)\n"  # P1: secondary at 6 s, manager at 24 s
)


def environment(prefect_server: str, incidents: Incidents) -> dict[str, str]:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    return {
        **os.environ,  # RUNBOOK_CONFIG, the store and FAST, set by the incidents fixture
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
        **FAST,
    }


@pytest.fixture
def served(prefect_server: str, incidents: Incidents, tmp_path: Path) -> Iterator[str]:
    """``incident-response/on-demand`` as prefect.yaml declares it, served in its own process
    (only it: no scheduled watchdog racing the test's)."""
    document = yaml.safe_load(PREFECT_YAML.read_text())
    document["deployments"] = [
        d for d in document["deployments"] if d["entrypoint"].endswith(":incident_response")
    ]
    only = tmp_path / "prefect.yaml"
    only.write_text(yaml.safe_dump(document))
    serve = (
        "from pathlib import Path\nfrom deployments.serve import serve_all\n"
        f"serve_all(Path({str(only)!r}))\n"
    )
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", serve],
        env=environment(prefect_server, incidents),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                server.poll() is None
                and httpx.get(f"{prefect_server}/deployments/name/{DEPLOYMENT}").status_code == 200
            ),
            90,
            every_s=0.5,
        )
        yield prefect_server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_a_killed_runner_is_continued_by_the_watchdog_with_timers_from_the_opening(
    incidents, served
):
    store = incidents.store
    known = set(store.ids())
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_RUN.format(summary="runner killed")],
        env=environment(served, incidents),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        incident_id = wait_for(lambda: set(store.ids()) - known, 60).pop()
        wait_for(lambda: delivered(store, incident_id, "primary"), 30)
        wait_for(lambda: incident_runs(incident_id), 10)  # tagged: commands find it
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the runner and its flow run, mid-incident
        first.wait(timeout=10)
    dead_run = store.liveness(incident_id).run_id
    note = Command(action="update", by="alice", note="sent to a dead run")
    sent = send_command(incident_id, note)
    assert sent.run_id == dead_run  # it still looks Running to Prefect

    wait_for(lambda: find_stalled(store, datetime.now(UTC), 2), 10)  # STALE_AFTER_S
    (continued,) = [c for c in incident_watchdog() if c.incident_id == incident_id]
    assert continued.decision == "continued"
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(UUID(dead_run)).state
    assert crashed.type.value == "CRASHED" and "no sign of life" in crashed.message

    wait_for(lambda: delivered(store, incident_id, "manager"), 40)
    state = incident_state(store, incident_id)
    opened = state.record.opened_at
    by_level = {}
    for page in state.of_kind("page"):
        by_level.setdefault(page.data["level"], []).append(page)
    assert {level: len(pages) for level, pages in by_level.items()} == {
        "primary": 1,
        "secondary": 1,
        "manager": 1,
        "team": 1,  # the hourly update, also at 24 s
    }
    assert seconds_after(opened, by_level["secondary"][0]) >= 6  # never early, even late
    manager = seconds_after(opened, by_level["manager"][0])
    assert 24 <= manager < 24 + TOLERANCE_S  # from the opening, not from the take-over
    for channel in ("primary", "secondary", "manager"):
        assert len(incidents.messages(channel, incident_id)) == 1
    (crash,) = state.of_kind("run-crashed")
    assert crash.actor == "incident-watchdog" and crash.data["run_id"] == dead_run
    (resumed,) = state.of_kind("run-resumed")
    assert resumed.data["run_id"] == crash.data["continued_by"]
    assert [e.text for e in state.of_kind("update")] == ["sent to a dead run"]

    send_command(incident_id, Command(action="resolve", by="alice"))
    with get_client(sync_client=True) as client:
        final = wait_for(
            lambda: (
                (run := client.read_flow_run(UUID(resumed.data["run_id"]))).state.is_final()
                and run.state
            ),
            60,
            every_s=0.5,
        )
    assert final.name == "Resolved"


def delivered(store: DirectoryStore, incident_id: str, level: str) -> bool:
    pages = incident_state(store, incident_id).pages.values()
    return any(p.level == level and p.delivered for p in pages)


def test_the_watchdog_leaves_alone_an_incident_whose_run_is_alive(incidents):
    running = incidents.start(
        severity="P3", service="web", summary="alive", source="pytest", drill=True, time_scale=60
    )
    running.delivered("primary")
    time.sleep(2.5)  # longer than STALE_AFTER_S: a live run keeps its last-seen time fresh
    assert [c for c in incident_watchdog() if c.incident_id == running.incident_id] == []
    running.command("resolve", "alice")
    running.finish()
