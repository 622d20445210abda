"""api-gateway: the aiohttp edge."""

from clawbus_gateway.app import create_app
from clawbus_gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
