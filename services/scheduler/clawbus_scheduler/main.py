"""`clawbus scheduler`: run one scheduler replica until SIGTERM/SIGINT."""

from __future__ import annotations

from clawbus_core.process import observed, start_process, stop_on_signals

from clawbus_scheduler.service import Scheduler
from clawbus_scheduler.settings import SchedulerSettings


async def serve(settings: SchedulerSettings) -> None:
    stop = stop_on_signals()
    async with (
        Scheduler(settings) as scheduler,
        observed(
            "scheduler",
            settings,
            instance=settings.scheduler_id,
            nc=scheduler.nc,
            pool=scheduler.pool,
            redis=scheduler.redis,
        ),
    ):
        await scheduler.serve(stop)


def main() -> None:
    settings = SchedulerSettings()
    start_process("scheduler", settings, instance=settings.scheduler_id)
    from clawbus_core.loop import run

    run(serve(settings))
