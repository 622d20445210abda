"""The channel-bridge with Discord end to end: the real discord.py against the fake Discord
(REST v10 and the gateway WebSocket) on loopback, through the real bus, runner and database."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from clawbus_core.config import Endpoints
from clawbus_fakes.discord_fake import FakeDiscord, FileData
from clawbus_fakes.models import FakeModelServer, Reply

from tests.integration.test_channel_telegram import api
from tests.system import System, start_system, wait_for

WAIT_S = 30.0  # a bound on waits, not a timing assertion


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
async def system(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    discord_fake: FakeDiscord,
    agent: str,
) -> AsyncIterator[System]:
    del agent  # deleted only after the bridge has stopped
    overrides = {
        "CLAWBUS_DISCORD_API_BASE": discord_fake.api_base,
        "CLAWBUS_DISCORD_GATEWAY_URL": discord_fake.gateway_url,
        "CLAWBUS_BRIDGE_LEASE_S": "2",
        "CLAWBUS_BRIDGE_SWEEP_S": "0.3",
        "CLAWBUS_BRIDGE_BACKOFF_MIN_S": "0.2",
        "CLAWBUS_BRIDGE_BACKOFF_MAX_S": "2",
    }
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, bridges=1, overrides=overrides
    ) as running:
        yield running


async def create_discord_channel(
    http: aiohttp.ClientSession, system: System, agent: str, token: str, **fields: object
) -> None:
    body = {
        "name": "discord",
        "channel_type": "discord",
        "agent_id": agent,
        "credentials": {"token": token},
        **fields,
    }
    status, created = await api(http, system, "POST", "/v1/channel-instances", body)
    assert status == 201, created


async def test_dm_and_guild_mention_reach_the_agent_and_long_replies_are_split(
    system: System, discord_fake: FakeDiscord, fake_models: FakeModelServer, agent: str
) -> None:
    token = f"discord-{uuid.uuid4().hex}"
    bot = discord_fake.add_bot(token, username="clawbot")
    alice = discord_fake.add_user(username="alice")
    guild = discord_fake.add_guild(bot, name="lab", channels=["general", "random"], members=[alice])
    general = guild.channel("general")
    long_reply = "\n\n".join(f"Paragraph {n}. " + "words " * 300 for n in range(3)).strip()
    fake_models.script(agent, Reply(text="Hi Alice!"), Reply(text=long_reply))
    fake_models.set_default(agent, Reply(text="guild answer"))
    async with aiohttp.ClientSession() as http:
        await create_discord_channel(http, system, agent, token, allow_from=[str(alice.id)])
        await discord_fake.wait_connections(bot, 1, timeout_s=WAIT_S)

        async def connected() -> bool:
            _, info = await api(http, system, "GET", "/v1/channels/discord/status")
            return bool(info["status"] == "connected")

        await wait_for(connected, timeout_s=WAIT_S, interval_s=0.2)

        dm = await discord_fake.dm(bot, alice, "hello bot")
        [first] = await discord_fake.wait_sent(bot, 1, timeout_s=WAIT_S)
        assert first.content == "Hi Alice!"
        assert first.message_reference is not None
        assert int(first.message_reference["message_id"]) == int(dm["id"])
        assert first.allowed_mentions == {"parse": []}
        assert first.flags & (1 << 2)  # SUPPRESS_EMBEDS: no link previews
        assert first.nonce is not None

        await discord_fake.dm(bot, alice, "a long one please")
        sent = await discord_fake.wait_sent(bot, 1 + 3 + 0, timeout_s=WAIT_S)
        chunks = [s.content or "" for s in sent[1:]]
        assert len(chunks) >= 3 and all(len(c) <= 2000 for c in chunks)
        assert re.sub(r"\s+", " ", " ".join(chunks)) == re.sub(r"\s+", " ", long_reply)

        before = len(discord_fake.sent(bot))
        await discord_fake.guild_message(bot, guild, general, alice, "just chatting")
        await discord_fake.guild_message(
            bot, guild, general, alice, "what time is it?", mention_bot=True
        )
        sent = await discord_fake.wait_sent(bot, before + 1, timeout_s=WAIT_S)
        assert sent[-1].content == "guild answer"
        assert sent[-1].channel_id == general.id
    texts = [r.last_user_text for r in fake_models.requests_for(agent)]
    assert texts[0] == "hello bot"
    assert "what time is it?" in texts[-1] and "<@" not in texts[-1]
    assert not any("just chatting" in t for t in texts)


async def test_pairing_threads_and_attachments(
    system: System, discord_fake: FakeDiscord, fake_models: FakeModelServer, agent: str
) -> None:
    token = f"discord-{uuid.uuid4().hex}"
    bot = discord_fake.add_bot(token, username="clawbot")
    bob = discord_fake.add_user(username="bob")
    guild = discord_fake.add_guild(bot, name="lab", channels=["support"], members=[bob])
    support = guild.channel("support")
    thread = discord_fake.add_thread(guild, support, "question", owner=bob)
    fake_models.set_default(agent, Reply(text="noted"))
    async with aiohttp.ClientSession() as http:
        # The bot serves #support without being mentioned; DMs need pairing.
        await create_discord_channel(
            http, system, agent, token, config={"channels": [str(support.id)]}
        )
        await discord_fake.wait_connections(bot, 1, timeout_s=WAIT_S)

        await discord_fake.dm(bot, bob, "hi")
        [code_message] = await discord_fake.wait_sent(bot, 1, timeout_s=WAIT_S)
        match = re.search(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b", code_message.content or "")
        assert match
        assert fake_models.requests_for(agent) == []

        await discord_fake.thread_message(
            bot,
            guild,
            thread,
            bob,
            "see attached",
            attachments=[FileData("log.txt", b"error: disk full\n", content_type="text/plain")],
        )
        sent = await discord_fake.wait_sent(bot, 2, timeout_s=WAIT_S)
        assert sent[1].channel_id == thread.id and sent[1].content == "noted"
        [request] = fake_models.requests_for(agent)
        assert "see attached" in request.last_user_text
        assert "log.txt" in request.last_user_text and "disk full" in request.last_user_text

        status, approved = await api(
            http, system, "POST", "/v1/channels/discord/pairing/approve", {"code": match.group(1)}
        )
        assert status == 200 and approved["senderId"] == str(bob.id)
        await discord_fake.dm(bot, bob, "paired now")
        sent = await discord_fake.wait_sent(bot, 3, timeout_s=WAIT_S)
        assert sent[2].content == "noted"


async def test_a_bad_discord_token_is_an_error_status(
    system: System, discord_fake: FakeDiscord, agent: str
) -> None:
    async with aiohttp.ClientSession() as http:
        await create_discord_channel(http, system, agent, "not-a-registered-token")

        async def errored() -> bool:
            _, info = await api(http, system, "GET", "/v1/channels/discord/status")
            return bool(info["status"] == "error")

        await wait_for(errored, timeout_s=WAIT_S, interval_s=0.2)
        _, info = await api(http, system, "GET", "/v1/channels/discord/status")
        assert "refused the bot token" in info["statusReason"]
