"""The daily health check end to end on the sandbox: every system at once, the report, an event
per failed check, on-call told through the notification blocks (the sandbox app's receiver and
SES on moto), the capacity sample; and a stopped or hanging service never hides the others."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prefect.blocks.abstract import NotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

from flows.checks import UNHEALTHY
from flows.maintenance.daily import daily_health_check
from sandbox.notifications import receiver_url, register_notification_blocks
from sandbox.platform import Sandbox
from tasks.core.events import CHECK_FAILED_EVENT
from tasks.core.maintenance_report import MaintenanceReport
from tasks.core.reports import CheckResult
from tasks.notifications.channels import load_notification_channels, notify_on_call
from tasks.reviews.capacity import SAMPLES_FILE

SYSTEMS = {"postgres", "http", "s3", "ses", "stripe", "logs", "recovery"}
EVENTS_DEADLINE_S = 30


@pytest.fixture
def oncall(prefect_server: str, platform: Sandbox) -> Iterator[str]:
    """The sandbox's notification blocks, and the receiver's URL, emptied before and after."""
    register_notification_blocks(platform)
    url = receiver_url(platform)
    httpx.delete(url, timeout=5)
    yield url
    httpx.delete(url, timeout=5)


@pytest.fixture
def on_platform(platform, use_platform, monkeypatch, tmp_path) -> Sandbox:
    use_platform(platform)
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_STATE_DIR", str(tmp_path))
    return platform


def by_key(report: MaintenanceReport) -> dict[tuple[str, str], str]:
    return {(c.system, c.name): c.status for c in report.checks}


def failed_check_events(flow_run_id: object, expected: int) -> list[Any]:
    """The runbook.check.failed events of one flow run, as the Prefect server stored them."""
    event_filter = EventFilter(
        event=EventNameFilter(name=[CHECK_FAILED_EVENT]),
        any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    deadline = time.monotonic() + EVENTS_DEADLINE_S
    with get_client(sync_client=True) as client:
        while True:
            events = client.read_events(filter=event_filter, limit=50).events
            if len(events) >= expected or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.5)


def test_daily_health_check_reports_every_system_and_tells_on_call_through_the_receiver(
    on_platform, oncall, tmp_path
):
    state = daily_health_check(return_state=True)
    assert state.is_completed()
    assert state.name == UNHEALTHY  # the seed plants failures: a public bucket, declines...
    report = state.result()
    assert {c.system for c in report.checks} == SYSTEMS | {"alerts", "capacity"}
    assert not [c for c in report.checks if c.name == "checks"]  # nobody timed out or crashed
    statuses = by_key(report)
    assert statuses[("postgres", "status")] == "ok"
    assert statuses[("postgres", "last-backup")] == "ok"
    assert statuses[("s3", "linkist-uploads: public access block")] == "fail"
    assert statuses[("alerts", "notify runbook-oncall")] == "ok"
    assert statuses[("alerts", "notify runbook-oncall-email")] == "ok"
    assert statuses[("capacity", "sample")] == "ok"
    assert state.message == report.summary()

    (message,) = httpx.get(oncall, timeout=5).json()
    assert message["subject"] == f"[runbook] daily-health-check: {len(report.failed)} checks failed"
    assert "s3/linkist-uploads: public access block" in message["text"]
    assert "put-public-access-block" in message["text"]  # the hint comes along

    (sample,) = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert {"database-bytes", "connections", "ses-sent-24h", "s3-bytes.linkist-uploads"} <= set(
        sample["values"]
    )
    assert sample["limits"]["connections"] == 50

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["daily-health-check"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert set(rows[0]) == {"system", "check", "status", "figure", "hint"}
    assert len(rows) == len(report.checks)

    evented = [c for c in report.failed if c.system in SYSTEMS]
    events = failed_check_events(run_id, len(evented))
    assert len(events) == len(evented)
    assert {e.resource["runbook.check"] for e in events} == {c.name for c in evented}


def test_daily_health_check_still_reports_every_other_system_when_moto_is_stopped(
    prefect_server, fresh_platform, use_platform, monkeypatch, tmp_path
):
    use_platform(fresh_platform)
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_STATE_DIR", str(tmp_path))
    register_notification_blocks(fresh_platform)
    fresh_platform.services().daemon("moto").stop()
    report = daily_health_check()
    statuses = by_key(report)
    aws = [c for c in report.checks if c.system in ("s3", "ses", "logs")]
    assert aws
    assert all(c.status in ("fail", "skipped") for c in aws)
    assert any("no answer" in c.detail and c.hint for c in aws if c.status == "fail")
    assert statuses[("postgres", "status")] == "ok"
    assert statuses[("http", "app-health")] == "ok"
    assert ("stripe", "decline rate") in statuses
    assert statuses[("alerts", "notify runbook-oncall")] == "ok"
    assert statuses[("alerts", "notify runbook-oncall-email")] == "fail"  # SES is on moto


def test_daily_health_check_reports_a_hanging_service_as_timed_out_and_the_others_in_full(
    on_platform, oncall, monkeypatch
):
    monkeypatch.setenv("RUNBOOK_MAINTENANCE_CHECK_DEADLINE_S", "3")
    monkeypatch.setenv("RUNBOOK_AWS_READ_TIMEOUT_S", "8")
    monkeypatch.setenv("RUNBOOK_AWS_MAX_ATTEMPTS", "1")
    moto = on_platform.services().daemon("moto").pid()
    assert moto is not None
    os.kill(moto, signal.SIGSTOP)  # accepts connections, never answers
    thaw = threading.Timer(6, os.kill, (moto, signal.SIGCONT))
    thaw.start()
    try:
        started = time.monotonic()
        report = daily_health_check()
        elapsed = time.monotonic() - started
    finally:
        thaw.cancel()
        os.kill(moto, signal.SIGCONT)
    timed_out = {c.system: c for c in report.checks if c.name == "checks"}
    assert set(timed_out) == {"s3", "ses", "logs"}
    for check in timed_out.values():
        assert check.status == "fail"
        assert check.figure == "timed out"
        assert "RUNBOOK_MAINTENANCE_CHECK_DEADLINE_S" in check.hint
    statuses = by_key(report)
    assert statuses[("postgres", "status")] == "ok"
    assert statuses[("http", "app-health")] == "ok"
    assert ("stripe", "unprocessed events") in statuses
    assert elapsed < 60


def test_a_notification_block_that_cannot_be_loaded_is_reported_through_the_others(
    on_platform, oncall
):
    channels = load_notification_channels.fn(["runbook-oncall", "no-such-block"])
    assert isinstance(channels["runbook-oncall"], NotificationBlock)
    missing = channels["no-such-block"]
    assert isinstance(missing, CheckResult)
    assert missing.status == "fail"
    assert "no notification block named 'no-such-block'" in missing.detail
    assert "RUNBOOK_MAINTENANCE_NOTIFICATION_BLOCKS" in missing.hint

    healthy = MaintenanceReport(flow="daily-health-check", started_at=datetime.now(UTC), checks=[])
    results = notify_on_call.fn(channels, healthy)  # nothing failed but a channel is unusable
    assert [(r.name, r.status) for r in results] == [
        ("notify runbook-oncall", "ok"),
        ("notify no-such-block", "fail"),
    ]
    (message,) = httpx.get(oncall, timeout=5).json()
    assert "alerts/notify no-such-block" in message["text"]

    everything_usable = load_notification_channels.fn(["custom-webhook/runbook-oncall"])
    assert notify_on_call.fn(everything_usable, healthy) == []  # nothing to tell: nothing sent
    assert len(httpx.get(oncall, timeout=5).json()) == 1
