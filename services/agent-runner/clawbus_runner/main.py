"""`clawbus agent-runner`: run one runner replica until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import asyncio
import signal

from clawbus_core.logs import RedisLogSink, register_secrets, secret_values, setup_logging
from clawbus_core.ops import OpsServer, standard_checks
from clawbus_core.runtime_config import following
from clawbus_core.tracing import setup_tracing

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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    async with (
        AgentRunner(settings) as runner,
        RedisLogSink(
            runner.redis, runner.names, service="agent-runner", instance=settings.runner_id
        ),
        following(runner.pool, runner.nc, runner.names),
        OpsServer(
            "agent-runner",
            settings,
            instance=settings.runner_id,
            checks=standard_checks(runner.nc, runner.pool, runner.redis),
            redis=runner.redis,
        ),
    ):
        await runner.serve(stop)


def main() -> None:
    settings = RunnerSettings()
    setup_logging(
        "agent-runner", settings.log_level, fmt=settings.log_format, instance=settings.runner_id
    )
    register_secrets(*secret_values(settings))
    setup_tracing("agent-runner", instance=settings.runner_id)
    from clawbus_core.loop import run

    run(serve(settings))
