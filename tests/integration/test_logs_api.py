"""003's logs on a running gateway: records of several services (RedisLogSinks in this process,
and a real scheduler process) in GET /api/logs/recent with 003's shape and limit, new ones on
the /api/logs/live WebSocket, admin-only, and never a secret in what either answers."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType
from clawbus_core.config import Endpoints
from clawbus_core.db import create_pool
from clawbus_core.logs import RedisLogSink, log_context, register_secrets
from clawbus_core.store import api_keys
from clawbus_fakes.models import FakeModelServer
from clawbus_gateway.principal import ALL_PERMISSIONS
from clawbus_protocol.names import Names

from tests.system import System, processes, start_system, wait_for

TIMEOUT_S = 15
CHAT_TOKEN = "chat-only-" + secrets.token_hex(12)
Entry = dict[str, Any]

log = logging.getLogger("tests.logs.api")


@pytest.fixture
def info_logs() -> Iterator[None]:
    """This test's logger at INFO (pytest leaves the root at WARNING)."""
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(logging.NOTSET)


@pytest.fixture
async def system(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> AsyncIterator[System]:
    tokens = [{"name": "chatter", "token": CHAT_TOKEN, "permissions": ["chat"]}]
    overrides = {"CLAWBUS_GATEWAY_API_TOKENS": json.dumps(tokens)}
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, overrides=overrides
    ) as running:
        yield running


@pytest.fixture
async def redis(system: System) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(system.endpoints.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def http(system: System) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {system.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


def sink(redis: aioredis.Redis, system: System, service: str) -> RedisLogSink:
    return RedisLogSink(redis, Names(system.namespace), service=service, instance=f"{service}-1")


async def recent(http: aiohttp.ClientSession, system: System, limit: int = 200) -> list[Entry]:
    async with http.get(f"{system.url}/api/logs/recent", params={"limit": str(limit)}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert set(body) == {"ok", "logs"}
    assert body["ok"] is True
    logs: list[Entry] = body["logs"]
    return logs


def by(entries: list[Entry], service: str, marker: str) -> list[Entry]:
    return [e for e in entries if e.get("service") == service and marker in e["msg"]]


async def test_recent_holds_every_service_newest_last(
    system: System, redis: aioredis.Redis, http: aiohttp.ClientSession, info_logs: None
) -> None:
    marker = secrets.token_hex(4)
    async with sink(redis, system, "svc-a"):
        with log_context(run_id="run-a", session_key="agent:main:main"):
            log.info("first from a %s", marker)
    async with sink(redis, system, "svc-b"):
        log.warning("then from b %s", marker)

    async def both() -> list[Entry] | None:
        entries = await recent(http, system)
        a, b = by(entries, "svc-a", marker), by(entries, "svc-b", marker)
        return entries if a and b else None

    entries = await wait_for(both, timeout_s=TIMEOUT_S)
    (a,) = by(entries, "svc-a", marker)
    (b,) = by(entries, "svc-b", marker)
    assert entries.index(a) < entries.index(b)  # newest last
    assert a["msg"] == f"first from a {marker}"
    assert a["level"] == "INFO"
    assert a["time"].endswith("Z")
    assert a["instance"] == "svc-a-1"
    assert a["logger"] == "tests.logs.api"
    assert a["run_id"] == "run-a"
    assert a["session_key"] == "agent:main:main"
    assert b["level"] == "WARNING"
    assert "run_id" not in b  # logged outside the context
    # The gateway's own sink (this process's records, as api-gateway) holds them too.
    assert by(entries, "api-gateway", marker)


async def test_recent_limit(
    system: System, redis: aioredis.Redis, http: aiohttp.ClientSession, info_logs: None
) -> None:
    marker = secrets.token_hex(4)
    async with sink(redis, system, "svc-many"):
        for i in range(12):
            log.info("record %d %s", i, marker)
    # In: the 12 from svc-many and the gateway's sink's copies of them.
    await wait_for(lambda: _count(redis, system.namespace, 24), timeout_s=TIMEOUT_S)

    three = await recent(http, system, limit=3)
    assert len(three) == 3
    async with http.get(f"{system.url}/api/logs/recent") as r:
        assert r.status == 200
        assert len((await r.json())["logs"]) == 10  # 003's default
    newest = await recent(http, system, limit=200)
    assert three == newest[-3:]

    for bad in ("0", "201", "ten", "-1"):
        async with http.get(f"{system.url}/api/logs/recent", params={"limit": bad}) as r:
            assert r.status == 400, bad
            error = (await r.json())["error"]  # 001's envelope, as everywhere under /api
            assert error["code"] == "INVALID_REQUEST"
            assert "limit" in error["message"]


async def _count(redis: aioredis.Redis, namespace: str, at_least: int) -> bool:
    length: int = await redis.xlen(Names(namespace).logs_stream_key)
    return length >= at_least


async def test_live_sends_what_is_logged_after_connecting(
    system: System, redis: aioredis.Redis, http: aiohttp.ClientSession, info_logs: None
) -> None:
    before = secrets.token_hex(4)
    async with sink(redis, system, "svc-live"):
        log.info("before %s", before)
    # Both copies stored (the gateway's sink has one too) before connecting.
    await wait_for(lambda: _stored_twice(http, system, before), timeout_s=TIMEOUT_S)

    marker = secrets.token_hex(4)
    url = f"{system.url}/api/logs/live"
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.ws_connect(
            url,
            params={"token": system.token},  # 003: ?token= on the upgrade
        ) as ws,
    ):
        async with sink(redis, system, "svc-live"):
            with log_context(run_id="run-live"):
                log.info("after %s", marker)
        frames = await _frames_until(ws, "svc-live", marker)
    # Only what was added after connecting: not the record logged before.
    assert not [f for f in frames if before in f["entry"]["msg"]]
    frame = frames[-1]
    assert set(frame) == {"ok", "type", "entry"}
    assert frame["ok"] is True
    assert frame["type"] == "log_entry"
    entry = frame["entry"]
    assert entry["msg"] == f"after {marker}"
    assert entry["level"] == "INFO"
    assert entry["run_id"] == "run-live"
    assert entry["instance"] == "svc-live-1"


async def _stored_twice(http: aiohttp.ClientSession, system: System, marker: str) -> bool:
    entries = await recent(http, system)
    return bool(by(entries, "svc-live", marker) and by(entries, "api-gateway", marker))


async def _frames_until(
    ws: aiohttp.ClientWebSocketResponse, service: str, marker: str
) -> list[Entry]:
    """The frames received up to the first whose entry is `service`'s and holds `marker`."""
    frames: list[Entry] = []
    while True:
        msg = await ws.receive(timeout=TIMEOUT_S)
        assert msg.type is WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
        entry = frames[-1]["entry"]
        if entry.get("service") == service and marker in entry["msg"]:
            return frames


async def test_logs_need_an_admin_credential(system: System) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{system.url}/api/logs/recent") as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "UNAUTHORIZED"
        chat_only = {"Authorization": f"Bearer {CHAT_TOKEN}"}
        async with http.get(f"{system.url}/api/logs/recent", headers=chat_only) as r:
            assert r.status == 403
            assert "admin" in (await r.json())["error"]["message"]
        # ?token= is for WebSocket upgrades only.
        async with http.get(f"{system.url}/api/logs/recent", params={"token": system.token}) as r:
            assert r.status == 401

        with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
            await http.ws_connect(f"{system.url}/api/logs/live")
        assert anonymous.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
            await http.ws_connect(f"{system.url}/api/logs/live", params={"token": "wrong-token"})
        assert wrong.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as forbidden:
            await http.ws_connect(f"{system.url}/api/logs/live", headers=chat_only)
        assert forbidden.value.status == 403

        # A plain GET of the WebSocket route is a clear 400.
        auth = {"Authorization": f"Bearer {system.token}"}
        async with http.get(f"{system.url}/api/logs/live", headers=auth) as r:
            assert r.status == 400
            assert "Upgrade: websocket" in (await r.json())["error"]["message"]


async def test_another_tenants_admin_key_reads_no_deployment_wide_route(
    system: System, endpoints: Endpoints
) -> None:
    """Logs and configuration cover every tenant: a tenant's own key, even with `admin`,
    is refused (403) where the operator's token is answered."""
    tenant = uuid.uuid4()
    pool = await create_pool(endpoints.database_url, min_size=1, max_size=2)
    try:
        await pool.execute(
            "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, 'Other')", tenant, f"o-{tenant}"
        )
        _, key = await api_keys.create_key(
            pool, tenant, "tenant admin", ["admin"], known_scopes=ALL_PERMISSIONS
        )
        tenant_admin = {"Authorization": f"Bearer {key}"}
        operator = {"Authorization": f"Bearer {system.token}"}
        async with aiohttp.ClientSession() as http:
            for method, path, body in (
                ("GET", "/api/logs/recent", None),
                ("GET", "/api/config", None),
                ("PATCH", "/api/config", {"logging": {"level": "debug"}}),
            ):
                url = f"{system.url}{path}"
                async with http.request(method, url, headers=tenant_admin, json=body) as r:
                    answer = await r.json()
                    assert r.status == 403, (method, path, answer)
                    assert "whole deployment" in answer["error"]["message"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{system.url}/api/logs/live", headers=tenant_admin)
            assert refused.value.status == 403
            for path in ("/api/logs/recent", "/api/config"):
                async with http.get(f"{system.url}{path}", headers=operator) as r:
                    assert r.status == 200, path
    finally:
        await pool.execute("DELETE FROM tenants WHERE id = $1", tenant)
        await pool.close()


async def test_secrets_never_reach_the_api(
    system: System, redis: aioredis.Redis, http: aiohttp.ClientSession, info_logs: None
) -> None:
    register_secrets(system.token)  # what the gateway's main() does with its token
    api_key = "goclaw_" + secrets.token_hex(16)
    bot_secret = "AAH" + secrets.token_urlsafe(24)
    leaked = [system.token, api_key, bot_secret]
    marker = secrets.token_hex(4)
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.ws_connect(f"{system.url}/api/logs/live", params={"token": system.token}) as ws,
    ):
        async with sink(redis, system, "svc-secret"):
            log.info(
                "%s token %s key %s url https://api.telegram.org/bot42:%s/getMe",
                marker,
                system.token,
                api_key,
                bot_secret,
            )
            try:
                raise_with(f"Authorization: Bearer {api_key}")
            except ValueError:
                log.exception("%s failed", marker)
        live = [await _frames_until(ws, "svc-secret", marker) for _ in range(2)]

    entries = await wait_for(
        lambda: _entries(http, system, "svc-secret", marker, 2), timeout_s=TIMEOUT_S
    )
    said, failed = entries
    assert said["msg"] == (
        f"{marker} token <redacted> key <redacted> url https://api.telegram.org/bot<redacted>/getMe"
    )
    assert "ValueError: Authorization: Bearer <redacted>" in failed["exc"]
    text = json.dumps([entries, live])
    assert not [value for value in leaked if value in text]


def raise_with(message: str) -> None:
    raise ValueError(message)


async def _entries(
    http: aiohttp.ClientSession, system: System, service: str, marker: str, count: int
) -> list[Entry] | None:
    found = by(await recent(http, system), service, marker)
    return found if len(found) >= count else None


async def test_a_service_process_writes_json_lines_and_its_records_reach_the_stream(
    system: System, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    log_file = tmp_path / "scheduler.log"
    with processes() as spawn:
        scheduler = spawn(
            "scheduler",
            ["scheduler"],
            system.env | {"CLAWBUS_SCHEDULER_ID": "sched-logs"},
            log_file,
        )

        async def leads() -> list[Entry]:
            entries = await recent(http, system)
            return by(entries, "scheduler", "is the leader")

        (entry,) = await wait_for(leads, timeout_s=60)
        assert entry["instance"] == "sched-logs"
        assert entry["logger"].startswith("clawbus_scheduler")
        assert scheduler.stop() == 0
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    assert lines
    assert {line["service"] for line in lines} == {"scheduler"}
    assert any("is the leader" in line["msg"] for line in lines)


async def test_shutdown_closes_live_tails(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        async with start_system(endpoints, namespace, fake_models, tmp_path) as system:
            ws = await http.ws_connect(
                f"{system.url}/api/logs/live", params={"token": system.token}
            )
            closed = asyncio.create_task(_until_closed(ws))
        await asyncio.wait_for(closed, timeout=TIMEOUT_S)
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:  # entries logged while the gateway stops, then the close
        pass
