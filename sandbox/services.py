"""The platform's services beside PostgreSQL: moto (AWS), localstripe (Stripe) and the app.

Each runs as a ``Daemon`` on 127.0.0.1. Ports are the configured ones, or free ports chosen the
first time and kept in ``services.json`` (mode 600, with the sandbox's Stripe key, webhook
secret and AWS key) so that every ``up`` uses the same addresses. moto keeps nothing on disk:
it is seeded whenever it starts; localstripe keeps its objects in ``stripe/`` and is seeded
once, because the platform's tables remember its events.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
from pydantic import BaseModel, SecretStr

from sandbox.aws_seed import (
    BACKUPS,
    ERROR_PATTERNS,
    INCIDENT_REPORTS,
    LOG_GROUP,
    REGION,
    SES_DOMAIN,
    SES_UNVERIFIED,
    UPLOADS,
    seed_aws,
)
from sandbox.processes import Daemon
from sandbox.stripe_seed import StripeSeed, register_webhook
from tasks.core.checking import in_threads
from tasks.core.errors import RefusedError
from tasks.core.settings import SandboxSettings
from tasks.postgres.cluster import free_port, port_in_use

START_TIMEOUT_S = 60
MOTO, STRIPE, APP = "moto", "localstripe", "app"
READY_PATHS = {MOTO: "/moto-api/", STRIPE: "/js.stripe.com/v3/", APP: "/api/health"}
# The platform's services, and the [http] endpoints an incident on each one requests first.
SERVICE_ENDPOINTS = {
    "web": ["app-health"],
    "payment-service": ["payments-webhook-route"],
    "database": ["app-health"],  # the app's health checks its database
}


class ServiceState(BaseModel):
    moto_port: int
    stripe_port: int
    app_port: int
    stripe_api_key: SecretStr
    webhook_secret: SecretStr
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    stripe_seeded: bool = False


class PlatformServices:
    def __init__(self, root: Path, run_dir: Path, settings: SandboxSettings) -> None:
        self.root = root
        self.run_dir = run_dir
        self.settings = settings
        self.state_file = root / "services.json"
        self.stripe_store = root / "stripe" / "store.pickle"

    def daemon(self, name: str) -> Daemon:
        return Daemon(name, self.run_dir)

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> ServiceState:
        if self.state_file.exists():
            return ServiceState.model_validate_json(self.state_file.read_text())
        return ServiceState(
            moto_port=self.settings.moto_port or free_port(),
            stripe_port=self.settings.stripe_port or free_port(),
            app_port=self.settings.app_port or free_port(),
            stripe_api_key=SecretStr(f"sk_test_{secrets.token_urlsafe(18)}"),
            webhook_secret=SecretStr(f"whsec_{secrets.token_urlsafe(24)}"),
        )

    def _save(self, state: ServiceState) -> None:
        data = json.loads(state.model_dump_json())
        for field in (
            "stripe_api_key",
            "webhook_secret",
            "aws_access_key_id",
            "aws_secret_access_key",
        ):
            value = getattr(state, field)
            data[field] = value.get_secret_value() if value is not None else None
        tmp = self.state_file.with_suffix(".tmp")  # others may read it meanwhile: replace it
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_file)

    def urls(self) -> dict[str, str]:
        """Where each service listens (empty before the first ``start``)."""
        if not self.state_file.exists():
            return {}
        state = self.state()
        return {
            MOTO: f"http://127.0.0.1:{state.moto_port}",
            STRIPE: f"http://127.0.0.1:{state.stripe_port}",
            APP: f"http://127.0.0.1:{state.app_port}",
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def start_backends(self) -> None:
        """moto and localstripe, which need no database, and moto's seed.

        Runs while PostgreSQL starts; ``start_app`` follows once it runs.
        """
        state = self.state()
        self._save(state)
        self.stripe_store.parent.mkdir(mode=0o700, exist_ok=True)
        fresh = self._start_all(
            {
                MOTO: (["sandbox.aws_server", "-H", "127.0.0.1", "-p", str(state.moto_port)], {}),
                STRIPE: (
                    ["sandbox.stripe_server", "--port", str(state.stripe_port)]
                    + ["--store", str(self.stripe_store)],
                    {},
                ),
            }
        )
        if MOTO in fresh or state.aws_access_key_id is None:
            keys = seed_aws(self.urls()[MOTO])
            state.aws_access_key_id = keys.access_key_id
            state.aws_secret_access_key = keys.secret_access_key
            self._save(state)

    def start_app(self, dsn: SecretStr) -> None:
        """The app (unless it runs), and the first time localstripe's payments, some of them
        delivered to the app; then the webhook to the app (localstripe forgets it on restart)."""
        state = self.state()
        urls = self.urls()
        webhook_url = urls[APP] + "/api/webhooks/payments"
        if state.stripe_seeded:
            self.start_app_process(dsn)
            register_webhook(urls[STRIPE], webhook_url, state.webhook_secret)
            return
        payments = StripeSeed(urls[STRIPE], state.stripe_api_key, dsn)
        calls: list[Callable[[], None]] = [partial(self.start_app_process, dsn)]
        in_threads([*calls, payments.make_undelivered])
        register_webhook(urls[STRIPE], webhook_url, state.webhook_secret)
        payments.make_delivered()
        state.stripe_seeded = True
        self._save(state)

    def start_app_process(self, dsn: SecretStr) -> None:
        """Only the app's process (it waits for no database: its health says 503 until then)."""
        state = self.state()
        self._start_all(
            {APP: (["sandbox.app", "--port", str(state.app_port)], self._app_env(dsn, state))}
        )

    def _start_all(self, commands: dict[str, tuple[list[str], dict[str, str]]]) -> list[str]:
        """Start, at once, those of ``commands`` not running yet; returns their names."""
        state = self.state()
        ports = {MOTO: state.moto_port, STRIPE: state.stripe_port, APP: state.app_port}
        fresh = [name for name in commands if self.daemon(name).pid() is None]
        for name in fresh:
            if port_in_use(ports[name]):
                raise RefusedError(
                    f"port {ports[name]} on 127.0.0.1 (for {name}) is taken by another process",
                    hint=f"stop it, or set RUNBOOK_SANDBOX_{name.upper()}_PORT and remove "
                    f"{self.state_file}",
                )
        in_threads([partial(self._start, name, *commands[name]) for name in fresh])
        return fresh

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> int:
        ready_url = self.urls()[name] + READY_PATHS[name]
        return self.daemon(name).start(
            [sys.executable, "-m", *args],
            env=env,
            ready=lambda: _answers(ready_url),
            timeout=START_TIMEOUT_S,
        )

    @staticmethod
    def _app_env(dsn: SecretStr, state: ServiceState) -> dict[str, str]:
        from sandbox.app.server import DSN_ENV, WEBHOOK_SECRET_ENV

        return {
            DSN_ENV: dsn.get_secret_value(),
            WEBHOOK_SECRET_ENV: state.webhook_secret.get_secret_value(),
        }

    # -- settings --------------------------------------------------------------------------------

    def settings_toml(self) -> str:
        """The ``[aws]``, ``[stripe]``, ``[http]``, ``[services]`` and ``[incidents]`` tables of
        the sandbox's runbook.toml (the incident store: ``incidents/`` in the sandbox dir)."""
        if not self.state_file.exists():
            return ""
        state = self.state()
        urls = self.urls()
        patterns = "".join(
            f"[[aws.error_patterns]]\nname = {json.dumps(p.name)}\n"
            f"pattern = {json.dumps(p.pattern)}\nbaseline_per_hour = {p.baseline_per_hour}\n\n"
            for p in ERROR_PATTERNS
        )
        endpoints = "".join(
            f"[[http.endpoints]]\nname = {json.dumps(name)}\nurl = {json.dumps(urls[APP] + path)}\n"
            f"timeout_s = 5\nexpect_status = {status}\n\n"
            for name, path, status in (
                ("app-health", "/api/health", 200),
                ("payments-webhook-route", "/api/webhooks/payments", 405),
            )
        )
        return (
            f"[aws]\nendpoint_url = {json.dumps(urls[MOTO])}\nregion = {json.dumps(REGION)}\n"
            f"access_key_id = {_toml_secret(state.aws_access_key_id)}\n"
            f"secret_access_key = {_toml_secret(state.aws_secret_access_key)}\n"
            f"buckets = {json.dumps([UPLOADS, BACKUPS])}\n"
            f"ses_identities = {json.dumps([SES_DOMAIN, SES_UNVERIFIED])}\n"
            f"log_group = {json.dumps(LOG_GROUP)}\n\n"
            f"{patterns}"
            f"[stripe]\napi_key = {_toml_secret(state.stripe_api_key)}\n"
            f"api_base = {json.dumps(urls[STRIPE])}\n"
            f"webhook_secret = {_toml_secret(state.webhook_secret)}\n"
            "event_grace_s = 0\n\n"
            f"{endpoints}"
            f"[services]\nnames = {json.dumps(list(SERVICE_ENDPOINTS))}\n\n"
            f"[incidents]\nstate_dir = {json.dumps(str(self.root / 'incidents'))}\n"
            f"report_bucket = {json.dumps(INCIDENT_REPORTS)}\n\n"
            "[incidents.service_endpoints]\n"
            + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in SERVICE_ENDPOINTS.items())
        )


def _toml_secret(value: SecretStr | None) -> str:
    return json.dumps(value.get_secret_value() if value else "")


def _answers(url: str) -> bool:
    """The server answers HTTP at all (any status: the app's health may be 503)."""
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True
