"""`clawbus gateway`: serve the HTTP edge until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from clawbus_core.process import start_process

from clawbus_gateway.app import create_app
from clawbus_gateway.auth import RedactingAccessLogger
from clawbus_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> None:
    settings = GatewaySettings()
    start_process(
        "api-gateway", settings, instance=settings.gateway_instance_id, secrets=(settings.token(),)
    )
    app = create_app(settings)
    log.info("api-gateway listening on %s", settings.public_url)
    # run_app owns the loop: it handles SIGTERM/SIGINT, drains, and closes the loop.
    web.run_app(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        print=None,
        access_log=None,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=settings.gateway_shutdown_timeout_s,
        loop=_new_loop(),
        handle_signals=True,
    )
