"""What every service process does around its own work: logging, secrets, tracing at start;
its ops listener and recent-logs sink while it runs; SIGTERM/SIGINT to stop.

    def main() -> None:
        settings = SchedulerSettings()
        start_process("scheduler", settings, instance=settings.scheduler_id)
        run(serve(settings))

    async def serve(settings) -> None:
        stop = stop_on_signals()
        async with Scheduler(settings) as s, observed("scheduler", settings, ...):
            await s.serve(stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from clawbus_protocol.settings import ClawbusSettings
from nats.aio.client import Client as NatsClient
from pydantic import SecretStr

from clawbus_core.db import Pool
from clawbus_core.logs import RedisLogSink, register_secrets, secret_values, setup_logging
from clawbus_core.ops import OpsServer, standard_checks
from clawbus_core.tracing import setup_tracing


def start_process(
    service: str, settings: ClawbusSettings, *, instance: str, secrets: tuple[str, ...] = ()
) -> None:
    """Log (in the configured format, every secret of `settings` and `secrets` redacted) and
    record spans as `service`: first thing in a service's main()."""
    setup_logging(service, settings.log_level, fmt=settings.log_format, instance=instance)
    register_secrets(*secret_values(settings), *(SecretStr(s) for s in secrets))
    setup_tracing(service, instance=instance)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.asynccontextmanager
async def observed(
    service: str,
    settings: ClawbusSettings,
    *,
    instance: str,
    nc: NatsClient,
    pool: Pool,
    redis: aioredis.Redis,
) -> AsyncIterator[OpsServer]:
    """While the block runs: records go to the recent-logs stream, and /metrics, /livez and
    /readyz (over these connections) are served and registered."""
    async with (
        RedisLogSink(redis, settings.names, service=service, instance=instance),
        OpsServer(
            service,
            settings,
            instance=instance,
            checks=standard_checks(nc, pool, redis),
            redis=redis,
        ) as ops,
    ):
        yield ops
