"""The platform's services, by name: what an incident (or a recovery) may name as its service."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tasks.core.settings.base import SystemSettings

# A service's name becomes part of run tags, keys and file names.
ServiceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]


class ServicesSettings(SystemSettings):
    """The configured services (``RUNBOOK_SERVICES_NAMES`` or ``[services] names``).

    Incidents must name one of them. Application recovery (restart, rollback) adds here how
    each service runs; so far a service is only its name (the sandbox: ``web``,
    ``payment-service``, ``database``).
    """

    section = "services"
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_SERVICES_")

    names: list[ServiceName] = Field(default_factory=list, description="the services, by name")
