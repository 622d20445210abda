"""001's configuration API end to end: its PATCH example replayed as written, and the level
it sets taking effect in separate gateway and agent-runner processes (their debug records
appear in their logs, and stop again after a reset); gateway replicas sharing rate-limit
overrides, loaded by a replica that starts later; secrets masked; bad patches refused with
nothing stored; permissions; concurrent patches.

Overrides are stored per namespace, and every test has its own: concurrent test systems on
the same database never see each other's configuration. Each test deletes its row at the
end anyway.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core import runtime_config
from clawbus_core.config import Endpoints
from clawbus_core.db import create_pool
from clawbus_core.runtime_config import MASK
from clawbus_fakes.models import FakeModelServer
from clawbus_protocol.config import ConfigOverrides

from tests.system import System, free_port, processes, start_system, wait_for

CONFIG = "/api/config"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_config(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    async with http.get(f"{url}{CONFIG}", headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def patch_config(
    http: aiohttp.ClientSession, url: str, token: str, body: Any
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = bearer(token) | {"Content-Type": "application/json"}
    async with http.patch(f"{url}{CONFIG}", data=data, headers=headers) as r:
        return r.status, await r.json()


async def patched(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> dict[str, Any]:
    status, answer = await patch_config(http, url, token, body)
    assert status == 200, answer
    return answer


def assert_invalid(body: dict[str, Any], key: str | None) -> str:
    """001's envelope with INVALID_REQUEST naming `key`; returns the message."""
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "INVALID_REQUEST"
    assert error["details"].get("param") == key
    message: str = error["message"]
    if key is not None:
        assert key in message
    return message


async def stored(db: asyncpg.Connection, namespace: str) -> tuple[int, dict[str, Any]] | None:
    row = await db.fetchrow(
        "SELECT version, doc FROM config_overrides WHERE namespace = $1", namespace
    )
    return None if row is None else (row["version"], json.loads(row["doc"]))


@pytest.fixture
async def overrides_reset(db: asyncpg.Connection, namespace: str) -> AsyncIterator[None]:
    """Deletes the test namespace's overrides row at the end, whatever happened."""
    try:
        yield
    finally:
        await db.execute("DELETE FROM config_overrides WHERE namespace = $1", namespace)


def read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


async def logged(log: Path, text: str) -> None:
    """Until a process has written `text` to its log."""
    await wait_for(lambda: text in read(log))


async def chat_run(system: System, text: str) -> str:
    """One chat turn through `system`; its run id."""
    reply = await system.openai(timeout=60).chat.completions.with_raw_response.create(
        model="clawbus/echo", messages=[{"role": "user", "content": text}]
    )
    assert reply.parse().choices[0].message.content == f"You said: {text}"
    return reply.headers["x-clawbus-run-id"]


# --- 001's example, in gateway and runner processes -------------------------------------------


async def test_patch_example_sets_the_level_of_every_gateway_and_runner_process(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    db: asyncpg.Connection,
    overrides_reset: None,
) -> None:
    # The in-process gateway takes the PATCH; a gateway and a runner process (log level
    # INFO, the default) must follow it. No in-process runner: the process runs every turn.
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, runners=0) as a,
        aiohttp.ClientSession() as http,
    ):
        port = free_port()
        b_url, b_log, r_log = f"http://127.0.0.1:{port}", tmp_path / "gw.log", tmp_path / "run.log"
        with processes() as spawn:
            env = a.env | {"CLAWBUS_LOG_FORMAT": "text"}  # the lines this test reads
            spawn("gateway-b", ["gateway"], env | {"CLAWBUS_GATEWAY_PORT": str(port)}, b_log)
            spawn("runner", ["agent-runner"], env | {"CLAWBUS_RUNNER_ID": "cfg-runner"}, r_log)
            for log in (b_log, r_log):
                await logged(log, "following runtime config")

            before = await get_config(http, b_url, a.token)
            assert before["logging"] == {"level": "info"}
            assert before["_meta"]["version"] == 0
            assert "logging.level" in before["_meta"]["patchable"]
            silent = await chat_run(a, "before")
            assert f"run {silent}: delivery" not in read(r_log)  # info: no debug records

            # 001: PATCH /api/config {"logging": {"level": "debug"}}
            async with http.patch(
                f"{a.url}/api/config",
                headers=bearer(a.token),
                json={"logging": {"level": "debug"}},
            ) as r:
                assert r.status == 200
                answer = await r.json()
            assert answer["logging"] == {"level": "debug"}
            assert answer["_meta"]["version"] == 1
            assert answer["_meta"]["overrides"] == {"logging": {"level": "debug"}}
            assert answer["_meta"]["updatedBy"] == "gateway_token:gateway-token"
            for url in (a.url, b_url):
                body = await get_config(http, url, a.token)
                assert body["logging"] == {"level": "debug"}
                assert body["_meta"]["version"] == 1
            assert await stored(db, namespace) == (1, {"logging": {"level": "debug"}})

            # Both processes heard it and now let debug records through: the follower's own,
            # and the runner worker's record of each delivery.
            for log in (b_log, r_log):
                await logged(log, "runtime config version 1 in effect at debug level")
            loud = await chat_run(a, "during")
            await logged(r_log, f"DEBUG clawbus_runner.worker: run {loud}: delivery")

            # A null resets the key to its setting (INFO) everywhere.
            answer = await patched(http, a.url, a.token, {"logging": {"level": None}})
            assert answer["logging"] == {"level": "info"}
            assert answer["_meta"]["version"] == 2
            assert answer["_meta"]["overrides"] == {}
            assert (await get_config(http, b_url, a.token))["logging"] == {"level": "info"}
            assert await stored(db, namespace) == (2, {})
            for log in (b_log, r_log):
                await logged(log, "runtime config version 2 applied")
                assert "runtime config version 2 in effect at debug level" not in read(log)
            quiet = await chat_run(a, "after")
            assert f"run {quiet}: delivery" not in read(r_log)

            # A runner that starts now reads the stored overrides at start.
            await patched(http, b_url, a.token, {"logging": {"level": "DEBUG"}})
            late_log = tmp_path / "late.log"
            spawn("late", ["agent-runner"], a.env | {"CLAWBUS_RUNNER_ID": "late-runner"}, late_log)
            await logged(late_log, "following runtime config")
            assert "(version 3)" in read(late_log)
            assert "runtime config version 3 in effect at debug level" in read(late_log)
            await patched(http, b_url, a.token, {"logging": None})


# --- gateway replicas -------------------------------------------------------------------------


async def rate_limit(http: aiohttp.ClientSession, system: System, token: str) -> int:
    """The sessions-class limit `system` enforces (its X-RateLimit-Limit header)."""
    async with http.get(f"{system.url}/api/v1/sessions", headers=bearer(token)) as r:
        assert r.status in (200, 429)
        return int(r.headers["X-RateLimit-Limit"])


async def test_replicas_share_rate_limit_overrides(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    db: asyncpg.Connection,
    overrides_reset: None,
) -> None:
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path / "a", runners=0) as a,
        aiohttp.ClientSession() as http,
    ):
        assert await rate_limit(http, a, a.token) == 1000  # 002's figure for read endpoints
        answer = await patched(http, a.url, a.token, {"gateway": {"rateLimits": {"sessions": 3}}})
        assert answer["gateway"]["rateLimits"]["sessions"] == 3
        assert await rate_limit(http, a, a.token) == 3

        # A replica that starts now enforces it before anything asks it for its config
        # (it shares a's token: every request here uses a.token).
        same = {"CLAWBUS_GATEWAY_TOKEN": a.token}
        async with start_system(
            endpoints, namespace, fake_models, tmp_path / "b", runners=0, overrides=same
        ) as b:
            assert await rate_limit(http, b, a.token) == 3

            # A patch on b reaches a over NATS (a is not asked for its config meanwhile);
            # objects merge: the new key joins, the null removes.
            answer = await patched(
                http, b.url, a.token, {"gateway": {"rateLimits": {"sessions": None, "chat": 9}}}
            )
            assert answer["gateway"]["rateLimits"]["sessions"] == 1000
            assert answer["gateway"]["rateLimits"]["chat"] == 9
            await wait_for(lambda: _is(rate_limit(http, a, a.token), 1000), interval_s=0.2)
            for system in (a, b):
                body = await get_config(http, system.url, a.token)
                assert body["_meta"]["version"] == 2
                assert body["_meta"]["overrides"] == {"gateway": {"rateLimits": {"chat": 9}}}
                assert body["gateway"]["rateLimits"] == {
                    "chat": 9,
                    "config": 100,
                    "default": 100,
                    "sessions": 1000,
                    "tools": 50,
                }
            async with http.post(f"{a.url}/api/v1/chat", headers=bearer(a.token), json={}) as r:
                assert r.status == 400  # admitted, then refused: counted in the chat bucket
                assert r.headers["X-RateLimit-Limit"] == "9"

            answer = await patched(http, a.url, a.token, {"gateway": None})
            assert answer["gateway"]["rateLimits"]["chat"] == 100
            assert await stored(db, namespace) == (3, {})


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# --- secrets and permissions ------------------------------------------------------------------

SECRETS = {  # distinct random values, so that not even a prefix may show
    "password": secrets.token_urlsafe(18),
    "ops_token": secrets.token_urlsafe(18),
    "app_token": secrets.token_urlsafe(18),
    "openai_key": f"sk-{secrets.token_hex(12)}",
    "anthropic_key": f"sk-ant-{secrets.token_hex(12)}",
    "local_key": f"sk-{secrets.token_hex(12)}",
    "url_password": secrets.token_hex(10),
}


@pytest.fixture
async def secret_system(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> AsyncIterator[System]:
    api_tokens = [
        {"name": "ops", "token": SECRETS["ops_token"], "permissions": ["config"]},
        {"name": "app", "token": SECRETS["app_token"], "permissions": ["chat", "sessions"]},
    ]
    overrides = {
        "CLAWBUS_GATEWAY_PASSWORD": SECRETS["password"],
        "CLAWBUS_GATEWAY_API_TOKENS": json.dumps(api_tokens),
        "CLAWBUS_PROVIDERS__OPENAI__API_KEY": SECRETS["openai_key"],
        "CLAWBUS_PROVIDERS__ANTHROPIC__API_KEY": SECRETS["anthropic_key"],
        "CLAWBUS_PROVIDERS__LOCAL__KIND": "openai",
        "CLAWBUS_PROVIDERS__LOCAL__API_KEY": SECRETS["local_key"],
        "CLAWBUS_PROVIDERS__LOCAL__BASE_URL": (
            f"http://user:{SECRETS['url_password']}@127.0.0.1:{free_port()}/v1"
        ),
    }
    async with start_system(
        endpoints, namespace, fake_models, tmp_path, runners=0, overrides=overrides
    ) as system:
        yield system


def assert_no_secret(text: str, system: System) -> None:
    for secret in [*SECRETS.values(), system.token]:
        assert secret not in text
        assert secret[:8] not in text


async def test_secrets_are_masked(
    secret_system: System, db: asyncpg.Connection, overrides_reset: None
) -> None:
    system = secret_system
    async with aiohttp.ClientSession() as http:
        for token in (system.token, SECRETS["ops_token"]):
            async with http.get(f"{system.url}{CONFIG}", headers=bearer(token)) as r:
                assert r.status == 200
                text = await r.text()
            assert_no_secret(text, system)
        body = json.loads(text)
        auth = body["gateway"]["auth"]
        assert auth["token"] == MASK
        assert auth["password"] == MASK
        assert auth["apiTokens"] == [
            {"name": "ops", "token": MASK, "permissions": ["config"]},
            {"name": "app", "token": MASK, "permissions": ["chat", "sessions"]},
        ]
        providers = body["models"]["providers"]
        for name in ("openai", "anthropic", "local"):
            assert providers[name]["apiKey"] == MASK
        assert providers["local"]["baseUrl"].startswith(f"http://user:{MASK}@127.0.0.1:")
        assert body["_meta"]["restartRequired"]["gateway.auth.password"] == (
            "CLAWBUS_GATEWAY_PASSWORD"
        )

        # The PATCH answer is the same masked document; a patch naming a secret is refused
        # without echoing it.
        async with http.patch(
            f"{system.url}{CONFIG}",
            headers=bearer(SECRETS["ops_token"]),
            json={"logging": {"level": "warning"}},
        ) as r:
            assert r.status == 200
            text = await r.text()
        assert_no_secret(text, system)
        assert json.loads(text)["_meta"]["updatedBy"] == "api_token:ops"
        status, refused = await patch_config(
            http,
            system.url,
            system.token,
            {"models": {"providers": {"openai": {"apiKey": SECRETS["local_key"]}}}},
        )
        assert status == 400
        message = assert_invalid(refused, "models.providers.openai.apiKey")
        assert "CLAWBUS_PROVIDERS__OPENAI__API_KEY" in message
        assert_no_secret(json.dumps(refused), system)
        await patched(http, system.url, system.token, {"logging": None})


async def test_config_needs_the_config_permission(
    secret_system: System, db: asyncpg.Connection, namespace: str, overrides_reset: None
) -> None:
    system = secret_system
    async with aiohttp.ClientSession() as http:
        app = bearer(SECRETS["app_token"])
        async with http.get(f"{system.url}{CONFIG}", headers=app) as r:
            assert r.status == 403
            error = (await r.json())["error"]
            assert error["code"] == "FORBIDDEN"
            assert "config" in error["message"]
        async with http.patch(
            f"{system.url}{CONFIG}", headers=app, json={"logging": {"level": "debug"}}
        ) as r:
            assert r.status == 403
        async with http.get(f"{system.url}{CONFIG}") as r:
            assert r.status == 401
        assert await stored(db, namespace) is None
        # The password is the operator: every permission.
        password = {"X-OpenClaw-Password": SECRETS["password"]}
        async with http.get(f"{system.url}{CONFIG}", headers=password) as r:
            assert r.status == 200
            assert (await r.json())["_meta"]["version"] == 0


# --- bad patches ------------------------------------------------------------------------------

BAD_PATCHES: list[tuple[str, str | None]] = [
    ('{"colour": "red"}', "colour"),
    ('{"logging": {"colour": "red"}}', "logging.colour"),
    ('{"logging": {"level": "verbose"}}', "logging.level"),
    ('{"logging": {"level": 10}}', "logging.level"),
    ('{"logging": "debug"}', "logging"),
    ('{"gateway": {"port": 8080}}', "gateway.port"),
    ('{"gateway": {"rateLimits": {"chat": -1}}}', "gateway.rateLimits.chat"),
    ('{"gateway": {"rateLimits": {"streaming": 5}}}', "gateway.rateLimits.streaming"),
    ('{"models": {"default": "openai/gpt-4o"}}', "models.default"),
    ('{"_meta": {"version": 9}}', "_meta"),
    # Nothing half-way: the valid key of a refused patch is not applied either.
    ('{"logging": {"level": "error"}, "gateway": {"port": 1}}', "gateway.port"),
    ("[]", None),
    ('"debug"', None),
    ("null", None),
    ("42", None),
    ('{"logging": ', None),
    ("not json", None),
    ("", None),
]


async def test_bad_patches_are_refused_and_store_nothing(
    system: System, db: asyncpg.Connection, namespace: str, overrides_reset: None
) -> None:
    async with aiohttp.ClientSession() as http:
        before = await patched(http, system.url, system.token, {"logging": {"level": "debug"}})
        assert before["_meta"]["version"] == 1
        for body, key in BAD_PATCHES:
            status, answer = await patch_config(http, system.url, system.token, body)
            assert status == 400, (body, answer)
            message = assert_invalid(answer, key)
            if key == "gateway.port":
                assert "CLAWBUS_GATEWAY_PORT" in message
                assert "restart" in message
            if key is None:
                assert any(w in message for w in ("JSON object", "not valid JSON", "empty"))
        # Bigger than any patch: 413.
        status, answer = await patch_config(
            http, system.url, system.token, {"logging": {"level": "debug"}, "x": "y" * 70_000}
        )
        assert status == 413
        assert answer["error"]["code"] == "PAYLOAD_TOO_LARGE"

        after = await get_config(http, system.url, system.token)
        assert after == before
        assert await stored(db, namespace) == (1, {"logging": {"level": "debug"}})

        # A patch that changes nothing is no new version.
        for same in ({}, {"logging": {"level": "DEBUG"}}, {"gateway": {"rateLimits": None}}):
            answer = await patched(http, system.url, system.token, same)
            assert answer["_meta"]["version"] == 1
        await patched(http, system.url, system.token, {"logging": None})
        assert await stored(db, namespace) == (2, {})


# --- the store --------------------------------------------------------------------------------


async def test_concurrent_patches_all_land(
    endpoints: Endpoints, namespace: str, overrides_reset: None
) -> None:
    pool = await create_pool(endpoints.database_url, min_size=5, max_size=5)
    try:
        classes = ["default", "chat", "tools", "sessions", "config"]
        results = await asyncio.gather(
            *(
                runtime_config.patch(
                    pool,
                    namespace,
                    ConfigOverrides.model_validate({"gateway": {"rateLimits": {c: i + 1}}}),
                    updated_by=f"test:{c}",
                )
                for i, c in enumerate(classes)
            )
        )
        assert all(changed for _, changed in results)
        assert sorted(s.version for s, _ in results) == [1, 2, 3, 4, 5]
        final = await runtime_config.load(pool, namespace)
        assert final.version == 5
        assert final.doc == {"gateway": {"rateLimits": {c: i + 1 for i, c in enumerate(classes)}}}
    finally:
        await pool.close()
