"""Inbound webhooks end to end: the webhook channel (HMAC-signed requests in, signed callbacks
out) and Telegram in webhook mode (the fake Bot API posts updates with its secret token)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, RecordedRequest, Reply
from clawbus_fakes.telegram import FakeTelegramServer

from tests.integration.test_channel_telegram import api, bridge_env, new_token
from tests.system import System, start_system, wait_for

SECRET = "webhook-secret-" + "x" * 24


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class Receiver:
    """The other system's callback endpoint: records what clawbus delivers."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.calls]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        assert r.runner is not None
        await r.runner.cleanup()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
def echoing(agent: str, fake_models: FakeModelServer) -> str:
    """The test's agent, answering `re: <what it was told>`."""

    def echo(request: RecordedRequest) -> Reply:
        return Reply(text=f"re: {request.last_user_text}")

    fake_models.set_default(agent, echo)
    return agent


@pytest.fixture
async def system(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    echoing: str,
) -> AsyncIterator[System]:
    del echoing  # the agent: deleted only after the bridge has stopped
    overrides = bridge_env(telegram) | {"CLAWBUS_NET_ALLOW": '["127.0.0.1"]'}
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, bridges=1, overrides=overrides
    ) as running:
        yield running


async def post_signed(
    http: aiohttp.ClientSession,
    url: str,
    message: dict[str, Any],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> tuple[int, Any]:
    body = json.dumps(message).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Clawbus-Timestamp": stamp,
        "X-Clawbus-Signature": sign(secret, stamp, body),
    }
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def create_webhook_channel(
    http: aiohttp.ClientSession, system: System, agent: str, receiver: Receiver
) -> dict[str, Any]:
    """The webhook channel `crm` of `agent`, open to any sender, answering on `receiver`."""
    status, created = await api(
        http,
        system,
        "POST",
        "/v1/channel-instances",
        {
            "name": "crm",
            "channel_type": "webhook",
            "agent_id": agent,
            "credentials": {"secret": SECRET},
            "config": {"callbackUrl": receiver.url},
            "dm_policy": "open",
        },
    )
    assert status == 201, created
    return created  # type: ignore[no-any-return]


async def test_a_signed_message_is_answered_on_the_callback_once(
    system: System, receiver: Receiver, agent: str, fake_models: FakeModelServer
) -> None:
    async with aiohttp.ClientSession() as http:
        created = await create_webhook_channel(http, system, agent, receiver)
        url = f"{system.url}/v1/webhooks/{created['id']}"

        async def connected() -> bool:
            _, info = await api(http, system, "GET", "/v1/channels/crm/status")
            return bool(info["status"] == "connected")

        await wait_for(connected, timeout_s=15, interval_s=0.1)

        message = {"id": "m-1", "from": {"id": "u-42", "name": "Ann"}, "text": "order status?"}
        assert await post_signed(http, url, message) == (200, {"ok": True})
        assert await post_signed(http, url, message) == (200, {"ok": True})  # a retry
        await wait_for(lambda: receiver.calls, timeout_s=20)
        headers, body = receiver.calls[0]
        stamp = headers["X-Clawbus-Timestamp"]
        assert hmac.compare_digest(headers["X-Clawbus-Signature"], sign(SECRET, stamp, body))
        delivered = json.loads(body)
        assert delivered["text"] == "re: order status?"
        assert delivered["chatId"] == "u-42"
        assert delivered["replyTo"] == "m-1"
        assert delivered["channel"] == "crm"
        assert headers["X-Clawbus-Delivery"] == delivered["deliveryId"]

        # Refused before anything is stored.
        bad = {"id": "m-2", "from": {"id": "u-42"}, "text": "sneaky"}
        assert (await post_signed(http, url, bad, secret="wrong-secret-" + "y" * 20))[0] == 401
        assert (await post_signed(http, url, bad, timestamp=int(time.time()) - 3600))[0] == 401
        async with http.post(url, json=bad) as r:
            assert r.status == 401
            assert "X-Clawbus-Signature" in (await r.json())["error"]["message"]
        status, error = await post_signed(http, url, {"id": "m-3", "text": "no sender"})
        assert status == 400 and error["error"]["param"] == "from"
        # Well-formed, but it can never become a run (Postgres text holds no NUL): the
        # caller hears why, where a chat app's message would be skipped.
        nul = {"id": "m-4", "from": {"id": "u-42"}, "text": "a\u0000b"}
        status, error = await post_signed(http, url, nul)
        assert status == 400, error
        assert "NUL" in error["error"]["message"]
        async with http.post(f"{system.url}/v1/webhooks/not-a-uuid", json={}) as r:
            assert r.status == 404
        async with http.post(f"{system.url}/v1/webhooks/{uuid.uuid4()}", json={}) as r:
            assert r.status == 503

        await wait_for(lambda: len(fake_models.requests_for(agent)) >= 1, timeout_s=5)
        assert [r.last_user_text for r in fake_models.requests_for(agent)] == ["order status?"]
        assert len(receiver.calls) == 1


async def test_telegram_in_webhook_mode_takes_only_updates_with_its_secret(
    system: System, telegram: FakeTelegramServer, agent: str
) -> None:
    token = new_token()
    telegram.add_bot(token, "hooked_bot")
    async with aiohttp.ClientSession() as http:
        body = {
            "name": "tg-hook",
            "channel_type": "telegram",
            "agent_id": agent,
            "credentials": {"token": token},
            "dm_policy": "open",
            "enabled": False,
        }
        status, created = await api(http, system, "POST", "/v1/channel-instances", body)
        assert status == 201, created
        hook = f"{system.url}/v1/webhooks/{created['id']}"
        body |= {"config": {"mode": "webhook", "webhookUrl": hook}, "enabled": True}
        del body["credentials"]  # PUT keeps the stored ones
        status, updated = await api(http, system, "PUT", "/v1/channel-instances/tg-hook", body)
        assert status == 200, updated
        await telegram.wait_for(lambda: telegram.webhook_url(token) == hook, 15, "webhook set")

        telegram.private_message(token, "via the webhook")
        assert await telegram.webhook_post(token, secret_token="not-the-secret") == 401
        assert await telegram.webhook_post(token) == 200
        [reply] = await telegram.wait_sent(token, 1, timeout_s=20)
        assert reply.text == "re: via the webhook"
        assert telegram.poll_count(token) == 0  # nothing polled in webhook mode
