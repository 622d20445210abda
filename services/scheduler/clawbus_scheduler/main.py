"""`clawbus scheduler`: run one scheduler replica until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from clawbus_core.logs import RedisLogSink, register_secrets, secret_values, setup_logging
from clawbus_core.ops import OpsServer, standard_checks
from clawbus_core.tracing import setup_tracing

from clawbus_scheduler.service import Scheduler
from clawbus_scheduler.settings import SchedulerSettings


async def serve(settings: SchedulerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        Scheduler(settings) as scheduler,
        RedisLogSink(
            scheduler.redis, settings.names, service="scheduler", instance=settings.scheduler_id
        ),
        OpsServer(
            "scheduler",
            settings,
            instance=settings.scheduler_id,
            checks=standard_checks(scheduler.nc, scheduler.pool, scheduler.redis),
            redis=scheduler.redis,
        ),
    ):
        await scheduler.serve(stop)


def main() -> None:
    settings = SchedulerSettings()
    setup_logging(
        "scheduler", settings.log_level, fmt=settings.log_format, instance=settings.scheduler_id
    )
    register_secrets(*secret_values(settings))
    setup_tracing("scheduler", instance=settings.scheduler_id)
    from clawbus_core.loop import run

    run(serve(settings))
