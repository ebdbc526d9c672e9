"""The app's database connections: short timeouts, its own application name."""

from __future__ import annotations

import psycopg

DB_CONNECT_TIMEOUT_S = 2
DB_STATEMENT_TIMEOUT_MS = 2000


def connect(dsn: str) -> psycopg.Connection:
    """A connection that gives up after 2 s, with a 2 s statement timeout."""
    return psycopg.connect(
        dsn,
        connect_timeout=DB_CONNECT_TIMEOUT_S,
        application_name="linkist-sandbox-app",
        options=f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}",
    )
