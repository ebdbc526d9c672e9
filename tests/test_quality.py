"""Data-quality checks against a real, throwaway PostgreSQL 15 cluster."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from pydantic import SecretStr

from tasks.core.settings import TableCheck
from tasks.postgres.quality import DataQualityError, run_table_suite

PG_BIN = Path("/usr/lib/postgresql/15/bin")

# GX 1.24.1 imports the deprecated sre_constants and sre_parse modules, at lines 6-7 of
# great_expectations/datasource/fluent/data_connector/file_path_data_connector.py.
_GX_MODULE = "great_expectations.datasource.fluent.data_connector.file_path_data_connector"
pytestmark = [
    pytest.mark.filterwarnings(
        f"ignore:module '{name}' is deprecated:DeprecationWarning:{_GX_MODULE}"
    )
    for name in ("sre_constants", "sre_parse")
]

SEED_SQL = """
create table orders (id int, note text);
insert into orders select g, 'order ' || g from generate_series(1, 5) g;
create table customers (id int, email text);
insert into customers values (1, 'a@x'), (2, 'b@x'), (2, 'c@x'), (null, 'd@x'), (3, 'e@x');
create schema sales;
create table sales.invoices (id int, number text);
insert into sales.invoices values (1, 'INV-1'), (2, 'INV-2'), (3, 'INV-3');
"""


@dataclass(frozen=True)
class Cluster:
    port: int
    password: str

    def dsn(self, password: str | None = None) -> SecretStr:
        secret = quote(self.password if password is None else password, safe="")
        return SecretStr(f"postgresql://postgres:{secret}@127.0.0.1:{self.port}/postgres")


def _as_postgres(program: str, *args: str) -> None:
    """Run a PostgreSQL binary as the postgres OS user, failing with its output."""
    done = subprocess.run(
        [str(PG_BIN / program), *args],
        user="postgres",
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A seeded PostgreSQL 15 cluster on 127.0.0.1, password auth over TCP."""
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.fail(
            "these tests need root and the PostgreSQL 15 binaries (make test installs them)"
        )
    base = Path(tempfile.mkdtemp(prefix="quality-pg-", dir="/tmp"))
    # A space and a slash, so the DSN carries the password percent-encoded.
    password = f"qa pw/{secrets.token_hex(8)}"
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    for path in (base, pwfile):
        shutil.chown(path, user="postgres", group="postgres")
    base.chmod(0o700)
    data, port = base / "data", _free_port()
    try:
        auth = ["--auth-local=peer", "--auth-host=scram-sha-256"]
        _as_postgres("initdb", "-D", str(data), *auth, "-U", "postgres", f"--pwfile={pwfile}")
        listen = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base}"
        _as_postgres(
            "pg_ctl", "-D", str(data), "-l", str(base / "log"), "-o", listen, "-w", "start"
        )
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres"
        ) as connection:
            connection.execute(SEED_SQL)
        yield Cluster(port=port, password=password)
    finally:
        if (data / "postmaster.pid").exists():
            _as_postgres("pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_clean_tables_pass_with_one_outcome_per_expectation(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tables = [
        TableCheck(name="orders", min_rows=5, max_rows=5),
        TableCheck(name="sales.invoices", key_columns=["id", "number"]),
    ]

    suite = run_table_suite(cluster.dsn(), tables)

    assert suite.success
    assert suite.failures() == []
    assert [(o.table, o.expectation, o.column, o.success) for o in suite.outcomes] == [
        ("orders", "values not null", "id", True),
        ("orders", "values unique", "id", True),
        ("orders", "row count between", None, True),
        ("sales.invoices", "values not null", "id", True),
        ("sales.invoices", "values unique", "id", True),
        ("sales.invoices", "values not null", "number", True),
        ("sales.invoices", "values unique", "number", True),
        ("sales.invoices", "row count between", None, True),
    ]
    assert [o.observed for o in suite.outcomes][:3] == [
        "0 nulls in 5 rows",
        "0 duplicates in 5 rows",
        "5 rows",
    ]
    assert capsys.readouterr() == ("", "")  # no progress bars, no connection string
    assert f"127.0.0.1:{cluster.port}" not in caplog.text


def test_null_and_duplicate_keys_fail_naming_table_and_column(cluster: Cluster) -> None:
    suite = run_table_suite(cluster.dsn(), [TableCheck(name="customers")])

    assert not suite.success
    assert [(f.table, f.expectation, f.column, f.observed) for f in suite.failures()] == [
        ("customers", "values not null", "id", "1 null in 5 rows"),
        # GX counts every row whose value repeats: both rows with id 2.
        ("customers", "values unique", "id", "2 duplicates in 5 rows"),
    ]
    assert suite.outcomes[-1].expectation == "row count between"
    assert suite.outcomes[-1].success


@pytest.mark.parametrize(("min_rows", "max_rows"), [(6, None), (1, 4)])
def test_row_count_outside_bounds_fails(
    cluster: Cluster, min_rows: int, max_rows: int | None
) -> None:
    check = TableCheck(name="public.orders", min_rows=min_rows, max_rows=max_rows)

    suite = run_table_suite(cluster.dsn(), [check])

    assert not suite.success
    assert [(f.table, f.expectation, f.column, f.observed) for f in suite.failures()] == [
        ("public.orders", "row count between", None, "5 rows"),
    ]


def test_missing_table_raises_error_naming_table_without_password(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    with pytest.raises(DataQualityError, match="public.no_such_table") as raised:
        run_table_suite(cluster.dsn(), [TableCheck(name="public.no_such_table")])

    assert "does not exist" in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    shown = "".join(traceback.format_exception(raised.value))
    captured = capsys.readouterr()
    for secret in (cluster.password, quote(cluster.password, safe="")):
        for text in (str(raised.value), shown, captured.out, captured.err, caplog.text):
            assert secret not in text


def test_wrong_password_raises_error_without_either_password(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"not {cluster.password}"

    with pytest.raises(DataQualityError, match="password authentication failed") as raised:
        run_table_suite(cluster.dsn(wrong), [TableCheck(name="orders")])

    for text in (str(raised.value), caplog.text):
        assert wrong not in text
        assert quote(wrong, safe="") not in text


def test_missing_key_column_raises_error_naming_column(cluster: Cluster) -> None:
    with pytest.raises(DataQualityError, match="'orders', column 'order_no'"):
        run_table_suite(cluster.dsn(), [TableCheck(name="orders", key_columns=["order_no"])])


@pytest.mark.parametrize(
    "name", ["orders; drop table x", "public.orders.x", '"Orders"', "1orders", "", "a-b"]
)
def test_unsafe_table_name_is_rejected_before_connecting(name: str) -> None:
    # No cluster fixture: validation fails before any DSN is even looked at.
    with pytest.raises(ValueError, match="not an identifier"):
        TableCheck(name=name)


def test_unsafe_key_column_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        TableCheck(name="orders", key_columns=["id); drop table orders; --"])


def test_importing_the_module_does_not_import_great_expectations() -> None:
    code = "import sys, tasks.postgres.quality; print('great_expectations' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
