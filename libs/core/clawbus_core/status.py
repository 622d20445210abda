"""`clawbus status`: is each part reachable, and how much work is queued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import nats
import redis.asyncio as aioredis
from clawbus_protocol.names import Names

from clawbus_core.config import resolve_endpoints
from clawbus_core.ops import Registration, registered


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
    try:
        instances = await asyncio.wait_for(_instances(endpoints.redis_url, names), timeout_s)
    except Exception as exc:  # noqa: BLE001 - Redis was reported above
        print(f"services  unknown: cannot list them ({type(exc).__name__})")
        return 1
    if not instances:
        print("services  none registered (no service is running in this namespace)")
        return 0 if healthy else 1
    print(f"services  {len(instances)} instances:")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        readiness = await asyncio.gather(*(_ready(http, i) for i in instances))
    for instance, (ready, detail) in zip(instances, readiness, strict=True):
        healthy = healthy and ready
        state = "ready" if ready else "UNREADY"
        print(
            f"  {instance.service:<15} {instance.instance:<28} {state:<8} {instance.url}  {detail}"
        )
    return 0 if healthy else 1


async def _instances(redis_url: str, names: Names) -> list[Registration]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await registered(client, names)
    finally:
        await client.aclose()


async def _ready(http: aiohttp.ClientSession, instance: Registration) -> tuple[bool, str]:
    """An instance's /readyz: (ready, what failed or its uptime)."""
    try:
        async with http.get(f"{instance.url}/readyz") as r:
            body = await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return False, f"unreachable ({type(exc).__name__})"
    if r.status == 200:
        return True, f"up {_duration(time.time() - instance.started_at)}, pid {instance.pid}"
    failed = {k: v for k, v in body.get("checks", {}).items() if not str(v).startswith("ok")}
    return False, "; ".join(f"{k}: {v}" for k, v in failed.items()) or f"HTTP {r.status}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
