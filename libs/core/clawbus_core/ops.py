"""Every service's operations listener: `/metrics`, `/livez` and `/readyz`, on its own port.

- `/livez`: the process answers (its event loop turns). Restart it when this fails.
- `/readyz`: every dependency the service needs answers within a short time (NATS connected,
  Postgres `SELECT 1`, Redis `PING`, plus the service's own checks). 200 with each check's
  result, or 503 naming what failed. Send it no work while this fails.
- `/metrics`: the process's Prometheus registry (clawbus_core.metrics), text exposition.

Each instance also registers where its listener is in Redis (`Names.ops_instance_key`, with
a TTL, refreshed while it runs), so `clawbus status` finds every instance of every service
even when the ports were picked at random (`CLAWBUS_OPS_PORT=0`, the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

import redis.asyncio as aioredis
from aiohttp import web
from clawbus_protocol.names import Names
from clawbus_protocol.settings import ClawbusSettings
from nats.aio.client import Client as NatsClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError

from clawbus_core import metrics
from clawbus_core.db import Pool

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]  # raises when not ready; may return a detail

CHECK_TIMEOUT_S = 2.0
REGISTRY_TTL_S = 30
REGISTRY_REFRESH_S = 10


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clawbus")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


VERSION = _version()


# --- the standard checks -------------------------------------------------------------------


def nats_check(nc: NatsClient) -> Check:
    async def check() -> str | None:
        if not nc.is_connected:
            raise ConnectionError(
                "not connected (reconnecting)" if nc.is_reconnecting else "closed"
            )
        await nc.flush(timeout=int(CHECK_TIMEOUT_S))
        return None

    return check


def postgres_check(pool: Pool) -> Check:
    async def check() -> str | None:
        await pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_S)
        return None

    return check


def redis_check(redis: aioredis.Redis) -> Check:
    async def check() -> str | None:
        await redis.ping()
        return None

    return check


def standard_checks(nc: NatsClient, pool: Pool, redis: aioredis.Redis) -> dict[str, Check]:
    return {"nats": nats_check(nc), "postgres": postgres_check(pool), "redis": redis_check(redis)}


async def run_checks(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run every check at once, each bounded by CHECK_TIMEOUT_S: (all ok, result by name)."""

    async def one(check: Check) -> str:
        try:
            detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"error: no answer within {CHECK_TIMEOUT_S:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure is the answer, not a crash
            return f"error: {type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")
        return f"ok ({detail})" if detail else "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    outcome = dict(zip(names, results, strict=True))
    return all(result.startswith("ok") for result in results), outcome


# --- the listener --------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What an instance writes to Redis about itself."""

    service: str
    instance: str
    url: str
    pid: int
    host: str
    version: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


class OpsServer:
    """`async with OpsServer(...)`: serve /metrics, /livez, /readyz until the block ends."""

    def __init__(
        self,
        service: str,
        settings: ClawbusSettings,
        *,
        instance: str,
        checks: Mapping[str, Check],
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.instance = instance
        self.checks = dict(checks)
        self.redis = redis
        self.names: Names = settings.names
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task[None] | None = None
        metrics.BUILD_INFO.labels(service=service, version=VERSION).set(1)

    @property
    def url(self) -> str:
        host = self.settings.ops_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> OpsServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.ops_host, self.settings.ops_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise SystemExit(
                f"{self.service}: cannot listen for /metrics and health on "
                f"{self.settings.ops_host}:{self.settings.ops_port} ({exc.strerror}); set "
                "CLAWBUS_OPS_PORT to a free port (0 picks one)"
            ) from None
        self.port = self._runner.addresses[0][1]
        if self.redis is not None:
            self._refresher = asyncio.create_task(self._register_loop(), name="ops-register")
        log.info("%s ops listener on %s (/metrics /livez /readyz)", self.service, self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            if self.redis is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.delete(self._key)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def _key(self) -> str:
        return self.names.ops_instance_key(self.service, self.instance)

    async def _register_loop(self) -> None:
        assert self.redis is not None
        record = Registration(
            service=self.service,
            instance=self.instance,
            url=self.url,
            pid=os.getpid(),
            host=socket.gethostname(),
            version=VERSION,
            started_at=time.time(),
        ).to_json()
        while True:
            try:
                await self.redis.set(self._key, record, ex=REGISTRY_TTL_S)
            except (RedisError, OSError) as exc:  # readiness reports Redis; keep trying
                log.debug("could not register the ops listener: %r", exc)
            await asyncio.sleep(REGISTRY_REFRESH_S)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _livez(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "service": self.service, "instance": self.instance}
        )

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, results = await run_checks(self.checks)
        return web.json_response(
            {
                "status": "ready" if ready else "unready",
                "service": self.service,
                "instance": self.instance,
                "checks": results,
            },
            status=200 if ready else 503,
        )


async def registered(redis: aioredis.Redis, names: Names) -> list[Registration]:
    """Every instance currently registered (sorted by service, then instance)."""
    found: list[Registration] = []
    async for key in redis.scan_iter(match=names.ops_instance_pattern, count=200):
        raw = await redis.get(key)
        if raw is None:
            continue
        with contextlib.suppress(ValueError, TypeError):
            found.append(Registration(**json.loads(raw)))
    return sorted(found, key=lambda r: (r.service, r.instance))
