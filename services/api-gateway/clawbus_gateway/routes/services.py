"""Routes that belong to services not built yet: 000's /v1/browser/* (browser-worker) and
001's /api/cron* (scheduler).

Until those services exist each route answers 503 `service_unavailable`, naming the missing
service in the message and in `details.service`; the permission check comes first.
"""

from __future__ import annotations

from typing import NoReturn

from aiohttp import web
from clawbus_protocol.errors import ServiceUnavailable

from clawbus_gateway.principal import Permission, require

routes = web.RouteTableDef()

BROWSER_WORKER = "browser-worker"
SCHEDULER = "scheduler"


def _unavailable(request: web.Request, permission: Permission, service: str) -> NoReturn:
    require(request, permission)
    raise ServiceUnavailable(
        f"{request.method} {request.path} needs the {service} service, "
        "which is not running in this deployment",
        retryable=False,
        service=service,
    )


@routes.get("/v1/browser/status")
@routes.post("/v1/browser/screenshot")
@routes.post("/v1/browser/navigate")
async def browser(request: web.Request) -> web.Response:
    _unavailable(request, "browser", BROWSER_WORKER)


@routes.get("/api/cron")
@routes.post("/api/cron/{job_id}/run")
async def cron(request: web.Request) -> web.Response:
    _unavailable(request, "cron", SCHEDULER)
