"""Typed app keys for everything the gateway's handlers reach (owned by `cleanup_ctx`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from clawbus_core.models import ModelCatalog
    from clawbus_core.ops import OpsServer
    from clawbus_core.runservice import RunService

    from clawbus_gateway.settings import GatewaySettings

SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings")
SETTINGS_TOKEN: web.AppKey[str] = web.AppKey("token", str)
RUNS: web.AppKey[RunService] = web.AppKey("runs")
CATALOG: web.AppKey[ModelCatalog] = web.AppKey("catalog")
OPS: web.AppKey[OpsServer] = web.AppKey("ops")  # /metrics, /livez, /readyz on their own port
