"""The fake Discord (REST v10 + Gateway), driven by the real discord.py client on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
from clawbus_fakes.discord_fake import FakeDiscord, FileData, pointed_at

TOKEN = "bot-token-1"
OTHER_TOKEN = "bot-token-2"
WAIT_S = 10.0  # a bound on every wait, not a timing assertion
MESSAGES_ROUTE = "POST /channels/{channel_id}/messages"


def intents(*, message_content: bool = True) -> discord.Intents:
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.messages = True  # guild_messages and dm_messages
    chosen.dm_messages = True
    chosen.message_content = message_content
    return chosen


@dataclass
class Scene:
    fake: FakeDiscord
    bot: Any
    alice: Any
    guild: Any
    general: Any
    thread: Any


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    async with FakeDiscord() as fake:
        bot = fake.add_bot(TOKEN, username="clawbot")
        alice = fake.add_user(username="alice")
        guild = fake.add_guild(bot, name="lab", channels=["general", "random"], members=[alice])
        general = guild.channel("general")
        thread = fake.add_thread(guild, general, "help", owner=alice)
        with pointed_at(fake):
            yield Scene(fake, bot, alice, guild, general, thread)


@dataclass
class Running:
    """A started discord.Client and what it has seen."""

    client: discord.Client
    messages: asyncio.Queue[discord.Message] = field(default_factory=asyncio.Queue)
    edits: asyncio.Queue[discord.Message] = field(default_factory=asyncio.Queue)
    readies: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    resumes: asyncio.Queue[None] = field(default_factory=asyncio.Queue)

    async def next_message(self, *, own: bool = False) -> discord.Message:
        """The next message the client got, skipping its own unless `own`."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), WAIT_S)
            if own or message.author != self.client.user:
                return message


@contextlib.asynccontextmanager
async def running(
    token: str = TOKEN, chosen: discord.Intents | None = None
) -> AsyncIterator[Running]:
    # guild_ready_timeout only shortens discord.py's wait for more GUILD_CREATEs after READY.
    client = discord.Client(intents=chosen or intents(), guild_ready_timeout=0.2)
    seen = Running(client)

    @client.event
    async def on_ready() -> None:
        seen.readies.put_nowait(None)

    @client.event
    async def on_resumed() -> None:
        seen.resumes.put_nowait(None)

    @client.event
    async def on_message(message: discord.Message) -> None:
        seen.messages.put_nowait(message)

    @client.event
    async def on_message_edit(before: discord.Message, after: discord.Message) -> None:
        seen.edits.put_nowait(after)

    task = asyncio.create_task(client.start(token))
    try:
        ready = asyncio.ensure_future(seen.readies.get())
        await asyncio.wait({task, ready}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what stopped the client
        assert ready.done(), "on_ready never came"
        yield seen
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await task


async def test_ready_has_the_user_guild_channels_and_threads(scene: Scene) -> None:
    async with running() as bot:
        client = bot.client
        assert client.user is not None
        assert (client.user.id, client.user.name, client.user.bot) == (
            scene.bot.user.id,
            "clawbot",
            True,
        )
        guild = client.get_guild(scene.guild.id)
        assert guild is not None and guild.name == "lab"
        assert [c.name for c in guild.text_channels] == ["general", "random"]
        [thread] = guild.threads
        assert (thread.id, thread.name, thread.parent_id) == (
            scene.thread.id,
            "help",
            scene.general.id,
        )
        assert scene.fake.connections(scene.bot) == 1
        assert scene.bot.identifies == 1


async def test_dm_with_an_attachment_the_client_can_read(scene: Scene) -> None:
    async with running() as bot:
        sent = await scene.fake.dm(
            scene.bot, scene.alice, "look", attachments=[FileData("notes.txt", b"hello file")]
        )
        message = await bot.next_message()
        assert message.id == int(sent["id"])
        assert message.content == "look"
        assert isinstance(message.channel, discord.DMChannel)
        assert message.guild is None
        assert (message.author.id, message.author.name) == (scene.alice.id, "alice")
        [attachment] = message.attachments
        assert (attachment.filename, attachment.content_type) == ("notes.txt", "text/plain")
        assert attachment.url.startswith(scene.fake.url + "/attachments/")
        assert await attachment.read() == b"hello file"


async def test_guild_mention_and_thread_message(scene: Scene) -> None:
    async with running() as bot:
        me = bot.client.user
        assert me is not None
        await scene.fake.guild_message(
            scene.bot, scene.guild, "general", scene.alice, "hi there", mention_bot=True
        )
        message = await bot.next_message()
        assert message.content == f"<@{me.id}> hi there"
        assert isinstance(message.channel, discord.TextChannel)
        assert message.channel.id == scene.general.id
        assert isinstance(message.author, discord.Member)
        assert message.author.id == scene.alice.id
        assert [m.id for m in message.mentions] == [me.id]
        assert me.mentioned_in(message)

        await scene.fake.thread_message(scene.bot, scene.guild, scene.thread, scene.alice, "in t")
        message = await bot.next_message()
        assert isinstance(message.channel, discord.Thread)
        assert (message.channel.id, message.channel.parent_id) == (
            scene.thread.id,
            scene.general.id,
        )
        assert message.content == "in t"
        assert not me.mentioned_in(message)


async def test_without_message_content_only_mentions_and_dms_carry_content(scene: Scene) -> None:
    async with running(chosen=intents(message_content=False)) as bot:
        await scene.fake.guild_message(scene.bot, scene.guild, "general", scene.alice, "quiet")
        unmentioned = await bot.next_message()
        await scene.fake.guild_message(
            scene.bot, scene.guild, "general", scene.alice, "loud", mention_bot=True
        )
        mentioned = await bot.next_message()
        await scene.fake.dm(scene.bot, scene.alice, "private")
        direct = await bot.next_message()
    assert unmentioned.content == ""
    assert mentioned.content.endswith(" loud")
    assert direct.content == "private"


async def test_send_limits_are_discords(scene: Scene) -> None:
    async with running() as bot:
        await scene.fake.dm(scene.bot, scene.alice, "hi")
        channel = (await bot.next_message()).channel

        longest = await channel.send("x" * 2000)
        assert len(longest.content) == 2000
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert (too_long.value.status, too_long.value.code) == (400, 50035)
        assert "Must be 2000 or fewer in length." in str(too_long.value)
        with pytest.raises(discord.HTTPException) as empty:
            await channel.send("")
        assert (empty.value.status, empty.value.code) == (400, 50006)

        sent = scene.fake.sent(scene.bot)
        assert [len(m.content or "") for m in sent] == [2000]
        assert sent[0].channel_id == channel.id
        # Discord echoes a bot's own message to its gateway, as to everyone in the channel.
        echo = await bot.next_message(own=True)
        assert echo.author == bot.client.user and echo.id == longest.id


async def test_reply_typing_flags_and_files_are_recorded(scene: Scene) -> None:
    async with running() as bot:
        await scene.fake.guild_message(
            scene.bot, scene.guild, "general", scene.alice, "help?", mention_bot=True
        )
        question = await bot.next_message()
        async with question.channel.typing():
            reply = await question.reply("answer", mention_author=False, suppress_embeds=True)
        await question.channel.send(
            "log", file=discord.File(io.BytesIO(b"line 1\n"), filename="log.txt")
        )

        [answer, upload] = await scene.fake.wait_sent(scene.bot, 2)
        assert answer.content == "answer"
        assert answer.message_reference is not None
        assert int(answer.message_reference["message_id"]) == question.id
        assert answer.flags & (1 << 2)  # SUPPRESS_EMBEDS
        assert answer.allowed_mentions is not None
        assert answer.allowed_mentions["replied_user"] is False
        assert reply.reference is not None and reply.reference.message_id == question.id
        assert reply.type == discord.MessageType.reply
        assert scene.fake.typing(scene.bot) == [scene.general.id]
        [file] = upload.files
        assert (file.filename, file.data, file.content_type) == (
            "log.txt",
            b"line 1\n",
            "text/plain",
        )


async def test_message_edits_reach_the_client(scene: Scene) -> None:
    async with running() as bot:
        posted = await scene.fake.dm(scene.bot, scene.alice, "tpyo")
        await bot.next_message()
        await scene.fake.edit_message(posted, "typo")
        edited = await asyncio.wait_for(bot.edits.get(), WAIT_S)
        assert (edited.id, edited.content) == (int(posted["id"]), "typo")
        assert edited.edited_at is not None


async def test_bad_token_is_a_login_failure(scene: Scene) -> None:
    client = discord.Client(intents=intents())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("not-a-token")
    finally:
        await client.close()
    assert scene.fake.requests[-1].route == "GET /users/@me"
    assert scene.fake.requests[-1].status == 401


async def test_privileged_intent_not_enabled_closes_with_4014(scene: Scene) -> None:
    scene.fake.add_bot(OTHER_TOKEN, username="plain", privileged_intents=0)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with running(OTHER_TOKEN):
            pass


async def test_dropped_connection_resumes_and_replays_what_was_missed(scene: Scene) -> None:
    async with running() as bot:
        assert await scene.fake.drop_connection(scene.bot) == 1
        await scene.fake.dm(scene.bot, scene.alice, "while you were away")
        await asyncio.wait_for(bot.resumes.get(), WAIT_S)
        message = await bot.next_message()
        assert message.content == "while you were away"
        assert (scene.bot.identifies, scene.bot.resumes) == (1, 1)
        assert scene.fake.connections(scene.bot) == 1


async def test_invalidated_session_identifies_again(scene: Scene) -> None:
    async with running() as bot:
        await scene.fake.drop_connection(scene.bot, invalidate=True)
        await asyncio.wait_for(bot.readies.get(), WAIT_S)  # a second READY
        assert (scene.bot.identifies, scene.bot.resumes) == (2, 0)
        await scene.fake.wait_connections(scene.bot, 1)
        await scene.fake.dm(scene.bot, scene.alice, "still here?")
        assert (await bot.next_message()).content == "still here?"


async def test_a_lagging_connection_is_closed_and_the_backlog_replayed() -> None:
    async with FakeDiscord(max_pending=4, replay=64) as fake:
        bot = fake.add_bot(TOKEN)
        alice = fake.add_user(username="alice")
        with pointed_at(fake):
            async with running() as client:
                for i in range(10):  # no await yields in between: the writer cannot keep up
                    await fake.dm(bot, alice, f"m{i}")
                got = [(await client.next_message()).content for _ in range(10)]
                assert got == [f"m{i}" for i in range(10)]
                assert bot.resumes == 1


async def test_rate_limited_send_is_retried_and_posted_once(scene: Scene) -> None:
    async with running() as bot:
        await scene.fake.dm(scene.bot, scene.alice, "hi")
        channel = (await bot.next_message()).channel
        scene.fake.rate_limit(scene.bot, calls=2, retry_after=0.05, route=MESSAGES_ROUTE)
        await channel.send("patience")
        assert [m.content for m in scene.fake.sent(scene.bot)] == ["patience"]
        statuses = [c.status for c in scene.fake.requests if c.route == MESSAGES_ROUTE]
        assert statuses == [429, 429, 200]


async def test_two_bots_one_connection_each(scene: Scene) -> None:
    other = scene.fake.add_bot(OTHER_TOKEN, username="otherbot")
    scene.fake.join_guild(scene.guild, other)
    async with running() as first, running(OTHER_TOKEN) as second:
        assert scene.fake.connections(scene.bot) == 1
        assert scene.fake.connections(other) == 1
        await scene.fake.guild_message(
            other, scene.guild, "general", scene.alice, "you two", mention_bot=True
        )
        seen_by_first = await first.next_message()
        seen_by_second = await second.next_message()
        assert [m.id for m in seen_by_first.mentions] == [other.user.id]
        assert second.client.user is not None
        assert second.client.user.mentioned_in(seen_by_second)
        assert first.client.user is not None
        assert not first.client.user.mentioned_in(seen_by_first)


async def test_gateway_wire_zlib_stream_heartbeat_and_bad_token(scene: Scene) -> None:
    inflate = zlib.decompressobj()
    url = scene.fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        hello = await ws.receive()
        assert hello.type == aiohttp.WSMsgType.BINARY
        assert hello.data.endswith(b"\x00\x00\xff\xff")
        payload = json.loads(inflate.decompress(hello.data))
        assert payload["op"] == 10 and payload["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": 1, "d": None})
        ack = json.loads(inflate.decompress((await ws.receive()).data))
        assert ack["op"] == 11
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 513, "properties": {}}})
        closed = await ws.receive()
        assert closed.type == aiohttp.WSMsgType.CLOSE
        assert (closed.data, closed.extra) == (4004, "Authentication failed.")


async def test_gateway_wire_uncompressed_identify_gets_ready_and_guilds(scene: Scene) -> None:
    url = scene.fake.gateway_url + "?v=10&encoding=json"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert (await ws.receive_json())["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        ready = await ws.receive_json()
        guild_create = await ws.receive_json()
        assert (ready["t"], ready["s"]) == ("READY", 1)
        assert ready["d"]["guilds"] == [{"id": str(scene.guild.id), "unavailable": True}]
        assert ready["d"]["resume_gateway_url"] == scene.fake.gateway_url
        assert (guild_create["t"], guild_create["s"]) == ("GUILD_CREATE", 2)
        assert [c["name"] for c in guild_create["d"]["threads"]] == ["help"]
        await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 1, "properties": {}}})
        closed = await ws.receive()
        assert closed.data == 4005  # already authenticated


async def test_rest_errors_have_discords_bodies(scene: Scene) -> None:
    api = scene.fake.api_base
    auth = {"Authorization": f"Bot {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api}/users/@me") as resp:
            assert (resp.status, await resp.json()) == (
                401,
                {"message": "401: Unauthorized", "code": 0},
            )
        async with http.get(f"{api}/nowhere", headers=auth) as resp:
            assert resp.status == 404
        async with http.post(
            f"{api}/channels/1/messages", headers=auth, json={"content": "x"}
        ) as resp:
            assert (resp.status, (await resp.json())["code"]) == (404, 10003)
        messages = f"{api}/channels/{scene.general.id}/messages"
        async with http.post(messages, headers=auth, data=b"{not json") as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, 50109)
        async with http.post(
            messages,
            headers=auth,
            json={"content": "re", "message_reference": {"message_id": "12345"}},
        ) as resp:
            body = await resp.json()
            assert (resp.status, body["code"]) == (400, 50035)
            assert "message_reference" in body["errors"]
        async with http.get(f"{api}/gateway/bot", headers=auth) as resp:
            gateway = await resp.json()
            assert (gateway["url"], gateway["shards"]) == (scene.fake.gateway_url, 1)


async def test_stop_closes_live_connections(scene: Scene) -> None:
    async with running() as bot:
        await scene.fake.stop()
        assert scene.fake.connections(scene.bot) == 0
        assert not bot.client.is_closed()  # it is trying to come back; closing it is ours
