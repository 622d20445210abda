"""The webhook channel, for systems that are neither Telegram nor Discord.

Inbound: the system POSTs a message to the gateway's `/v1/webhooks/{channel id}`, signed
with the channel's secret; the gateway hands the raw request to the bridge replica holding
the channel, which checks the signature and the timestamp before anything else:

    X-Clawbus-Timestamp: <unix seconds>            within 5 minutes of now
    X-Clawbus-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

    {"id": "msg-1", "from": {"id": "u1", "name": "Ann"},
     "chat": {"id": "room-7", "type": "group"},          optional: the sender's DM
     "text": "hello", "addressed": true}                  optional in groups (default true)

`id` is the message's id in that system: a message sent twice is one run.

Outbound: each chunk of a reply is POSTed to the channel's `config.callbackUrl`, signed the
same way, with `X-Clawbus-Delivery` (also `deliveryId` in the body): the same for a chunk sent
again after a crash, so a receiver that remembers it gets every chunk exactly once. The
callback URL must pass the network policy (`CLAWBUS_NET_ALLOW` for private addresses).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from clawbus_core.netguard import CheckedResolver, NetPolicy, check_url
from clawbus_protocol.errors import ClawbusError, InvalidRequest, Unauthorized
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clawbus_bridge.adapters.base import ChannelContext, ChannelFailure, Inbound, SendFailure

SIGNATURE_HEADER = "X-Clawbus-Signature"
TIMESTAMP_HEADER = "X-Clawbus-Timestamp"
DELIVERY_HEADER = "X-Clawbus-Delivery"
MAX_SKEW_S = 300
WEBHOOK_LIMIT = 16_000  # characters per outbound message
_SEND_TIMEOUT_S = 15.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
    """Unauthorized unless the request carries a fresh, valid signature."""
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    signature = headers.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp or not signature:
        raise Unauthorized(f"the request needs {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    try:
        skew = abs(now - int(timestamp))
    except ValueError:
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be unix seconds") from None
    if skew > MAX_SKEW_S:
        raise Unauthorized(f"{TIMESTAMP_HEADER} is more than {MAX_SKEW_S} s away from now")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise Unauthorized("the signature does not match")


class _Party(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=200)


class _Chat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    type: Literal["direct", "group"] = "direct"


class WebhookMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1, max_length=128)
    from_: _Party = Field(alias="from")
    chat: _Chat | None = None
    text: str = Field(min_length=1, max_length=100_000)
    addressed: bool = True


class WebhookAdapter:
    limit = WEBHOOK_LIMIT
    reports_refusals = True

    def __init__(self, ctx: ChannelContext) -> None:
        secret = ctx.credentials.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ChannelFailure(
                "credentials need a `secret` of at least 16 characters", permanent=True
            )
        callback = ctx.channel.settings.get("callbackUrl")
        if not isinstance(callback, str):
            raise ChannelFailure("config needs a `callbackUrl` for replies", permanent=True)
        policy = NetPolicy.from_entries(ctx.settings.net_allow)
        try:
            self.callback = check_url(callback, policy)
        except ClawbusError as exc:
            raise ChannelFailure(
                f"callbackUrl refused: {exc.info.message}", permanent=True
            ) from exc
        self.ctx = ctx
        self.secret = secret
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=CheckedResolver(policy), use_dns_cache=False),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=_SEND_TIMEOUT_S),
        )

    async def run(self) -> None:
        await self.ctx.connected(self.callback.host)
        await asyncio.Event().wait()  # inbound arrives through `handle`

    async def handle(self, headers: Mapping[str, str], body: bytes) -> None:
        verify(self.secret, headers, body, now=time.time())
        try:
            message = WebhookMessage.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            raise InvalidRequest(f"invalid message: {where}: {first['msg']}", param=where) from None
        chat = message.chat or _Chat(id=message.from_.id)
        await self.ctx.receive(
            Inbound(
                platform_id=f"message:{message.id}",
                chat_id=chat.id,
                chat_kind=chat.type,
                sender_id=message.from_.id,
                sender_name=message.from_.name,
                text=message.text,
                message_id=message.id,
                addressed=chat.type == "direct" or message.addressed,
            )
        )

    async def send(self, target: dict[str, Any], text: str, *, reply: bool, nonce: str) -> str:
        delivery = nonce or f"notice-{time.time_ns()}"
        payload = {
            "deliveryId": delivery,
            "channel": self.ctx.channel.name,
            "chatId": target["chat_id"],
            "replyTo": target.get("reply_to") if reply else None,
            "text": text,
        }
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            DELIVERY_HEADER: delivery,
        }
        try:
            async with self.session.post(self.callback, data=body, headers=headers) as r:
                if r.status >= 300:
                    permanent = 400 <= r.status < 500 and r.status not in (408, 429)
                    raise SendFailure(f"the callback answered {r.status}", permanent=permanent)
        except (aiohttp.ClientError, TimeoutError, ClawbusError) as exc:
            raise SendFailure(f"the callback failed: {exc}") from exc
        return delivery

    async def typing(self, target: dict[str, Any]) -> None:
        del target  # a webhook has no typing indicator

    async def aclose(self) -> None:
        await self.session.close()
