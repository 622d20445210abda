"""channel-bridge settings (env prefix CLAWBUS_)."""

from __future__ import annotations

import os
import socket
from typing import Any

from clawbus_protocol.settings import ClawbusSettings
from pydantic import BaseModel, Field


class ChannelConfig(BaseModel):
    """A channel from config (`CLAWBUS_CHANNELS`), created or updated when a bridge starts."""

    name: str
    type: str
    agent: str = "main"
    credentials: dict[str, Any] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    dm_policy: str = "pairing"
    allow_from: list[str] = Field(default_factory=list)
    enabled: bool = True
    tenant: str = "default"  # the tenant's slug


class BridgeSettings(ClawbusSettings):
    bridge_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # One replica polls a bot account at a time: it holds the account's lease (Redis),
    # renewed every third of this; a standby takes over at most this long after it dies.
    bridge_lease_s: float = Field(default=10.0, ge=1.0)
    # A reply being sent is claimed for this long; a crashed sender's claim then lapses.
    bridge_delivery_lease_s: float = Field(default=30.0, ge=1.0)
    # How often the lease holder looks for replies owed (runs that ended while no one
    # watched them: after a failover or a restart).
    bridge_sweep_s: float = Field(default=2.0, gt=0)
    # Channels are re-read this often even without a change notice on the bus.
    bridge_reconcile_s: float = Field(default=30.0, gt=0)
    # Long-poll wait of one getUpdates call.
    bridge_poll_timeout_s: int = Field(default=25, ge=0, le=50)
    # Pairing: how long a code is valid; how often an unknown sender is told it again.
    bridge_pairing_ttl_s: float = Field(default=3600.0, gt=0)
    bridge_pairing_resend_s: float = Field(default=600.0, ge=0)
    # Reconnect backoff after a failure: doubling from min to max, with jitter.
    bridge_backoff_min_s: float = Field(default=1.0, gt=0)
    bridge_backoff_max_s: float = Field(default=60.0, gt=0)
    # A run's reply waits at most this long; past it the chat is told the run timed out.
    bridge_run_timeout_s: float = Field(default=600.0, gt=0)
    # Where the bot APIs are (tests point these at fakes on loopback).
    telegram_api_base: str = "https://api.telegram.org/bot"
    telegram_file_base: str = "https://api.telegram.org/file/bot"
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    channels: list[ChannelConfig] = Field(default_factory=list)
