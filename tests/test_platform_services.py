"""The sandbox's platform services: moto, localstripe and the app, as `sandbox up` leaves them."""

from __future__ import annotations

import uuid

import httpx
import pytest

from sandbox.processes import Daemon, DaemonError
from tasks.aws.s3 import run_s3_checks
from tasks.postgres.sql import connect
from tests.conftest import settings_for
from tests.webhooks import post_event


def test_status_shows_each_service_with_its_url_and_pid(platform):
    status = platform.status()
    assert set(status.services) == {"moto", "localstripe", "app"}
    for name, url in status.services.items():
        assert url.startswith("http://127.0.0.1:")
        assert status.processes[name] is not None
        assert f"{name:<12} running  {url}  pid {status.processes[name]}" in platform.describe()
    assert status.as_json()["services"] == status.services


def test_service_settings_are_written_for_flows_and_their_secrets_stay_hidden(platform):
    settings = settings_for(platform)
    assert settings.aws.endpoint_url == platform.status().services["moto"]
    assert settings.aws.buckets == ["linkist-uploads", "linkist-backups"]
    assert settings.stripe.api_base == platform.status().services["localstripe"]
    assert [e.name for e in settings.http.endpoints] == ["app-health", "payments-webhook-route"]
    secrets = [
        settings.stripe.api_key.get_secret_value(),
        settings.stripe.webhook_secret.get_secret_value(),
        settings.aws.secret_access_key.get_secret_value(),
    ]
    shown = repr(settings) + platform.describe()
    assert not [s for s in secrets if s in shown]
    assert (platform.root / "services.json").stat().st_mode & 0o077 == 0


def test_app_health_answers_with_its_database_check(platform):
    response = httpx.get(platform.status().services["app"] + "/api/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["database"]["ok"] is True


def test_webhook_with_a_bad_signature_is_rejected_and_not_recorded(platform):
    event = {"id": f"evt_test_{uuid.uuid4().hex}", "object": "event", "type": "ping", "data": {}}
    response = post_event(platform.status().services["app"], event, "whsec_not_the_secret")
    assert response.status_code == 400
    with connect(settings_for(platform).live_dsn()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_events WHERE stripe_event_id = %s", (event["id"],)
        ).fetchone()
    assert row == (0,)


@pytest.fixture
def pending_order(platform):
    """A pending order of the session's sandbox, put back as it was afterwards."""
    dsn = settings_for(platform).live_dsn()
    with connect(dsn) as conn:
        order_id, amount = conn.execute(
            "SELECT id, amount_cents FROM orders WHERE status = 'pending' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    yield order_id, amount
    with connect(dsn) as conn:
        conn.execute("DELETE FROM payments WHERE order_id = %s", (order_id,))
        conn.execute("DELETE FROM webhook_events WHERE stripe_event_id LIKE 'evt_test_%'")
        conn.execute("UPDATE orders SET status = 'pending' WHERE id = %s", (order_id,))


def test_a_signed_payment_event_posted_twice_is_recorded_once_with_its_order_state(
    platform, pending_order
):
    order_id, amount = pending_order
    settings = settings_for(platform)
    intent = f"pi_test_{uuid.uuid4().hex}"
    event = {
        "id": f"evt_test_{uuid.uuid4().hex}",
        "object": "event",
        "type": "payment_intent.payment_failed",
        "data": {
            "object": {
                "id": intent,
                "object": "payment_intent",
                "amount": amount,
                "metadata": {"order_id": str(order_id)},
                "last_payment_error": {"code": "card_declined", "decline_code": "lost_card"},
            }
        },
    }
    app = platform.status().services["app"]
    secret = settings.stripe.webhook_secret.get_secret_value()
    first, second = post_event(app, event, secret), post_event(app, event, secret)
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (second.status_code, second.json()["duplicate"]) == (200, True)
    with connect(settings.live_dsn()) as conn:
        recorded = conn.execute(
            "SELECT count(*), bool_and(processed_at IS NOT NULL) FROM webhook_events"
            " WHERE stripe_event_id = %s",
            (event["id"],),
        ).fetchone()
        payment = conn.execute(
            "SELECT status, decline_code FROM payments WHERE stripe_payment_intent = %s", (intent,)
        ).fetchone()
        order = conn.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
    assert recorded == (1, True)
    assert payment == ("requires_payment_method", "lost_card")
    assert order == ("failed",)


def test_webhook_receiver_keeps_what_is_posted_per_channel(platform):
    app = platform.status().services["app"]
    channel = f"test-{uuid.uuid4().hex[:8]}"
    for n in (1, 2):
        httpx.post(f"{app}/hooks/{channel}", json={"text": f"message {n}"}, timeout=5)
    kept = httpx.get(f"{app}/hooks/{channel}", timeout=5).json()
    assert kept == [{"text": "message 1"}, {"text": "message 2"}]
    httpx.delete(f"{app}/hooks/{channel}", timeout=5)
    assert httpx.get(f"{app}/hooks/{channel}", timeout=5).json() == []


def test_up_restarts_a_stopped_service_and_the_reseeded_moto_passes_its_checks(fresh_platform):
    moto = fresh_platform.services().daemon("moto")
    old_pid = moto.pid()
    moto.stop()
    fresh_platform.up()
    assert moto.pid() not in (None, old_pid)
    results = run_s3_checks.fn(settings_for(fresh_platform).aws)  # new moto, new access key
    assert not [r for r in results if r.name.endswith("reachable") and r.status != "ok"]


def test_down_stops_everything_even_when_one_process_will_not_stop(fresh_platform, monkeypatch):
    stop = Daemon.stop

    def stubborn(self, timeout=20):  # a process we may not signal (e.g. another user's)
        if self.name == "localstripe":
            raise PermissionError(1, "Operation not permitted")
        stop(self, timeout)

    monkeypatch.setattr(Daemon, "stop", stubborn)
    with pytest.raises(DaemonError, match="localstripe"):
        fresh_platform.down()
    status = fresh_platform.status()
    assert status.processes.get("moto") is None and status.processes.get("app") is None
    assert not status.postgres_running
    stop(fresh_platform.services().daemon("localstripe"))
