"""Channels as the surfaces show them: OpenClaw 000's /v1/channels, 001's /api/channels,
GoClaw's /v1/channel-instances (snake_case, as GoClaw writes them), and pairing approvals."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from clawbus_protocol.errors import ErrorInfo

ChannelStatus = Literal["connected", "connecting", "error", "disabled", "not_configured"]
ChannelTypeName = Literal["telegram", "discord", "webhook"]
DmPolicyName = Literal["pairing", "allowlist", "open"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_ALLOW_FROM = 1000


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


# --- 000: /v1/channels ------------------------------------------------------------------------


class ChannelInfo(_Wire):
    id: str  # the channel's name: what the routes take as {id}
    name: str  # for people: `settings.displayName`, else the type ("Telegram")
    type: ChannelTypeName
    enabled: bool
    status: ChannelStatus
    status_reason: str | None = None
    account: str | None = None  # what the bot is connected as (000: `botUsername`, `account`)
    bot_username: str | None = None
    agent_id: str
    messages_received: int
    messages_sent: int


class ChannelList(_Wire):
    channels: list[ChannelInfo]


# --- 001: /api/channels -----------------------------------------------------------------------


class ApiChannel(_Wire):
    name: str
    status: ChannelStatus
    messages_received: int
    messages_sent: int
    type: ChannelTypeName  # clawbus addition
    enabled: bool  # clawbus addition


class ApiChannelList(_Wire):
    channels: list[ApiChannel]


# --- GoClaw: /v1/channel-instances ------------------------------------------------------------


class ChannelInstance(BaseModel):
    id: str
    name: str
    channel_type: ChannelTypeName
    agent_id: str  # the agent's key
    config: dict[str, Any]
    dm_policy: DmPolicyName
    allow_from: list[str]
    enabled: bool
    has_credentials: bool  # credentials are write-only: never returned
    status: ChannelStatus
    status_reason: str | None = None
    messages_received: int
    messages_sent: int
    created_at: datetime
    updated_at: datetime


class ChannelInstanceList(BaseModel):
    instances: list[ChannelInstance]


class ChannelInstanceWrite(BaseModel):
    """POST (create) and PUT (replace) body. On PUT, omitted `credentials` keep the stored
    ones; every other field is replaced."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    channel_type: ChannelTypeName
    agent_id: str = Field(default="main", min_length=1, max_length=64)
    credentials: dict[str, Any] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    dm_policy: DmPolicyName = "pairing"
    allow_from: list[str] = Field(default_factory=list, max_length=MAX_ALLOW_FROM)
    enabled: StrictBool = True


# --- inbound webhooks (gateway -> the bridge replica holding the channel, NATS req/reply) ----


class WebhookRequest(BaseModel):
    """A POST to /v1/webhooks/{channel id}, as the gateway received it."""

    headers: dict[str, str]  # the signature headers, names lower-cased
    body: str  # base64 of the raw body: signatures are over its exact bytes


class WebhookAnswer(BaseModel):
    error: ErrorInfo | None = None


class WebhookAccepted(BaseModel):
    ok: Literal[True] = True


# --- pairing ----------------------------------------------------------------------------------


class PendingPairing(_Wire):
    sender_id: str
    display_name: str | None
    code: str
    expires_at: datetime


class PairingList(_Wire):
    pending: list[PendingPairing]


class PairingApprove(_Wire):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=4, max_length=32)


class PairingApproved(_Wire):
    approved: Literal[True] = True
    sender_id: str
