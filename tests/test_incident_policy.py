"""Incident response as pure logic: the settings (the runbook's table), checked requests, the
escalation policy, commands, the store on a directory, and the report's durations and verdicts.
No server: these run in milliseconds."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.core.errors import RefusedError, SettingsError
from tasks.core.settings import IncidentSettings, ServicesSettings, load_system
from tasks.incidents.commands import IncidentCommand, check_command, command_events
from tasks.incidents.lifecycle import check_request, new_record, record_action
from tasks.incidents.models import IncidentRecord, IncidentRequest, TimelineEvent
from tasks.incidents.policy import due_now, next_due, page_key, schedule
from tasks.incidents.report import build_report, render_report
from tasks.incidents.state import IncidentState, fold
from tasks.incidents.store import DirectoryStore, UnknownIncident, incident_state, open_incidents

T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def no_runbook_environment(monkeypatch):
    for key in [k for k in os.environ if k.startswith("RUNBOOK_")]:
        monkeypatch.delenv(key)


def settings(**values) -> IncidentSettings:
    return IncidentSettings(state_dir=Path("/nonexistent"), **values)


def record(severity="P1", **changes) -> IncidentRecord:
    request = IncidentRequest(
        severity=severity, service="web", summary="checkout fails", source="t"
    )
    made = new_record(request, settings(), T0).model_copy(update={"id": "INC-20261130-0001"})
    return made.model_copy(update=changes)


def event(at: timedelta, kind: str, actor: str = "runbook", **data) -> TimelineEvent:
    return TimelineEvent(at=T0 + at, kind=kind, actor=actor, text=kind, data=data)


def paged(at: timedelta, level: str, channel: str, round_: int = 1, attempt: int = 1) -> list:
    key = page_key(round_, level, channel)
    common = {"key": key, "level": level, "channel": channel, "round": round_, "attempt": attempt}
    return [event(at, "page", **common), event(at, "page-delivered", key=key, attempt=attempt)]


def levels_due(state: IncidentState, at: timedelta) -> list[tuple[str, str]]:
    return [(d.what, d.level) for d in due_now(state, T0 + at)]


# -- settings and requests ------------------------------------------------------------------------


def test_timers_default_to_the_runbooks_severity_table():
    timers = settings().timers
    assert {s: (t.response_s, t.escalation_s) for s, t in timers.items()} == {
        "P0": (300, 900),
        "P1": (900, 3600),
        "P2": (3600, 14400),
        "P3": (14400, 86400),
    }


def test_one_timer_or_one_roster_level_can_be_changed_alone_from_the_environment(monkeypatch):
    monkeypatch.setenv("RUNBOOK_INCIDENTS_TIMERS__P2__RESPONSE_S", "1800")
    monkeypatch.setenv("RUNBOOK_INCIDENTS_ROSTER__SECONDARY__NAME", "Bob")
    loaded = load_system(IncidentSettings)
    assert loaded.timers["P2"].response_s == 1800 and loaded.timers["P2"].escalation_s == 14400
    assert loaded.roster.secondary.name == "Bob"
    assert loaded.roster.secondary.blocks == ["incident-secondary"]


@pytest.mark.parametrize(
    ("system", "variable", "value", "named"),
    [
        (IncidentSettings, "RUNBOOK_INCIDENTS_TIMERS__P9__RESPONSE_S", "60", "_TIMERS"),
        (IncidentSettings, "RUNBOOK_INCIDENTS_TIMERS__P1__ESCALATION_S", "60", "_TIMERS"),
        (IncidentSettings, "RUNBOOK_INCIDENTS_STALE_AFTER_S", "5", "_STALE_AFTER_S"),
        (ServicesSettings, "RUNBOOK_SERVICES_NAMES", '["Web App"]', "_NAMES"),
    ],
)
def test_an_invalid_incident_setting_names_its_variable(
    monkeypatch, system, variable, value, named
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"RUNBOOK_[A-Z]+{named}: "):
        load_system(system)


SERVICES = ServicesSettings(names=["web", "payment-service"])


def request(**changes) -> IncidentRequest:
    params = {
        "severity": "P1",
        "service": "web",
        "summary": "checkout fails",
        "source": "t",
        "dedup_key": None,
        "drill": False,
        "time_scale": 1.0,
    } | changes
    return check_request(**params, settings=settings(), services=SERVICES)


@pytest.mark.parametrize(
    ("changes", "problem", "fix"),
    [
        ({"severity": "P9"}, "unknown severity 'P9'", "P0 \\(critical\\)"),
        ({"service": "mainframe"}, "unknown service 'mainframe'", "RUNBOOK_SERVICES_NAMES"),
        ({"summary": "  "}, "no summary", "what is wrong"),
        ({"time_scale": 60.0}, "time_scale=60 without drill=true", "pass drill=true"),
        ({"time_scale": 0.5, "drill": True}, "outside 1..3600", "time_scale in that range"),
    ],
)
def test_a_bad_request_is_refused_naming_the_problem_and_the_fix(changes, problem, fix):
    with pytest.raises(RefusedError, match=problem) as refused:
        request(**changes)
    assert refused.match(fix)


def test_the_roster_and_timers_are_copied_into_the_incident_when_it_opens():
    configured = settings()
    opened = new_record(request(), configured, T0)
    configured.roster.secondary.name = "someone else"
    configured.timers["P1"].response_s = 1
    assert opened.roster.secondary.name == "secondary on-call"
    assert opened.timers["P1"].response_s == 900


# -- the escalation policy ------------------------------------------------------------------------


def test_opening_pages_the_primary_at_once_and_nobody_else():
    state = fold(record(), [event(timedelta(0), "opened")])
    assert levels_due(state, timedelta(0)) == [("page", "primary")]


def test_a_p0_tells_management_at_once_too():
    state = fold(record("P0"), [])
    assert set(levels_due(state, timedelta(0))) == {("page", "primary"), ("page", "management")}


def test_without_acknowledgement_secondary_then_manager_are_due_at_the_severitys_times():
    state = fold(record("P1"), paged(timedelta(0), "primary", "incident-primary"))
    assert levels_due(state, 15 * MIN - timedelta(seconds=1)) == []
    assert levels_due(state, 15 * MIN) == [("page", "secondary")]
    assert levels_due(state, 60 * MIN) == [
        ("page", "secondary"),
        ("page", "manager"),
        ("team-update", "team"),
    ]


def test_a_drill_divides_every_timer_by_its_time_scale():
    state = fold(record("P1", drill=True, time_scale=60), [])
    times = {(d.what, d.level): d.at - T0 for d in schedule(state)}
    assert times[("page", "secondary")] == timedelta(seconds=15)
    assert times[("page", "manager")] == timedelta(seconds=60)
    assert times[("team-update", "team")] == timedelta(seconds=60)


def test_an_acknowledgement_in_time_stops_the_escalation():
    events = [
        *paged(timedelta(0), "primary", "incident-primary"),
        event(2 * MIN, "acknowledged", "alice", round=1),
    ]
    state = fold(record("P1"), events)
    assert [d.what for d in schedule(state)] == ["team-update"]


def test_each_level_is_paged_once_per_round():
    events = [
        *paged(timedelta(0), "primary", "incident-primary"),
        *paged(15 * MIN, "secondary", "incident-secondary"),
    ]
    state = fold(record("P1"), events)
    assert levels_due(state, 16 * MIN) == []


def test_raising_the_severity_pages_again_at_the_new_levels_timers_from_the_raise():
    events = [
        *paged(timedelta(0), "primary", "incident-primary"),
        event(2 * MIN, "acknowledged", "alice", round=1),
        event(10 * MIN, "severity-changed", "alice", to="P0", raised=True),
    ]
    state = fold(record("P2"), events)
    assert state.round == 2
    due = {(d.what, d.level): d.at - T0 for d in schedule(state)}
    assert due[("page", "primary")] == 10 * MIN
    assert due[("page", "management")] == 10 * MIN
    assert due[("page", "secondary")] == 15 * MIN  # P0: 5 min from the raise
    assert due[("page", "manager")] == 25 * MIN


def test_a_failed_page_is_retried_with_a_doubling_delay_within_its_attempts():
    key = page_key(1, "primary", "incident-primary")
    first = {"key": key, "level": "primary", "channel": "incident-primary", "round": 1}
    events = [event(timedelta(0), "page", **first, attempt=1)]
    events.append(event(timedelta(seconds=1), "page-failed", key=key, attempt=1, error="HTTP 500"))
    state = fold(record("P1"), events)
    assert [(d.what, d.at - T0) for d in due_now(state, T0 + 5 * MIN)] == [
        ("retry", timedelta(seconds=61))
    ]
    events += [
        event(61 * timedelta(seconds=1), "page", **first, attempt=2),
        event(62 * timedelta(seconds=1), "page-failed", key=key, attempt=2, error="HTTP 500"),
    ]
    state = fold(record("P1"), events)
    assert next_due(state).at - T0 == timedelta(seconds=62 + 120)
    events += [
        event(182 * timedelta(seconds=1), "page", **first, attempt=3),
        event(183 * timedelta(seconds=1), "page-failed", key=key, attempt=3, error="HTTP 500"),
    ]
    state = fold(record("P1"), events)  # 3 attempts, the default: given up
    assert [d.what for d in due_now(state, T0 + 14 * MIN)] == []


def test_a_page_whose_outcome_is_unknown_is_never_sent_again():
    key = page_key(1, "primary", "incident-primary")
    attempt = {"key": key, "level": "primary", "channel": "incident-primary", "round": 1}
    events = [event(timedelta(0), "page", **attempt, attempt=1)]
    assert not fold(record(), events).pages[key].outcome_recorded
    events.append(event(MIN, "page-unknown", key=key))
    state = fold(record(), events)
    assert state.pages[key].settled and levels_due(state, 2 * MIN) == []


def test_nothing_is_due_once_resolved():
    state = fold(record("P0"), [event(MIN, "resolved", "alice")])
    assert schedule(state) == []


# -- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        (IncidentCommand(action="acknowledge"), "by: Field required"),
        (IncidentCommand(action="escalate", by="a"), "action: Input should be 'acknowledge'"),
        (IncidentCommand(action="update", by="a", status="fixed"), "status: Input should be"),
        (IncidentCommand(action="update", by="a", severity="P7"), "severity: Input should be"),
        (IncidentCommand(action="update", by="a"), "an update says nothing"),
    ],
)
def test_a_bad_command_is_refused_naming_the_fix(sent, problem):
    with pytest.raises(RefusedError, match=problem):
        check_command(sent)


def test_a_command_causes_events_carrying_its_key():
    state = fold(record("P2"), [])
    command = check_command(
        IncidentCommand(
            action="update", by="alice", note="db failover", status="identified"
        ).model_copy(update={"severity": "P1"})
    )
    events = command_events(state, command, "incidentcommand-auto-1", T0 + MIN)
    assert [e.kind for e in events] == ["severity-changed", "status-changed", "update"]
    assert {e.data["command"] for e in events} == {"incidentcommand-auto-1"}
    after = fold(state.record, events)
    assert (after.severity, after.status, after.round, after.note) == (
        "P1",
        "identified",
        2,
        "db failover",
    )
    assert "incidentcommand-auto-1" in after.commands


# -- the store ------------------------------------------------------------------------------------


def opened_event() -> TimelineEvent:
    return event(timedelta(0), "opened", "t")


def test_the_store_gives_ids_by_day_and_keeps_one_open_incident_per_dedup_key(tmp_path):
    store = DirectoryStore(tmp_path)
    first, created = store.open(record(dedup_key="postgres/status"), opened_event())
    assert (first.id, created) == ("INC-20261130-0001", True)
    again, created = store.open(record(dedup_key="postgres/status"), opened_event())
    assert (again.id, created) == (first.id, False)
    other, _ = store.open(record(dedup_key="http/app-health"), opened_event())
    assert other.id == "INC-20261130-0002"
    store.append(first.id, event(MIN, "resolved", "alice"))
    reopened, created = store.open(record(dedup_key="postgres/status"), opened_event())
    assert (reopened.id, created) == ("INC-20261130-0003", True)
    assert [s.record.id for s in open_incidents(store)] == [other.id, reopened.id]


def test_a_timeline_line_cut_short_by_a_crash_loses_nothing_after_it(tmp_path):
    store = DirectoryStore(tmp_path)
    opened, _ = store.open(record(), opened_event())
    with (tmp_path / opened.id / "timeline.jsonl").open("a") as fh:
        fh.write('{"at": "2026-11-30T10:00:01+00:00", "kind": "pa')  # the crash
    store.append(opened.id, event(MIN, "acknowledged", "alice"))
    assert [e.kind for e in store.timeline(opened.id)] == ["opened", "acknowledged"]


def test_an_unknown_incident_is_refused_by_id_and_never_read_as_a_path(tmp_path):
    store = DirectoryStore(tmp_path)
    for incident_id in ("INC-20261130-0042", "../etc", ".lock"):
        with pytest.raises(UnknownIncident, match="runbook incident list"):
            incident_state(store, incident_id)


def test_any_procedure_can_record_an_action_with_its_run(tmp_path):
    from tasks.incidents.lifecycle import RunRef

    store = DirectoryStore(tmp_path)
    opened, _ = store.open(record(), opened_event())
    record_action(store, opened.id, "restart-service", "restarted web", RunRef(id="r1", name="n"))
    (action,) = incident_state(store, opened.id).of_kind("action")
    assert action.data == {"run_id": "r1", "run_name": "n"}
    with pytest.raises(UnknownIncident):
        record_action(store, "INC-20261130-0099", "x", "y")


# -- the report -----------------------------------------------------------------------------------


def resolved_state(acknowledged: timedelta | None, resolved: timedelta, **changes) -> IncidentState:
    events = [event(timedelta(0), "opened", "t")]
    if acknowledged is not None:
        events.append(event(acknowledged, "acknowledged", "alice", round=1))
    events.append(event(resolved, "resolved", "bob"))
    return fold(record("P1", **changes), events)


def test_the_report_gives_durations_to_the_second_against_their_targets():
    ack, fix = timedelta(minutes=14, seconds=59, milliseconds=900), timedelta(hours=25, seconds=3)
    report = build_report(resolved_state(ack, fix))
    acknowledge, resolve = report.targets
    assert (acknowledge.took_s, acknowledge.target_s, acknowledge.met) == (899, 900, True)
    assert acknowledge.verdict == "met, 1 s to spare"
    assert (resolve.took_s, resolve.target_s, resolve.met) == (90003, 86400, False)
    assert resolve.verdict == "missed by 1 h 3 s"
    markdown = render_report(report)
    assert "| time to acknowledge | 14 min 59 s | 15 min (P1) | met, 1 s to spare |" in markdown
    assert "| time to resolve | 1 d 1 h 3 s | 1 d (P1) | missed by 1 h 3 s |" in markdown
    assert "impact window | 2026-11-30 10:00:00 UTC to 2026-12-01 11:00:03 UTC" in markdown
    for section in ("Root cause", "Contributing factors", "What went well", "Follow-ups"):
        assert f"### {section}" in markdown


def test_a_target_missed_by_one_second_is_missed():
    report = build_report(resolved_state(timedelta(seconds=901), timedelta(hours=1)))
    assert report.targets[0].verdict == "missed by 1 s"


def test_resolving_without_an_acknowledgement_counts_as_one_and_a_drills_targets_are_scaled():
    report = build_report(resolved_state(None, timedelta(seconds=14), drill=True, time_scale=60))
    acknowledge, resolve = report.targets
    assert (acknowledge.took_s, acknowledge.target_s, acknowledge.met) == (14, 15, True)
    assert resolve.target_s == 24 * 3600 / 60
    markdown = render_report(report)
    assert markdown.startswith("# [DRILL] Post-incident report")
    assert "never (resolved without an acknowledgement)" in markdown


def test_the_report_of_an_unresolved_incident_is_refused():
    with pytest.raises(ValueError, match="not resolved"):
        build_report(fold(record(), []))


def test_a_failed_delivery_never_records_a_webhooks_secret_path():
    from tasks.notifications.channels import without_paths

    error = "Server error '500' for url 'https://hooks.slack.com/services/T0/B0/s3cr3t'"
    assert without_paths(error) == "Server error '500' for url 'https://hooks.slack.com/...'"


def test_prefect_yaml_serves_incident_response_on_demand_and_the_watchdog_every_minute():
    from deployments.serve import load_specs

    specs = {f"{s.load_flow().name}/{s.name}": s for s in load_specs()}
    assert specs["incident-response/on-demand"].schedules == []
    (every_minute,) = specs["incident-watchdog/every-minute"].schedules
    assert (every_minute.cron, every_minute.slug) == ("* * * * *", "incident-watchdog-every-minute")


def test_a_resolved_incident_whose_report_is_not_written_is_still_the_watchdogs(tmp_path):
    store = DirectoryStore(tmp_path)
    opened, _ = store.open(record(), opened_event())
    store.append(opened.id, event(MIN, "resolved", "alice"))
    assert open_incidents(store) == []
    assert [s.record.id for s in open_incidents(store, until_reported=True)] == [opened.id]
    store.append(opened.id, event(2 * MIN, "report"))
    assert open_incidents(store, until_reported=True) == []
