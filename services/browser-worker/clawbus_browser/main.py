"""`clawbus browser-worker`: run one browser-worker replica until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from clawbus_core.logs import RedisLogSink, register_secrets, secret_values, setup_logging
from clawbus_core.ops import OpsServer, standard_checks
from clawbus_core.tracing import setup_tracing

from clawbus_browser.service import BrowserWorker
from clawbus_browser.settings import BrowserSettings


async def serve(settings: BrowserSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        BrowserWorker(settings) as worker,
        RedisLogSink(
            worker.redis,
            settings.names,
            service="browser-worker",
            instance=settings.browser_worker_id,
        ),
        OpsServer(
            "browser-worker",
            settings,
            instance=settings.browser_worker_id,
            checks=standard_checks(worker.nc, worker.db, worker.redis),
            redis=worker.redis,
        ),
    ):
        await worker.serve(stop)


def main() -> None:
    settings = BrowserSettings()
    setup_logging(
        "browser-worker",
        settings.log_level,
        fmt=settings.log_format,
        instance=settings.browser_worker_id,
    )
    register_secrets(*secret_values(settings))
    setup_tracing("browser-worker", instance=settings.browser_worker_id)
    from clawbus_core.loop import run

    run(serve(settings))
