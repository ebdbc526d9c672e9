"""Serve the deployments declared in ``prefect.yaml``: one source of truth for names, schedules
and parameters, whether they are served here or pushed with ``prefect deploy``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import yaml
from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron
from pydantic import BaseModel, Field, field_validator

from tasks.core.settings import MaintenanceSettings, load_system

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


TIMEZONE_PLACEHOLDER = re.compile(r"\{\{\s*\$RUNBOOK_MAINTENANCE_SCHEDULE_TIMEZONE\s*\}\}")


def resolve_schedule_timezone(value: str) -> str:
    """``{{ $RUNBOOK_MAINTENANCE_SCHEDULE_TIMEZONE }}`` in prefect.yaml: ``prefect deploy`` takes
    it from the environment; here it is the maintenance setting (environment, then the
    ``[maintenance]`` table of $RUNBOOK_CONFIG, then UTC)."""
    if TIMEZONE_PLACEHOLDER.fullmatch(value.strip()):
        return str(load_system(MaintenanceSettings).schedule_timezone)
    return value


class ScheduleSpec(BaseModel):
    cron: str
    timezone: str = "UTC"
    slug: str = Field(pattern=r"^[a-z0-9-]+$")
    active: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        value = resolve_schedule_timezone(value)
        ZoneInfo(value)
        return value


class DeploymentSpec(BaseModel):
    name: str
    entrypoint: str
    description: str = ""
    tags: list[str] = []
    parameters: dict[str, Any] = {}
    schedules: list[ScheduleSpec] = []

    def load_flow(self) -> Flow[..., Any]:
        path, _, function = self.entrypoint.partition(":")
        return load_flow_from_entrypoint(f"{PROJECT_ROOT / path}:{function}")


def load_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """The deployments in ``prefect.yaml``, validated."""
    document = yaml.safe_load(path.read_text())
    return [DeploymentSpec.model_validate(raw) for raw in document.get("deployments") or []]


def runner_deployments(specs: list[DeploymentSpec]) -> list[RunnerDeployment]:
    deployments = []
    for spec in specs:
        flow = spec.load_flow()
        flow.validate_parameters(spec.parameters)
        deployment = flow.to_deployment(
            name=spec.name,
            description=spec.description,
            tags=spec.tags,
            parameters=spec.parameters,
            schedules=[
                Cron(s.cron, timezone=s.timezone, slug=s.slug, active=s.active)
                for s in spec.schedules
            ],
        )
        deployments.append(cast(RunnerDeployment, deployment))  # sync call: never a coroutine
    return deployments


def serve_all(path: Path = PREFECT_YAML) -> None:
    """Serve every deployment of ``prefect.yaml`` until interrupted."""
    from prefect import serve

    serve(*runner_deployments(load_specs(path)))
