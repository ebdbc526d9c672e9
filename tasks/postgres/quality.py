"""Data-quality checks on PostgreSQL tables with Great Expectations 1.x.

Each table gets its key columns checked for nulls and duplicates and its row count
checked against bounds. GX runs in an in-memory (ephemeral) context. The password is
handed to GX as a config variable, so GX's own objects, logs and errors only ever
see ``${QUALITY_DB_PASSWORD}``; any error is also scrubbed before it leaves this
module.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

from tasks.core.errors import RunbookError
from tasks.core.settings.postgres import TableCheck
from tasks.postgres.sql import mask_password

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.datasource.fluent.postgres_datasource import PostgresDatasource
    from great_expectations.expectations.expectation import Expectation


_PASSWORD_VARIABLE = "QUALITY_DB_PASSWORD"  # noqa: S105 - a GX config variable name


_EXPECTATION_NAMES = {
    "expect_column_values_to_not_be_null": "values not null",
    "expect_column_values_to_be_unique": "values unique",
    "expect_table_row_count_to_be_between": "row count between",
}


class ExpectationOutcome(BaseModel):
    """The result of one expectation on one table (and column, if it has one).

    ``observed`` reads e.g. ``"1 null in 6 rows"``, ``"4 duplicates in 6 rows"`` (every
    row whose non-null value occurs more than once counts) or ``"6 rows"``.
    """

    table: str
    expectation: str
    column: str | None
    success: bool
    observed: str


class SuiteOutcome(BaseModel):
    """The results of every expectation on every table checked."""

    success: bool
    outcomes: list[ExpectationOutcome]

    def failures(self) -> list[ExpectationOutcome]:
        """Return the outcomes that did not succeed."""
        return [outcome for outcome in self.outcomes if not outcome.success]


class DataQualityError(RunbookError):
    """GX could not run the checks (database unreachable, table or column missing)."""


def run_table_suite(dsn: SecretStr, tables: list[TableCheck]) -> SuiteOutcome:
    """Check each table's key columns (not null, unique) and its row count bounds.

    Args:
        dsn: libpq URL, ``postgresql://user:password@host:port/dbname``.
        tables: the tables to check; each name at most once.

    Returns:
        One outcome per expectation, in the order of ``tables``.

    Raises:
        ValueError: ``dsn`` is not a PostgreSQL URL, or a table is listed twice.
        DataQualityError: GX could not run; the message never contains the password.
    """
    names = [check.name for check in tables]
    if len(set(names)) != len(names):
        raise ValueError(f"each table may be checked once, got {names}")
    if not tables:
        return SuiteOutcome(success=True, outcomes=[])
    password = urlsplit(dsn.get_secret_value()).password or ""
    # Fully percent-encoded, so GX's config substitution finds no "$" or backslash in it.
    encoded = quote(unquote(password), safe="")
    connection_strings = {
        schema: _connection_string(dsn.get_secret_value(), schema)
        for schema in {_split_name(name)[0] for name in names}
    }

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # Logs each connection string (with the password placeholder) at INFO.
    logging.getLogger("great_expectations.datasource.fluent.config_str").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral", runtime_environment={_PASSWORD_VARIABLE: encoded})
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    datasources: dict[str | None, PostgresDatasource] = {}
    outcomes: list[ExpectationOutcome] = []
    try:
        for check in tables:
            schema, table = _split_name(check.name)
            # Anything GX raises may carry connection details: never let it out as is.
            try:
                if schema not in datasources:
                    datasources[schema] = context.data_sources.add_postgres(
                        name=f"postgres ({schema or 'search_path'})",
                        connection_string=connection_strings[schema],
                    )
                asset = datasources[schema].add_table_asset(name=check.name, table_name=table)
                suite = context.suites.add(
                    gx.ExpectationSuite(name=check.name, expectations=_expectations(check))
                )
                validation = context.validation_definitions.add(
                    gx.ValidationDefinition(
                        name=check.name,
                        data=asset.add_batch_definition_whole_table("whole table"),
                        suite=suite,
                    )
                )
                result = validation.run(result_format="BASIC")
            except Exception as error:  # noqa: BLE001 - re-raised below, scrubbed
                message = f"cannot check table {check.name!r}: {error}"
                hint = "check the DSN, and that the table exists and is readable"
                raise DataQualityError(mask_password(f"{message} ({hint})", dsn)) from None
            outcomes.extend(_outcomes(check, result, dsn))
    finally:
        for datasource in datasources.values():
            _close(datasource)
    return SuiteOutcome(success=all(o.success for o in outcomes), outcomes=outcomes)


def _split_name(name: str) -> tuple[str | None, str]:
    """Split ``schema.table`` into its schema (None if unqualified) and table."""
    schema, _, table = name.rpartition(".")
    return schema or None, table


def _connection_string(dsn: str, schema: str | None) -> str:
    """Build the SQLAlchemy psycopg 3 URL for GX, the password as a config variable.

    A schema-qualified table is read through its own ``search_path``, which is how GX
    1.x wants a schema passed now that ``add_table_asset(schema_name=...)`` is
    deprecated.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("dsn must be a postgresql://user:password@host:port/dbname URL")
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:${{{_PASSWORD_VARIABLE}}}@{host}"
    query = parts.query
    if schema is not None:
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        params["options"] = f"{params.get('options', '')} -csearch_path={schema}".strip()
        query = urlencode(params)
    return urlunsplit(("postgresql+psycopg", netloc, parts.path, query, parts.fragment))


def _expectations(check: TableCheck) -> list[Expectation]:
    """The GX expectations for one table."""
    import great_expectations.expectations as gxe

    expectations: list[Expectation] = []
    for column in check.key_columns:
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column=column))
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(min_value=check.min_rows, max_value=check.max_rows)
    )
    return expectations


def _outcomes(
    check: TableCheck, result: ExpectationSuiteValidationResult, dsn: SecretStr
) -> list[ExpectationOutcome]:
    """Turn one table's GX result into outcomes, in suite order.

    Raises:
        DataQualityError: an expectation could not be evaluated (e.g. missing column).
    """
    outcomes: list[ExpectationOutcome] = []
    for item in result.results:
        config = item.expectation_config
        if config is None:
            raise DataQualityError(f"GX returned a result without its expectation: {check.name!r}")
        column = config.kwargs.get("column")
        error = _raised_message(item.exception_info)
        if error is not None:
            message = f"cannot check table {check.name!r}, column {column!r}: {error}"
            raise DataQualityError(mask_password(f"{message} (check the key columns exist)", dsn))
        outcomes.append(
            ExpectationOutcome(
                table=check.name,
                expectation=_EXPECTATION_NAMES.get(config.type, config.type),
                column=column,
                success=bool(item.success),
                observed=_observed(config.type, item.result),
            )
        )
    return outcomes


def _observed(kind: str, result: dict[str, Any]) -> str:
    """Short human text of what GX observed."""
    if kind == "expect_table_row_count_to_be_between":
        return _count(result.get("observed_value"), "row")
    rows = result.get("element_count")
    unexpected = result.get("unexpected_count")
    noun = "null" if kind == "expect_column_values_to_not_be_null" else "duplicate"
    return f"{_count(unexpected, noun)} in {_count(rows, 'row')}"


def _count(number: object, noun: str) -> str:
    """``3 nulls``, ``1 row``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _raised_message(exception_info: dict[str, Any] | None) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any.

    GX reports it either flat or keyed by the metric that failed.
    """
    info = exception_info or {}
    for entry in (info, *info.values()):
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def _close(datasource: PostgresDatasource) -> None:
    """Close the connections GX pooled, so none outlives the run."""
    with contextlib.suppress(Exception):  # best effort: the run's outcome stands
        datasource.get_execution_engine().close()
        datasource.get_engine().dispose()
