"""GET /health: liveness, without auth (000, 001: `status`, `version`, `uptime`)."""

from __future__ import annotations

import time

from aiohttp import web
from clawbus_protocol import __version__
from clawbus_protocol.openai import Health

from clawbus_gateway.keys import RUNS
from clawbus_gateway.routes.agent import STARTED

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    runs = request.app[RUNS]
    bus_ok = runs.nc.is_connected
    body = Health(
        status="ok" if bus_ok else "degraded",
        version=__version__,
        uptime=int(time.monotonic() - request.app[STARTED]),
        checks={"bus": "connected" if bus_ok else "disconnected", "streams": runs.relay.active},
    )
    return web.json_response(text=body.model_dump_json(), status=200 if bus_ok else 503)
