"""The channel-bridge with Telegram end to end: the real python-telegram-bot against the fake
Bot API on loopback, channels created and switched through the gateway's API, runs through the
real bus, runner and database."""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, Reply
from clawbus_fakes.telegram import ALICE, TEST_GROUP, FakeChat, FakeTelegramServer, FakeUser

from tests.integration.test_ws import websockets_client
from tests.system import System, start_system, wait_for

BOB = FakeUser(2002, "Bob", username="bob")
CAROL = FakeUser(3003, "Carol", username="carol")


def bridge_env(telegram: FakeTelegramServer) -> dict[str, str]:
    """A bridge that polls the fake, reacts in tenths of a second, and backs off briefly."""
    return {
        "CLAWBUS_TELEGRAM_API_BASE": telegram.base_url,
        "CLAWBUS_TELEGRAM_FILE_BASE": telegram.base_file_url,
        "CLAWBUS_BRIDGE_POLL_TIMEOUT_S": "1",
        "CLAWBUS_BRIDGE_LEASE_S": "2",
        "CLAWBUS_BRIDGE_SWEEP_S": "0.3",
        "CLAWBUS_BRIDGE_RECONCILE_S": "2",
        "CLAWBUS_BRIDGE_BACKOFF_MIN_S": "0.2",
        "CLAWBUS_BRIDGE_BACKOFF_MAX_S": "2",
    }


def auth(system: System) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.token}"}


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as fake:
        yield fake


@pytest.fixture
async def system(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    agent: str,
) -> AsyncIterator[System]:
    del agent  # set up first, so it is deleted only after the bridge has stopped
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, bridges=1, overrides=bridge_env(telegram)
    ) as running:
        yield running


def new_token() -> str:
    return f"{uuid.uuid4().int % 10**9}:AA{uuid.uuid4().hex}"


async def api(
    http: aiohttp.ClientSession, system: System, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, f"{system.url}{path}", headers=auth(system), json=body) as r:
        return r.status, await r.json(content_type=None)


async def create_channel(
    http: aiohttp.ClientSession, system: System, agent: str, token: str, **fields: Any
) -> dict[str, Any]:
    body = {
        "name": "telegram",
        "channel_type": "telegram",
        "agent_id": agent,
        "credentials": {"token": token},
        **fields,
    }
    status, created = await api(http, system, "POST", "/v1/channel-instances", body)
    assert status == 201, created
    return created  # type: ignore[no-any-return]


async def polled_channel(
    http: aiohttp.ClientSession,
    system: System,
    telegram: FakeTelegramServer,
    agent: str,
    username: str,
    **fields: Any,
) -> str:
    """A bot on the fake, its channel created through the API, its first long poll held by a
    bridge: the bot's token."""
    token = new_token()
    telegram.add_bot(token, username)
    await create_channel(http, system, agent, token, **fields)
    await telegram.wait_polling(token, timeout_s=15)
    return token


async def channel_status(
    http: aiohttp.ClientSession, system: System, name: str = "telegram"
) -> Any:
    status, body = await api(http, system, "GET", f"/v1/channels/{name}/status")
    assert status == 200, body
    return body


def visible(sent_text: str) -> str:
    """What a user sees of an HTML message."""
    return html.unescape(re.sub(r"<[^>]+>", "", sent_text))


async def test_a_paired_dm_reaches_the_agent_and_a_long_reply_arrives_in_three_parts(
    system: System,
    telegram: FakeTelegramServer,
    fake_models: FakeModelServer,
    agent: str,
    db: asyncpg.Connection,
) -> None:
    paragraphs = [f"Part {n}: " + ("lorem ipsum " * 250).strip() + "." for n in range(3)]
    long_reply = "\n\n".join(paragraphs)
    assert 9000 <= len(long_reply) <= 9400
    fake_models.script(agent, Reply(text="Hello Alice, nice to meet you."), Reply(text=long_reply))
    async with aiohttp.ClientSession() as http:
        token = await polled_channel(
            http, system, telegram, agent, "clawbus_test_bot", allow_from=["1001"]
        )  # Alice
        info = await channel_status(http, system)
        assert info["status"] == "connected"
        assert info["botUsername"] == "@clawbus_test_bot"

        telegram.private_message(token, "Hi there!")
        [first] = await telegram.wait_sent(token, 1, timeout_s=20)
        assert visible(first.text) == "Hello Alice, nice to meet you."
        assert first.chat_id == 1001
        assert first.link_preview_disabled
        assert first.parse_mode == "HTML"
        assert first.reply_to_message_id is not None
        assert await telegram.wait_chat_actions(token, 1)  # typing while the run ran

        telegram.private_message(token, "Tell me a long story")
        sent = await telegram.wait_sent(token, 4, timeout_s=20)
        parts = [visible(s.text) for s in sent[1:]]
        assert parts == paragraphs  # three messages, in order, split between paragraphs
        assert all(len(p) <= 4096 for p in parts)
        assert sent[1].reply_to_message_id is not None
        assert sent[2].reply_to_message_id is None

        # The agent saw Alice's words, in a per-user session of this channel.
        requests = fake_models.requests_for(agent)
        assert requests[0].last_user_text == "Hi there!"
        session = "agent:" + agent + ":telegram:direct:1001"
        stored = await db.fetch(
            "SELECT m.role, m.content FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.session_key = $1 AND m.kind = 'message' ORDER BY m.id",
            session,
        )
        assert [r["role"] for r in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[3]["content"] == long_reply

        async def counted() -> bool:
            info = await channel_status(http, system)
            return bool(info["messagesReceived"] == 2 and info["messagesSent"] == 4)

        await wait_for(counted, timeout_s=10, interval_s=0.2)


async def test_an_unknown_sender_gets_a_code_and_reaches_the_agent_after_approval(
    system: System, telegram: FakeTelegramServer, fake_models: FakeModelServer, agent: str
) -> None:
    fake_models.script(agent, Reply(text="Welcome, Bob."))
    async with aiohttp.ClientSession() as http:
        token = await polled_channel(
            http, system, telegram, agent, "pairing_bot"
        )  # dmPolicy: pairing (the default)

        telegram.private_message(token, "let me in", user=BOB)
        [code_message] = await telegram.wait_sent(token, 1, timeout_s=20)
        match = re.search(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b", code_message.text)
        assert match, code_message.text
        code = match.group(1)
        telegram.private_message(token, "hello?", user=BOB)  # told once, not again
        await telegram.wait_confirmed(token, timeout_s=10)
        status, pending = await api(http, system, "GET", "/v1/channels/telegram/pairing")
        assert status == 200
        assert pending["pending"] == [
            {
                "senderId": "2002",
                "displayName": "Bob",
                "code": code,
                "expiresAt": pending["pending"][0]["expiresAt"],
            }
        ]
        assert len(telegram.sent(token)) == 1
        assert fake_models.requests_for(agent) == []  # nothing reached the agent

        status, bad = await api(
            http, system, "POST", "/v1/channels/telegram/pairing/approve", {"code": "AAAA-BBBB"}
        )
        assert status == 404, bad
        status, approved = await api(
            http, system, "POST", "/v1/channels/telegram/pairing/approve", {"code": code.lower()}
        )
        assert status == 200, approved
        assert approved == {"approved": True, "senderId": "2002"}

        telegram.private_message(token, "now?", user=BOB)
        sent = await telegram.wait_sent(token, 2, timeout_s=20)
        assert visible(sent[1].text) == "Welcome, Bob."
        assert [r.last_user_text for r in fake_models.requests_for(agent)] == ["now?"]


async def test_allowlist_groups_and_session_events(
    system: System, telegram: FakeTelegramServer, fake_models: FakeModelServer, agent: str
) -> None:
    fake_models.set_default(agent, Reply(text="ok"))
    group_session = f"agent:{agent}:telegram:group:{TEST_GROUP.id}"
    async with (
        aiohttp.ClientSession() as http,
        websockets_client(system.url, auth(system)) as watcher,
    ):
        await watcher.call("subscribe", {"all": True})
        token = await polled_channel(
            http, system, telegram, agent, "group_bot", dm_policy="allowlist", allow_from=["1001"]
        )
        telegram.private_message(token, "not on the list", user=CAROL)
        telegram.group_message(token, "chatting among ourselves", user=CAROL)
        telegram.group_message(token, "what is 2+2?", user=CAROL, mention=True)
        [reply] = await telegram.wait_sent(token, 1, timeout_s=20)
        assert reply.chat_id == TEST_GROUP.id
        # 001's events for a chat app's run, as for any surface's.
        received = await watcher.event("message:received", sessionKey=group_session)
        assert received["payload"]["channel"] == "telegram"
        assert "what is 2+2?" in received["payload"]["message"]
        sent = await watcher.event("message:sent", sessionKey=group_session)
        assert sent["payload"]["message"] == "ok"
        await telegram.wait_confirmed(token, timeout_s=10)
        texts = [r.last_user_text for r in fake_models.requests_for(agent)]
        assert len(texts) == 1
        assert "what is 2+2?" in texts[0] and "@group_bot" not in texts[0]
        assert "Carol" in texts[0]  # group messages name their sender to the agent
        status, err = await api(
            http,
            system,
            "POST",
            "/v1/channel-instances",
            {"name": "other", "channel_type": "telegram", "allow_from": ["@carol"]},
        )
        assert status == 400 and err["error"]["param"] == "allowFrom.0"


async def test_group_policy_admits_only_the_listed_groups_and_senders(
    system: System, telegram: FakeTelegramServer, fake_models: FakeModelServer, agent: str
) -> None:
    fake_models.set_default(agent, Reply(text="admitted"))
    other_group = FakeChat(-1009876543210, "supergroup", title="Other Group")
    config = {
        "groupPolicy": "allowlist",
        "groups": [str(TEST_GROUP.id)],
        "groupAllowFrom": [str(ALICE.id)],
    }
    async with aiohttp.ClientSession() as http:
        token = await polled_channel(
            http, system, telegram, agent, "policy_bot", dm_policy="open", config=config
        )
        telegram.add_chat(token, other_group)
        telegram.group_message(
            token, "from a group not on the list", user=ALICE, chat=other_group, mention=True
        )
        telegram.group_message(token, "from a member not on the list", user=CAROL, mention=True)
        telegram.group_message(token, "from the listed sender", user=ALICE, mention=True)
        [reply] = await telegram.wait_sent(token, 1, timeout_s=20)
        await telegram.wait_confirmed(token, timeout_s=10)
        assert (reply.chat_id, reply.text) == (TEST_GROUP.id, "admitted")
        texts = [r.last_user_text for r in fake_models.requests_for(agent)]
        assert len(texts) == 1 and "from the listed sender" in texts[0]

        for bad, param in (
            ({"groupPolicy": "sometimes"}, "config.groupPolicy"),
            ({"groupPolicy": "allowlist"}, "config.groups"),
            ({"groupPolicy": "allowlist", "groups": ["@somegroup"]}, "config.groups.0"),
            ({"groupAllowFrom": "1001"}, "config.groupAllowFrom"),
        ):
            status, err = await api(
                http,
                system,
                "POST",
                "/v1/channel-instances",
                {"name": "refused", "channel_type": "telegram", "config": bad},
            )
            assert (status, err["error"]["param"]) == (400, param), (bad, err)


async def test_photos_and_documents_reach_the_agent_as_media(
    system: System,
    telegram: FakeTelegramServer,
    fake_models: FakeModelServer,
    agent: str,
    db: asyncpg.Connection,
) -> None:
    fake_models.set_default(agent, Reply(text="got it"))
    async with aiohttp.ClientSession() as http:
        token = await polled_channel(http, system, telegram, agent, "media_bot", dm_policy="open")
        telegram.photo_message(token, b"\xff\xd8fake-jpeg", caption="look at this")
        telegram.document_message(
            token, b"line one\nline two\n", file_name="notes.txt", mime_type="text/plain"
        )
        await telegram.wait_sent(token, 2, timeout_s=20)
        first = telegram.private_message(token, "meet at 5")
        await telegram.wait_sent(token, 3, timeout_s=20)
        telegram.edit_message(token, first, "meet at 6")
        await telegram.wait_sent(token, 4, timeout_s=20)
    photo, document, _, edited = (r.last_user_text for r in fake_models.requests_for(agent))
    assert edited == "[edited message]\nmeet at 6"
    assert "look at this" in photo and "[photo attached: media" in photo
    assert "notes.txt" in document and "line two" in document
    media_id = re.search(r"media ([0-9a-f-]{36})", photo)
    assert media_id is not None
    stored = await db.fetchrow(
        "SELECT kind, content FROM media WHERE id = $1::uuid", media_id.group(1)
    )
    assert (
        stored is not None
        and stored["kind"] == "photo"
        and stored["content"] == b"\xff\xd8fake-jpeg"
    )


async def test_channels_from_config_are_created_when_a_bridge_starts(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    telegram: FakeTelegramServer,
    agent: str,
) -> None:
    token = new_token()
    telegram.add_bot(token, "configured_bot")
    channels = [
        {
            "name": "from-config",
            "type": "telegram",
            "agent": agent,
            "credentials": {"token": token},
            "dm_policy": "open",
        }
    ]
    overrides = bridge_env(telegram) | {"CLAWBUS_CHANNELS": json.dumps(channels)}
    async with (
        start_system(
            endpoints, namespace, fake_models, tmp_path, bridges=1, overrides=overrides
        ) as system,
        aiohttp.ClientSession() as http,
    ):
        await telegram.wait_polling(token, timeout_s=15)
        status, listed = await api(http, system, "GET", "/v1/channels")
        assert status == 200
        [channel] = listed["channels"]
        assert (channel["id"], channel["type"], channel["agentId"]) == (
            "from-config",
            "telegram",
            agent,
        )


async def test_disable_stops_polling_and_enable_resumes(
    system: System, telegram: FakeTelegramServer, fake_models: FakeModelServer, agent: str
) -> None:
    fake_models.set_default(agent, Reply(text="back"))
    async with aiohttp.ClientSession() as http:
        token = await polled_channel(http, system, telegram, agent, "switch_bot", dm_policy="open")
        status, disabled = await api(http, system, "POST", "/v1/channels/telegram/disable")
        assert status == 200 and disabled["status"] == "disabled" and not disabled["enabled"]
        await telegram.wait_for(lambda: telegram.active_pollers(token) == 0, 10, "no poller")
        polls = telegram.poll_count(token)
        telegram.private_message(token, "anyone?")
        status, listed = await api(http, system, "GET", "/api/channels")
        assert listed["channels"] == [
            {
                "name": "telegram",
                "status": "disabled",
                "messagesReceived": 0,
                "messagesSent": 0,
                "type": "telegram",
                "enabled": False,
            }
        ]
        await asyncio.sleep(1)
        assert telegram.poll_count(token) == polls
        assert telegram.sent(token) == []

        status, enabled = await api(http, system, "POST", "/v1/channels/telegram/enable")
        assert status == 200 and enabled["enabled"]
        [reply] = await telegram.wait_sent(token, 1, timeout_s=20)  # the waiting message too
        assert visible(reply.text) == "back"
        await wait_for(lambda: _status_is(http, system, "connected"), timeout_s=10, interval_s=0.2)


async def _status_is(http: aiohttp.ClientSession, system: System, want: str) -> bool:
    return (await channel_status(http, system))["status"] == want


async def test_bad_credentials_show_an_error_without_hammering(
    system: System, telegram: FakeTelegramServer, agent: str
) -> None:
    token = new_token()  # never registered with the fake: Telegram answers 401
    async with aiohttp.ClientSession() as http:
        await create_channel(http, system, agent, token)
        await wait_for(lambda: _status_is(http, system, "error"), timeout_s=15, interval_s=0.2)
        info = await channel_status(http, system)
        assert "refused the bot token" in info["statusReason"]
        calls = len(telegram.calls(token))
        await asyncio.sleep(1)
        # A permanent failure waits the longest backoff (2 s here) before it tries again.
        assert len(telegram.calls(token)) <= calls + 1
        status, instance = await api(http, system, "GET", "/v1/channel-instances/telegram")
        assert status == 200
        assert instance["has_credentials"] is True
        assert token not in str(instance)  # credentials are never returned


async def test_a_failed_run_is_told_to_the_chat(
    system: System, telegram: FakeTelegramServer, fake_models: FakeModelServer, agent: str
) -> None:
    fake_models.script(agent, Reply(status=400))  # not retryable: the run fails at once
    async with aiohttp.ClientSession() as http:
        token = await polled_channel(http, system, telegram, agent, "failing_bot", dm_policy="open")
        telegram.private_message(token, "this will fail")
        [sent] = await telegram.wait_sent(token, 1, timeout_s=20)
    assert (
        visible(sent.text) == "Sorry, I could not answer that (upstream_error). Please try again."
    )
