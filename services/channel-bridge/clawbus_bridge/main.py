"""`clawbus channel-bridge`: run one bridge replica until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import re
import signal

from clawbus_core.logs import setup_logging
from clawbus_core.ops import OpsServer, standard_checks
from clawbus_core.tracing import setup_tracing

from clawbus_bridge.service import ChannelBridge
from clawbus_bridge.settings import BridgeSettings

# Telegram puts the bot token in every URL (…/bot<id>:<secret>/method): never log it.
_TELEGRAM_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TELEGRAM_TOKEN.sub("bot<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_tokens() -> None:
    """Install the filter on every handler of the root logger (what the library loggers
    propagate to), and keep httpx's per-request lines out of the log."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("telegram").addFilter(RedactTokens())


async def serve(settings: BridgeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        ChannelBridge(settings) as bridge,
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
    setup_logging("channel-bridge", settings.log_level)
    setup_tracing("channel-bridge", instance=settings.bridge_id)
    redact_tokens()
    from clawbus_core.loop import run

    run(serve(settings))
