"""The api-gateway application: resources in `cleanup_ctx`, middlewares, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from clawbus_core import bus
from clawbus_core.config import resolve_endpoints
from clawbus_core.db import create_pool
from clawbus_core.events import RunRelay
from clawbus_core.models import ModelCatalog

from clawbus_gateway.auth import auth_middleware
from clawbus_gateway.errors import error_middleware
from clawbus_gateway.keys import CATALOG, RUNS, SETTINGS, SETTINGS_TOKEN
from clawbus_gateway.routes import health, openai, runs
from clawbus_gateway.runs import RunService
from clawbus_gateway.settings import GatewaySettings


async def _infrastructure(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    endpoints = resolve_endpoints(settings)
    pool = await create_pool(
        endpoints.database_url, min_size=2, max_size=settings.gateway_db_pool_size
    )
    redis = aioredis.Redis.from_url(endpoints.redis_url, max_connections=256)
    nc = await bus.connect(endpoints.nats_url, name=f"api-gateway:{settings.gateway_instance_id}")
    relay = RunRelay(redis, settings.names, settings.gateway_instance_id)
    runs = RunService(pool, nc, relay, settings.names, timeout_s=settings.gateway_request_timeout_s)
    try:
        await bus.ensure_runs_stream(runs.js, settings.names)
        await relay.start()
        app[RUNS] = runs
        yield
    finally:
        await relay.stop()
        await nc.drain()
        await redis.aclose()
        await pool.close()


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=settings.gateway_max_body_bytes,
    )
    app[SETTINGS] = settings
    app[SETTINGS_TOKEN] = settings.token()
    app[CATALOG] = ModelCatalog.from_settings(settings)
    app.cleanup_ctx.append(_infrastructure)
    app.add_routes(health.routes)
    app.add_routes(openai.routes)
    app.add_routes(runs.routes)
    return app
