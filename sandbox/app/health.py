"""``GET /api/health``: 200 with the database's latency when it answers, 503 otherwise."""

from __future__ import annotations

import time

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sandbox.app.db import connect

router = APIRouter()


@router.get("/api/health")
def health(request: Request) -> JSONResponse:
    """The app's health: ``{"status": "ok", "database": {"ok": true, "latency_ms": ...}}``."""
    started = time.monotonic()
    try:
        with connect(request.app.state.dsn) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        return JSONResponse(
            {"status": "unavailable", "database": {"ok": False, "error": type(exc).__name__}},
            status_code=503,
        )
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    return JSONResponse({"status": "ok", "database": {"ok": True, "latency_ms": latency_ms}})
