"""How each system's settings load: environment first, then its table of the TOML file, then
defaults.

The TOML file is the one named by ``RUNBOOK_CONFIG``, read through pydantic-settings' own
``TomlConfigSettingsSource`` with the system's table (``[postgres]``, ``[aws]``...) as header.
A file that is named but missing or not valid TOML is an error naming the variable; a system
whose table is absent simply takes its defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tasks.core.errors import SettingsError

CONFIG_ENV = "RUNBOOK_CONFIG"


class SystemSettings(BaseSettings):
    """Common loading rules; ``section`` is the TOML table, ``env_prefix`` the variable prefix."""

    section: ClassVar[str]
    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings hook: init values first, then the environment, then the TOML table.

        The TOML source is left out when ``RUNBOOK_CONFIG`` is unset or its file has no table for
        this system.

        Raises:
            SettingsError: ``RUNBOOK_CONFIG`` names a file that is missing or not valid TOML.
        """
        path = config_file()
        if path is None:
            return (init_settings, env_settings)
        try:
            toml = TomlConfigSettingsSource(
                settings_cls, toml_file=path, toml_table_header=(cls.section,)
            )
        except KeyError:  # no [section] table in the file: this system keeps its defaults
            return (init_settings, env_settings)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(
                f"{CONFIG_ENV} file {path} is not valid TOML: {exc}", hint="fix the file"
            ) from None
        return (init_settings, env_settings, toml)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable that sets ``field``, e.g. ``RUNBOOK_PG_DSN``."""
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def config_file() -> Path | None:
    """The TOML file ``RUNBOOK_CONFIG`` names (None when unset).

    Raises:
        SettingsError: it names a file that does not exist.
    """
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None
    if not Path(path).is_file():
        raise SettingsError(
            f"{CONFIG_ENV} names {path}, which does not exist",
            hint=f"point {CONFIG_ENV} at a TOML file or unset it",
        )
    return Path(path)


def load_system(cls: type[SystemSettings], **values: Any) -> Any:
    """Load one system's settings (``values`` override every source).

    Returns:
        An instance of ``cls``.
    Raises:
        SettingsError: a value is invalid; the message names the variable to set.
    """
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{cls.variable(str(err['loc'][0])) if err['loc'] else cls.section}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(
            f"invalid {cls.section} settings: {problems}",
            hint=f"set the variables named, or the [{cls.section}] table of ${CONFIG_ENV}",
        ) from None
