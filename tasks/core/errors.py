"""The root of every error this project raises on purpose.

Each system has its own subtree (``tasks.core.process``, ``tasks.postgres.sql``,
``tasks.backups.base``...).
Every error carries a ``hint``: what the on-call engineer should do about it.
"""

from __future__ import annotations


class RunbookError(Exception):
    """An expected failure with a message that names the problem and a hint that names the fix."""

    transient = False  # retry_condition_fn retries only errors that say they are transient

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} (fix: {hint})" if hint else message)


class SettingsError(RunbookError):
    """A setting is missing or invalid; the message names the variable to set."""


class RefusedError(RunbookError):
    """A request was refused before anything changed (bad input or an unsafe target)."""
