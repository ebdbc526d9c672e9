"""incident-response end to end on the sandbox: a real Prefect server, the sandbox app's
receivers behind the roster's notification blocks, PostgreSQL, pgBackRest and moto for the
assessment and the report. Drills with a high time_scale keep each test to seconds: at 450 a
P1's 15 minutes (response) take 2 s and its hour (escalation, team update) 8 s."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from deployments.cli import app
from flows.incident.response import incident_response
from sandbox.notifications import webhook_block
from tasks.core.units import exact_duration
from tasks.incidents.models import incident_tag
from tasks.postgres.cluster import free_port
from tests.incidents import (
    TOLERANCE_S,
    incident_blocks,
    incidents,
    seconds_after,
    wait_for,
)

__all__ = ["incident_blocks", "incidents"]  # fixtures the tests use

P1_FAST = {"severity": "P1", "service": "web", "drill": True, "time_scale": 450}


def test_acknowledged_in_time_nobody_else_is_paged_and_the_report_times_it(incidents):
    # 150 rather than 450: the acknowledgement has 6 s (not 2 s) to arrive on a busy machine.
    params = P1_FAST | {"time_scale": 150}
    running = incidents.start(**params, summary="checkout answers 502", source="pytest")
    running.delivered("primary")
    running.command("acknowledge", "alice", note="looking at the load balancer")
    running.delivered("team", timeout_s=40)  # the hour (24 s) has passed: the team's update
    state = running.state()
    assert not state.of_kind("escalated")
    assert {p.level for p in state.pages.values()} == {"primary", "team"}
    assert [m["subject"] for m in incidents.messages("primary", running.incident_id)] == [
        f"[DRILL] [P1] {running.incident_id} web: checkout answers 502"
    ]
    for channel in ("secondary", "manager", "management"):
        assert incidents.messages(channel, running.incident_id) == []
    (update,) = incidents.messages("team", running.incident_id)
    assert "acknowledged by alice" in update["text"]
    assert "Current actions: looking at the load balancer" in update["text"]

    (assessment,) = state.of_kind("assessment")
    assert seconds_after(state.record.opened_at, assessment) < 60
    checks = {(c["system"], c["name"]): c for c in assessment.data["checks"]}
    assert checks[("http", "app-health")]["status"] == "ok"
    assert "payments-webhook-route" not in {name for _, name in checks}  # web's endpoint only
    assert checks[("postgres", "status")]["status"] == "ok"
    assert checks[("postgres", "connection-pool")]["status"] in ("ok", "warn")
    assert checks[("logs", "webhook-signature")]["status"] == "fail"  # the seeded spike
    assert checks[("postgres", "last-backup")]["status"] == "ok"
    assert "not yet available" in checks[("deployments", "recent deployments")]["detail"]

    running.command("resolve", "alice", note="load balancer target group fixed")
    final = running.finish()
    assert (final.type.value, final.name) == ("COMPLETED", "Resolved")
    outcome = final.result()
    state = running.state()
    opened, acked = state.record.opened_at, state.acknowledged_at
    took = int((acked.replace(microsecond=0) - opened.replace(microsecond=0)).total_seconds())
    report = incidents.report(outcome.report_uri)
    assert outcome.report_uri.endswith(f"incidents/drills/{running.incident_id}.md")
    assert f"| time to acknowledge | {exact_duration(took)} | 6 s (P1) | met, " in report
    assert f"acknowledged | {acked:%Y-%m-%d %H:%M:%S} UTC by alice |" in report
    assert report.startswith("# [DRILL] Post-incident report")
    (resolved,) = incidents.messages("team", running.incident_id)[1:]
    assert resolved["subject"].endswith("resolved")


def test_not_acknowledged_the_secondary_then_the_manager_are_paged_at_the_scaled_times(incidents):
    running = incidents.start(**P1_FAST, summary="orders stuck", source="pytest")
    running.delivered("manager", timeout_s=20)
    state = running.state()
    opened = state.record.opened_at
    (secondary,) = [e for e in state.of_kind("page") if e.data["level"] == "secondary"]
    (manager,) = [e for e in state.of_kind("page") if e.data["level"] == "manager"]
    assert 2 <= seconds_after(opened, secondary) < 2 + TOLERANCE_S  # 15 min / 450
    assert 8 <= seconds_after(opened, manager) < 8 + TOLERANCE_S  # 1 h / 450
    assert [e.text for e in state.of_kind("escalated")] == [
        "escalated to secondary (secondary on-call): no acknowledgement within 15 min",
        "escalated to manager (escalation manager): no acknowledgement within 1 h",
    ]
    for channel, suffix in (("secondary", "escalated to secondary"), ("manager", "to manager")):
        (message,) = incidents.messages(channel, running.incident_id)
        assert message["subject"].startswith("[DRILL] [P1]")
        assert message["subject"].endswith(suffix)
        assert message["text"].startswith("DRILL")
    running.command("resolve", "bob")
    assert running.finish().name == "Resolved"


def test_raising_the_severity_pages_again_at_the_new_severitys_timers(incidents):
    params = {**P1_FAST, "severity": "P3", "time_scale": 3600}  # P3: 4 h take 4 s
    running = incidents.start(**params, summary="slow admin pages", source="pytest")
    running.delivered("primary")
    running.command("acknowledge", "alice")
    (raised,) = running.command("update", "alice", severity="P1")  # P1: 15 min take 0.25 s
    assert raised.text == "severity P3 -> P1; paging again at P1's timers"
    running.delivered("manager", timeout_s=10)  # 1 h after the raise: 1 s
    state = running.state()
    first, again = [e for e in state.of_kind("page") if e.data["level"] == "primary"]
    assert (first.data["round"], again.data["round"]) == (1, 2)
    assert seconds_after(raised.at, again) < TOLERANCE_S
    (manager,) = [e for e in state.of_kind("page") if e.data["level"] == "manager"]
    assert 1 <= seconds_after(raised.at, manager) < 1 + TOLERANCE_S
    assert "severity raised to P1" in incidents.messages("primary", running.incident_id)[1]["text"]
    running.command("resolve", "alice")
    running.finish()


def test_a_second_trigger_with_the_same_dedup_key_adds_to_the_open_incident(incidents):
    params = {**P1_FAST, "source": "daily-health-check", "dedup_key": "postgres/status"}
    before = incidents.store.ids()
    running = incidents.start(**params, summary="PostgreSQL status failed")
    running.delivered("primary")
    again = incident_response(**params, summary="PostgreSQL status failed", return_state=True)
    assert (again.name, again.result().incident_id) == ("Triggered again", running.incident_id)
    (added,) = running.events("triggered-again")
    assert added.actor == "daily-health-check"
    assert incidents.store.ids() == [*before, running.incident_id]
    assert len(incidents.messages("primary", running.incident_id)) == 1
    running.command("resolve", "alice")
    running.finish()


def test_a_failing_channel_is_recorded_retried_and_never_delays_the_next_level(
    incidents, monkeypatch
):
    down = "incident-secondary-down"  # a second block for the secondary; nothing listens there
    webhook_block(down, f"http://127.0.0.1:{free_port()}/hooks/secondary", 5).save(
        down, overwrite=True
    )
    monkeypatch.setenv(
        "RUNBOOK_INCIDENTS_ROSTER__SECONDARY__BLOCKS", f'["incident-secondary", "{down}"]'
    )
    incidents.fault("primary", 500, count=1)  # the primary's receiver fails once
    running = incidents.start(**P1_FAST, summary="uploads failing", source="pytest")
    running.delivered("manager", timeout_s=20)
    state = running.state()
    opened = state.record.opened_at
    primary = state.pages["r1-primary-incident-primary"]
    assert (primary.attempts, primary.delivered) == (2, True)
    (failed_once,) = [e for e in state.of_kind("page-failed") if "primary" in e.data["key"]]
    assert "NOT delivered to primary" in failed_once.text and "500" in failed_once.text
    broken = state.pages[f"r1-secondary-{down}"]
    assert (broken.attempts, broken.delivered) == (3, False)  # RUNBOOK_INCIDENTS_PAGE_ATTEMPTS
    assert "giving up after 3 attempts" in state.of_kind("page-failed")[-1].text
    assert state.pages["r1-secondary-incident-secondary"].delivered
    (manager,) = [e for e in state.of_kind("page") if e.data["level"] == "manager"]
    assert 8 <= seconds_after(opened, manager) < 8 + TOLERANCE_S
    assert len(incidents.messages("primary", running.incident_id)) == 1
    running.command("resolve", "alice")
    running.finish()


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (
            {"severity": "P9", "service": "web"},
            "severity: Input should be 'P0', 'P1', 'P2' or 'P3'",
        ),
        ({"severity": "P1", "service": "mainframe"}, "unknown service 'mainframe'"),
        ({"severity": "P1", "service": "web", "time_scale": 60}, "time_scale=60 without drill"),
    ],
)
def test_bad_input_is_refused_before_anything_is_opened_or_sent(incidents, params, problem):
    before = incidents.store.ids()
    state = incident_response(**params, summary="x", return_state=True)
    assert state.is_failed() and problem in state.message
    assert incidents.store.ids() == before
    assert httpx.get(f"{incidents.box.services().urls()['app']}/hooks/primary").json() == []


def test_the_cli_lists_shows_acknowledges_and_resolves_and_refuses_what_it_cannot_do(
    incidents, monkeypatch, prefect_server
):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    cli = CliRunner()
    running = incidents.start(**P1_FAST, summary="emails bounce", source="pytest")
    running.delivered("primary")
    listed = cli.invoke(app, ["incident", "list"])
    assert f"{running.incident_id}  P1  web" in listed.output
    assert "investigating [DRILL] emails bounce" in listed.output

    no_by = cli.invoke(app, ["incident", "ack", running.incident_id])
    assert no_by.exit_code == 2 and "by: Field required" in no_by.output
    assert "--by NAME" in no_by.output
    acked = cli.invoke(app, ["incident", "ack", running.incident_id, "--by", "alice"])
    assert acked.exit_code == 0, acked.output
    assert f"on {prefect_server}" in acked.output and "acknowledged by alice" in acked.output
    shown = cli.invoke(app, ["incident", "show", running.incident_id])
    assert "acknowledged alice" in shown.output and "acknowledged by alice" in shown.output

    resolved = cli.invoke(app, ["incident", "resolve", running.incident_id, "--by", "alice"])
    assert resolved.exit_code == 0, resolved.output
    running.finish()
    events = len(running.state().events)
    late = cli.invoke(app, ["incident", "ack", running.incident_id, "--by", "bob"])
    assert late.exit_code == 2 and "is resolved" in late.output and prefect_server in late.output
    unknown = cli.invoke(app, ["incident", "ack", "INC-19990101-0001", "--by", "bob"])
    assert unknown.exit_code == 2 and "no incident 'INC-19990101-0001'" in unknown.output
    assert prefect_server in unknown.output
    assert len(running.state().events) == events  # nothing changed
    assert (
        f"no open incidents (store {incidents.store.root})"
        in cli.invoke(app, ["incident", "list"]).output
    )


def test_a_command_sent_over_rest_as_the_readme_says_is_applied(incidents, prefect_server):
    running = incidents.start(**P1_FAST, summary="status page stale", source="pytest")
    running.delivered("primary")
    runs = httpx.post(
        f"{prefect_server}/flow_runs/filter",
        json={
            "flow_runs": {
                "tags": {"all_": [incident_tag(running.incident_id)]},
                "state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}},
            },
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": 1,
        },
    ).json()
    inputs = f"{prefect_server}/flow_runs/{runs[0]['id']}/input"
    key = "incidentcommand-auto-ops-bot-ack-1"
    ack = '{"action": "acknowledge", "by": "ops-bot", "note": "via REST"}'
    sent = httpx.post(inputs, json={"key": key, "value": ack})
    assert sent.status_code == 201, sent.text
    assert httpx.post(inputs, json={"key": key, "value": ack}).status_code == 409  # once only
    (acked,) = wait_for(
        lambda: [e for e in running.events("acknowledged") if e.data.get("command") == key], 15
    )
    assert acked.text == "acknowledged by ops-bot: via REST"
    bad = "incidentcommand-auto-ops-bot-bad"
    snooze = '{"action": "snooze", "by": "ops-bot"}'
    httpx.post(inputs, json={"key": bad, "value": snooze}).raise_for_status()
    (rejected,) = wait_for(lambda: running.events("command-rejected"), 15)
    assert rejected.data["command"] == bad and "acknowledge, update or resolve" in rejected.text
    running.command("resolve", "ops-bot")
    running.finish()
