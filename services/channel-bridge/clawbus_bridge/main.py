"""`clawbus channel-bridge`: run one bridge replica until SIGTERM/SIGINT."""

from __future__ import annotations

from clawbus_core.process import observed, start_process, stop_on_signals

from clawbus_bridge.service import ChannelBridge
from clawbus_bridge.settings import BridgeSettings


async def serve(settings: BridgeSettings) -> None:
    stop = stop_on_signals()
    async with (
        ChannelBridge(settings) as bridge,
        observed(
            "channel-bridge",
            settings,
            instance=settings.bridge_id,
            nc=bridge.nc,
            pool=bridge.pool,
            redis=bridge.redis,
        ),
    ):
        await bridge.serve(stop)


def main() -> None:
    settings = BridgeSettings()
    # Telegram puts the bot token in every URL: the log filter redacts it (clawbus_core.logs).
    start_process("channel-bridge", settings, instance=settings.bridge_id)
    from clawbus_core.loop import run

    run(serve(settings))
