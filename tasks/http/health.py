"""HTTP health of the platform's endpoints (httpx), checked concurrently, each with its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from tasks.core.checking import not_configured
from tasks.core.errors import RunbookError
from tasks.core.reports import CheckResult, timed_check
from tasks.core.retry import ops_task
from tasks.core.settings import HttpEndpoint, HttpSettings

SYSTEM = "http"
T = TypeVar("T")


class HttpCheckError(RunbookError):
    """An endpoint did not answer."""


class HttpUnreachable(HttpCheckError):
    """The endpoint gave no answer (no connection, or none within its deadline); transient."""

    transient = True


class Probe(BaseModel):
    """What one request found: a status and latency, or the error that stopped it."""

    status_code: int = 0
    latency_ms: float = 0.0
    seconds: float = 0.0
    error: str = ""
    hint: str = ""


@ops_task("run-health-checks")
def run_health_checks(settings: HttpSettings) -> list[CheckResult]:
    """One result per configured endpoint, all requested at once; never raises.

    Each request has its endpoint's ``timeout_s`` as a hard deadline. Metrics:
    ``http_latency_ms``, ``http_status``.
    """
    if not settings.endpoints:
        return [not_configured(SYSTEM, "endpoints", "list them in RUNBOOK_HTTP_ENDPOINTS")]
    probes = run_coroutine(probe_all(settings.endpoints))
    return [
        timed_check(endpoint.name, partial(judge, endpoint, probe), system=SYSTEM).model_copy(
            update={"seconds": probe.seconds}
        )
        for endpoint, probe in zip(settings.endpoints, probes, strict=True)
    ]


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, in a thread of its own when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def probe_all(endpoints: list[HttpEndpoint]) -> list[Probe]:
    """GET every endpoint at once on one client (redirects not followed); probes in order.

    Never raises for a failed request: its ``Probe`` carries the error.
    """
    async with httpx.AsyncClient(follow_redirects=False) as client:
        return list(await asyncio.gather(*(probe(client, e) for e in endpoints)))


async def probe(client: httpx.AsyncClient, endpoint: HttpEndpoint) -> Probe:
    """GET the endpoint within its deadline (connect, read and total)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(endpoint.timeout_s):
            response = await client.get(endpoint.url, timeout=endpoint.timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        return _failed(started, f"no answer within {endpoint.timeout_s:g} s", _slow_hint(endpoint))
    except httpx.TransportError as exc:
        return _failed(started, f"cannot connect: {type(exc).__name__}", _down_hint(endpoint))
    seconds = time.monotonic() - started
    return Probe(status_code=response.status_code, latency_ms=seconds * 1000, seconds=seconds)


def _failed(started: float, error: str, hint: str) -> Probe:
    return Probe(seconds=time.monotonic() - started, error=error, hint=hint)


def _down_hint(endpoint: HttpEndpoint) -> str:
    return (
        f"{endpoint.name} is down or unreachable: check the service and its load balancer; "
        "restart it with the restart-service flow"
    )


def _slow_hint(endpoint: HttpEndpoint) -> str:
    return (
        f"{endpoint.name} hangs: look for exhausted workers or database connections, and the "
        "app's logs; restart it if it does not recover"
    )


def judge(endpoint: HttpEndpoint, probe: Probe) -> CheckResult:
    """The check result for one probe; raises HttpCheckError when there was no answer."""
    if probe.error:
        raise HttpUnreachable(f"{endpoint.url}: {probe.error}", hint=probe.hint)
    result = CheckResult(
        name=endpoint.name,
        status="ok",
        figure=f"{probe.status_code} in {probe.latency_ms:.0f} ms",
        detail=endpoint.url,
        metrics={"http_latency_ms": probe.latency_ms, "http_status": float(probe.status_code)},
    )
    if probe.status_code != endpoint.expect_status:
        return result.model_copy(
            update={
                "status": "fail",
                "detail": f"{endpoint.url} answered {probe.status_code}, "
                f"expected {endpoint.expect_status}",
                "hint": f"{endpoint.name} is up but unhealthy: read its response and logs "
                "(a 503 from /api/health means its database check failed)",
            }
        )
    if probe.latency_ms > endpoint.slow_ms:
        return result.model_copy(
            update={
                "status": "warn",
                "hint": f"slower than {endpoint.slow_ms:.0f} ms: look at database latency and "
                "the app's load",
            }
        )
    return result
