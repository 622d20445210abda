"""OpenClaw's HTTP API (000) end to end: 000's examples replayed as written (paths, bodies,
headers), sessions, the routes of services not built yet, and SSE streams resumed after a
dropped connection with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, Reply

from tests.system import System, start_system, wait_for

# --- helpers ----------------------------------------------------------------------------------


def auth(system: System, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.token}", **extra}


@dataclass
class Frame:
    id: int | None
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_frames(response: aiohttp.ClientResponse) -> AsyncIterator[Frame]:
    """The SSE frames of `response` as they arrive."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
            continue
        if data or fields:
            raw_id = fields.get("id")
            yield Frame(
                int(raw_id) if raw_id is not None else None, fields.get("event"), "\n".join(data)
            )
            fields, data = {}, []


async def assistant_message(db: asyncpg.Connection, run_id: str) -> str:
    """The run's stored answer (waiting for the run to be stored)."""

    async def stored() -> str | None:
        value: str | None = await db.fetchval(
            "SELECT content FROM messages WHERE run_id = $1::uuid AND role = 'assistant'",
            run_id,
        )
        return value

    found: str = await wait_for(stored)
    return found


def is_utc_timestamp(value: str) -> bool:
    return datetime.fromisoformat(value).utcoffset() is not None


# --- 000's examples as written ----------------------------------------------------------------


async def test_status_example(system: System) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{system.url}/status", headers=auth(system)) as r,
    ):
        assert r.status == 200
        body = await r.json()
    assert set(body) == {"status", "version", "uptime", "gateway", "channels"}
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0
    port = int(system.url.rsplit(":", 1)[1])
    assert body["gateway"] == {"port": port, "bind": "127.0.0.1", "auth": "token"}
    assert body["channels"] == {}  # this deployment (namespace) has no channels


async def test_status_needs_credentials(system: System) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{system.url}/status") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"


async def test_agent_run_example(system: System, db: asyncpg.Connection) -> None:
    # 000's "Run Agent" request, as written (its model goes to the fake Anthropic upstream).
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/agent/run",
            headers={"Content-Type": "application/json", **auth(system)},
            json={
                "message": "Hello, AI!",
                "sessionKey": "session-123",
                "agentId": "default",
                "options": {"thinking": "medium", "model": "anthropic/claude-3-5-sonnet"},
            },
        ) as r,
    ):
        assert r.status == 200
        body = await r.json()
        run_id = r.headers["x-clawbus-run-id"]
    assert set(body) == {"runId", "sessionKey", "response", "usage", "finishReason"}
    assert body["runId"] == run_id
    assert body["sessionKey"] == "session-123"
    assert body["response"] == "echo: Hello, AI!"
    assert body["finishReason"] == "stop"
    usage = body["usage"]
    assert set(usage) == {"promptTokens", "completionTokens", "totalTokens"}
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"] > 0
    assert system.fake.requests_for("claude-3-5-sonnet")
    assert await assistant_message(db, run_id) == body["response"]


async def test_agent_run_python_example(system: System) -> None:
    # 000's Python (requests) and cURL examples: message and sessionKey only.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/agent/run",
            headers=auth(system),
            json={"message": "Hello!", "sessionKey": "session-123"},
        ) as r,
    ):
        data = await r.json()
    assert data["response"] == "You said: Hello!"  # the default agent's offline model


async def test_chat_completions_example(system: System) -> None:
    # 000's "OpenAI Compatible API" request, as written.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/chat/completions",
            headers=auth(system),
            json={
                "model": "anthropic/claude-3-5-sonnet",
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Hello!"},
                ],
                "stream": False,
                "temperature": 0.7,
                "max_tokens": 1000,
            },
        ) as r,
    ):
        assert r.status == 200
        body = await r.json()
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "anthropic/claude-3-5-sonnet"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "echo: Hello!"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    [upstream] = system.fake.requests_for("claude-3-5-sonnet")[-1:]
    assert upstream.body["temperature"] == 0.7
    assert upstream.body["max_tokens"] == 1000
    assert "You are a helpful assistant." in json.dumps(upstream.body["system"])


async def test_openai_sdk_and_models_list_examples(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    # 000's "Using OpenAI SDK" (base_url .../v1, the gateway token as api_key) and "Models
    # List", with the two providers' models of its example configured.
    overrides = {
        "CLAWBUS_PROVIDERS__ANTHROPIC__MODELS": '["claude-3-5-sonnet"]',
        "CLAWBUS_PROVIDERS__OPENAI__MODELS": '["gpt-4o"]',
    }
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=overrides
    ) as system:
        client = system.openai()
        response = await client.chat.completions.create(
            model="anthropic/claude-3-5-sonnet", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert response.choices[0].message.content == "echo: Hello!"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{system.url}/v1/models", headers=auth(system)) as r,
        ):
            assert r.status == 200
            body = await r.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    for model, owner in (("anthropic/claude-3-5-sonnet", "anthropic"), ("openai/gpt-4o", "openai")):
        card = cards[model]
        assert set(card) == {"id", "object", "created", "owned_by"}
        assert card["object"] == "model"
        assert card["owned_by"] == owner
        assert isinstance(card["created"], int)


async def test_agent_run_stream_example(system: System, db: asyncpg.Connection) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/agent/run/stream",
            headers={"Content-Type": "application/json", **auth(system)},
            json={"message": "Hello", "sessionKey": "session-123", "stream": True},
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        run_id = r.headers["x-clawbus-run-id"]
        frames = [f async for f in sse_frames(r)]
    assert [f.event for f in frames[:-1]] == ["delta"] * (len(frames) - 1)
    assert frames[-1].event == "done"
    for frame in frames[:-1]:
        assert set(frame.json()) == {"delta", "runId"}
        assert frame.json()["runId"] == run_id
    done = frames[-1].json()
    assert done["runId"] == run_id
    assert done["finishReason"] == "stop"
    assert done["usage"]["totalTokens"] > 0
    ids = [f.id for f in frames]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    text = "".join(f.json()["delta"] for f in frames[:-1])
    assert text == "You said: Hello"
    assert await assistant_message(db, run_id) == text


async def test_agent_run_without_session_key_uses_the_agents_main_session(
    system: System,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{system.url}/v1/agent/run", headers=auth(system), json={"message": "hi"}) as r,
    ):
        assert r.status == 200
        assert (await r.json())["sessionKey"] == "agent:main:main"


@pytest.mark.parametrize("path", ["/v1/agent/run", "/v1/agent/run/stream"])
@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({}, 400, "invalid_request", "message"),
        ({"message": ""}, 400, "invalid_request", "message"),
        ({"message": "   "}, 400, "invalid_request", "message"),
        ({"message": 5}, 400, "invalid_request", "message"),
        ({"message": "hi", "sessionKey": "k" * 257}, 400, "invalid_request", "sessionKey"),
        ({"message": "hi", "agentId": "ghost"}, 404, "not_found", None),
        ({"message": "hi", "sessionKey": "agent:ghost:x"}, 404, "not_found", None),
        ({"message": "hi", "agentId": "not an id!"}, 400, "invalid_request", None),
        ({"message": "hi", "options": {"model": "nope/x"}}, 404, "model_not_found", "model"),
    ],
)
async def test_agent_run_errors(
    system: System,
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
    param: str | None,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{system.url}{path}", headers=auth(system), json=body) as r,
    ):
        assert r.status == status
        error = (await r.json())["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param


async def test_stream_failing_at_once_answers_with_the_http_status(system: System) -> None:
    system.fake.set_default("gpt-broken", Reply(status=500))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/agent/run/stream",
            headers=auth(system),
            json={
                "message": "hi",
                "sessionKey": f"broken-{system.namespace}",
                "options": {"model": "openai/gpt-broken"},
            },
        ) as r,
    ):
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_error"


# --- sessions ---------------------------------------------------------------------------------


async def _run(http: aiohttp.ClientSession, system: System, session: str, message: str) -> None:
    async with http.post(
        f"{system.url}/v1/agent/run",
        headers=auth(system),
        json={"message": message, "sessionKey": session},
    ) as r:
        assert r.status == 200, await r.text()


async def test_sessions_list_get_delete(system: System) -> None:
    session = f"sessions-{system.namespace}"
    async with aiohttp.ClientSession() as http:
        await _run(http, system, session, "one")
        await _run(http, system, session, "two")
        async with http.get(f"{system.url}/v1/sessions", headers=auth(system)) as r:
            assert r.status == 200
            listed = await r.json()
        assert set(listed) == {"sessions"}
        mine = [s for s in listed["sessions"] if s["sessionKey"] == session]
        assert len(mine) == 1
        summary = mine[0]
        assert set(summary) == {
            "sessionKey",
            "agentId",
            "channel",
            "createdAt",
            "updatedAt",
            "messageCount",
        }
        assert summary["agentId"] == "main"
        assert summary["channel"] == "api"
        assert summary["messageCount"] == 4
        assert is_utc_timestamp(summary["createdAt"]) and is_utc_timestamp(summary["updatedAt"])
        assert summary["updatedAt"] >= summary["createdAt"]

        async with http.get(
            f"{system.url}/v1/sessions", headers=auth(system), params={"agentId": "default"}
        ) as r:
            assert session in [s["sessionKey"] for s in (await r.json())["sessions"]]

        async with http.get(f"{system.url}/v1/sessions/{session}", headers=auth(system)) as r:
            assert r.status == 200
            detail = await r.json()
        assert {k: v for k, v in detail.items() if k != "messages"} == summary
        assert [(m["role"], m["content"]) for m in detail["messages"]] == [
            ("user", "one"),
            ("assistant", "You said: one"),
            ("user", "two"),
            ("assistant", "You said: two"),
        ]

        async with http.delete(f"{system.url}/v1/sessions/{session}", headers=auth(system)) as r:
            assert r.status == 204
        async with http.get(f"{system.url}/v1/sessions/{session}", headers=auth(system)) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with http.delete(f"{system.url}/v1/sessions/{session}", headers=auth(system)) as r:
            assert r.status == 404


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "offset=-1"])
async def test_sessions_list_rejects_bad_paging(system: System, query: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{system.url}/v1/sessions?{query}", headers=auth(system)) as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["param"] == query.split("=", maxsplit=1)[0]


async def test_deleting_a_session_with_a_running_run_is_a_conflict(
    system: System, db: asyncpg.Connection
) -> None:
    session = f"busy-{system.namespace}"
    system.fake.script("gpt-slow", Reply(text="slow", delay_s=30))
    async with aiohttp.ClientSession() as http:

        async def slow_run() -> int:
            async with http.post(
                f"{system.url}/v1/agent/run",
                headers=auth(system),
                json={
                    "message": "hi",
                    "sessionKey": session,
                    "options": {"model": "openai/gpt-slow"},
                },
            ) as r:
                return r.status

        task = asyncio.create_task(slow_run())
        try:
            await wait_for(
                lambda: db.fetchval(
                    """SELECT count(*) FROM runs r JOIN sessions s ON s.id = r.session_id
                       WHERE s.session_key = $1 AND r.status = 'running'""",
                    session,
                )
            )
            async with http.delete(
                f"{system.url}/v1/sessions/{session}", headers=auth(system)
            ) as r:
                assert r.status == 409
                error = (await r.json())["error"]
            assert error["code"] == "conflict"
            assert "abort" in error["message"]
            async with http.post(
                f"{system.url}/v1/sessions/{session}/abort", headers=auth(system)
            ) as r:
                assert r.status == 200
            assert await task == 409  # the run answers `aborted`
        finally:
            task.cancel()
        await wait_for(
            lambda: db.fetchval(
                """SELECT count(*) = 0 FROM runs r JOIN sessions s ON s.id = r.session_id
                   WHERE s.session_key = $1 AND r.status IN ('queued', 'running')""",
                session,
            )
        )
        async with http.delete(f"{system.url}/v1/sessions/{session}", headers=auth(system)) as r:
            assert r.status == 204


# --- routes of services this deployment does not run ------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "service"),
    [
        ("GET", "/v1/browser/status", None, "browser-worker"),
        (
            "POST",
            "/v1/browser/screenshot",
            {"selector": "body", "fullPage": True},
            "browser-worker",
        ),
        (
            "POST",
            "/v1/browser/navigate",
            {"url": "https://example.com", "profile": "default"},
            "browser-worker",
        ),
    ],
)
async def test_routes_of_missing_services_answer_503_naming_the_service(
    system: System, method: str, path: str, body: dict[str, Any] | None, service: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{system.url}{path}", headers=auth(system), json=body) as r,
    ):
        assert r.status == 503
        error = (await r.json())["error"]
    assert error["code"] == "service_unavailable"
    assert service in error["message"]
    assert error["details"]["service"] == service


# --- resuming a dropped stream ----------------------------------------------------------------

SLOW_TEXT = " ".join(f"word{i}" for i in range(24))


async def _cut_after(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, Any], k: int
) -> tuple[str, list[Frame]]:
    """Open the stream, read `k` frames carrying text, then drop the connection."""
    frames: list[Frame] = []
    async with http.post(url, headers=headers, json=body) as r:
        assert r.status == 200
        run_id = r.headers["x-clawbus-run-id"]
        async for frame in sse_frames(r):
            frames.append(frame)
            if sum(1 for f in frames if _text_of(f)) == k:
                break
        r.close()  # the client goes away mid-run
    return run_id, frames


def _text_of(frame: Frame) -> str:
    if frame.data == "[DONE]":
        return ""
    data = frame.json()
    if frame.event == "delta":
        return str(data["delta"])
    if data.get("choices"):
        return str(data["choices"][0]["delta"].get("content") or "")
    return ""


async def _resume(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    run_id: str,
    last_id: int,
) -> list[Frame]:
    resume = {**headers, "Last-Event-ID": str(last_id), "x-clawbus-run-id": run_id}
    async with http.post(url, headers=resume, json=body) as r:
        assert r.status == 200, await r.text()
        assert r.headers["x-clawbus-run-id"] == run_id
        return [f async for f in sse_frames(r)]


STREAMS = {
    "agent": (
        "/v1/agent/run/stream",
        {"message": "go", "options": {"model": "openai/gpt-slow"}},
    ),
    "chat": (
        "/v1/chat/completions",
        {
            "model": "openai/gpt-slow",
            "messages": [{"role": "user", "content": "go"}],
            "stream": True,
        },
    ),
}


@pytest.mark.parametrize("surface", sorted(STREAMS))
@pytest.mark.parametrize("when", ["while-running", "after-the-end"])
async def test_a_client_cut_off_mid_run_resumes_with_last_event_id(
    system: System, db: asyncpg.Connection, surface: str, when: str
) -> None:
    path, body = STREAMS[surface]
    if surface == "agent":
        body = {**body, "sessionKey": f"resume-{system.namespace}"}
    url = f"{system.url}{path}"
    system.fake.script("gpt-slow", Reply(text=SLOW_TEXT, chunk_delay_s=0.05))
    async with aiohttp.ClientSession() as http:
        run_id, first = await _cut_after(http, url, auth(system), body, k=3)
        last_id = first[-1].id
        assert last_id is not None
        if when == "after-the-end":
            await assistant_message(db, run_id)
        else:
            status = await db.fetchval("SELECT status FROM runs WHERE id = $1::uuid", run_id)
            assert status == "running"  # really mid-run
        rest = await _resume(http, url, auth(system), body, run_id, last_id)
    assert rest, "the resumed stream sent nothing"
    assert all(f.id is not None and f.id > last_id for f in rest), "a frame was repeated"
    text = "".join(_text_of(f) for f in first + rest)
    assert text == await assistant_message(db, run_id) == SLOW_TEXT
    if surface == "agent":
        assert rest[-1].event == "done" and rest[-1].json()["finishReason"] == "stop"
    else:
        assert rest[-1].data == "[DONE]"
        finishes = [f.json()["choices"][0].get("finish_reason") for f in rest[:-1]]
        assert finishes == [None] * (len(finishes) - 1) + ["stop"]
        assert not any(f.json()["choices"][0]["delta"].get("role") for f in rest[:-1])


async def test_resuming_needs_the_run_id_and_a_known_run(system: System) -> None:
    url = f"{system.url}/v1/agent/run/stream"
    body = {"message": "go"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=auth(system, **{"Last-Event-ID": "3"}), json=body) as r:
            assert r.status == 400
            assert "x-clawbus-run-id" in (await r.json())["error"]["message"]
        unknown = "00000000-0000-0000-0000-00000000abcd"
        async with http.post(
            f"{url}?runId={unknown}", headers=auth(system, **{"Last-Event-ID": "3"}), json=body
        ) as r:
            assert r.status == 404
        async with http.post(
            url,
            headers=auth(system, **{"Last-Event-ID": "x", "x-clawbus-run-id": unknown}),
            json=body,
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "Last-Event-ID"


async def test_routes_need_their_permission(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    """A credential without `sessions` / `channels` / `browser` gets 403 naming it (before
    any 503 for a missing service); with `chat` it still runs the agent."""
    token = f"chat-only-{namespace}-token"
    tokens = json.dumps([{"name": "chatter", "token": token, "permissions": ["chat"]}])
    overrides = {"CLAWBUS_GATEWAY_API_TOKENS": tokens}
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        for method, path, permission in [
            ("GET", "/v1/sessions", "sessions"),
            ("GET", "/v1/sessions/anything", "sessions"),
            ("DELETE", "/v1/sessions/anything", "sessions"),
            ("GET", "/v1/channels", "channels"),
            ("POST", "/v1/browser/navigate", "browser"),
        ]:
            async with http.request(method, f"{system.url}{path}") as r:
                assert r.status == 403, path
                assert permission in (await r.json())["error"]["message"]
        async with http.post(
            f"{system.url}/v1/agent/run", json={"message": "hi", "sessionKey": namespace}
        ) as r:
            assert r.status == 200
