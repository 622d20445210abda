"""Routes that belong to services not built yet (000): /v1/channels* (channel-bridge) and
/v1/browser/* (browser-worker).

Until those services exist each route answers 503 `service_unavailable`, naming the missing
service in the message and in `details.service`; the permission check comes first.
"""

from __future__ import annotations

from typing import NoReturn

from aiohttp import web
from clawbus_protocol.errors import ServiceUnavailable

from clawbus_gateway.principal import Permission, require

routes = web.RouteTableDef()

CHANNEL_BRIDGE = "channel-bridge"
BROWSER_WORKER = "browser-worker"


def _unavailable(request: web.Request, permission: Permission, service: str) -> NoReturn:
    require(request, permission)
    raise ServiceUnavailable(
        f"{request.method} {request.path} needs the {service} service, "
        "which is not running in this deployment",
        retryable=False,
        service=service,
    )


@routes.get("/v1/channels")
@routes.post("/v1/channels/{channel_id}/enable")
@routes.post("/v1/channels/{channel_id}/disable")
@routes.get("/v1/channels/{channel_id}/status")
async def channels(request: web.Request) -> web.Response:
    _unavailable(request, "channels", CHANNEL_BRIDGE)


@routes.get("/v1/browser/status")
@routes.post("/v1/browser/screenshot")
@routes.post("/v1/browser/navigate")
async def browser(request: web.Request) -> web.Response:
    _unavailable(request, "browser", BROWSER_WORKER)
