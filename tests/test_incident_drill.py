"""A game day: a P1 drill at time_scale=60 runs end to end in about a minute on the sandbox
(real Prefect server, the app's receivers, PostgreSQL, pgBackRest, moto): 15 minutes of
response time take 15 s, an hour of escalation and team updates takes a minute."""

from __future__ import annotations

import time

from tasks.core.units import exact_duration
from tests.incidents import TOLERANCE_S, incident_blocks, incidents, seconds_after

__all__ = ["incident_blocks", "incidents"]  # fixtures the tests use


def test_a_p1_drill_at_time_scale_60_runs_end_to_end_in_about_a_minute(incidents):
    started = time.monotonic()
    running = incidents.start(
        severity="P1",
        service="payment-service",
        summary="game day: payment webhooks rejected",
        source="game day",
        drill=True,
        time_scale=60,
    )
    running.delivered("primary")
    running.until(lambda s: s.assessed, 60)  # the initial assessment, within a minute
    (secondary,) = running.delivered("secondary", timeout_s=30)
    opened = running.state().record.opened_at
    assert 15 <= seconds_after(opened, secondary) < 15 + TOLERANCE_S  # 15 min / 60
    running.command("acknowledge", "bob", note="payment provider status is green")
    running.command(
        "update",
        "bob",
        status="identified",
        note="webhook secret rotated by mistake; restoring it",
        expected_resolution="within 10 minutes",
    )
    (update,) = running.delivered("team", timeout_s=60)  # every hour: a minute
    assert 60 <= seconds_after(opened, update) < 60 + TOLERANCE_S
    (told,) = incidents.messages("team", running.incident_id)
    assert "Status: identified; acknowledged by bob." in told["text"]
    assert "Current actions: webhook secret rotated by mistake; restoring it" in told["text"]
    assert "Expected resolution: within 10 minutes" in told["text"]
    running.command("resolve", "bob", note="secret restored, events replayed")
    final = running.finish()

    assert final.name == "Resolved"
    assert time.monotonic() - started < 90
    assert incidents.messages("manager", running.incident_id) == []  # acknowledged in time
    sent = [
        message
        for channel in ("primary", "secondary", "team")
        for message in incidents.messages(channel, running.incident_id)
    ]
    assert len(sent) == 4  # primary, secondary, the update, resolved
    assert all(m["subject"].startswith("[DRILL] ") and m["text"].startswith("DRILL") for m in sent)
    report = incidents.report(final.result().report_uri)
    assert report.startswith("# [DRILL] Post-incident report")
    assert "every timer 60 times faster" in report
    acked = running.state().acknowledged_at  # after the secondary's page: at 15 s or later
    took = int((acked.replace(microsecond=0) - opened.replace(microsecond=0)).total_seconds())
    verdict = "met, 0 s to spare" if took == 15 else f"missed by {exact_duration(took - 15)}"
    assert f"| time to acknowledge | {exact_duration(took)} | 15 s (P1) | {verdict} |" in report
    assert "escalated to secondary (secondary on-call): no acknowledgement within 15 min" in report
