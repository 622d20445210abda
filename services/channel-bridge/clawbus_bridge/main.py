"""`clawbus channel-bridge`: run one bridge replica until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from clawbus_core.logs import RedisLogSink, register_secrets, secret_values, setup_logging
from clawbus_core.ops import OpsServer, standard_checks
from clawbus_core.tracing import setup_tracing

from clawbus_bridge.service import ChannelBridge
from clawbus_bridge.settings import BridgeSettings


async def serve(settings: BridgeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        ChannelBridge(settings) as bridge,
        RedisLogSink(
            bridge.redis, settings.names, service="channel-bridge", instance=settings.bridge_id
        ),
        OpsServer(
            "channel-bridge",
            settings,
            instance=settings.bridge_id,
            checks=standard_checks(bridge.nc, bridge.pool, bridge.redis),
            redis=bridge.redis,
        ),
    ):
        await bridge.serve(stop)


def main() -> None:
    settings = BridgeSettings()
    # Telegram puts the bot token in every URL: setup_logging's filter redacts it (REDACT).
    setup_logging(
        "channel-bridge", settings.log_level, fmt=settings.log_format, instance=settings.bridge_id
    )
    register_secrets(*secret_values(settings))
    setup_tracing("channel-bridge", instance=settings.bridge_id)
    from clawbus_core.loop import run

    run(serve(settings))
