"""Incidents in tests: the sandbox's roster blocks and receivers, an incident-response run in a
thread of the test (commands go to it through the Prefect API, as from the CLI), and what each
receiver got. Every wait has a deadline."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from flows.incident.response import incident_response
from sandbox.notifications import INCIDENT_CHANNELS, receiver_url, register_notification_blocks
from sandbox.platform import Sandbox
from tasks.aws.clients import aws_client
from tasks.core.settings import CONFIG_ENV, IncidentSettings, load_system
from tasks.incidents.commands import Command, incident_runs, send_command, wait_until_applied
from tasks.incidents.models import TimelineEvent
from tasks.incidents.state import IncidentState
from tasks.incidents.store import DirectoryStore, incident_state
from tests.conftest import settings_for

# A page goes out within a command poll (0.2 s) and a few API calls of its time; the margin is
# for a machine busy with other tests.
TOLERANCE_S = 2.5
FAST = {  # a run looks for commands every 0.2 s and says it is alive every 0.5 s
    "RUNBOOK_INCIDENTS_COMMAND_POLL_S": "0.2",
    "RUNBOOK_INCIDENTS_HEARTBEAT_S": "0.5",
    "RUNBOOK_INCIDENTS_STALE_AFTER_S": "2",
}


class Running:
    """An incident-response run in a thread of the test, and its incident in the store."""

    def __init__(self, store: DirectoryStore, params: dict[str, Any], timeout_s: float) -> None:
        self.store = store
        self.outcome: dict[str, Any] = {}
        known = set(store.ids())

        def run() -> None:
            self.outcome["state"] = incident_response(**params, return_state=True)

        context = contextvars.copy_context()  # the test's Prefect settings (its API)
        self.thread = threading.Thread(target=context.run, args=(run,), daemon=True)
        self.thread.start()
        self.incident_id = wait_for(lambda: (set(store.ids()) - known) or None, timeout_s).pop()

    def state(self) -> IncidentState:
        return incident_state(self.store, self.incident_id)

    def events(self, kind: str) -> list[TimelineEvent]:
        return self.state().of_kind(kind)

    def until(self, check: Callable[[IncidentState], Any], timeout_s: float) -> Any:
        """Wait until ``check(state)`` is truthy; return it."""
        return wait_for(lambda: check(self.state()), timeout_s)

    def delivered(self, level: str, count: int = 1, timeout_s: float = 15) -> list[TimelineEvent]:
        """Wait until ``count`` pages to ``level`` were delivered; the page attempts."""

        def pages(state: IncidentState) -> list[TimelineEvent] | None:
            keys = {p.key for p in state.pages.values() if p.level == level and p.delivered}
            attempts = [e for e in state.of_kind("page") if e.data["key"] in keys]
            return attempts if len(keys) >= count else None

        return self.until(pages, timeout_s)

    def command(self, action: str, by: str, **fields: str) -> list[TimelineEvent]:
        """Send a command through the Prefect API and wait until the run applied it."""
        sent = send_command(self.incident_id, Command(action=action, by=by, **fields))
        applied = wait_until_applied(self.store, self.incident_id, sent.key, 15)
        assert applied, f"{action} was not applied within 15 s"
        return applied

    def finish(self, timeout_s: float = 60) -> Any:
        """The run's final state."""
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"the run of {self.incident_id} did not end"
        return self.outcome["state"]


def wait_for(check: Callable[[], Any], timeout_s: float, every_s: float = 0.1) -> Any:
    """``check()`` once it is truthy, polling; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"still waiting after {timeout_s} s"
        time.sleep(every_s)
    return found


class Incidents:
    """The sandbox's incident receivers and store, for one test."""

    def __init__(self, box: Sandbox, store: DirectoryStore) -> None:
        self.box = box
        self.store = store
        self.started: list[Running] = []

    def start(self, timeout_s: float = 30, **params: Any) -> Running:
        """Start an incident-response run; returns once its incident is open and the run is
        tagged for it (commands can find it)."""
        running = Running(self.store, params, timeout_s)
        self.started.append(running)
        wait_for(lambda: incident_runs(running.incident_id), timeout_s)
        return running

    def stop_all(self) -> None:
        """Resolve the incidents a failed test left running, so that their runs end."""
        for running in self.started:
            if running.thread.is_alive() and not running.state().resolved:
                send_command(running.incident_id, Command(action="resolve", by="pytest teardown"))
            running.thread.join(30)

    def messages(self, channel: str, incident_id: str) -> list[dict[str, str]]:
        """What the ``/hooks/<channel>`` receiver kept about ``incident_id``, oldest first."""
        kept = httpx.get(receiver_url(self.box, channel), timeout=5).json()
        return [m for m in kept if incident_id in m.get("subject", "")]

    def report(self, uri: str) -> str:
        """A post-incident report, read back from S3 (moto) at ``s3://bucket/key``."""
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        s3 = aws_client(settings_for(self.box).aws, "s3")
        return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())

    def fault(self, channel: str, status: int, count: int) -> None:
        """Make the next ``count`` posts to ``/hooks/<channel>`` answer ``status``."""
        url = f"{receiver_url(self.box, channel)}/fault"
        httpx.put(url, json={"status": status, "count": count}, timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def incident_blocks(prefect_server: str, platform: Sandbox) -> Sandbox:
    """The sandbox's notification blocks, once per session."""
    register_notification_blocks(platform)
    return platform


@pytest.fixture
def incidents(incident_blocks: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Incidents]:
    """Flows aimed at the sandbox and its incident store (one for the session, as one Prefect
    server has one: incident ids, and the run tags made of them, never repeat); receivers
    emptied; incidents a failed test left open resolved at the end."""
    monkeypatch.setenv(CONFIG_ENV, str(incident_blocks.config_file))
    for variable, value in FAST.items():
        monkeypatch.setenv(variable, value)
    for channel in INCIDENT_CHANNELS:
        httpx.delete(receiver_url(incident_blocks, channel), timeout=5)
    made = Incidents(incident_blocks, DirectoryStore(load_system(IncidentSettings).state_dir))
    yield made
    made.stop_all()


def seconds_after(start: datetime, event: TimelineEvent) -> float:
    return (event.at - start).total_seconds()
