"""`clawbus status`: is each part reachable, and how much work is queued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import nats
import redis.asyncio as aioredis

from clawbus_core.config import resolve_endpoints


async def _gateway(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {body}")
        return f"{body['status']} (version {body['version']})"


async def _postgres(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        revision = await conn.fetchval("SELECT version_num FROM alembic_version")
        runs = await conn.fetchval(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
        )
        return f"ok (migration {revision}, {runs} runs queued or running)"
    finally:
        await conn.close()


async def _redis(url: str) -> str:
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
        info = await client.info("server")
        return f"ok (redis {info.get('redis_version', '?')})"
    finally:
        await client.aclose()


async def _nats(url: str, stream: str, consumer: str) -> str:
    nc = await nats.connect(url, max_reconnect_attempts=0, connect_timeout=2)
    try:
        js = nc.jetstream()
        try:
            info = await js.consumer_info(stream, consumer)
        except nats.js.errors.NotFoundError:
            return "ok (no runner has registered yet)"
        return (
            f"ok ({info.num_pending} runs waiting, {info.num_ack_pending} being run, "
            f"{info.num_redelivered} redelivered)"
        )
    finally:
        await nc.close()


async def report(*, timeout_s: float) -> int:
    from clawbus_gateway.settings import GatewaySettings

    settings = GatewaySettings()
    endpoints = resolve_endpoints(settings)
    names = settings.names
    checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("gateway", lambda: _gateway(settings.public_url)),
        ("nats", lambda: _nats(endpoints.nats_url, names.runs_stream, names.runners_consumer)),
        ("postgres", lambda: _postgres(endpoints.database_url)),
        ("redis", lambda: _redis(endpoints.redis_url)),
    ]
    healthy = True
    for name, check in checks:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(check(), timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure is a finding to print, not a crash
            healthy = False
            result = f"DOWN: {type(exc).__name__}: {exc}"
        print(f"{name:<9} {result}  [{(time.monotonic() - started) * 1000:.0f} ms]")
    return 0 if healthy else 1
