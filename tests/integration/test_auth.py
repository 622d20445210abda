"""Authentication end to end: every credential kind against the real routes, the API-key CLI,
tenant isolation and the failed-attempt limiter shared through Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_core.store import api_keys
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_fakes.models import FakeModelServer
from clawbus_gateway.principal import ALL_PERMISSIONS

from tests.system import System, start_system, wait_for

CHAT = {"model": "clawbus/echo", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Secrets:
    password: str
    chat_token: str  # config API token with "chat"
    sessions_token: str  # config API token with "sessions" only


@pytest.fixture
def configured() -> Secrets:
    return Secrets(
        password=f"pw-{secrets.token_hex(8)}",
        chat_token=f"tok-chat-{secrets.token_hex(12)}",
        sessions_token=f"tok-sessions-{secrets.token_hex(12)}",
    )


def auth_env(s: Secrets, failures_per_minute: int = 1000) -> dict[str, str]:
    tokens = [
        {"name": "chat-app", "token": s.chat_token, "permissions": ["chat"]},
        {"name": "reader", "token": s.sessions_token, "permissions": ["sessions"]},
    ]
    return {
        "CLAWBUS_GATEWAY_PASSWORD": s.password,
        "CLAWBUS_GATEWAY_API_TOKENS": json.dumps(tokens),
        "CLAWBUS_GATEWAY_AUTH_FAILURES_PER_MINUTE": str(failures_per_minute),
    }


@pytest.fixture
async def auth_system(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    configured: Secrets,
) -> AsyncIterator[System]:
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=auth_env(configured)
    ) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2) as p:
        yield p


@pytest.fixture
async def other_tenant(db: asyncpg.Connection) -> AsyncIterator[uuid.UUID]:
    tenant = uuid.uuid4()
    await db.execute(
        "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, 'Other')", tenant, f"t-{tenant.hex}"
    )
    try:
        yield tenant
    finally:
        await db.execute("DELETE FROM tenants WHERE id = $1", tenant)


async def new_key(pool: asyncpg.Pool, *scopes: str, tenant: uuid.UUID = DEFAULT_TENANT) -> str:
    _, plaintext = await api_keys.create_key(
        pool, tenant, "test key", scopes, known_scopes=ALL_PERMISSIONS
    )
    return plaintext


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, Any, Mapping[str, str]]:
    async with http.request(method, url, headers=headers, json=body) as r:
        return r.status, await r.json(content_type=None), r.headers


@pytest.fixture
async def finished_run(auth_system: System, http: aiohttp.ClientSession) -> tuple[str, str]:
    """(run id, session key) of a completed run of the default tenant."""
    status, _, headers = await call(
        http,
        "POST",
        f"{auth_system.url}/v1/chat/completions",
        {**bearer(auth_system.token), "x-openclaw-session-key": f"auth-{auth_system.namespace}"},
        CHAT,
    )
    assert status == 200
    return headers["x-clawbus-run-id"], headers["x-openclaw-session-key"]


def routes(system: System, run: tuple[str, str]) -> list[tuple[str, str, Any]]:
    run_id, session_key = run
    return [
        ("GET", f"{system.url}/v1/models", None),
        ("POST", f"{system.url}/v1/chat/completions", CHAT),
        ("POST", f"{system.url}/v1/runs/{run_id}/abort", None),
        ("POST", f"{system.url}/v1/sessions/{session_key}/abort", None),
    ]


async def test_every_good_credential_reaches_every_route(
    auth_system: System,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    configured: Secrets,
    finished_run: tuple[str, str],
) -> None:
    credentials = {
        "gateway token": bearer(auth_system.token),
        "config API token": bearer(configured.chat_token),
        "Basic password": basic(configured.password),
        "Basic password, empty user": basic(configured.password, user=""),
        "X-OpenClaw-Password": {"X-OpenClaw-Password": configured.password},
        "API key": bearer(await new_key(pool, "chat")),
        "admin API key": bearer(await new_key(pool, "admin")),
    }
    for name, headers in credentials.items():
        for method, url, body in routes(auth_system, finished_run):
            status, answer, _ = await call(http, method, url, headers, body)
            assert status == 200, (name, url, answer)


async def test_bad_credentials_never_reach_a_route(
    auth_system: System,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    configured: Secrets,
    finished_run: tuple[str, str],
) -> None:
    revoked = await new_key(pool, "chat")
    revoked_row = await api_keys.verify(pool, revoked)
    assert revoked_row is not None
    await api_keys.revoke_key(pool, revoked_row.id)
    unauthorized = {
        "nothing": {},
        "wrong token": bearer("not-the-token-" + secrets.token_hex(8)),
        "gateway token with a suffix": bearer(auth_system.token + "x"),
        "password as a bearer": bearer(configured.password),
        "wrong Basic password": basic("wrong-" + configured.password),
        "malformed Basic": {"Authorization": "Basic %%%"},
        "wrong X-OpenClaw-Password": {"X-OpenClaw-Password": "wrong"},
        "unknown scheme": {"Authorization": f"Token {auth_system.token}"},
        "revoked API key": bearer(revoked),
        "unknown API key": bearer(f"goclaw_{secrets.token_hex(16)}"),
    }
    for name, headers in unauthorized.items():
        for method, url, body in routes(auth_system, finished_run):
            status, answer, response_headers = await call(http, method, url, headers, body)
            assert status == 401, (name, url, answer)
            assert answer["error"]["code"] == "unauthorized"
            assert answer["error"]["type"] == "authentication_error"
            assert "Bearer" in response_headers["WWW-Authenticate"]
            for secret in (auth_system.token, configured.password, revoked):
                assert secret not in answer["error"]["message"]

    lacking_chat = {
        "config token with sessions only": bearer(configured.sessions_token),
        "API key with sessions only": bearer(await new_key(pool, "sessions")),
        "API key with no scopes": bearer(await new_key(pool)),
    }
    for name, headers in lacking_chat.items():
        for method, url, body in routes(auth_system, finished_run):
            status, answer, _ = await call(http, method, url, headers, body)
            if url.endswith("/v1/models"):  # authenticated is enough
                assert status == 200, (name, answer)
                continue
            assert status == 403, (name, url, answer)
            assert answer["error"]["code"] == "forbidden"
            assert answer["error"]["details"]["permission"] == "chat"


async def test_public_paths_need_no_credential(
    auth_system: System, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{auth_system.url}/health") as r:
        assert r.status == 200


async def test_query_credentials_only_on_websocket_upgrades(
    auth_system: System, http: aiohttp.ClientSession, configured: Secrets
) -> None:
    models = f"{auth_system.url}/v1/models"
    for query in (f"token={auth_system.token}", f"password={configured.password}"):
        status, answer, _ = await call(http, "GET", f"{models}?{query}")
        assert status == 401, answer
        assert "WebSocket" in answer["error"]["message"]
        # Even next to a good header: the secret already travelled in a URL.
        status, answer, _ = await call(http, "GET", f"{models}?{query}", bearer(auth_system.token))
        assert status == 401, answer

    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    for query in (f"token={auth_system.token}", f"password={configured.password}"):
        status, answer, _ = await call(http, "GET", f"{models}?{query}", upgrade)
        assert status == 200, answer
    status, _, _ = await call(http, "GET", f"{models}?token=wrong", upgrade)
    assert status == 401

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{auth_system.url}/ws?token=wrong")
    assert refused.value.status == 401


async def test_api_key_stored_as_hash_and_last_use_stamped(
    auth_system: System, http: aiohttp.ClientSession, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    key, plaintext = await api_keys.create_key(
        pool, DEFAULT_TENANT, "hash check", ["chat", "sessions"], known_scopes=ALL_PERMISSIONS
    )
    assert re.fullmatch(r"goclaw_[0-9a-f]{32}", plaintext)
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", key.id)
    assert row is not None
    assert bytes(row["key_sha256"]) == hashlib.sha256(plaintext.encode()).digest()
    assert row["prefix"] == plaintext[:11]
    assert plaintext not in json.dumps({k: str(v) for k, v in dict(row).items()})
    assert row["scopes"] == ["chat", "sessions"]
    assert row["last_used_at"] is None

    status, _, _ = await call(http, "GET", f"{auth_system.url}/v1/models", bearer(plaintext))
    assert status == 200
    used = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)
    assert used is not None
    status, _, _ = await call(http, "GET", f"{auth_system.url}/v1/models", bearer(plaintext))
    assert status == 200
    # At most one write a minute: the second use left the stamp alone.
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id) == used


async def test_a_key_of_another_tenant_cannot_abort_our_runs(
    auth_system: System,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    other_tenant: uuid.UUID,
    finished_run: tuple[str, str],
) -> None:
    foreign = bearer(await new_key(pool, "chat", tenant=other_tenant))
    run_id, session_key = finished_run
    for path in (f"/v1/runs/{run_id}/abort", f"/v1/sessions/{session_key}/abort"):
        status, answer, _ = await call(http, "POST", f"{auth_system.url}{path}", foreign)
        assert status == 404, answer
        assert answer["error"]["code"] == "not_found"
        status, answer, _ = await call(
            http, "POST", f"{auth_system.url}{path}", bearer(auth_system.token)
        )
        assert status == 200, answer


async def clawbus(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clawbus_core.cli",
        *args,
        env=os.environ | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_creates_a_key_that_works_and_revoke_stops_it_at_once(
    auth_system: System, http: aiohttp.ClientSession, other_tenant: uuid.UUID
) -> None:
    code, out, err = await clawbus(
        auth_system.env, "apikey", "create", "--name", "cli key", "--scopes", "chat,sessions"
    )
    assert code == 0, err
    found = re.search(r"^(goclaw_[0-9a-f]{32})$", out, re.MULTILINE)
    assert found is not None, out
    plaintext = found.group(1)
    key_id = re.search(r"created API key (\S+)", out)
    assert key_id is not None, out

    url = f"{auth_system.url}/v1/chat/completions"
    status, answer, _ = await call(http, "POST", url, bearer(plaintext), CHAT)
    assert status == 200, answer

    code, out, _ = await clawbus(auth_system.env, "apikey", "list")
    assert code == 0
    listed = next(line for line in out.splitlines() if line.startswith(key_id.group(1)))
    assert plaintext not in listed
    assert plaintext[:11] in listed
    assert "active" in listed

    code, out, err = await clawbus(auth_system.env, "apikey", "revoke", key_id.group(1))
    assert code == 0, err
    status, answer, _ = await call(http, "POST", url, bearer(plaintext), CHAT)
    assert status == 401, answer

    code, out, _ = await clawbus(auth_system.env, "apikey", "list")
    assert "revoked" in next(line for line in out.splitlines() if line.startswith(key_id.group(1)))

    code, _, err = await clawbus(
        auth_system.env, "apikey", "create", "--name", "typo", "--scopes", "chat,chta"
    )
    assert code != 0
    assert "unknown scope(s) chta" in err

    code, out, err = await clawbus(
        auth_system.env,
        "apikey",
        "create",
        "--name",
        "other",
        "--scopes",
        "chat",
        "--tenant",
        f"t-{other_tenant.hex}",
    )
    assert code == 0, err
    code, out, _ = await clawbus(auth_system.env, "apikey", "list", "--tenant", str(other_tenant))
    assert [line.split()[2] for line in out.splitlines()] == ["'other'"]


async def test_failed_attempts_lock_the_address_out_on_every_replica(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    configured: Secrets,
    http: aiohttp.ClientSession,
) -> None:
    limit = 3
    env = auth_env(configured, failures_per_minute=limit)
    for replica in ("a", "b"):
        (tmp_path / replica).mkdir()
    # The counter is per minute: start with enough of the minute left for the test.
    await wait_for(lambda: time.time() % 60 < 45, timeout_s=20, interval_s=0.5)
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path / "a", overrides=env) as a,
        start_system(
            endpoints, namespace, fake_models, tmp_path / "b", runners=0, overrides=env
        ) as b,
    ):
        for _ in range(limit):
            status, _, _ = await call(http, "GET", f"{a.url}/v1/models", bearer("wrong"))
            assert status == 401
        # The other replica refuses too, before looking at the (good) credential.
        status, answer, headers = await call(http, "GET", f"{b.url}/v1/models", bearer(b.token))
        assert status == 429, answer
        assert answer["error"]["code"] == "rate_limited"
        assert answer["error"]["retryable"] is True
        assert 0 < answer["error"]["retryAfterMs"] <= 60_000
        assert 1 <= int(headers["Retry-After"]) <= 60
        # Public paths stay reachable.
        async with http.get(f"{a.url}/health") as r:
            assert r.status == 200
