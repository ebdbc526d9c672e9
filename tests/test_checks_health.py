"""HTTP health checks: the sandbox app, endpoints that hang, refuse, or answer the wrong status."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tasks.core.settings import HttpEndpoint, HttpSettings
from tasks.http.health import run_health_checks
from tasks.postgres.cluster import free_port
from tests.conftest import settings_for


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """A server that accepts connections and never answers: its URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/api/health"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


def test_the_sandbox_app_endpoints_pass(platform):
    results = run_health_checks.fn(settings_for(platform).http)
    assert [(r.name, r.status) for r in results] == [
        ("app-health", "ok"),
        ("payments-webhook-route", "ok"),
    ]
    assert all(r.metrics["http_latency_ms"] > 0 for r in results)


def test_endpoints_are_checked_at_once_each_within_its_own_deadline(platform, hanging_server):
    app = settings_for(platform).http.endpoints[0]
    hanging = [HttpEndpoint(name=f"hangs-{n}", url=hanging_server, timeout_s=1) for n in range(3)]
    started = time.monotonic()
    results = run_health_checks.fn(HttpSettings(endpoints=[*hanging, app]))
    elapsed = time.monotonic() - started
    assert elapsed < 2.5  # three 1 s deadlines, not one after another
    assert [r.status for r in results] == ["fail", "fail", "fail", "ok"]
    assert all("no answer within 1 s" in r.detail and r.hint for r in results[:3])
    assert all(0.9 < r.seconds < 2 for r in results[:3])


def test_a_refused_connection_and_a_wrong_status_fail_with_hints(platform):
    webhook_route = settings_for(platform).http.endpoints[1]
    endpoints = [
        HttpEndpoint(name="nothing-there", url=f"http://127.0.0.1:{free_port()}/", timeout_s=2),
        webhook_route.model_copy(update={"expect_status": 200}),
    ]
    refused, wrong = run_health_checks.fn(HttpSettings(endpoints=endpoints))
    assert refused.status == "fail" and "cannot connect" in refused.detail and refused.hint
    assert wrong.status == "fail" and "answered 405, expected 200" in wrong.detail and wrong.hint
