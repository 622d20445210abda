"""The fake Telegram Bot API server, driven by the real python-telegram-bot over loopback."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from clawbus_fakes.telegram import ALICE, TEST_GROUP, FakeChat, FakeTelegramServer, FakeUser
from telegram import Bot, LinkPreviewOptions, ReplyParameters, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

TOKEN = "123456789:AAHfake-token_for_tests"
OTHER_TOKEN = "987654321:BBHsecond-bot_token"
BOT_NAME = "clawbus_test_bot"
# A 1x1 PNG: the fake reads the size from the header.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as server:
        server.add_bot(TOKEN, BOT_NAME)
        yield server


def make_bot(fake: FakeTelegramServer, token: str = TOKEN) -> Bot:
    return Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)


@pytest.fixture
async def bot(fake: FakeTelegramServer) -> AsyncIterator[Bot]:
    async with make_bot(fake) as client:
        yield client


def build_app(
    fake: FakeTelegramServer, received: asyncio.Queue[Update]
) -> Application[Any, Any, Any, Any, Any, Any]:
    app = (
        Application.builder()
        .token(TOKEN)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )

    async def on_update(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await received.put(update)
        message = update.message
        if message is not None and message.text:
            await message.reply_text(f"echo: {message.text}")

    app.add_handler(MessageHandler(filters.ALL, on_update))
    return app


async def raw_post(fake: FakeTelegramServer, path: str, **data: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(fake.url + path, data=data) as r:
        return r.status, await r.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- Bot methods


async def test_get_me_describes_the_registered_bot(fake: FakeTelegramServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456789, BOT_NAME, True)
    # PTB sends form-encoded bodies; the fake records what it received.
    call = fake.calls(TOKEN, "getMe")[-1]
    assert (call.http_method, call.status) == ("POST", 200)


async def test_bad_tokens_and_methods_answer_like_telegram(fake: FakeTelegramServer) -> None:
    with pytest.raises(InvalidToken):
        async with make_bot(fake, OTHER_TOKEN):
            pass
    assert await raw_post(fake, f"/bot{OTHER_TOKEN}/getMe") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert await raw_post(fake, "/botnot-a-token/getMe") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )
    assert await raw_post(fake, f"/bot{TOKEN}/sendSticker") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )
    # Method names are case-insensitive, as on Telegram.
    status, body = await raw_post(fake, f"/bot{TOKEN}/GETME")
    assert (status, body["ok"], body["result"]["username"]) == (200, True, BOT_NAME)


async def test_revoked_token_is_rejected(fake: FakeTelegramServer, bot: Bot) -> None:
    fake.revoke_bot(TOKEN)
    with pytest.raises(InvalidToken):
        await bot.get_me()


async def test_send_message_length_limits(fake: FakeTelegramServer, bot: Bot) -> None:
    fake.add_chat(TOKEN, ALICE)
    longest = await bot.send_message(ALICE.id, "x" * 4096)
    assert len(longest.text or "") == 4096
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(ALICE.id, "x" * 4097)
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(ALICE.id, "   ")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(424242, "hello")
    assert [m.text for m in fake.sent(TOKEN)] == ["x" * 4096]


async def test_send_message_records_every_parameter(fake: FakeTelegramServer, bot: Bot) -> None:
    update = fake.private_message(TOKEN, "hi bot")
    asked = update["message"]["message_id"]
    first = await bot.send_message(
        ALICE.id,
        "<b>bold</b> see https://example.com",
        parse_mode=ParseMode.HTML,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
        reply_parameters=ReplyParameters(message_id=asked),
    )
    second = await bot.send_message(
        ALICE.id, "plain https://example.org", disable_web_page_preview=True, message_thread_id=7
    )
    # The legacy parameter as a client other than PTB sends it (PTB turns it into the new one).
    status, _ = await raw_post(
        fake,
        f"/bot{TOKEN}/sendMessage",
        chat_id=str(ALICE.id),
        text="raw https://example.net",
        disable_web_page_preview="true",
    )
    assert status == 200
    sent = fake.sent(TOKEN, chat_id=ALICE.id)
    assert [s.message_id for s in sent[:2]] == [first.message_id, second.message_id]
    assert sent[0].text == "<b>bold</b> see https://example.com"
    assert sent[0].parse_mode == "HTML"
    assert sent[0].reply_to_message_id == asked
    assert sent[0].link_preview_disabled
    assert sent[0].params["link_preview_options"] == {"is_disabled": True}
    assert sent[1].link_preview_disabled
    assert sent[1].params["link_preview_options"] == {"is_disabled": True}
    assert (sent[1].parse_mode, sent[1].message_thread_id) == (None, 7)
    assert sent[2].link_preview_disabled
    assert sent[2].params["disable_web_page_preview"] is True
    assert sent[2].message["link_preview_options"] == {"is_disabled": True}
    # The answer is a real Message: parsed text, entities, the reply target.
    assert first.text == "bold see https://example.com"
    assert first.entities[0].type == "bold"
    assert first.reply_to_message is not None
    assert first.reply_to_message.message_id == asked
    assert first.from_user is not None
    assert first.from_user.username == BOT_NAME
    assert first.message_id > asked  # message ids grow per bot
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(ALICE.id, "hi", reply_parameters=ReplyParameters(message_id=999))


async def test_markup_is_parsed_and_refused_like_telegram(
    fake: FakeTelegramServer, bot: Bot
) -> None:
    fake.add_chat(TOKEN, ALICE)
    ok = await bot.send_message(ALICE.id, r"*bold* _it_ 1\.0 `a.b`", parse_mode="MarkdownV2")
    assert ok.text == "bold it 1.0 a.b"
    assert [e.type for e in ok.entities] == ["bold", "italic", "code"]
    with pytest.raises(BadRequest, match="reserved and must be escaped"):
        await bot.send_message(ALICE.id, "Version 1.0", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(ALICE.id, "<b>unclosed", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(ALICE.id, "<blink>x</blink>", parse_mode="HTML")
    # PTB rewrites descriptions ("Bad Request: " dropped, capitalised); the wire has Telegram's.
    status, body = await raw_post(
        fake, f"/bot{TOKEN}/sendMessage", chat_id=str(ALICE.id), text="a-b", parse_mode="MarkdownV2"
    )
    assert (status, body) == (
        400,
        {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: can't parse entities: Character '-' is reserved and "
            "must be escaped with the preceding '\\'",
        },
    )
    assert len(fake.sent(TOKEN)) == 1


RESERVED = "Character '>' is reserved and must be escaped with the preceding '\\'"
UNMATCHED = 'Unmatched end tag at byte offset 17, expected "</i>", found "</em>"'


@pytest.mark.parametrize(
    ("parse_mode", "text", "problem"),
    [
        # tdlib's own test vectors: offsets are in bytes of UTF-8.
        ("MarkdownV2", "🏟 🏟_abacaba", "Can't find end of Italic entity at byte offset 9"),
        ("MarkdownV2", "[telegram\\.org](asd", "Can't find end of a URL at byte offset 16"),
        ("MarkdownV2", ">\n*a*>2", RESERVED),
        ("MarkdownV2", "🏟 🏟||test\\|", "Can't find end of Spoiler entity at byte offset 9"),
        ("HTML", "🏟 🏟&lt;<i>a</em   >", UNMATCHED),
        ("HTML", "🏟 🏟&lt;<abac aba>", 'Unsupported start tag "abac" at byte offset 13'),
        ("HTML", "<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("Markdown", "*bold", "Can't find end of the entity starting at byte offset 0"),
    ],
)
async def test_markup_errors_match_telegram(
    fake: FakeTelegramServer, parse_mode: str, text: str, problem: str
) -> None:
    fake.add_chat(TOKEN, ALICE)
    path = f"/bot{TOKEN}/sendMessage"
    status, body = await raw_post(
        fake, path, chat_id=str(ALICE.id), text=text, parse_mode=parse_mode
    )
    assert (status, body["description"]) == (400, f"Bad Request: can't parse entities: {problem}")


async def test_edit_message_text(fake: FakeTelegramServer, bot: Bot) -> None:
    fake.add_chat(TOKEN, ALICE)
    draft = await bot.send_message(ALICE.id, "thinking...")
    edited = await bot.edit_message_text("done", chat_id=ALICE.id, message_id=draft.message_id)
    assert not isinstance(edited, bool)  # True only for inline messages
    assert (edited.text, edited.message_id) == ("done", draft.message_id)
    assert [e.text for e in fake.edits(TOKEN)] == ["done"]
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("done", chat_id=ALICE.id, message_id=draft.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=ALICE.id, message_id=9999)


async def test_chat_action_files_and_downloads(fake: FakeTelegramServer, bot: Bot) -> None:
    photo = fake.photo_message(TOKEN, PNG, caption="look")
    sizes = photo["message"]["photo"]
    assert (sizes[-1]["width"], sizes[-1]["height"]) == (1, 1)
    await bot.send_chat_action(ALICE.id, ChatAction.TYPING, message_thread_id=3)
    assert [(a.chat_id, a.action, a.message_thread_id) for a in fake.chat_actions(TOKEN)] == [
        (ALICE.id, "typing", 3)
    ]
    with pytest.raises(BadRequest, match="Wrong parameter action"):
        await bot.send_chat_action(ALICE.id, "dancing")

    photo_file = await bot.get_file(sizes[-1]["file_id"])
    assert photo_file.file_path is not None
    assert photo_file.file_path.startswith(fake.base_file_url + TOKEN + "/photos/")
    assert bytes(await photo_file.download_as_bytearray()) == PNG

    document = fake.document_message(TOKEN, b"%PDF-1.4 fake", file_name="report.pdf")
    doc = document["message"]["document"]
    assert (doc["file_name"], doc["mime_type"]) == ("report.pdf", "application/pdf")
    buffer = io.BytesIO()
    await (await bot.get_file(doc["file_id"])).download_to_memory(buffer)
    assert buffer.getvalue() == b"%PDF-1.4 fake"

    huge = fake.document_message(TOKEN, b"...", file_name="huge.bin", file_size=25 * 1024 * 1024)
    with pytest.raises(BadRequest, match="File is too big"):
        await bot.get_file(huge["message"]["document"]["file_id"])
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await bot.get_file("no-such-file")


async def test_send_photo_and_document_uploads(fake: FakeTelegramServer, bot: Bot) -> None:
    fake.add_chat(TOKEN, ALICE)
    photo = await bot.send_photo(ALICE.id, PNG, caption="*cap*", parse_mode="MarkdownV2")
    document = await bot.send_document(ALICE.id, b"hello", filename="notes.txt", caption="notes")
    assert photo.caption == "cap"
    assert document.document is not None
    assert document.document.file_name == "notes.txt"
    sent = fake.sent(TOKEN)
    assert [(s.method, s.file, s.text) for s in sent] == [
        ("sendPhoto", PNG, "*cap*"),
        ("sendDocument", b"hello", "notes"),
    ]
    # Uploads arrive as multipart, plain calls form-encoded, as PTB sends them.
    assert fake.calls(TOKEN, "sendPhoto")[0].content_type == "multipart/form-data"
    # A sent file can be fetched back by its file_id.
    again = await bot.get_file(document.document.file_id)
    assert bytes(await again.download_as_bytearray()) == b"hello"


async def test_commands(fake: FakeTelegramServer, bot: Bot) -> None:
    assert await bot.set_my_commands([("start", "Start"), ("help", "Help")])
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    assert fake.commands(TOKEN) == [
        {"command": "start", "description": "Start"},
        {"command": "help", "description": "Help"},
    ]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()
    with pytest.raises(BadRequest):
        await bot.set_my_commands([("Not A Command", "x")])


# RetryAfter itself reads its deprecated int-valued `retry_after` while being built.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_rate_limit_raises_retry_after(fake: FakeTelegramServer, bot: Bot) -> None:
    fake.add_chat(TOKEN, ALICE)
    fake.rate_limit(TOKEN, "sendMessage", 7, calls=2)
    for _ in range(2):
        with pytest.raises(RetryAfter, match="Retry in 7 seconds"):
            await bot.send_message(ALICE.id, "hello")
    await bot.send_message(ALICE.id, "hello")
    assert [c.status for c in fake.calls(TOKEN, "sendMessage")] == [429, 429, 200]
    assert (await raw_post(fake, f"/bot{TOKEN}/getMe"))[0] == 200
    fake.rate_limit(TOKEN, "getMe", 3)
    assert await raw_post(fake, f"/bot{TOKEN}/getMe") == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        },
    )


async def test_bots_keep_separate_state(fake: FakeTelegramServer) -> None:
    fake.add_bot(OTHER_TOKEN, "other_bot")
    fake.private_message(OTHER_TOKEN, "for the other bot")
    async with make_bot(fake) as first, make_bot(fake, OTHER_TOKEN) as second:
        assert await first.get_updates() == ()
        (update,) = await second.get_updates()
        assert update.message is not None
        assert update.message.text == "for the other bot"
        with pytest.raises(BadRequest, match="Chat not found"):
            await first.send_message(ALICE.id, "not known to this bot")
        await second.send_message(ALICE.id, "known")
    assert (fake.sent(TOKEN), len(fake.sent(OTHER_TOKEN))) == ([], 1)


# --------------------------------------------------------------------------- getUpdates


async def test_get_updates_offset_limit_and_long_poll(fake: FakeTelegramServer, bot: Bot) -> None:
    ids = [fake.private_message(TOKEN, f"m{i}")["update_id"] for i in range(3)]
    assert ids == sorted(ids)
    assert [u.update_id for u in await bot.get_updates(limit=2)] == ids[:2]
    # Unconfirmed updates come again; an offset confirms everything before it.
    assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
    assert fake.pending_updates(TOKEN) == 2
    assert await bot.get_updates(offset=ids[2] + 1) == ()
    assert fake.pending_updates(TOKEN) == 0

    # A long poll is held until an update arrives.
    poll = asyncio.create_task(bot.get_updates(offset=ids[2] + 1, timeout=30))
    await fake.wait_polling(TOKEN)
    assert not poll.done()
    pushed = fake.private_message(TOKEN, "wake up")
    (update,) = await asyncio.wait_for(poll, 5)
    assert update.update_id == pushed["update_id"] == ids[2] + 1
    assert fake.active_pollers(TOKEN) == 0


async def test_allowed_updates_filter_what_is_queued(fake: FakeTelegramServer, bot: Bot) -> None:
    await bot.get_updates(allowed_updates=["edited_message"])
    message = fake.private_message(TOKEN, "dropped: not allowed")
    fake.edit_message(TOKEN, message, "kept")
    (update,) = await bot.get_updates()
    assert update.edited_message is not None
    assert update.edited_message.text == "kept"


async def test_overlapping_long_polls_conflict(fake: FakeTelegramServer) -> None:
    async with make_bot(fake) as first, make_bot(fake) as second:
        held = asyncio.create_task(first.get_updates(timeout=30))
        await fake.wait_polling(TOKEN)
        newer = asyncio.create_task(second.get_updates(timeout=30))
        # Telegram ends the older request, as the newer one takes over.
        with pytest.raises(Conflict) as conflict:
            await asyncio.wait_for(held, 5)
        assert str(conflict.value) == (
            "Conflict: terminated by other getUpdates request; "
            "make sure that only one bot instance is running"
        )
        assert fake.conflicts(TOKEN) == 1
        await fake.wait_polling(TOKEN)
        fake.private_message(TOKEN, "to the survivor")
        (update,) = await asyncio.wait_for(newer, 5)
        assert update.message is not None
        assert update.message.text == "to the survivor"
    assert fake.poll_count(TOKEN) == 2


async def test_stop_ends_held_long_polls_at_once() -> None:
    fake = FakeTelegramServer(max_long_poll_s=50)
    await fake.start()
    fake.add_bot(TOKEN, BOT_NAME)
    try:
        async with make_bot(fake) as bot:
            poll = asyncio.create_task(bot.get_updates(timeout=50))
            await fake.wait_polling(TOKEN)
            await fake.stop()
            assert await asyncio.wait_for(poll, 5) == ()
    finally:
        await fake.stop()


# --------------------------------------------------------------------------- telegram.ext


async def test_application_long_polling(fake: FakeTelegramServer) -> None:
    received: asyncio.Queue[Update] = asyncio.Queue()
    app = build_app(fake, received)
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=30)
        try:
            await fake.wait_polling(TOKEN)
            private = fake.private_message(TOKEN, "hello")
            group = fake.group_message(TOKEN, "what time is it?", mention=True)
            fake.edit_message(TOKEN, private, "hello, edited")
            photo = fake.photo_message(TOKEN, PNG, caption="a picture")
            got = [await asyncio.wait_for(received.get(), 5) for _ in range(4)]

            assert got[0].message is not None
            assert got[0].message.text == "hello"
            assert got[0].message.chat.type == "private"
            mention = got[1].message
            assert mention is not None
            assert mention.chat.id == TEST_GROUP.id
            assert mention.text == f"@{BOT_NAME} what time is it?"
            assert mention.parse_entities(["mention"]) == {mention.entities[0]: f"@{BOT_NAME}"}
            assert got[2].edited_message is not None
            assert got[2].edited_message.text == "hello, edited"
            assert got[2].edited_message.message_id == private["message"]["message_id"]
            assert got[3].message is not None
            assert got[3].message.photo[-1].file_id == photo["message"]["photo"][0]["file_id"]

            replies = await fake.wait_sent(TOKEN, 2)
            assert [(r.chat_id, r.text) for r in replies] == [
                (ALICE.id, "echo: hello"),
                (TEST_GROUP.id, f"echo: @{BOT_NAME} what time is it?"),
            ]
            assert replies[1].reply_to_message_id == group["message"]["message_id"]
        finally:
            await app.updater.stop()
            await app.stop()
    # PTB's last getUpdates confirms what it fetched.
    assert fake.pending_updates(TOKEN) == 0
    assert fake.active_pollers(TOKEN) == 0


async def test_second_poller_is_detected_as_conflict(fake: FakeTelegramServer) -> None:
    """The channel-bridge's single-poller lease relies on an intruder being visible."""
    app = build_app(fake, asyncio.Queue())
    errors: list[TelegramError] = []
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=30, error_callback=errors.append)
        try:
            await fake.wait_polling(TOKEN)
            async with make_bot(fake) as intruder:
                intruding = asyncio.create_task(intruder.get_updates(timeout=30))
                await fake.wait_for(lambda: bool(errors), 5, "a polling error")
                assert isinstance(errors[0], Conflict)
                assert "terminated by other getUpdates request" in str(errors[0])
                # The intruder's poll is ended in turn when the application polls again.
                with pytest.raises(Conflict):
                    await asyncio.wait_for(intruding, 10)
        finally:
            await app.updater.stop()
            await app.stop()
    assert fake.conflicts(TOKEN) >= 2


async def test_application_webhook(fake: FakeTelegramServer) -> None:
    received: asyncio.Queue[Update] = asyncio.Queue()
    app = build_app(fake, received)
    port = free_port()
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_webhook(
            listen="127.0.0.1", port=port, url_path="telegram", secret_token="s3cret-token"
        )
        try:
            assert fake.webhook_url(TOKEN) == f"http://127.0.0.1:{port}/telegram"
            async with make_bot(fake) as other:
                with pytest.raises(Conflict, match="can't use getUpdates method while webhook"):
                    await other.get_updates()
                info = await other.get_webhook_info()
                assert info.url == f"http://127.0.0.1:{port}/telegram"

                update = fake.group_message(TOKEN, "via webhook", mention=True)
                assert fake.pending_updates(TOKEN) == 1
                assert await fake.webhook_post(TOKEN) == 200
                got = await asyncio.wait_for(received.get(), 5)
                assert got.update_id == update["update_id"]
                assert fake.pending_updates(TOKEN) == 0
                await fake.wait_sent(TOKEN, 1)

                # PTB refuses a post whose secret is wrong or missing.
                assert await fake.webhook_post(TOKEN, update, secret_token="wrong") == 403
                assert await fake.webhook_post(TOKEN, update, secret_token=None) == 403
                info = await other.get_webhook_info()
                assert info.last_error_message is not None
                assert info.last_error_message.startswith("Wrong response from the webhook: 403")
                assert received.empty()
        finally:
            await app.updater.stop()
            await app.stop()


async def test_delete_webhook_drops_pending_updates(fake: FakeTelegramServer, bot: Bot) -> None:
    assert await bot.set_webhook("https://bridge.example/telegram", secret_token="abc")
    fake.private_message(TOKEN, "queued while the webhook is set")
    assert (await bot.get_webhook_info()).pending_update_count == 1
    with pytest.raises(BadRequest, match="Secret token contains unallowed characters"):
        await bot.set_webhook("https://bridge.example/telegram", secret_token="not ok!")
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert fake.webhook_url(TOKEN) is None
    assert await bot.get_updates() == ()


async def test_push_helpers_build_real_updates(fake: FakeTelegramServer) -> None:
    bob = FakeUser(2002, "Bob", username="bob")
    forum = FakeChat(-100777, "supergroup", title="Forum", is_forum=True)
    question = fake.group_message(TOKEN, "/ask@clawbus_test_bot hi", user=bob, chat=forum,
                                  message_thread_id=5)  # fmt: skip
    reply = fake.reply_message(TOKEN, question, "answer", user=ALICE)
    updates = [Update.de_json(u, None) for u in (question, reply)]
    first, second = (u.message for u in updates)
    assert first is not None
    assert second is not None
    assert first.entities[0].type == "bot_command"
    assert (first.message_thread_id, first.is_topic_message) == (5, True)
    assert second.reply_to_message is not None
    assert second.reply_to_message.message_id == first.message_id
    assert second.message_thread_id == 5
    assert updates[1].update_id == updates[0].update_id + 1
    with pytest.raises(ValueError, match="exactly one of"):
        fake.push_update(TOKEN, {"message": {}, "edited_message": {}})
