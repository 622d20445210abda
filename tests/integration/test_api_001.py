"""OpenClaw's HTTP API (001) end to end: its examples replayed as written (paths, bodies,
headers, response shapes), the tool service over the bus with its HTTP policy, the routes of
services not built yet, and every error under /api in 001's envelope."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_core.store import agents as agents_store
from clawbus_core.store import workspace
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_fakes.models import FakeModelServer

from tests.integration.test_http_000 import assistant_message, is_utc_timestamp
from tests.system import System, start_system

ERROR_CODES = {
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "INVALID_REQUEST",
    "RATE_LIMITED",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",  # clawbus addition: a service this deployment does not run
    "CONFLICT",  # clawbus addition: deleting a session while it runs
    "METHOD_NOT_ALLOWED",  # clawbus addition: a route that exists, another method
}


def auth(system: System) -> dict[str, str]:
    # 001: curl -H "Authorization: Bearer YOUR_GATEWAY_TOKEN" http://localhost:3000/api/endpoint
    return {"Authorization": f"Bearer {system.token}"}


def assert_001_error(body: dict[str, Any], code: str) -> dict[str, Any]:
    """`body` is 001's error envelope with `code`; returns its `error` object."""
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert code in ERROR_CODES
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


@pytest.fixture
async def http(system: System) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=auth(system)) as session:
        yield session


async def main_agent_id(pool: asyncpg.Pool) -> uuid.UUID:
    profile = await agents_store.get_agent_by_key(pool, DEFAULT_TENANT, "main")
    assert profile is not None
    return profile.id


# --- 001's examples as written ----------------------------------------------------------------


async def test_health_example(system: System) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{system.url}/health") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0


async def test_status_example(system: System, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{system.url}/api/status") as r:
        assert r.status == 200
        body = await r.json()
    assert set(body) == {"gateway", "channels", "sessions", "memory"}
    assert body["gateway"] == "running"
    assert body["channels"] == {}  # this deployment (namespace) has no channels
    assert isinstance(body["sessions"], int) and body["sessions"] >= 0
    memory = body["memory"]
    assert set(memory) == {"used", "total"}
    assert 0 < memory["used"] < memory["total"]


async def test_send_message_example_and_the_session_it_makes(
    system: System, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    async with http.post(
        f"{system.url}/api/messages",
        json={"channel": "telegram", "userId": "user-123", "message": "Hello from API!"},
    ) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        run_id = r.headers["x-clawbus-run-id"]
    session = "agent:main:telegram:direct:user-123"
    assert body == {
        "id": run_id,
        "sessionId": session,
        "channel": "telegram",
        "userId": "user-123",
        "reply": "You said: Hello from API!",
        "usage": body["usage"],
    }
    assert body["usage"]["inputTokens"] > 0 and body["usage"]["outputTokens"] > 0
    assert await assistant_message(db, run_id) == body["reply"]

    async with http.get(f"{system.url}/api/sessions", params={"limit": "500"}) as r:
        assert r.status == 200
        listed = await r.json()
    assert set(listed) == {"sessions"}
    ours = next(s for s in listed["sessions"] if s["id"] == session)
    # 001's fields, then clawbus's two additions.
    assert set(ours) == {
        "id",
        "channel",
        "userId",
        "messageCount",
        "lastActivity",
        "agentId",
        "createdAt",
    }
    assert ours["channel"] == "telegram"
    assert ours["userId"] == "user-123"
    assert ours["messageCount"] >= 2
    assert ours["agentId"] == "main"
    assert is_utc_timestamp(ours["lastActivity"])

    async with http.get(f"{system.url}/api/sessions/{session}", params={"limit": "2"}) as r:
        assert r.status == 200
        detail = await r.json()
    assert {k: v for k, v in detail.items() if k != "messages"} == {
        **ours,
        "messageCount": detail["messageCount"],
        "lastActivity": detail["lastActivity"],
    }
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "Hello from API!"),
        ("assistant", "You said: Hello from API!"),
    ]
    assert all(is_utc_timestamp(m["timestamp"]) for m in detail["messages"])

    async with http.delete(f"{system.url}/api/sessions/{session}") as r:
        assert r.status == 204
    async with http.get(f"{system.url}/api/sessions/{session}") as r:
        assert r.status == 404
        assert_001_error(await r.json(), "NOT_FOUND")
    async with http.delete(f"{system.url}/api/sessions/{session}") as r:
        assert r.status == 404


async def test_list_tools_example(system: System, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{system.url}/api/tools") as r:
        assert r.status == 200
        body = await r.json()
    assert set(body) == {"tools"}
    tools = {t["name"]: t for t in body["tools"]}
    read = tools["read"]
    assert set(read) == {"name", "description", "enabled", "invokable", "parameters"}
    assert read["enabled"] is True and read["invokable"] is True
    assert read["description"]
    assert read["parameters"]["type"] == "object"
    # Read-only tools may be invoked over HTTP; writing and fetching may not, by default.
    assert {n for n, t in tools.items() if t["invokable"]} == {
        "read",
        "list",
        "memory_search",
        "memory_get",
    }
    assert {"write", "edit", "web_fetch"} <= set(tools)
    # Every tool but the dangerous ones (offered only to agents that allow them by name).
    assert {n for n, t in tools.items() if not t["enabled"]} <= {"browser_evaluate"}


async def test_invoke_tool_example(
    system: System, http: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    # As written: {"params": {"path": "/path/to/file"}}. No such file in the agent's
    # workspace: a clear 4xx in 001's envelope.
    async with http.post(
        f"{system.url}/api/tools/read/invoke", json={"params": {"path": "/path/to/file"}}
    ) as r:
        assert r.status in (400, 404), await r.text()
        error = assert_001_error(
            await r.json(), "NOT_FOUND" if r.status == 404 else "INVALID_REQUEST"
        )
        assert "path/to/file" in error["message"]

    path = f"notes/api-001-{system.namespace}.md"
    agent_id = await main_agent_id(pool)
    await workspace.write_file(pool, DEFAULT_TENANT, agent_id, path, "line one\nline two\n")
    try:
        async with http.post(
            f"{system.url}/api/tools/read/invoke", json={"params": {"path": path}}
        ) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert set(body) == {"tool", "ok", "result"}
        assert body["tool"] == "read" and body["ok"] is True
        assert "line one" in body["result"] and "line two" in body["result"]
    finally:
        await workspace.delete_file(pool, DEFAULT_TENANT, agent_id, path)


@pytest.mark.parametrize(
    ("tool", "params"),
    [
        ("write", {"path": "notes/pwned.md", "content": "x"}),
        ("edit", {"path": "AGENTS.md", "old": "a", "new": "b"}),
        ("web_fetch", {"url": "http://127.0.0.1:1/"}),
    ],
)
async def test_dangerous_tools_are_denied_over_http(
    system: System,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    tool: str,
    params: dict[str, Any],
) -> None:
    agent_id = await main_agent_id(pool)
    before = {f.path for f in await workspace.list_files(pool, DEFAULT_TENANT, agent_id)}
    async with http.post(f"{system.url}/api/tools/{tool}/invoke", json={"params": params}) as r:
        assert r.status == 403, await r.text()
        error = assert_001_error(await r.json(), "FORBIDDEN")
    assert "CLAWBUS_RUNNER_TOOLS_HTTP_ALLOW" in error["message"]
    assert error["details"] == {"tool": tool}
    after = {f.path for f in await workspace.list_files(pool, DEFAULT_TENANT, agent_id)}
    assert after == before


async def test_an_operator_can_allow_a_dangerous_tool_by_name(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    overrides = {"CLAWBUS_RUNNER_TOOLS_HTTP_ALLOW": '["write"]'}
    path = f"notes/allowed-{namespace}.md"
    agent_id = await main_agent_id(pool)
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        aiohttp.ClientSession(headers=auth(system)) as http,
    ):
        try:
            async with http.post(
                f"{system.url}/api/tools/write/invoke",
                json={"params": {"path": path, "content": "written over HTTP"}},
            ) as r:
                assert r.status == 200, await r.text()
            stored = await workspace.read_file(pool, DEFAULT_TENANT, agent_id, path)
            assert stored.content == "written over HTTP"
            async with http.get(f"{system.url}/api/tools") as r:
                tools = {t["name"]: t for t in (await r.json())["tools"]}
            assert tools["write"]["invokable"] is True
            assert tools["edit"]["invokable"] is False
        finally:
            await workspace.delete_file(pool, DEFAULT_TENANT, agent_id, path)


async def test_an_agents_tool_policy_holds_over_http(
    system: System, http: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    key = f"nofiles-{uuid.uuid4().hex[:12]}"
    await agents_store.create_agent(
        pool, DEFAULT_TENANT, key, "No files", tool_policy={"deny": ["read"]}
    )
    try:
        async with http.get(f"{system.url}/api/tools", params={"agentId": key}) as r:
            assert r.status == 200
            tools = {t["name"]: t for t in (await r.json())["tools"]}
        assert tools["read"]["enabled"] is False and tools["read"]["invokable"] is False
        assert tools["list"]["enabled"] is True
        async with http.post(
            f"{system.url}/api/tools/read/invoke",
            json={"params": {"path": "AGENTS.md"}, "agentId": key},
        ) as r:
            assert r.status == 403
            assert_001_error(await r.json(), "FORBIDDEN")
    finally:
        await pool.execute(
            "DELETE FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, key
        )


async def test_tool_errors(system: System, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{system.url}/api/tools/no_such_tool/invoke", json={}) as r:
        assert r.status == 404
        assert_001_error(await r.json(), "NOT_FOUND")
    async with http.post(
        f"{system.url}/api/tools/read/invoke", json={"params": {}, "agentId": "nobody-here"}
    ) as r:
        assert r.status == 404
        assert "nobody-here" in assert_001_error(await r.json(), "NOT_FOUND")["message"]
    for bad in ({"params": "a string"}, {"params": {}, "extra": 1}, [1, 2]):
        async with http.post(f"{system.url}/api/tools/read/invoke", json=bad) as r:
            assert r.status == 400, bad
            assert_001_error(await r.json(), "INVALID_REQUEST")
    async with http.post(
        f"{system.url}/api/tools/read/invoke",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        assert_001_error(await r.json(), "INVALID_REQUEST")


async def test_tools_without_a_runner_are_503_naming_it(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, runners=0) as system,
        aiohttp.ClientSession(headers=auth(system)) as http,
    ):
        for method, path in (("GET", "/api/tools"), ("POST", "/api/tools/read/invoke")):
            async with http.request(method, f"{system.url}{path}", json={}) as r:
                assert r.status == 503
                error = assert_001_error(await r.json(), "SERVICE_UNAVAILABLE")
                assert error["details"]["service"] == "agent-runner"


async def test_cron_routes_answer_in_001s_envelope(
    system: System, http: aiohttp.ClientSession
) -> None:
    # The scheduler's routes (tests/integration/test_scheduler.py has the rest).
    async with http.get(f"{system.url}/api/cron") as r:
        assert r.status == 200
        assert await r.json() == {"ok": True, "jobs": []}
    async with http.post(f"{system.url}/api/cron/daily-report/run") as r:
        assert r.status == 404
        error = assert_001_error(await r.json(), "NOT_FOUND")
    assert "daily-report" in error["message"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/status"),
        ("GET", "/api/sessions"),
        ("POST", "/api/messages"),
        ("GET", "/api/tools"),
        ("POST", "/api/tools/read/invoke"),
    ],
)
async def test_missing_or_wrong_token_is_unauthorized(
    system: System, method: str, path: str
) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            async with http.request(method, f"{system.url}{path}", headers=headers, json={}) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert_001_error(await r.json(), "UNAUTHORIZED")


@pytest.mark.parametrize(
    "body",
    [
        {"userId": "u", "message": "MARK"},
        {"channel": "telegram", "message": "MARK"},
        {"channel": "telegram", "userId": "u", "message": ""},
        {"channel": "Tele Gram", "userId": "u", "message": "MARK"},
        {"channel": "telegram", "userId": "u u", "message": "MARK"},
        {"channel": "telegram", "userId": "u", "message": "MARK", "unknown": 1},
        {"channel": "telegram", "userId": "u", "message": "MARK", "agentId": "nobody-here"},
    ],
)
async def test_bad_messages_are_4xx_and_store_nothing(
    system: System, http: aiohttp.ClientSession, db: asyncpg.Connection, body: dict[str, Any]
) -> None:
    mark = f"bad message {uuid.uuid4()}"
    body = {k: (mark if v == "MARK" else v) for k, v in body.items()}
    async with http.post(f"{system.url}/api/messages", json=body) as r:
        expected = (404, "NOT_FOUND") if "agentId" in body else (400, "INVALID_REQUEST")
        assert r.status == expected[0], await r.text()
        assert_001_error(await r.json(), expected[1])
    assert await db.fetchval("SELECT count(*) FROM messages WHERE content = $1", mark) == 0


async def test_unknown_paths_methods_and_paging(
    system: System, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{system.url}/api/nothing-here") as r:
        assert r.status == 404
        assert_001_error(await r.json(), "NOT_FOUND")
    async with http.put(f"{system.url}/api/status") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "GET, HEAD"
        error = assert_001_error(await r.json(), "METHOD_NOT_ALLOWED")
        assert error["details"]["allowed"] == ["GET", "HEAD"]
    async with http.get(f"{system.url}/api/sessions", params={"limit": "0"}) as r:
        assert r.status == 400
        assert assert_001_error(await r.json(), "INVALID_REQUEST")["details"]["param"] == "limit"


async def test_messages_over_the_rate_limit_are_rate_limited(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    overrides = {"CLAWBUS_GATEWAY_RATE_LIMITS": '{"chat": 1}'}
    body = {"channel": "api", "userId": f"limited-{namespace}", "message": "one"}
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        aiohttp.ClientSession(headers=auth(system)) as http,
    ):
        async with http.post(f"{system.url}/api/messages", json=body) as r:
            assert r.status == 200
        async with http.post(f"{system.url}/api/messages", json=body) as r:
            assert r.status == 429
            error = assert_001_error(await r.json(), "RATE_LIMITED")
            assert error["details"]["retryAfterMs"] > 0
            assert int(r.headers["Retry-After"]) >= 1
