"""Every operation of the served OpenAPI document, refused as documented: driven by
/docs/openapi.json, so a new documented route is covered the day it is documented.

For each operation that is not public: no credential, a wrong bearer token and a revoked API
key are 401; an API key holding every permission but the operation's is 403 (operations
open to any valid credential have no such key). Each refusal is in the error envelope the
operation documents for that status, and none is a 2xx. The public ones answer without a
credential, and being public under /docs/static/ reaches nothing else.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from clawbus_core.config import Endpoints
from clawbus_core.store import api_keys
from clawbus_fakes.models import FakeModelServer
from clawbus_gateway.principal import ALL_PERMISSIONS
from jsonschema import Draft202012Validator
from yarl import URL

from tests.system import System, start_system

SETTINGS = {
    # Every refusal below is a counted failure: no lockout, no rate limit in the way.
    "CLAWBUS_GATEWAY_AUTH_FAILURES_PER_MINUTE": "100000",
    "CLAWBUS_GATEWAY_RATE_LIMITS": '{"default": 0, "chat": 0, "tools": 0, "sessions": 0}',
}
# Documented operations this matrix does not call, and why.
SKIPPED = {
    "openControlChannel": "a WebSocket upgrade: refusals are covered by test_ws",
    "openWebSocket": "a WebSocket upgrade: refusals are covered by test_ws",
}
PLAUSIBLE = {"uuid": "00000000-0000-4000-8000-000000000000"}


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2) as p:
        yield p


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> AsyncIterator[uuid.UUID]:
    """A tenant of this test: its keys go with it."""
    tenant_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, 'Auth matrix')",
        tenant_id,
        f"matrix-{tenant_id.hex}",
    )
    try:
        yield tenant_id
    finally:
        await pool.execute("DELETE FROM tenants WHERE id = $1", tenant_id)


@pytest.fixture
async def running(
    endpoints: Endpoints, namespace: str, fake_models: FakeModelServer, tmp_path: Path
) -> AsyncIterator[System]:
    async with start_system(endpoints, namespace, fake_models, tmp_path, overrides=SETTINGS) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def document(running: System, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{running.url}/docs/openapi.json") as r:  # public: no credential
        assert r.status == 200
        served: dict[str, Any] = await r.json()
        return served


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def url_of(base: str, path: str, op: dict[str, Any]) -> str:
    """The path with each parameter filled with its example, or a plausible value."""
    params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}

    def fill(match: re.Match[str]) -> str:
        param = params[match[1]]
        value = param.get("example") or PLAUSIBLE.get(param["schema"].get("format"), "x")
        return str(value)

    return base + re.sub(r"{(\w+)}", fill, path)


def body_of(op: dict[str, Any]) -> Any:
    """The operation's first example body, or an empty object."""
    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media is None:
        return None
    examples = media.get("examples", {})
    return next(iter(examples.values()))["value"] if examples else {}


def validator(document: dict[str, Any], op: dict[str, Any], status: int) -> Draft202012Validator:
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


async def test_every_operation_refuses_missing_wrong_revoked_and_lacking_credentials(
    running: System,
    http: aiohttp.ClientSession,
    document: dict[str, Any],
    pool: asyncpg.Pool,
    tenant: uuid.UUID,
) -> None:
    revoked_key = await new_key(pool, tenant, "admin")
    revoked = await api_keys.verify(pool, revoked_key)
    assert revoked is not None
    await api_keys.revoke_key(pool, revoked.id)
    unauthorized = {
        "no credential": {},
        "a wrong bearer token": {"Authorization": f"Bearer wrong-{secrets.token_hex(12)}"},
        "a revoked API key": {"Authorization": f"Bearer {revoked_key}"},
    }
    lacking: dict[str, str] = {}  # permission -> a key with every other one

    called = 0
    for method, path, op in operations(document):
        permission = op["x-clawbus-permission"]
        if permission == "public" or op["operationId"] in SKIPPED:
            continue
        url, body = url_of(running.url, path, op), body_of(op)
        cases = dict(unauthorized)
        if permission is not None:
            if permission not in lacking:
                others = sorted(ALL_PERMISSIONS - {permission, "admin"})
                lacking[permission] = await new_key(pool, tenant, *others)
            cases[f"a key without {permission!r}"] = {
                "Authorization": f"Bearer {lacking[permission]}"
            }
        for name, headers in cases.items():
            expected = 401 if name in unauthorized else 403
            async with http.request(method, url, headers=headers, json=body) as r:
                answer = await r.json(content_type=None)
                where = (method, path, name, r.status, answer)
                assert r.status == expected, where
                assert r.content_type == "application/json", where
                errors = sorted(validator(document, op, expected).iter_errors(answer), key=str)
                assert errors == [], (where, [e.message for e in errors])
                code = "unauthorized" if expected == 401 else "forbidden"
                assert answer["error"]["code"].lower() == code, where
            called += 1
    # Every documented non-public operation but the skipped ones was called.
    guarded = [
        op
        for _, _, op in operations(document)
        if op["x-clawbus-permission"] != "public" and op["operationId"] not in SKIPPED
    ]
    with_permission = [op for op in guarded if op["x-clawbus-permission"] is not None]
    assert called == 3 * len(guarded) + len(with_permission) > 0


async def new_key(pool: asyncpg.Pool, tenant: uuid.UUID, *scopes: str) -> str:
    _, plaintext = await api_keys.create_key(
        pool, tenant, "auth matrix", scopes, known_scopes=ALL_PERMISSIONS
    )
    return plaintext


# Public for the gateway's auth, authenticated by the caller's own signature (checked by the
# channel-bridge; see test_channel_webhook).
SIGNED_BY_THE_CALLER = {"/v1/webhooks/{channel_id}"}


async def test_public_operations_answer_without_a_credential(
    running: System, http: aiohttp.ClientSession, document: dict[str, Any]
) -> None:
    public = [(m, p) for m, p, op in operations(document) if op["x-clawbus-permission"] == "public"]
    assert ("GET", "/docs/openapi.json") in public
    for method, path in public:
        if path in SIGNED_BY_THE_CALLER:
            continue
        async with http.request(method, running.url + path) as r:
            assert r.status == 200, (method, path, r.status)
    # A webhook needs no gateway credential, but a signature the bridge checks: here no
    # bridge serves the channel, so it is refused (not 401 from the gateway's auth).
    async with http.post(f"{running.url}/v1/webhooks/{uuid.uuid4()}", json={}) as r:
        assert r.status == 503, await r.text()
    async with http.get(f"{running.url}/docs") as r:
        page = await r.text()
    assets = re.findall(r'(?:src|href)="(docs/static/[^"]+)"', page)
    assert assets
    for asset in assets:
        async with http.get(f"{running.url}/{asset}") as r:
            assert r.status == 200, asset


@pytest.mark.parametrize(
    "path",
    [
        "/docs/static/../../v1/sessions",
        "/docs/static/..%2F..%2Fv1%2Fsessions",
        "/docs/static/%2e%2e/%2e%2e/v1/sessions",
        "/docs/static/../../api/config",
        "/docs/staticx",
    ],
)
async def test_the_public_static_prefix_reaches_nothing_else(
    running: System, http: aiohttp.ClientSession, path: str
) -> None:
    # As written: the client must not resolve the dots itself.
    async with http.get(URL(running.url + path, encoded=True), allow_redirects=False) as r:
        assert r.status in (401, 404), (path, r.status, await r.text())
