"""The app's assembly: its routers, its secrets from the environment, uvicorn on 127.0.0.1."""

from __future__ import annotations

import argparse
import os

from fastapi import FastAPI

from sandbox.app import health, hooks, payments

DSN_ENV = "SANDBOX_APP_DSN"
WEBHOOK_SECRET_ENV = "SANDBOX_APP_WEBHOOK_SECRET"  # noqa: S105 - the variable's name


def create_app(dsn: str, webhook_secret: str) -> FastAPI:
    """The app, with every router; ``dsn`` and ``webhook_secret`` live in ``app.state``."""
    app = FastAPI(title="Linkist sandbox app", docs_url=None, redoc_url=None)
    app.state.dsn = dsn
    app.state.webhook_secret = webhook_secret
    for module in (health, payments, hooks):
        app.include_router(module.router)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve on ``--port`` (127.0.0.1), with the DSN and webhook secret from the environment."""
    import uvicorn

    parser = argparse.ArgumentParser(description="The Linkist sandbox app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_app(os.environ[DSN_ENV], os.environ[WEBHOOK_SECRET_ENV])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
