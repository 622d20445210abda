"""Channels, as every document shows them, over the one channel store (clawbus_core.store.
channels); the channel-bridge connects them and writes their status.

- 000: GET /v1/channels, POST /v1/channels/{id}/enable | disable, GET /v1/channels/{id}/status
- 001: GET /api/channels
- GoClaw: GET/POST /v1/channel-instances, GET/PUT/DELETE /v1/channel-instances/{id}
- clawbus: GET /v1/channels/{id}/pairing (pending senders), POST .../pairing/approve {code}
- POST /v1/webhooks/{channel uuid}: inbound requests of webhook channels and of Telegram in
  webhook mode. No gateway credential: the bridge replica holding the channel checks the
  request's own signature (HMAC, or Telegram's secret token) before anything else.

`{id}` is the channel's name (GoClaw's routes also take its uuid). Every change is announced
on the bus (`names.channels_changed_subject`) so every bridge replica applies it at once:
a disabled channel stops polling and shows `disabled`. Credentials are sealed with the
deployment's key before they are stored and never returned. Routes need `channels`.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

from aiohttp import web
from clawbus_core import tracing
from clawbus_core.secrets import SecretBox, secret_box
from clawbus_core.store import channels as store
from clawbus_protocol.channels import (
    ApiChannel,
    ApiChannelList,
    ChannelInfo,
    ChannelInstance,
    ChannelInstanceList,
    ChannelInstanceWrite,
    ChannelList,
    PairingApprove,
    PairingApproved,
    PairingList,
    PendingPairing,
    WebhookAccepted,
    WebhookAnswer,
    WebhookRequest,
)
from clawbus_protocol.errors import (
    ClawbusError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import RUNS, SETTINGS
from clawbus_gateway.principal import Principal, require

routes = web.RouteTableDef()

BOX: web.AppKey[SecretBox] = web.AppKey("secret_box", SecretBox)


async def secrets(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the deployment's key, for sealing channel credentials."""
    settings = app[SETTINGS]
    key = settings.secret_key.get_secret_value() if settings.secret_key else None
    app[BOX] = secret_box(key, settings.data_dir)
    yield


def _ns(request: web.Request) -> str:
    return request.app[RUNS].names.namespace


def channel_info(c: store.Channel) -> ChannelInfo:
    bot = c.account if c.type in ("telegram", "discord") else None
    return ChannelInfo(
        id=c.name,
        name=str(c.settings.get("displayName") or c.type.title()),
        type=c.type,
        enabled=c.enabled,
        status=c.shown_status,
        status_reason=c.status_reason if c.shown_status == "error" else None,
        account=c.account,
        bot_username=bot,
        agent_id=c.agent_key,
        messages_received=c.messages_received,
        messages_sent=c.messages_sent,
    )


def _instance(c: store.Channel) -> ChannelInstance:
    return ChannelInstance(
        id=str(c.id),
        name=c.name,
        channel_type=c.type,
        agent_id=c.agent_key,
        config=c.settings,
        dm_policy=c.dm_policy,
        allow_from=list(c.allow_from),
        enabled=c.enabled,
        has_credentials=c.configured,
        status=c.shown_status,
        status_reason=c.status_reason if c.shown_status == "error" else None,
        messages_received=c.messages_received,
        messages_sent=c.messages_sent,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


async def _changed(request: web.Request, name: str) -> None:
    """Tell every bridge replica; the database already holds the change, so a lost notice
    only delays it until the bridges' next periodic read."""
    runs = request.app[RUNS]
    with contextlib.suppress(NatsError):
        await runs.nc.publish(runs.names.channels_changed_subject, name.encode())


async def _channel(request: web.Request, who: Principal) -> store.Channel:
    ref = request.match_info["id"]
    return await store.find_channel(request.app[RUNS].pool, _ns(request), who.tenant_id, ref)


# --- 000 --------------------------------------------------------------------------------------


@routes.get("/v1/channels")
async def list_channels(request: web.Request) -> web.Response:
    who = require(request, "channels")
    found = await store.list_channels(request.app[RUNS].pool, _ns(request), who.tenant_id)
    return web.json_response(
        text=ChannelList(channels=[channel_info(c) for c in found]).model_dump_json()
    )


@routes.get("/v1/channels/{id}/status")
async def channel_status(request: web.Request) -> web.Response:
    who = require(request, "channels")
    return web.json_response(text=channel_info(await _channel(request, who)).model_dump_json())


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    who = require(request, "channels")
    pool = request.app[RUNS].pool
    name = (await _channel(request, who)).name
    channel = await store.set_enabled(pool, _ns(request), who.tenant_id, name, enabled)
    await _changed(request, channel.name)
    return web.json_response(text=channel_info(channel).model_dump_json())


@routes.post("/v1/channels/{id}/enable")
async def enable(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


@routes.post("/v1/channels/{id}/disable")
async def disable(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


# --- 001 --------------------------------------------------------------------------------------


@routes.get("/api/channels")
async def api_channels(request: web.Request) -> web.Response:
    who = require(request, "channels")
    found = await store.list_channels(request.app[RUNS].pool, _ns(request), who.tenant_id)
    body = ApiChannelList(
        channels=[
            ApiChannel(
                name=c.name,
                status=c.shown_status,
                messages_received=c.messages_received,
                messages_sent=c.messages_sent,
                type=c.type,
                enabled=c.enabled,
            )
            for c in found
        ]
    )
    return web.json_response(text=body.model_dump_json())


# --- GoClaw: channel instances ----------------------------------------------------------------


@routes.get("/v1/channel-instances")
async def list_instances(request: web.Request) -> web.Response:
    who = require(request, "channels")
    found = await store.list_channels(request.app[RUNS].pool, _ns(request), who.tenant_id)
    body = ChannelInstanceList(instances=[_instance(c) for c in found])
    return web.json_response(text=body.model_dump_json())


async def _write(
    request: web.Request, who: Principal, body: ChannelInstanceWrite, *, replace: bool
) -> store.Channel:
    return await store.create_channel(
        request.app[RUNS].pool,
        request.app[BOX],
        _ns(request),
        who.tenant_id,
        name=body.name,
        channel_type=body.channel_type,
        agent_key=body.agent_id,
        credentials=body.credentials,
        settings=body.config,
        dm_policy=body.dm_policy,
        allow_from=body.allow_from,
        enabled=body.enabled,
        replace=replace,
        keep_credentials=replace,
    )


@routes.post("/v1/channel-instances")
async def create_instance(request: web.Request) -> web.Response:
    who = require(request, "channels")
    body = await read_model(request, ChannelInstanceWrite)
    channel = await _write(request, who, body, replace=False)
    await _changed(request, channel.name)
    return web.json_response(text=_instance(channel).model_dump_json(), status=201)


@routes.get("/v1/channel-instances/{id}")
async def get_instance(request: web.Request) -> web.Response:
    who = require(request, "channels")
    return web.json_response(text=_instance(await _channel(request, who)).model_dump_json())


@routes.put("/v1/channel-instances/{id}")
async def replace_instance(request: web.Request) -> web.Response:
    who = require(request, "channels")
    body = await read_model(request, ChannelInstanceWrite)
    current = await _channel(request, who)
    if body.name != current.name:
        raise InvalidRequest("a channel cannot be renamed; create a new one", param="name")
    channel = await _write(request, who, body, replace=True)
    await _changed(request, channel.name)
    return web.json_response(text=_instance(channel).model_dump_json())


@routes.delete("/v1/channel-instances/{id}")
async def delete_instance(request: web.Request) -> web.Response:
    who = require(request, "channels")
    channel = await _channel(request, who)
    await store.delete_channel(request.app[RUNS].pool, _ns(request), who.tenant_id, channel.name)
    await _changed(request, channel.name)
    return web.Response(status=204)


# --- inbound webhooks ------------------------------------------------------------------------

# What a webhook request may carry to the bridge: its signature headers, nothing else.
_WEBHOOK_HEADERS = ("x-clawbus-signature", "x-clawbus-timestamp", "x-telegram-bot-api-secret-token")
MAX_WEBHOOK_BYTES = 512 * 1024  # within NATS's 1 MB message, base64 included
_WEBHOOK_WAIT_S = 15.0


@routes.post("/v1/webhooks/{channel_id}")
async def webhook(request: web.Request) -> web.Response:
    try:
        channel_id = UUID(request.match_info["channel_id"])
    except ValueError:
        raise NotFound("no such webhook", param="channelId") from None
    body = await request.read()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge(f"a webhook request is at most {MAX_WEBHOOK_BYTES} bytes")
    forwarded = WebhookRequest(
        headers={h: v for h in _WEBHOOK_HEADERS if (v := request.headers.get(h)) is not None},
        body=base64.b64encode(body).decode(),
    )
    runs = request.app[RUNS]
    try:
        reply = await runs.nc.request(
            runs.names.channel_inbound_subject(channel_id),
            forwarded.model_dump_json().encode(),
            timeout=_WEBHOOK_WAIT_S,
            headers=tracing.inject_headers({}) or None,  # the bridge continues the trace
        )
    except NoRespondersError:
        raise ServiceUnavailable(
            "no channel-bridge is serving this channel now (unknown, disabled, or between "
            "replicas); retry later",
            service="channel-bridge",
            retry_after_ms=5000,
        ) from None
    except (TimeoutError, NatsTimeoutError):
        raise ServiceUnavailable(
            "the channel-bridge did not answer in time", service="channel-bridge"
        ) from None
    answer = WebhookAnswer.model_validate_json(reply.data)
    if answer.error is not None:
        raise ClawbusError.from_info(answer.error)
    return web.json_response(text=WebhookAccepted().model_dump_json())


# --- pairing ----------------------------------------------------------------------------------


@routes.get("/v1/channels/{id}/pairing")
async def pending_pairings(request: web.Request) -> web.Response:
    who = require(request, "channels")
    channel = await _channel(request, who)
    pending = await store.pending_senders(request.app[RUNS].pool, channel.id)
    body = PairingList(
        pending=[
            PendingPairing(
                sender_id=p.sender_id,
                display_name=p.display_name,
                code=store.format_code(p.code),
                expires_at=p.expires_at,
            )
            for p in pending
        ]
    )
    return web.json_response(text=body.model_dump_json())


@routes.post("/v1/channels/{id}/pairing/approve")
async def approve_pairing(request: web.Request) -> web.Response:
    who = require(request, "channels")
    body = await read_model(request, PairingApprove)
    channel = await _channel(request, who)
    sender = await store.approve(
        request.app[RUNS].pool, channel.id, body.code, by=f"{who.kind}:{who.name}"
    )
    return web.json_response(text=PairingApproved(sender_id=sender).model_dump_json())
