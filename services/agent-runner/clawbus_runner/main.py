"""`clawbus agent-runner`: run one runner replica until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import asyncio
import signal

from clawbus_core.process import observed, start_process, stop_on_signals
from clawbus_core.runtime_config import following

from clawbus_runner.settings import RunnerSettings
from clawbus_runner.worker import AgentRunner


def dump_tasks() -> None:
    """SIGUSR1: log where every task is waiting (for diagnosing a stuck runner)."""
    import io
    import logging

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        logging.getLogger(__name__).warning("task %s:\n%s", task.get_name(), out.getvalue())


async def serve(settings: RunnerSettings) -> None:
    stop = stop_on_signals()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    async with (
        AgentRunner(settings) as runner,
        following(runner.pool, runner.nc, runner.names),
        observed(
            "agent-runner",
            settings,
            instance=settings.runner_id,
            nc=runner.nc,
            pool=runner.pool,
            redis=runner.redis,
        ),
    ):
        await runner.serve(stop)


def main() -> None:
    settings = RunnerSettings()
    start_process("agent-runner", settings, instance=settings.runner_id)
    from clawbus_core.loop import run

    run(serve(settings))
