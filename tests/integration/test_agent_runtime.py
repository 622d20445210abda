"""The agent runtime end to end: the tool loop, session lanes across two runners, abort,
idempotency. Real NATS, Postgres, Redis; the fake model server scripts the model."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_core.events import read_run_events
from clawbus_fakes.models import FakeModelServer, Reply, ToolCall
from clawbus_protocol.names import Names
from clawbus_protocol.runs import ToolCallEvent, ToolResultEvent
from redis.asyncio import Redis

from tests.system import System, start_system, wait_for


async def _events(endpoints: Endpoints, namespace: str, run_id: str) -> list[object]:
    redis = Redis.from_url(endpoints.redis_url)
    try:
        return list(await read_run_events(redis, Names(namespace), uuid.UUID(run_id)))
    finally:
        await redis.aclose()


async def test_a_tool_using_run_end_to_end(
    system: System, db: asyncpg.Connection, endpoints: Endpoints
) -> None:
    system.fake.script(
        "gpt-tools",
        Reply(tool_calls=[ToolCall("write", {"path": "notes/a.md", "content": "hello tools"})]),
        Reply(tool_calls=[ToolCall("read", {"path": "notes/a.md"})]),
        Reply(text="the file says hello tools"),
    )
    client = system.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="openai/gpt-tools",
        messages=[{"role": "user", "content": "write then read"}],
        user=f"tools-{system.namespace}",
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "the file says hello tools"
    run_id = raw.headers["x-clawbus-run-id"]

    # The model was offered the tools, and saw each result in the next step.
    calls = system.fake.requests_for("gpt-tools")[-3:]
    offered = {t["function"]["name"] for t in calls[0].body["tools"]}
    assert {"read", "write", "edit", "list", "memory_search", "web_fetch"} <= offered
    assert calls[1].messages[-1]["role"] == "tool"
    assert "notes/a.md" in calls[1].messages[-1]["content"]
    assert calls[2].messages[-1]["content"].startswith("hello tools")

    # Events in order: call, result, call, result, then the answer and done.
    events = await _events(endpoints, system.namespace, run_id)
    kinds = [getattr(e, "type", "") for e in events]
    assert kinds[:4] == ["tool_call", "tool_result", "tool_call", "tool_result"]
    assert kinds[-1] == "done"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # type: ignore[attr-defined]
    first_call, first_result = events[0], events[1]
    assert isinstance(first_call, ToolCallEvent) and first_call.call.name == "write"
    assert isinstance(first_result, ToolResultEvent) and not first_result.is_error

    # The workspace holds the file; the transcript holds the calls and results.
    content = await db.fetchval(
        """SELECT w.content FROM workspace_files w JOIN agents a ON a.id = w.agent_id
           WHERE a.key = 'main' AND w.path = 'notes/a.md'"""
    )
    assert content == "hello tools"
    rows = await db.fetch(
        "SELECT role, content, tool_calls FROM messages WHERE run_id = $1::uuid ORDER BY run_step",
        run_id,
    )
    assert [r["role"] for r in rows] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert json.loads(rows[1]["tool_calls"])[0]["name"] == "write"
    assert rows[-1]["content"] == "the file says hello tools"


async def test_a_dangerous_or_unknown_tool_is_refused_to_the_model(system: System) -> None:
    system.fake.script(
        "gpt-nope",
        Reply(tool_calls=[ToolCall("rm_rf", {"path": "/"})]),
        Reply(text="could not"),
    )
    completion = await system.openai().chat.completions.create(
        model="openai/gpt-nope", messages=[{"role": "user", "content": "try"}]
    )
    assert completion.choices[0].message.content == "could not"
    result = system.fake.requests_for("gpt-nope")[-1].messages[-1]
    assert result["role"] == "tool"
    assert "not available" in result["content"]


async def test_a_repeated_tool_call_is_stopped_as_a_loop(system: System) -> None:
    same = Reply(tool_calls=[ToolCall("list", {})])
    system.fake.script("gpt-loop", same, same, same, same)
    with pytest.raises(Exception, match="tool loop detected"):
        await system.openai(max_retries=0).chat.completions.create(
            model="openai/gpt-loop", messages=[{"role": "user", "content": "loop"}]
        )


async def test_sessions_run_one_at_a_time_in_order_across_two_runners(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    fake_models.set_default("gpt-lane", Reply(text="ok", delay_s=0.02))
    # 100 requests at once from one client: above the default per-client caps.
    overrides = {
        "CLAWBUS_RUNNER_CONCURRENCY": "8",
        "CLAWBUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "200",
        "CLAWBUS_GATEWAY_RATE_LIMITS": '{"default": 0, "chat": 0}',
    }
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, runners=2, overrides=overrides
    ) as system:
        client = system.openai(timeout=120)

        async def send(session: int, n: int) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="openai/gpt-lane",
                messages=[{"role": "user", "content": f"s{session} m{n}"}],
                extra_headers={"x-openclaw-session-key": f"lane-{namespace}-{session}"},
            )
            return raw.headers["x-clawbus-run-id"]

        run_ids = await asyncio.gather(*(send(s, n) for s in range(20) for n in range(5)))
        assert len(set(run_ids)) == 100
    rows = await db.fetch(
        """SELECT s.session_key, r.seq, r.status, r.started_at, r.finished_at, r.runner_id
           FROM runs r JOIN sessions s ON s.id = r.session_id
           WHERE r.id = ANY($1::uuid[]) ORDER BY s.session_key, r.seq""",
        run_ids,
    )
    by_session: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        assert row["status"] == "completed"
        by_session[row["session_key"]].append(row)
    assert len(by_session) == 20
    for session_runs in by_session.values():
        for earlier, later in itertools.pairwise(session_runs):
            # FIFO and never overlapping: each run starts after the previous one finished.
            assert later["started_at"] >= earlier["finished_at"]
    assert len({row["runner_id"] for row in rows}) == 2  # both runners did work


async def _first_delta(response: aiohttp.ClientResponse) -> None:
    async for line in response.content:
        if b'"content":"' in line and b'"content":""' not in line:
            return


async def test_abort_during_a_model_stream_stops_within_a_second(
    system: System, db: asyncpg.Connection
) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    system.fake.set_default("gpt-long", Reply(text=words, chunk_delay_s=0.1))
    headers = {"Authorization": f"Bearer {system.token}"}
    body = {
        "model": "openai/gpt-long",
        "messages": [{"role": "user", "content": "talk"}],
        "stream": True,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{system.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            run_id = response.headers["x-clawbus-run-id"]
            await _first_delta(response)
            started = time.monotonic()
            async with http.post(f"{system.url}/v1/runs/{run_id}/abort", headers=headers) as r:
                assert r.status == 200
                assert (await r.json()) == {"aborted": True, "runIds": [run_id]}
            rest = await response.read()
            stopped = time.monotonic() - started
    assert b"[DONE]" in rest
    assert stopped < 1.0, f"the stream went on for {stopped:.2f}s after the abort"
    await wait_for(
        lambda: db.fetchval(
            "SELECT status = 'aborted' FROM runs WHERE id = $1::uuid AND status <> 'running'",
            run_id,
        )
    )
    partial = await db.fetchval(
        "SELECT content FROM messages WHERE run_id = $1::uuid AND role = 'assistant'", run_id
    )
    assert partial and words.startswith(partial) and partial != words


async def test_abort_during_a_slow_tool(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(_: aiohttp.web.Request) -> aiohttp.web.Response:
        entered.set()
        await release.wait()
        return aiohttp.web.Response(text="late")

    app = aiohttp.web.Application()
    app.router.add_get("/", slow)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake_models.script(
        "gpt-slowtool",
        Reply(tool_calls=[ToolCall("web_fetch", {"url": f"http://127.0.0.1:{port}/"})]),
        Reply(text="never reached"),
    )
    overrides = {"CLAWBUS_NET_ALLOW": f'["127.0.0.1:{port}"]'}
    try:
        async with start_system(
            endpoints, namespace, fake_models, tmp_path, overrides=overrides
        ) as system:
            client = system.openai(max_retries=0)
            call = asyncio.create_task(
                client.chat.completions.with_raw_response.create(
                    model="openai/gpt-slowtool", messages=[{"role": "user", "content": "fetch"}]
                )
            )
            await asyncio.wait_for(entered.wait(), timeout=30)
            run_id = await db.fetchval(
                """SELECT r.id FROM runs r WHERE r.status = 'running'
                   AND r.options->>'model' = 'openai/gpt-slowtool'
                   ORDER BY r.created_at DESC LIMIT 1"""
            )
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{system.url}/v1/runs/{run_id}/abort",
                    headers={"Authorization": f"Bearer {system.token}"},
                ) as r:
                    assert r.status == 200
            with pytest.raises(Exception, match="aborted"):
                await call
            assert time.monotonic() - started < 1.0
            status = await db.fetchval("SELECT status FROM runs WHERE id = $1", run_id)
            assert status == "aborted"
            # The cut-short call is answered in the transcript, so the history stays valid.
            rows = await db.fetch(
                "SELECT role, content FROM messages WHERE run_id = $1 ORDER BY run_step", run_id
            )
            assert [r["role"] for r in rows] == ["user", "assistant", "tool"]
            assert rows[2]["content"] == "aborted before the tool finished"
    finally:
        release.set()
        await runner.cleanup()


async def test_abort_of_an_unknown_run_is_404(system: System) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{system.url}/v1/runs/{uuid.uuid4()}/abort",
            headers={"Authorization": f"Bearer {system.token}"},
        ) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with http.post(
            f"{system.url}/v1/runs/not-a-uuid/abort",
            headers={"Authorization": f"Bearer {system.token}"},
        ) as r:
            assert r.status == 400


async def test_the_same_idempotency_key_five_times_at_once_is_one_run(
    system: System, db: asyncpg.Connection
) -> None:
    system.fake.set_default("gpt-idem", Reply(text="only once", chunk_delay_s=0.05))
    client = system.openai()
    key = f"idem-{system.namespace}"
    raws = await asyncio.gather(
        *(
            client.chat.completions.with_raw_response.create(
                model="openai/gpt-idem",
                messages=[{"role": "user", "content": "once"}],
                extra_headers={"Idempotency-Key": key},
            )
            for _ in range(5)
        )
    )
    answers = {r.parse().choices[0].message.content for r in raws}
    assert answers == {"only once"}
    assert {r.headers["x-clawbus-run-id"] for r in raws} == {raws[0].headers["x-clawbus-run-id"]}
    assert await db.fetchval("SELECT count(*) FROM runs WHERE idempotency_key = $1", key) == 1
    assert len(system.fake.requests_for("gpt-idem")) == 1


async def _agent(db: asyncpg.Connection, key: str, model: str, fallbacks: list[str]) -> None:
    await db.execute(
        """INSERT INTO agents (id, tenant_id, key, name, model, fallbacks, context_tokens)
           VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', $1, $1, $2, $3,
                   $4)""",
        key,
        model,
        fallbacks,
        2000,
    )


async def test_the_primary_rate_limits_and_the_fallback_answers(
    system: System, db: asyncpg.Connection
) -> None:
    agent = f"failover-{system.namespace}"
    await _agent(db, agent, "openai/gpt-busy", ["anthropic/claude-spare"])
    limited = Reply(status=429, retry_after_s=0)
    system.fake.script("gpt-busy", limited, limited, limited)
    system.fake.script("claude-spare", Reply(text="the spare answers"))
    raw = await system.openai().chat.completions.with_raw_response.create(
        model=f"agent:{agent}", messages=[{"role": "user", "content": "anyone?"}]
    )
    assert raw.parse().choices[0].message.content == "the spare answers"
    run_id = raw.headers["x-clawbus-run-id"]
    assert await db.fetchval("SELECT model FROM runs WHERE id = $1::uuid", run_id) == (
        "anthropic/claude-spare"
    )
    models = await db.fetch("SELECT model FROM usage WHERE run_id = $1::uuid", run_id)
    assert [m["model"] for m in models] == ["anthropic/claude-spare"]


async def test_when_every_model_fails_the_error_names_the_kind(
    system: System, db: asyncpg.Connection
) -> None:
    agent = f"allfail-{system.namespace}"
    await _agent(db, agent, "openai/gpt-down", ["anthropic/claude-down"])
    system.fake.set_default("gpt-down", Reply(status=429, retry_after_s=0))
    system.fake.set_default("claude-down", Reply(status=429, retry_after_s=0))
    headers = {"Authorization": f"Bearer {system.token}"}
    body = {"model": f"agent:{agent}", "messages": [{"role": "user", "content": "hello?"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{system.url}/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 429
            error = (await r.json())["error"]
    assert error["details"]["kind"] == "rate_limit"
    tried = [a["model"] for a in error["details"]["attempts"]]
    assert "openai/gpt-down" in tried and "anthropic/claude-down" in tried
    assert "gpt-down" in error["message"] and "claude-down" in error["message"]


async def test_a_context_overflow_is_compacted_and_the_run_succeeds(
    system: System, db: asyncpg.Connection
) -> None:
    agent = f"compact-{system.namespace}"
    await _agent(db, agent, "openai/gpt-small", [])
    session = f"compact-{system.namespace}"
    client = system.openai()
    system.fake.set_default("gpt-small", lambda r: Reply(text=f"noted {r.last_user_text[:12]}"))
    for i in range(4):
        await client.chat.completions.create(
            model=f"agent:{agent}",
            messages=[{"role": "user", "content": f"fact {i}: the code word is w{i}"}],
            extra_headers={"x-openclaw-session-key": session},
        )
    system.fake.script(
        "gpt-small",
        Reply(error="context_length_exceeded"),
        Reply(text="the user shared facts 0 to 3 with code words w0..w3"),
        Reply(text="w2 it was"),
    )
    answer = await client.chat.completions.create(
        model=f"agent:{agent}",
        messages=[{"role": "user", "content": "what was the code word for fact 2?"}],
        extra_headers={"x-openclaw-session-key": session},
    )
    assert answer.choices[0].message.content == "w2 it was"
    summary = await db.fetchrow(
        """SELECT m.content, m.covers_upto FROM messages m JOIN sessions s ON s.id = m.session_id
           WHERE s.session_key = $1 AND m.kind = 'summary'""",
        session,
    )
    assert summary is not None and "w0..w3" in summary["content"]
    # Nothing was deleted, and the last call saw the summary instead of the older turns.
    count = await db.fetchval(
        """SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id
           WHERE s.session_key = $1 AND m.kind = 'message'""",
        session,
    )
    assert count == 10
    last = system.fake.requests_for("gpt-small")[-1]
    texts = [str(m.get("content")) for m in last.messages]
    assert any("w0..w3" in t for t in texts)
    assert not any("fact 0" in t for t in texts)


async def _slow_first_turn(system: System, session: str, model: str) -> asyncio.Task[object]:
    """Start a slow run in `session` and return once its first token has streamed."""
    words = " ".join(f"s{i}" for i in range(30))
    system.fake.script(model, Reply(text=words, chunk_delay_s=0.05))
    client = system.openai(timeout=60)
    stream = await client.chat.completions.create(
        model=f"openai/{model}",
        messages=[{"role": "user", "content": "first"}],
        stream=True,
        extra_headers={"x-openclaw-session-key": session},
    )
    iterator = stream.__aiter__()
    while True:
        chunk = await iterator.__anext__()
        if chunk.choices and chunk.choices[0].delta.content:
            break

    async def rest() -> object:
        return [c async for c in iterator]

    return asyncio.create_task(rest())


async def _queue_modes(db: asyncpg.Connection, session: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            """SELECT r.id, r.status, r.queue_mode, r.merged_into FROM runs r
               JOIN sessions s ON s.id = r.session_id WHERE s.session_key = $1 ORDER BY r.seq""",
            session,
        )
    )


async def test_collect_merges_waiting_messages_into_one_follow_up(
    system: System, db: asyncpg.Connection
) -> None:
    session = f"collect-{system.namespace}"
    first = await _slow_first_turn(system, session, "gpt-collect")
    system.fake.set_default(
        "gpt-collect",
        lambda r: Reply(
            text="saw " + ",".join(str(m["content"]) for m in r.messages if m.get("role") == "user")
        ),
    )
    client = system.openai(timeout=60)
    answers = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="openai/gpt-collect",
                messages=[{"role": "user", "content": word}],
                extra_headers={
                    "x-openclaw-session-key": session,
                    "x-clawbus-queue-mode": "collect",
                },
            )
            for word in ("alpha", "beta", "gamma")
        )
    )
    await first
    texts = {a.choices[0].message.content for a in answers}
    assert len(texts) == 1, texts  # one answer for the three messages
    (text,) = texts
    assert text is not None
    assert all(w in text for w in ("alpha", "beta", "gamma"))
    rows = await _queue_modes(db, session)
    collected = [r for r in rows if r["queue_mode"] == "collect"]
    answered = [r for r in collected if r["merged_into"] is None]
    assert len(answered) == 1
    assert all(r["merged_into"] == answered[0]["id"] for r in collected if r != answered[0])
    assert {r["status"] for r in rows} == {"completed"}
    # One model call answered all three (plus the slow first turn's).
    assert len(system.fake.requests_for("gpt-collect")) == 2


async def test_interrupt_aborts_the_current_run_then_runs(
    system: System, db: asyncpg.Connection
) -> None:
    session = f"interrupt-{system.namespace}"
    first = await _slow_first_turn(system, session, "gpt-interrupt")
    system.fake.set_default("gpt-interrupt", Reply(text="interrupted you"))
    answer = await system.openai(timeout=60).chat.completions.create(
        model="openai/gpt-interrupt",
        messages=[{"role": "user", "content": "stop that"}],
        extra_headers={"x-openclaw-session-key": session, "x-clawbus-queue-mode": "interrupt"},
    )
    assert answer.choices[0].message.content == "interrupted you"
    await asyncio.wait_for(first, timeout=10)  # the first stream ended (aborted), not hung
    rows = await _queue_modes(db, session)
    assert [r["status"] for r in rows] == ["aborted", "completed"]


async def test_abort_by_session_stops_the_running_and_the_queued_run(
    system: System, db: asyncpg.Connection
) -> None:
    session = f"abort-session-{system.namespace}"
    first = await _slow_first_turn(system, session, "gpt-abort-session")
    client = system.openai(timeout=60, max_retries=0)
    queued = asyncio.create_task(
        client.chat.completions.create(
            model="openai/gpt-abort-session",
            messages=[{"role": "user", "content": "queued"}],
            extra_headers={"x-openclaw-session-key": session},
        )
    )
    await wait_for(lambda: _count_runs(db, session, 2))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{system.url}/v1/sessions/{session}/abort",
            headers={"Authorization": f"Bearer {system.token}"},
        ) as r:
            assert r.status == 200
            assert len((await r.json())["runIds"]) == 2
    with pytest.raises(Exception, match="aborted"):
        await queued
    await asyncio.wait_for(first, timeout=10)
    rows = await _queue_modes(db, session)
    assert [r["status"] for r in rows] == ["aborted", "aborted"]


async def _count_runs(db: asyncpg.Connection, session: str, n: int) -> bool:
    return len(await _queue_modes(db, session)) >= n


async def test_memory_written_by_a_tool_is_in_the_next_runs_prompt(
    system: System, db: asyncpg.Connection
) -> None:
    agent = f"memory-{system.namespace}"
    await _agent(db, agent, "openai/gpt-memory", [])
    await db.execute(
        """INSERT INTO workspace_files (tenant_id, agent_id, path, content)
           SELECT tenant_id, id, 'MEMORY.md', 'nothing yet' FROM agents WHERE key = $1""",
        agent,
    )
    client = system.openai()
    system.fake.script(
        "gpt-memory",
        Reply(text="ok"),
        Reply(tool_calls=[ToolCall("write", {"path": "MEMORY.md", "content": "likes purple"})]),
        Reply(text="noted"),
        Reply(text="purple"),
    )
    for text in ("hello", "remember purple", "what do I like?"):
        await client.chat.completions.create(
            model=f"agent:{agent}", messages=[{"role": "user", "content": text}]
        )
    prompts = [r.messages[0]["content"] for r in system.fake.requests_for("gpt-memory")]
    assert "nothing yet" in prompts[0]
    assert "likes purple" in prompts[-1] and "nothing yet" not in prompts[-1]
