"""SQL against a PostgreSQL server: status, archiving, integrity checks and row counts.

Every function takes the DSN as a ``SecretStr`` and opens a short autocommit connection with a
connect timeout and a statement timeout; psycopg errors become ``PostgresError`` here, with the
password masked. A DSN is shown (artifact, log line, result, message) only through
``redact_dsn`` or ``describe``, which drop its password wherever it is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import class_row
from pydantic import BaseModel, SecretStr

from tasks.core.errors import RunbookError

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 600_000
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})  # libpq parameters never shown


class PostgresError(RunbookError):
    """A PostgreSQL server could not be reached or a statement failed."""


class PostgresUnreachable(PostgresError):
    """No connection could be made (server down or unreachable, or the login refused); transient."""

    transient = True


class ServerStoppedError(PostgresError):
    """The server we were waiting for exited."""


@contextmanager
def connect(
    dsn: SecretStr, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> Iterator[psycopg.Connection]:
    """An autocommit connection; connection failures raise PostgresUnreachable."""
    try:
        conn = psycopg.connect(
            dsn.get_secret_value(),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="runbook",
            options=f"-c statement_timeout={statement_timeout_ms}",
        )
    except psycopg.Error as exc:
        raise PostgresUnreachable(
            f"cannot connect to {describe(dsn)}: {mask_password(_first_line(exc), dsn)}",
            hint="check that the server is running and the DSN's host, port and credentials",
        ) from None
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise PostgresError(f"on {describe(dsn)}: {mask_password(_first_line(exc), dsn)}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def shown_parameters(dsn: SecretStr | str) -> dict[str, str]:
    """The DSN's libpq parameters without the secret ones (``SECRET_PARAMETERS``).

    Parsed by libpq's rules (``psycopg.conninfo.conninfo_to_dict``), so a password is dropped
    wherever it was written: in a URL's user info, as ``?password=``, or as ``password=``.
    An unparseable DSN gives ``{}``: its text may hold the password, so none of it is shown.
    """
    text = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    try:
        parameters = conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        return {}
    return {k: str(v) for k, v in parameters.items() if k not in SECRET_PARAMETERS}


def redact_dsn(dsn: SecretStr | str) -> str:
    """The DSN as libpq ``key=value`` text without its password, e.g.
    ``user=postgres dbname=linkist host=::1 port=5432``: usable with ``psql``, and IPv6 hosts
    stay as written. ``"(unparseable DSN)"`` when libpq could not read it."""
    parameters = shown_parameters(dsn)
    return make_conninfo("", **parameters) if parameters else "(unparseable DSN)"


def describe(dsn: SecretStr | str) -> str:
    """``host:port/db`` of a DSN, without user or password, for short messages; an IPv6 host in
    brackets (``[::1]:5432/linkist``), several hosts comma-separated, libpq's default port."""
    parameters = shown_parameters(dsn)
    hosts = parameters.get("host", "localhost").split(",")
    ports = parameters.get("port", "5432").split(",")
    if len(ports) == 1:  # libpq: one port serves every host
        ports *= len(hosts)
    where = ",".join(
        f"[{host}]:{port or 5432}" if ":" in host else f"{host}:{port or 5432}"
        for host, port in zip(hosts, ports, strict=False)
    )
    return f"{where}/{parameters['dbname']}" if "dbname" in parameters else where


def mask_password(text: str, dsn: SecretStr | str) -> str:
    """``text`` (a vendor's error, which may echo what it parsed) with every form of the DSN's
    passwords (user info and ``password=``; as written, decoded, percent-encoded) as ``***``."""
    raw = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    try:
        given = str(conninfo_to_dict(raw).get("password") or "")
    except psycopg.ProgrammingError:
        given = ""
    try:
        in_url = (urlsplit(raw).password or "") if "://" in raw else ""
    except ValueError:  # e.g. an unclosed IPv6 bracket: libpq's reading above is what counts
        in_url = ""
    forms = {given, in_url, unquote(in_url)}
    forms |= {quote(form, safe="") for form in forms}
    for secret in sorted(forms - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# Query parameters that say where to connect: kept, they would win over the new host and port
# and aim a "restored" DSN at live.
_WHERE = frozenset({"host", "hostaddr", "port", "service", "target_session_attrs"})


def with_port(dsn: SecretStr, port: int, host: str = "127.0.0.1") -> SecretStr:
    """The same DSN (a ``postgresql://`` URL) aimed at another host and port, a scratch or
    restored cluster: credentials, database and other options kept; every ``host``,
    ``hostaddr``, ``port`` or ``service`` in its query dropped, so nothing can aim it back at
    the server it came from."""
    parts = urlsplit(dsn.get_secret_value())
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in _WHERE
        ]
    )
    return SecretStr(urlunsplit(parts._replace(netloc=netloc, query=query)))


def fetch_value(dsn: SecretStr, query: str, params: Sequence[object] = ()) -> object:
    """The first column of ``query``'s first row (None when there is no row).

    Raises:
        PostgresUnreachable: no connection. PostgresError: the statement failed.
    """
    with connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def is_in_recovery(dsn: SecretStr) -> bool:
    """``pg_is_in_recovery()``: True on a standby, or on a server still recovering.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    return bool(fetch_value(dsn, "SELECT pg_is_in_recovery()"))


def system_identifier(dsn: SecretStr) -> int:
    """The cluster's system identifier (``pg_control_system()``), as its backups record it.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    return int(str(fetch_value(dsn, "SELECT system_identifier FROM pg_control_system()")))


def current_timeline(dsn: SecretStr) -> int | None:
    """The server's timeline, or None when it cannot be reached (an outage)."""
    try:
        return int(str(fetch_value(dsn, "SELECT timeline_id FROM pg_control_checkpoint()")))
    except PostgresUnreachable:
        return None


def switch_wal(dsn: SecretStr) -> str:
    """Close the current WAL segment so it gets archived; returns the switch LSN."""
    return str(fetch_value(dsn, "SELECT pg_switch_wal()"))


def wait_until_promoted(
    dsn: SecretStr,
    *,
    deadline_s: float,
    server_alive: Callable[[], bool],
    on_wait: Callable[[float], None] = lambda elapsed: None,
    poll_s: float = 0.1,
) -> float:
    """Wait until the server accepts connections AND ``pg_is_in_recovery()`` is false.

    Returns the seconds waited. Raises ServerStoppedError if the server exits, PostgresError
    when the deadline passes (the caller stops the server and removes its directory).
    """
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        try:
            if not is_in_recovery(dsn):
                return elapsed
        except PostgresUnreachable:
            if not server_alive():
                raise ServerStoppedError(
                    f"the server at {describe(dsn)} exited before it was promoted",
                    hint="read the server log for the reason",
                ) from None
        if elapsed > deadline_s:
            raise PostgresError(
                f"{describe(dsn)} was not promoted within {deadline_s:.0f} s",
                hint="recovery stalled or is slower than the deadline; read the server log",
            )
        on_wait(elapsed)
        time.sleep(poll_s)


class ArchiverStatus(BaseModel):
    """The one row of ``pg_stat_archiver``: WAL segments archived and failed, the last of each."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None

    @property
    def failing(self) -> bool:
        """The last attempt failed (a failure newer than the last success)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


def archiver_status(dsn: SecretStr) -> ArchiverStatus:
    """WAL archiving health from ``pg_stat_archiver``."""
    with connect(dsn) as conn:
        row = (
            conn.cursor(row_factory=class_row(ArchiverStatus))
            .execute(
                "SELECT archived_count, last_archived_wal, last_archived_time, failed_count,"
                " last_failed_wal, last_failed_time FROM pg_stat_archiver"
            )
            .fetchone()
        )
    assert row is not None  # pg_stat_archiver always has exactly one row
    return row


def row_counts(dsn: SecretStr, tables: Sequence[str]) -> dict[str, int]:
    """Exact ``count(*)`` of each table (names may be schema-qualified)."""
    counts: dict[str, int] = {}
    with connect(dsn) as conn:
        for table in tables:
            ident = sql.Identifier(*table.split("."))
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


class AmcheckResult(BaseModel):
    """What ``amcheck_btree_indexes`` found: indexes checked, each corrupt one's error, and each
    one that could not be checked (a statement timeout, a lock, a missing privilege)."""

    indexes_checked: int
    corrupt: list[str]  # "index: error" for each index amcheck found corrupt
    unchecked: list[str] = []  # "index: error" for each index it could not check


def amcheck_btree_indexes(
    dsn: SecretStr, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> AmcheckResult:
    """``bt_index_check`` on every valid btree index of the database (creates amcheck if absent).

    Only for a scratch or restored cluster: it may create the extension. An index is corrupt
    only when amcheck says so (SQLSTATE class XX: ``index_corrupted``, ``data_corrupted``,
    internal errors); any other error, a statement timeout above all, means it could not be
    checked. ``statement_timeout_ms`` bounds each index's check.

    Raises:
        PostgresUnreachable, PostgresError (the index list could not be read).
    """
    corrupt: list[str] = []
    unchecked: list[str] = []
    with connect(dsn, statement_timeout_ms=statement_timeout_ms) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        indexes = conn.execute(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam"
            " WHERE am.amname = 'btree' AND i.indisvalid AND c.relpersistence <> 't'"
            " ORDER BY 2"
        ).fetchall()
        for oid, name in indexes:
            try:
                conn.execute("SELECT bt_index_check(%s::regclass, true)", (oid,))
            except psycopg.errors.QueryCanceled:
                unchecked.append(
                    f"{name}: stopped by the {statement_timeout_ms} ms statement timeout"
                )
            except psycopg.errors.Error as exc:
                found = corrupt if (exc.sqlstate or "").startswith("XX") else unchecked
                found.append(f"{name}: {_first_line(exc)}")
    return AmcheckResult(
        indexes_checked=len(indexes) - len(unchecked), corrupt=corrupt, unchecked=unchecked
    )
