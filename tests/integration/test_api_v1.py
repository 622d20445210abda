"""OpenClaw's REST API v1 (002) end to end: 002's examples replayed as written (paths, bodies,
headers, response shapes), chat plain and streamed, sessions, status, permissions of config
API tokens, and every error under /api/v1 in 002's envelope."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_fakes.models import FakeModelServer, Reply

from tests.integration.test_http_000 import (
    Frame,
    assistant_message,
    is_utc_timestamp,
    sse_frames,
)
from tests.system import System, start_system, wait_for

API = "/api/v1"


def auth(system: System, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.token}", **extra}


def assert_v1_error(body: dict[str, Any], code: str) -> dict[str, Any]:
    """`body` is 002's error envelope with `code`; returns its `error` object."""
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "retryAfter", "param"}
    return error


async def chat(
    http: aiohttp.ClientSession, system: System, session: str, message: str
) -> dict[str, Any]:
    async with http.post(
        f"{system.url}{API}/chat",
        headers=auth(system),
        json={"message": message, "sessionKey": session},
    ) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


# --- 002's examples as written ----------------------------------------------------------------


async def test_chat_example(system: System, db: asyncpg.Connection) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/api/v1/chat",
            headers={"Content-Type": "application/json", **auth(system)},
            json={
                "message": "What's the weather like today?",
                "sessionKey": "optional-session-id",
                "stream": False,
            },
        ) as r,
    ):
        assert r.status == 200
        body = await r.json()
        run_id = r.headers["x-clawbus-run-id"]
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(r.headers)
    assert set(body) == {"id", "content", "sessionKey", "model", "usage", "createdAt"}
    assert body["id"] == run_id
    assert body["content"] == "You said: What's the weather like today?"
    assert body["sessionKey"] == "optional-session-id"
    assert body["model"] == "clawbus/echo"
    assert set(body["usage"]) == {"inputTokens", "outputTokens"}
    assert body["usage"]["inputTokens"] > 0 and body["usage"]["outputTokens"] > 0
    assert is_utc_timestamp(body["createdAt"])
    assert await assistant_message(db, run_id) == body["content"]


async def test_node_sdk_example_message_only(system: System) -> None:
    # `client.chat({message: 'Hello, OpenClaw!'})`: no session key, the agent's main session.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/api/v1/chat", headers=auth(system), json={"message": "Hello, OpenClaw!"}
        ) as r,
    ):
        assert r.status == 200
        body = await r.json()
    assert body["content"] == "You said: Hello, OpenClaw!"
    assert body["sessionKey"] == "agent:main:main"


def _check_stream(frames: list[Frame], run_id: str) -> str:
    """002's frame sequence (start, delta..., done); returns the streamed text."""
    assert [f.event for f in frames] == ["start"] + ["delta"] * (len(frames) - 2) + ["done"]
    assert frames[0].json() == {"id": run_id}
    assert all(set(f.json()) == {"content"} for f in frames[1:-1])
    done = frames[-1].json()
    assert set(done) == {"usage"}
    assert set(done["usage"]) == {"inputTokens", "outputTokens"}
    assert done["usage"]["outputTokens"] > 0
    ids = [f.id for f in frames]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids)  # type: ignore[type-var]
    return "".join(f.json()["content"] for f in frames[1:-1])


async def test_chat_stream_example(system: System, db: asyncpg.Connection) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/api/v1/chat/stream",
            headers={"Content-Type": "application/json", **auth(system)},
            json={"message": "Write a short poem", "sessionKey": "session_abc123"},
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert "X-RateLimit-Remaining" in r.headers
        run_id = r.headers["x-clawbus-run-id"]
        frames = [f async for f in sse_frames(r)]
    text = _check_stream(frames, run_id)
    assert text == "You said: Write a short poem"
    assert await assistant_message(db, run_id) == text


async def test_chat_with_stream_true_answers_with_the_stream(
    system: System, db: asyncpg.Connection
) -> None:
    system.fake.script("gpt-poet", Reply(text="The morning sun rises"))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/api/v1/chat",
            headers=auth(system),
            json={
                "message": "Write a short poem",
                "sessionKey": f"poem-{system.namespace}",
                "model": "openai/gpt-poet",
                "stream": True,
            },
        ) as r,
    ):
        assert r.status == 200
        run_id = r.headers["x-clawbus-run-id"]
        frames = [f async for f in sse_frames(r)]
    text = _check_stream(frames, run_id)
    assert text == "The morning sun rises" == await assistant_message(db, run_id)


async def test_a_cut_off_stream_resumes_with_last_event_id(
    system: System, db: asyncpg.Connection
) -> None:
    words = " ".join(f"word{i}" for i in range(16))
    system.fake.script("gpt-slow", Reply(text=words, chunk_delay_s=0.05))
    url = f"{system.url}/api/v1/chat/stream"
    body = {"message": "go", "sessionKey": f"resume-{system.namespace}", "model": "openai/gpt-slow"}
    first: list[Frame] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=auth(system), json=body) as r:
            run_id = r.headers["x-clawbus-run-id"]
            async for frame in sse_frames(r):
                first.append(frame)
                if len(first) == 4:  # start and three deltas
                    break
            r.close()
        last_id = first[-1].id
        assert last_id is not None
        resume = auth(system, **{"Last-Event-ID": str(last_id), "x-clawbus-run-id": run_id})
        async with http.post(url, headers=resume, json=body) as r:
            assert r.status == 200
            rest = [f async for f in sse_frames(r)]
    assert all(f.id is not None and f.id > last_id for f in rest)
    assert "start" not in [f.event for f in rest]
    assert _check_stream(first + rest, run_id) == await assistant_message(db, run_id) == words


async def test_status_example(system: System) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{system.url}/api/v1/status", headers=auth(system)) as r,
    ):
        assert r.status == 200
        body = await r.json()
    assert set(body) == {"status", "version", "uptime", "activeSessions", "model"}
    assert body["status"] == "healthy"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0
    assert isinstance(body["activeSessions"], int) and body["activeSessions"] >= 0
    assert body["model"] == {"provider": "clawbus", "model": "echo"}  # the default model


# --- sessions ---------------------------------------------------------------------------------


async def test_sessions_list_history_delete(system: System) -> None:
    session = f"v1-{system.namespace}"
    async with aiohttp.ClientSession() as http:
        await chat(http, system, session, "Hello!")
        await chat(http, system, session, "two")
        async with http.get(f"{system.url}/api/v1/sessions", headers=auth(system)) as r:
            assert r.status == 200
            listed = await r.json()
        assert set(listed) == {"sessions"}
        mine = [s for s in listed["sessions"] if s["key"] == session]
        assert len(mine) == 1
        summary = mine[0]
        assert set(summary) == {"key", "channel", "createdAt", "lastActivity", "messageCount"}
        assert summary["channel"] == "api"
        assert summary["messageCount"] == 4
        assert is_utc_timestamp(summary["createdAt"]) and is_utc_timestamp(summary["lastActivity"])
        assert summary["lastActivity"] >= summary["createdAt"]

        history = f"{system.url}/api/v1/sessions/{session}/history"
        async with http.get(f"{history}?limit=50", headers=auth(system)) as r:
            assert r.status == 200
            body = await r.json()
        assert set(body) == {"messages"}
        assert all(set(m) == {"role", "content", "timestamp"} for m in body["messages"])
        assert all(is_utc_timestamp(m["timestamp"]) for m in body["messages"])
        assert [(m["role"], m["content"]) for m in body["messages"]] == [
            ("user", "Hello!"),
            ("assistant", "You said: Hello!"),
            ("user", "two"),
            ("assistant", "You said: two"),
        ]
        async with http.get(f"{history}?limit=2", headers=auth(system)) as r:
            last = [m["content"] for m in (await r.json())["messages"]]
        assert last == ["two", "You said: two"]  # the latest, oldest first
        async with http.get(f"{history}?limit=0", headers=auth(system)) as r:
            assert r.status == 400
            assert assert_v1_error(await r.json(), "INVALID_REQUEST")["param"] == "limit"

        async with http.delete(
            f"{system.url}/api/v1/sessions/{session}", headers=auth(system)
        ) as r:
            assert r.status == 204
        async with http.get(history, headers=auth(system)) as r:
            assert r.status == 404
            assert_v1_error(await r.json(), "NOT_FOUND")
        async with http.delete(
            f"{system.url}/api/v1/sessions/{session}", headers=auth(system)
        ) as r:
            assert r.status == 404
            assert_v1_error(await r.json(), "NOT_FOUND")
        async with http.get(f"{system.url}/api/v1/sessions", headers=auth(system)) as r:
            assert session not in [s["key"] for s in (await r.json())["sessions"]]


async def test_deleting_a_session_while_it_runs_is_a_conflict(
    system: System, db: asyncpg.Connection
) -> None:
    session = f"busy-{system.namespace}"
    system.fake.script("gpt-slow", Reply(text="slow", delay_s=30))
    async with aiohttp.ClientSession() as http:

        async def slow_chat() -> tuple[int, dict[str, Any]]:
            async with http.post(
                f"{system.url}/api/v1/chat",
                headers=auth(system),
                json={"message": "hi", "sessionKey": session, "model": "openai/gpt-slow"},
            ) as r:
                return r.status, await r.json()

        task = asyncio.create_task(slow_chat())
        try:
            await wait_for(
                lambda: db.fetchval(
                    """SELECT count(*) FROM runs r JOIN sessions s ON s.id = r.session_id
                       WHERE s.session_key = $1 AND r.status = 'running'""",
                    session,
                )
            )
            url = f"{system.url}/api/v1/sessions/{session}"
            async with http.delete(url, headers=auth(system)) as r:
                assert r.status == 409
                assert "abort" in assert_v1_error(await r.json(), "CONFLICT")["message"]
            async with http.post(
                f"{system.url}/v1/sessions/{session}/abort", headers=auth(system)
            ) as r:
                assert r.status == 200
            status, body = await task
            assert status == 409
            assert_v1_error(body, "ABORTED")
        finally:
            task.cancel()
        await wait_for(
            lambda: db.fetchval(
                """SELECT count(*) = 0 FROM runs r JOIN sessions s ON s.id = r.session_id
                   WHERE s.session_key = $1 AND r.status IN ('queued', 'running')""",
                session,
            )
        )
        async with http.delete(
            f"{system.url}/api/v1/sessions/{session}", headers=auth(system)
        ) as r:
            assert r.status == 204


# --- errors in 002's envelope -----------------------------------------------------------------

ROUTES = [
    ("POST", "/api/v1/chat", {"message": "hi"}),
    ("POST", "/api/v1/chat/stream", {"message": "hi"}),
    ("GET", "/api/v1/sessions", None),
    ("GET", "/api/v1/sessions/session_abc123/history?limit=50", None),
    ("DELETE", "/api/v1/sessions/session_abc123", None),
    ("GET", "/api/v1/status", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("credentials", ["none", "wrong"])
async def test_missing_or_wrong_credentials_are_401_in_002s_envelope(
    system: System, method: str, path: str, body: dict[str, Any] | None, credentials: str
) -> None:
    headers = {} if credentials == "none" else {"Authorization": "Bearer not-the-token"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{system.url}{path}", headers=headers, json=body) as r,
    ):
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_v1_error(await r.json(), "UNAUTHORIZED")


async def test_other_surfaces_keep_their_own_envelope(system: System) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{system.url}/v1/sessions") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({}, 400, "INVALID_REQUEST", "message"),
        ({"message": ""}, 400, "INVALID_REQUEST", "message"),
        ({"message": "   "}, 400, "INVALID_REQUEST", "message"),
        ({"message": 5}, 400, "INVALID_REQUEST", "message"),
        ({"message": "hi", "stream": "yes"}, 400, "INVALID_REQUEST", "stream"),
        ({"message": "hi", "sessionKey": "k" * 257}, 400, "INVALID_REQUEST", "sessionKey"),
        ({"message": "hi", "model": "nope/x"}, 404, "MODEL_NOT_FOUND", "model"),
        ({"message": "hi", "agentId": "ghost"}, 404, "NOT_FOUND", None),
    ],
)
async def test_bad_chat_requests(
    system: System, path: str, body: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{system.url}{path}", headers=auth(system), json=body) as r,
    ):
        assert r.status == status
        error = assert_v1_error(await r.json(), code)
    if param is not None:
        assert error["param"] == param


async def test_bad_json_and_unknown_paths(system: System) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{system.url}/api/v1/chat", headers=auth(system), data=b"{not json"
        ) as r:
            assert r.status == 400
            assert_v1_error(await r.json(), "INVALID_REQUEST")
        async with http.get(f"{system.url}/api/v1/nothing-here", headers=auth(system)) as r:
            assert r.status == 404
            assert_v1_error(await r.json(), "NOT_FOUND")


@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
async def test_a_failing_model_is_model_error(system: System, path: str) -> None:
    system.fake.set_default("gpt-broken", Reply(status=500))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}{path}",
            headers=auth(system),
            json={
                "message": "hi",
                "sessionKey": f"broken-{system.namespace}",
                "model": "openai/gpt-broken",
            },
        ) as r,
    ):
        assert r.status == 502
        assert_v1_error(await r.json(), "MODEL_ERROR")


# --- API tokens and rate limits ---------------------------------------------------------------


async def test_config_api_tokens_get_their_permissions_only(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    reader, chatter = f"reader-{namespace}-token", f"chatter-{namespace}-token"
    tokens = [
        {"name": "reader", "token": reader, "permissions": ["sessions"]},
        {"name": "my-app", "token": chatter, "permissions": ["chat"]},
    ]
    overrides = {"CLAWBUS_GATEWAY_API_TOKENS": json.dumps(tokens)}
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        aiohttp.ClientSession() as http,
    ):

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        for path in ("/api/v1/chat", "/api/v1/chat/stream"):
            async with http.post(
                f"{system.url}{path}", headers=bearer(reader), json={"message": "hi"}
            ) as r:
                assert r.status == 403, path
                assert "chat" in assert_v1_error(await r.json(), "FORBIDDEN")["message"]
        async with http.get(f"{system.url}/api/v1/sessions", headers=bearer(reader)) as r:
            assert r.status == 200
        async with http.get(f"{system.url}/api/v1/status", headers=bearer(reader)) as r:
            assert r.status == 200

        async with http.get(f"{system.url}/api/v1/sessions", headers=bearer(chatter)) as r:
            assert r.status == 403
            assert "sessions" in assert_v1_error(await r.json(), "FORBIDDEN")["message"]
        async with http.post(
            f"{system.url}/api/v1/chat",
            headers=bearer(chatter),
            json={"message": "hi", "sessionKey": f"app-{namespace}"},
        ) as r:
            assert r.status == 200
            assert (await r.json())["content"] == "You said: hi"


async def test_rate_limited_is_429_with_retry_after(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    overrides = {"CLAWBUS_GATEWAY_RATE_LIMITS": '{"sessions": 1}'}
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        aiohttp.ClientSession(headers=auth(system)) as http,
    ):
        async with http.get(f"{system.url}/api/v1/sessions") as r:
            assert r.status == 200
            assert r.headers["X-RateLimit-Limit"] == "1"
            assert r.headers["X-RateLimit-Remaining"] == "0"
        async with http.get(f"{system.url}/api/v1/sessions") as r:
            assert r.status == 429
            error = assert_v1_error(await r.json(), "RATE_LIMITED")
            assert isinstance(error["retryAfter"], int) and error["retryAfter"] >= 1
            assert r.headers["Retry-After"] == str(error["retryAfter"])
            assert r.headers["X-RateLimit-Limit"] == "1"
            assert int(r.headers["X-RateLimit-Reset"]) > 0
