"""GET /health: liveness, without auth."""

from __future__ import annotations

from aiohttp import web
from clawbus_protocol import __version__
from clawbus_protocol.openai import Health

from clawbus_gateway.keys import RUNS

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    runs = request.app[RUNS]
    bus_ok = runs.nc.is_connected
    body = Health(
        status="ok" if bus_ok else "degraded",
        version=__version__,
        checks={"bus": "connected" if bus_ok else "disconnected", "streams": runs.relay.active},
    )
    return web.json_response(text=body.model_dump_json(), status=200 if bus_ok else 503)
