"""The OpenAI-compatible surface end to end: real openai SDK -> gateway -> NATS -> runner ->
model (offline echo, or the fake OpenAI / Anthropic upstream) -> Redis -> client; Postgres
holds the transcript afterwards."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import asyncpg
import openai
import pytest
from clawbus_fakes.models import Reply

from tests.system import System


async def transcript(db: asyncpg.Connection, session_key: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        """SELECT m.role, m.content FROM messages m JOIN sessions s ON s.id = m.session_id
           WHERE s.session_key = $1 ORDER BY m.id""",
        session_key,
    )
    return [(r["role"], r["content"]) for r in rows]


async def run_row(db: asyncpg.Connection, run_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM runs WHERE id = $1::uuid", run_id)
    assert row is not None
    return row


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("clawbus/echo", "You said: hello there"),
        ("openai/gpt-fake", "echo: hello there"),
        ("anthropic/claude-fake", "echo: hello there"),
    ],
)
async def test_chat_completion_through_the_whole_system(
    system: System, db: asyncpg.Connection, model: str, expected: str
) -> None:
    client = system.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "hello there"}],
        user=f"alice-{system.namespace}",
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.model == model
    session_key = raw.headers["x-openclaw-session-key"]
    assert session_key == f"agent:main:openai-user:alice-{system.namespace}"
    assert await transcript(db, session_key) == [("user", "hello there"), ("assistant", expected)]
    run = await run_row(db, raw.headers["x-clawbus-run-id"])
    assert run["status"] == "completed"
    assert run["model"] == model
    usage = await db.fetchrow("SELECT * FROM usage WHERE run_id = $1", run["id"])
    assert usage is not None and usage["total_tokens"] == completion.usage.total_tokens


@pytest.mark.parametrize("model", ["clawbus/echo", "openai/gpt-fake", "anthropic/claude-fake"])
async def test_streamed_completion(system: System, db: asyncpg.Connection, model: str) -> None:
    system.fake.script(model.split("/", 1)[1], Reply(text="one two three four"))
    client = system.openai()
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-openclaw-session-key": f"stream-{system.namespace}"},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = "You said: count" if model == "clawbus/echo" else "one two three four"
    assert text == expected
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1
    assert await transcript(db, f"stream-{system.namespace}") == [
        ("user", "count"),
        ("assistant", expected),
    ]


async def test_fifty_concurrent_streams_each_get_their_own_reply(system: System) -> None:
    system.fake.set_default(
        "gpt-fake", lambda r: Reply(text=f"echo: {r.last_user_text}", chunk_delay_s=0.005)
    )
    client = system.openai()

    async def one(i: int) -> tuple[int, str, list[str]]:
        stream = await client.chat.completions.create(
            model="openai/gpt-fake",
            messages=[{"role": "user", "content": f"client {i} says w1 w2 w3 w4 w5 w6 w7 w8"}],
            stream=True,
            user=f"user-{i}-{system.namespace}",
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return i, "".join(pieces), [p for p in pieces if p]

    results = await asyncio.gather(*(one(i) for i in range(50)))
    for i, text, pieces in results:
        assert text == f"echo: client {i} says w1 w2 w3 w4 w5 w6 w7 w8", pieces
        # Really streamed: the first token goes out alone; later ones may be coalesced
        # when writes lag the model (by design), so at least two pieces, never one blob.
        assert len(pieces) >= 2, pieces


async def test_session_history_is_sent_to_the_model(system: System) -> None:
    client = system.openai()
    for content in ("first question", "second question"):
        await client.chat.completions.create(
            model="openai/gpt-fake",
            messages=[{"role": "user", "content": content}],
            user=f"bob-{system.namespace}",
        )
    last = system.fake.requests_for("gpt-fake")[-1].body["messages"]
    said = [(m["role"], m["content"]) for m in last if m["role"] != "system"]
    assert said == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
    ]


async def test_stateless_request_uses_the_clients_messages(system: System) -> None:
    client = system.openai()
    await client.chat.completions.create(
        model="openai/gpt-fake",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
    )
    sent = system.fake.requests_for("gpt-fake")[-1].body["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].endswith("be brief")
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "a"),
        ("assistant", "b"),
        ("user", "c"),
    ]


async def test_a_changed_agent_prompt_reaches_the_model_at_once(
    system: System, db: asyncpg.Connection
) -> None:
    """The runner may start a stateless call before its claim, with the agent as it last
    saw it; when the claim shows the agent changed, that call must not be the one used."""
    agent = f"prefetch-{system.namespace}"
    await db.execute(
        """INSERT INTO agents (id, tenant_id, key, name, model, system_prompt)
           VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', $1, $1,
                   'openai/gpt-prefetch', 'prompt one')""",
        agent,
    )
    system.fake.set_default(
        "gpt-prefetch",
        lambda r: Reply(text=f"system was: {r.messages[0]['content'].splitlines()[0]}"),
    )
    client = system.openai()
    answers = []
    for prompt in ("prompt one", "prompt two", "prompt three"):
        await db.execute("UPDATE agents SET system_prompt = $2 WHERE key = $1", agent, prompt)
        for _ in range(2):  # the second call finds the runner's view of the agent current
            completion = await client.chat.completions.create(
                model=f"agent:{agent}", messages=[{"role": "user", "content": "which?"}]
            )
            answers.append(completion.choices[0].message.content)
    assert answers == [f"system was: prompt {n}" for n in ("one", "two", "three") for _ in "12"]


async def test_models_list(system: System) -> None:
    models = await system.openai().models.list()
    ids = [m.id for m in models.data]
    assert "clawbus/echo" in ids


async def test_idempotency_key_returns_the_first_result(
    system: System, db: asyncpg.Connection
) -> None:
    client = system.openai()
    key = f"retry-me-{system.namespace}"
    headers = {"Idempotency-Key": key}
    kwargs = {"model": "clawbus/echo", "messages": [{"role": "user", "content": "once"}]}
    first = await client.chat.completions.with_raw_response.create(**kwargs, extra_headers=headers)  # type: ignore[call-overload]
    second = await client.chat.completions.with_raw_response.create(**kwargs, extra_headers=headers)  # type: ignore[call-overload]
    assert first.headers["x-clawbus-run-id"] == second.headers["x-clawbus-run-id"]
    assert second.parse().choices[0].message.content == "You said: once"
    count = await db.fetchval("SELECT count(*) FROM runs WHERE idempotency_key = $1", key)
    assert count == 1


# --- errors -------------------------------------------------------------------------------


async def _count_rows(db: asyncpg.Connection) -> tuple[int, int]:
    runs = await db.fetchval("SELECT count(*) FROM runs")
    messages = await db.fetchval("SELECT count(*) FROM messages")
    return runs, messages


async def test_missing_and_wrong_token_get_401(system: System) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{system.url}/v1/chat/completions", json={}) as r:
            assert r.status == 401
            body = await r.json()
            assert body["error"]["code"] == "unauthorized"
            assert body["error"]["retryable"] is False
    bad = openai.AsyncOpenAI(base_url=f"{system.url}/v1", api_key="wrong-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        await bad.chat.completions.create(
            model="clawbus/echo", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 401
    async with aiohttp.ClientSession() as http, http.get(f"{system.url}/health") as r:
        assert r.status == 200  # no auth on health


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (json.dumps({"model": "clawbus/echo"}).encode(), 400, "messages"),
        (json.dumps({"model": "clawbus/echo", "messages": "hi"}).encode(), 400, "messages"),
        (
            json.dumps({"model": 5, "messages": [{"role": "user", "content": "x"}]}).encode(),
            400,
            "model",
        ),
        (
            json.dumps(
                {"model": "clawbus/echo", "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            400,
            "role",
        ),
        (
            json.dumps(
                {
                    "model": "clawbus/echo",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": "yes",
                }
            ).encode(),
            400,
            "stream",
        ),
        (
            json.dumps(
                {"model": "clawbus/echo", "messages": [{"role": "assistant", "content": "x"}]}
            ).encode(),
            400,
            "user message",
        ),
        # Postgres text cannot hold NUL: a clear 400, not a 500 from the database.
        (
            b'{"model":"clawbus/echo","messages":[{"role":"user","content":"a\\u0000b"}]}',
            400,
            "NUL",
        ),
        (
            b'{"model":"clawbus/echo","user":"u\\u0000","messages":[{"role":"user","content":"x"}]}',
            400,
            "NUL",
        ),
        (b'{"model":"agent:m\\u0000","messages":[{"role":"user","content":"x"}]}', 400, "NUL"),
        (
            b'{"model":"clawbus/echo","messages":[{"role":"user","content":"a\\ud800"}]}',
            400,
            "JSON",
        ),
    ],
)
async def test_bad_bodies_get_4xx_and_store_nothing(
    system: System, db: asyncpg.Connection, body: bytes, status: int, fragment: str
) -> None:
    before = await _count_rows(db)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {system.token}", "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == status
        error = (await r.json())["error"]
    assert error["code"] == "invalid_request"
    assert fragment in error["message"]
    assert await _count_rows(db) == before


async def test_body_over_the_limit_gets_413(system: System, db: asyncpg.Connection) -> None:
    before = await _count_rows(db)
    huge = json.dumps(
        {
            "model": "clawbus/echo",
            "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}],
        }
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/chat/completions",
            data=huge,
            headers={"Authorization": f"Bearer {system.token}"},
        ) as r,
    ):
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "payload_too_large"
    assert await _count_rows(db) == before


@pytest.mark.parametrize("model", ["nope/model-x", "openai-ish-model", "agent:ghost"])
async def test_unknown_model_or_agent_is_named_in_a_404(
    system: System, db: asyncpg.Connection, model: str
) -> None:
    before = await _count_rows(db)
    with pytest.raises(openai.NotFoundError) as err:
        await system.openai().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert model.removeprefix("agent:") in err.value.message
    assert await _count_rows(db) == before


@pytest.mark.parametrize(
    ("status", "exc", "code"),
    [
        (500, openai.APIStatusError, "upstream_error"),
        (429, openai.RateLimitError, "upstream_rate_limited"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_failure_fails_the_run_cleanly(
    system: System,
    db: asyncpg.Connection,
    status: int,
    exc: type[openai.APIStatusError],
    code: str,
    stream: bool,
) -> None:
    system.fake.set_default("gpt-broken", Reply(status=status))
    with pytest.raises(exc) as err:
        result = await system.openai().chat.completions.create(
            model="openai/gpt-broken",
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_headers={"x-openclaw-session-key": f"broken-{system.namespace}"},
        )
        if stream:
            async for _ in result:  # type: ignore[union-attr]
                pass
    assert err.value.status_code == (502 if status == 500 else 429)
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == code
    run = await db.fetchrow(
        """SELECT r.* FROM runs r JOIN sessions s ON s.id = r.session_id
           WHERE s.session_key = $1""",
        f"broken-{system.namespace}",
    )
    assert run is not None and run["status"] == "failed"
    assert json.loads(run["error"])["code"] == code
    assert await transcript(db, f"broken-{system.namespace}") == [("user", "hi")]


async def test_anthropic_overloaded_is_a_clear_error(system: System) -> None:
    system.fake.set_default("claude-busy", Reply(status=529))
    with pytest.raises(openai.APIStatusError) as err:
        await system.openai().chat.completions.create(
            model="anthropic/claude-busy", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 502
    assert "anthropic" in err.value.message


@pytest.mark.parametrize("model", ["openai/gpt-dropped", "anthropic/claude-dropped"])
async def test_a_dropped_upstream_stream_fails_the_run_as_upstream_error(
    system: System, db: asyncpg.Connection, model: str
) -> None:
    name = model.split("/", 1)[1]
    system.fake.set_default(name, Reply(text="a b c d e f", drop_after_chunks=2))
    session = f"dropped-{system.namespace}"
    with pytest.raises(openai.APIStatusError) as err:
        await system.openai().chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-openclaw-session-key": session},
        )
    assert err.value.status_code == 502
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "upstream_error"
    assert await transcript(db, session) == [("user", "hi")]


@pytest.mark.parametrize(
    "header", ["x-openclaw-session-key", "Idempotency-Key", "x-openclaw-agent-id"]
)
async def test_overlong_keys_are_refused(
    system: System, db: asyncpg.Connection, header: str
) -> None:
    before = await _count_rows(db)
    with pytest.raises(openai.BadRequestError) as err:
        await system.openai().chat.completions.create(
            model="clawbus/echo",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={header: "k" * 257},
        )
    assert header in err.value.message
    assert await _count_rows(db) == before
