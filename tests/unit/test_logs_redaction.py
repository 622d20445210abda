"""A log record containing a token, an API key and a Telegram bot URL is written redacted: through
the handler setup_logging installs, in both formats, in the message (with %-args), the
traceback and the stack; and the JSON lines carry the context and trace ids."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from clawbus_core.logs import (
    REDACT,
    LogFormat,
    log_context,
    redact,
    register_secrets,
    setup_logging,
)
from clawbus_gateway.auth import RedactingAccessLogger
from opentelemetry import trace

from tests.system import wait_for

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass(frozen=True)
class Secrets:
    gateway_token: str
    api_key: str  # goclaw_ + 32 hex
    anthropic_key: str
    bot_secret: str
    db_password: str

    @property
    def bot_url(self) -> str:
        return f"https://api.telegram.org/bot123456789:{self.bot_secret}/getUpdates?timeout=30"

    def values(self) -> list[str]:
        return [
            self.gateway_token,
            self.api_key,
            self.anthropic_key,
            self.bot_secret,
            self.db_password,
        ]


@pytest.fixture
def leaked() -> Secrets:
    return Secrets(
        gateway_token=secrets.token_urlsafe(24),
        api_key="goclaw_" + secrets.token_hex(16),
        anthropic_key="sk-ant-api03-" + secrets.token_urlsafe(30),
        bot_secret="AAH" + secrets.token_urlsafe(24),
        db_password="pw" + secrets.token_hex(8),
    )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers and sets levels: put them back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        access.setLevel(access_level)


def _configure(fmt: LogFormat) -> io.StringIO:
    setup_logging("test-service", "INFO", fmt=fmt, instance="test-instance")
    (handler,) = logging.getLogger().handlers
    assert REDACT in handler.filters
    out = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out


def _connect(leaked: Secrets) -> None:
    raise RuntimeError(
        f"connect to postgresql://clawbus:{leaked.db_password}@db:5432/clawbus "
        f"failed with x-api-key={leaked.anthropic_key}"
    )


def _log_everything(leaked: Secrets) -> None:
    log = logging.getLogger("tests.logs.redaction")
    register_secrets(leaked.gateway_token)
    span = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=TRACE_ID, span_id=SPAN_ID, is_remote=False, trace_flags=trace.TraceFlags(1)
        )
    )
    with (
        trace.use_span(span),
        log_context(run_id="run-1", session_key="agent:main:main", agent="main"),
    ):
        # %-args: the secrets are only in the arguments.
        log.info(
            "calling %s with headers %s using key %s",
            leaked.bot_url,
            {"Authorization": f"Bearer {leaked.gateway_token}"},
            leaked.api_key,
        )
        log.warning("the gateway token is %s", leaked.gateway_token)
        try:
            _connect(leaked)
        except RuntimeError:
            log.exception("request to %s failed", leaked.bot_url)
        log.info("stack for %s", leaked.api_key, stack_info=True)
    # A library's logger: propagated to the root handler, redacted there too.
    logging.getLogger("telegram.ext.Updater").error("polling %s failed", leaked.bot_url)


def _assert_redacted(output: str, leaked: Secrets) -> None:
    for value in leaked.values():
        assert value not in output
    assert "bot<redacted>/getUpdates" in output
    assert "Bearer <redacted>" in output


def test_json_lines_are_redacted_and_carry_context(leaked: Secrets, restore_logging: None) -> None:
    out = _configure("json")
    _log_everything(leaked)
    output = out.getvalue()
    _assert_redacted(output, leaked)

    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 5
    first, token, failed, stacked, library = lines
    assert first["msg"].startswith("calling https://api.telegram.org/bot<redacted>/getUpdates")
    assert first["level"] == "INFO"
    assert RFC3339_MS.match(first["time"])
    assert first["service"] == "test-service"
    assert first["instance"] == "test-instance"
    assert first["logger"] == "tests.logs.redaction"
    assert first["run_id"] == "run-1"
    assert first["session_key"] == "agent:main:main"
    assert first["agent"] == "main"
    assert first["trace_id"] == format(TRACE_ID, "032x")
    assert first["span_id"] == format(SPAN_ID, "016x")
    assert "channel" not in first  # unset fields are left out
    assert "exc" not in first
    assert token["msg"] == "the gateway token is <redacted>"

    assert failed["level"] == "ERROR"
    assert failed["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: connect to postgresql://clawbus:<redacted>@db:5432" in failed["exc"]
    assert "x-api-key=<redacted>" in failed["exc"]
    assert "Stack (most recent call last):" in stacked["stack"]

    assert library["logger"] == "telegram.ext.Updater"
    assert "run_id" not in library  # outside the context
    assert "trace_id" not in library


def test_text_lines_are_redacted_and_name_the_run_and_trace(
    leaked: Secrets, restore_logging: None
) -> None:
    out = _configure("text")
    _log_everything(leaked)
    output = out.getvalue()
    _assert_redacted(output, leaked)

    first = output.splitlines()[0]
    assert " test-service INFO tests.logs.redaction: calling https://api" in first
    assert first.endswith(f" trace={TRACE_ID:032x} run=run-1")
    assert "Traceback (most recent call last):" in output
    assert "postgresql://clawbus:<redacted>@db" in output
    library = output.splitlines()[-1]
    assert library.endswith(
        "polling https://api.telegram.org/bot<redacted>/getUpdates?timeout=30 failed"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic <redacted>"),
        ("X-OpenClaw-Password: hunter2", "X-OpenClaw-Password: <redacted>"),
        ("GET /ws?token=abc&x=1&password=pw", "GET /ws?token=<redacted>&x=1&password=<redacted>"),
        ("secret=s api_key=k key=v", "secret=<redacted> api_key=<redacted> key=<redacted>"),
        ('{"password": "p", "name": "n"}', '{"password": "<redacted>", "name": "n"}'),
        ("redis://:pw@redis:6379/0", "redis://:<redacted>@redis:6379/0"),
        ("openai key sk-proj-abcdefghijkl", "openai key <redacted>"),
        # What must stay: ids, session keys, plain URLs, the word "token".
        ("session_key=agent:main:main", "session_key=agent:main:main"),
        ("http://127.0.0.1:8080/v1/models", "http://127.0.0.1:8080/v1/models"),
        ("authentication failed: bearer token from 1.2.3.4", None),
        ("risk-assessment task-runner", None),
    ],
)
def test_redact(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


def test_short_values_are_not_registered() -> None:
    register_secrets("abc", None)
    assert redact("abc abc") == "abc abc"


async def test_the_gateway_access_log_passes_through_the_filter(
    leaked: Secrets, restore_logging: None
) -> None:
    """RedactingAccessLogger hides ?token= and ?password=; anything else secret in its line
    (here an API key in ?api_key= and in the User-Agent) is caught by the root handler's
    filter, because the access logger's records propagate to it."""
    out = _configure("json")
    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.INFO)  # setup_logging keeps it at WARNING: turn it on to see it

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/models", ok)
    runner = web.AppRunner(app, access_log=access, access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/v1/models?token={leaked.gateway_token}&api_key={leaked.api_key}"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"User-Agent": f"probe {leaked.anthropic_key}"}) as r,
        ):
            assert r.status == 200
        await wait_for(lambda: "aiohttp.access" in out.getvalue())
    finally:
        await runner.cleanup()
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if "aiohttp.access" in x]
    assert not [value for value in leaked.values() if value in line["msg"]]
    assert "/v1/models?token=<redacted>&api_key=<redacted>" in line["msg"]
    assert '"probe <redacted>"' in line["msg"]
