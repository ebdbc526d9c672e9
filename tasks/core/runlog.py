"""The logger for code that runs inside a Prefect run or outside one (CLI, sandbox, tests)."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger (its lines reach the Prefect UI) or, outside a run, a module logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("runbook")
