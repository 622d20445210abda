"""Reading credentials, the configured keyring, and the redacting access log."""

from __future__ import annotations

import base64
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from clawbus_core.store import api_keys
from clawbus_gateway.auth import (
    PASSWORD,
    Credential,
    Keyring,
    RedactingAccessLogger,
    credential,
    redact,
)
from clawbus_gateway.principal import OPERATOR
from clawbus_gateway.settings import GatewaySettings
from clawbus_protocol.errors import Unauthorized
from yarl import URL

from tests.system import wait_for

GATEWAY_TOKEN = "gateway-token-0123456789"


def settings(**values: Any) -> GatewaySettings:
    return GatewaySettings(gateway_token=GATEWAY_TOKEN, **values)


def request(path: str = "/v1/models", **headers: str) -> web.Request:
    return make_mocked_request("GET", path, headers=headers)


def basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


def test_keyring_maps_each_secret_to_its_principal() -> None:
    keyring = Keyring.from_settings(
        settings(
            gateway_password="hunter2-but-longer",
            gateway_api_tokens=[
                {"name": "app", "token": "app-token", "permissions": ["chat", "sessions"]}
            ],
        ),
        GATEWAY_TOKEN,
    )
    assert keyring.bearer(GATEWAY_TOKEN) is OPERATOR
    app = keyring.bearer("app-token")
    assert app is not None
    assert (app.kind, app.name, app.permissions) == ("api_token", "app", {"chat", "sessions"})
    assert app.allows("chat")
    assert not app.allows("config")
    assert keyring.bearer("app-token ") is None
    assert keyring.bearer(GATEWAY_TOKEN[:-1]) is None
    assert keyring.password_matches("hunter2-but-longer")
    assert not keyring.password_matches("hunter2")
    assert PASSWORD.allows("admin")


def test_without_a_password_no_password_matches() -> None:
    keyring = Keyring.from_settings(settings(), GATEWAY_TOKEN)
    assert not keyring.password_matches("")
    assert not keyring.password_matches(GATEWAY_TOKEN)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([{"name": "a", "token": "t1", "permissions": ["chat", "chta"]}], "unknown permission"),
        ([{"name": "a", "token": " ", "permissions": ["chat"]}], "empty"),
        (
            [{"name": "a", "token": "t1"}, {"name": "b", "token": "t1"}],
            "configured twice",
        ),
        ([{"name": "a", "token": GATEWAY_TOKEN}], "configured twice"),
    ],
)
def test_bad_token_configuration_is_refused(tokens: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring.from_settings(settings(gateway_api_tokens=tokens), GATEWAY_TOKEN)


@pytest.mark.parametrize(
    ("headers", "path", "expected"),
    [
        ({"Authorization": "Bearer abc"}, "/v1/models", Credential("bearer", "abc", "")),
        ({"Authorization": "bearer  abc "}, "/v1/models", Credential("bearer", "abc", "")),
        ({"Authorization": basic("user:pw")}, "/v1/models", Credential("password", "pw", "")),
        ({"Authorization": basic(":pw")}, "/v1/models", Credential("password", "pw", "")),
        ({"Authorization": basic("u:p:w")}, "/v1/models", Credential("password", "p:w", "")),
        ({"X-OpenClaw-Password": "pw"}, "/v1/models", Credential("password", "pw", "")),
        ({"Upgrade": "websocket"}, "/ws?token=abc", Credential("bearer", "abc", "")),
        ({"Upgrade": "WebSocket"}, "/ws?password=pw", Credential("password", "pw", "")),
        # The Authorization header wins over the password header and the query.
        (
            {"Authorization": "Bearer abc", "X-OpenClaw-Password": "pw", "Upgrade": "websocket"},
            "/ws?password=pw",
            Credential("bearer", "abc", ""),
        ),
    ],
)
def test_credentials_are_read_from_where_the_documents_put_them(
    headers: dict[str, str], path: str, expected: Credential
) -> None:
    found = credential(request(path, **headers))
    assert (found.kind, found.secret) == (expected.kind, expected.secret)
    assert found.secret not in found.source


@pytest.mark.parametrize(
    ("headers", "path", "message"),
    [
        ({}, "/v1/models", "missing credentials"),
        ({"Upgrade": "websocket"}, "/ws", "missing credentials"),
        ({"Authorization": "Bearer "}, "/v1/models", "unsupported"),
        ({"Authorization": "Digest abc"}, "/v1/models", "unsupported"),
        ({"Authorization": "Basic !!!"}, "/v1/models", "malformed Basic"),
        ({"Authorization": basic("no-colon")}, "/v1/models", "malformed Basic"),
        ({}, "/v1/models?token=abc", "only on WebSocket upgrade"),
        ({"Authorization": "Bearer abc"}, "/v1/models?password=pw", "only on WebSocket upgrade"),
    ],
)
def test_unreadable_or_misplaced_credentials_are_refused(
    headers: dict[str, str], path: str, message: str
) -> None:
    with pytest.raises(Unauthorized, match=message):
        credential(request(path, **headers))


def test_api_key_shape() -> None:
    assert api_keys.looks_like_key("goclaw_" + "0123456789abcdef" * 2)
    assert not api_keys.looks_like_key("goclaw_" + "0123456789ABCDEF" * 2)
    assert not api_keys.looks_like_key("goclaw_" + "0" * 31)
    assert not api_keys.looks_like_key("xgoclaw_" + "0" * 32)


def test_redact_replaces_only_secret_values() -> None:
    assert redact(URL("/ws?token=s3cret&x=1")) == "/ws?token=REDACTED&x=1"
    assert redact(URL("/ws?password=s3cret")) == "/ws?password=REDACTED"
    assert redact(URL("/v1/models?limit=5")) == "/v1/models?limit=5"
    assert "s3cret" not in redact(URL("https://host/page?token=s3cret"))


async def test_access_log_never_shows_query_secrets(caplog: pytest.LogCaptureFixture) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", ok)
    access = logging.getLogger("test.access")
    caplog.set_level(logging.INFO, logger="test.access")
    runner = web.AppRunner(app, access_log=access, access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/ws?token=s3cret-token&password=s3cret-pw&x=1"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Referer": "http://x/?token=s3cret-ref"}) as r,
        ):
            assert r.status == 200
        await wait_for(lambda: any(rec.name == "test.access" for rec in caplog.records))
    finally:
        await runner.cleanup()
    line = next(rec.getMessage() for rec in caplog.records if rec.name == "test.access")
    assert "s3cret" not in line
    assert '"GET /ws?token=REDACTED&password=REDACTED&x=1 HTTP/1.1" 200' in line
    assert "http://x/?token=REDACTED" in line
