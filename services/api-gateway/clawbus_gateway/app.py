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
from clawbus_core.process import observed
from clawbus_core.runservice import RunService

from clawbus_gateway import broadcast
from clawbus_gateway.auth import KEYRING, Keyring, auth_middleware
from clawbus_gateway.errors import error_middleware
from clawbus_gateway.keys import CATALOG, OPS, RUNS, SETTINGS, SETTINGS_TOKEN
from clawbus_gateway.observe import observe_middleware, stamp_traceresponse
from clawbus_gateway.ratelimit import RateLimits, stamp_headers
from clawbus_gateway.routes import (
    agent,
    api,
    browser,
    channels,
    cron,
    health,
    media,
    openai,
    responses,
    runs,
    sessions,
)
from clawbus_gateway.routes import api_v1 as v1
from clawbus_gateway.routes import config as config_routes
from clawbus_gateway.routes import docs as docs_routes
from clawbus_gateway.routes import logs as log_routes
from clawbus_gateway.routes import ws as ws_routes
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
        await bus.ensure_runs_stream(
            runs.js, settings.names, replicas=settings.nats_stream_replicas
        )
        await relay.start()
        app[RUNS] = runs
        async with observed(
            "api-gateway",
            settings,
            instance=settings.gateway_instance_id,
            nc=nc,
            pool=pool,
            redis=redis,
        ) as ops:
            app[OPS] = ops
            yield
    finally:
        await relay.stop()
        await nc.drain()
        await redis.aclose()
        await pool.close()


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        middlewares=[observe_middleware, error_middleware, auth_middleware, RateLimits(settings)],
        client_max_size=settings.gateway_max_body_bytes,
    )
    app.on_response_prepare.append(stamp_headers)
    app.on_response_prepare.append(stamp_traceresponse)
    app[SETTINGS] = settings
    app[SETTINGS_TOKEN] = settings.token()
    app[KEYRING] = Keyring.from_settings(settings, app[SETTINGS_TOKEN])
    app[CATALOG] = ModelCatalog.from_settings(settings)
    app.cleanup_ctx.append(_infrastructure)
    app.cleanup_ctx.append(broadcast.broadcasting)  # after: it uses the NATS connection
    app.cleanup_ctx.append(config_routes.following)  # after: it uses the pool and NATS
    app.on_shutdown.append(broadcast.close_clients)
    app.add_routes(health.routes)
    app.add_routes(openai.routes)
    app.add_routes(runs.routes)
    app.cleanup_ctx.append(agent.clock)
    app.add_routes(agent.routes)
    app.add_routes(sessions.routes)
    app.add_routes(v1.routes)
    app.add_routes(config_routes.routes)
    app.add_routes(api.routes)
    app.cleanup_ctx.append(channels.secrets)
    app.add_routes(channels.routes)
    app.add_routes(cron.routes)
    app.add_routes(browser.routes)
    app.add_routes(media.routes)
    app.add_routes(responses.routes)
    app.add_routes(ws_routes.routes)
    app.add_routes(log_routes.routes)
    app.add_routes(docs_routes.routes)
    return app
