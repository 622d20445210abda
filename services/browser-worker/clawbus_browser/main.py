"""`clawbus browser-worker`: run one browser-worker replica until SIGTERM/SIGINT."""

from __future__ import annotations

from clawbus_core.process import observed, start_process, stop_on_signals

from clawbus_browser.service import BrowserWorker
from clawbus_browser.settings import BrowserSettings


async def serve(settings: BrowserSettings) -> None:
    stop = stop_on_signals()
    async with (
        BrowserWorker(settings) as worker,
        observed(
            "browser-worker",
            settings,
            instance=settings.browser_worker_id,
            nc=worker.nc,
            pool=worker.db,
            redis=worker.redis,
        ),
    ):
        await worker.serve(stop)


def main() -> None:
    settings = BrowserSettings()
    start_process("browser-worker", settings, instance=settings.browser_worker_id)
    from clawbus_core.loop import run

    run(serve(settings))
