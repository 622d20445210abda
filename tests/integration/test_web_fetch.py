"""`web_fetch` against a real aiohttp server on 127.0.0.1, behind the real SSRF guard.

Every refusal is checked both ways: the model gets a clear ToolError, and the server the URL
pointed at (where there is one on this machine) never saw a request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from clawbus_core.config import Endpoints
from clawbus_core.db import create_pool
from clawbus_core.netguard import NetPolicy
from clawbus_runner.tools.base import MAX_RESULT_CHARS, ToolContext, ToolError
from clawbus_runner.tools.web import WebFetchTool, readable_text

MAX_BYTES = 4096

PAGE = """<!doctype html>
<html><head><title>Clawbus  test page</title>
<style>body { color: red }</style>
<script>var secret = "do not show";</script></head>
<body><h1>Hello&nbsp;there</h1>
<p>First   paragraph
   over lines.</p><noscript>enable js</noscript>
<ul><li>one</li><li>two &amp; three</li></ul></body></html>"""


@dataclass
class Site:
    """A test server and the paths it was asked for."""

    port: int
    seen: list[str] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(routes: dict[str, Handler]) -> AsyncIterator[Site]:
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield Site(port=runner.addresses[0][1], seen=seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def other() -> AsyncIterator[Site]:
    """A second server: a redirect target the policy does not open."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="the other server", content_type="text/plain")

    async for found in _serve({"/": page}):
        yield found


@pytest.fixture
async def site(other: Site) -> AsyncIterator[Site]:
    release = asyncio.Event()  # lets the slow handler finish when the test is over

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def data(_: web.Request) -> web.Response:
        return web.json_response({"answer": 42, "items": ["a", "b"]})

    async def binary(_: web.Request) -> web.Response:
        return web.Response(body=bytes(range(256)) * 4, content_type="application/octet-stream")

    async def big(_: web.Request) -> web.Response:
        return web.Response(text="x" * (MAX_BYTES * 3) + "END", content_type="text/plain")

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"the start of a body that never ends")
        await release.wait()
        return resp

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404, text="no such page")

    def redirect(to: Callable[[], str]) -> Handler:
        async def handler(_: web.Request) -> web.Response:
            raise web.HTTPFound(to())

        return handler

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/loop?n={int(request.query.get('n', '0')) + 1}")

    routes: dict[str, Handler] = {
        "/": page,
        "/data": data,
        "/binary": binary,
        "/big": big,
        "/slow": slow,
        "/missing": missing,
        "/hop": redirect(lambda: "/"),
        "/to-private": redirect(lambda: "http://10.0.0.5/"),
        "/to-metadata": redirect(lambda: "http://169.254.169.254/latest/meta-data"),
        "/to-other-port": redirect(lambda: f"http://127.0.0.1:{other.port}/"),
        "/to-file": redirect(lambda: "file:///etc/passwd"),
        "/loop": loop,
    }
    async for found in _serve(routes):
        try:
            yield found
        finally:
            release.set()


@pytest.fixture
async def ctx(endpoints: Endpoints) -> AsyncIterator[ToolContext]:
    # web_fetch touches neither; the context is still the real one a run would pass.
    pool = await create_pool(endpoints.database_url, min_size=1, max_size=1)
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        yield ToolContext(
            pool=pool,
            redis=redis,
            tenant_id=uuid.uuid4(),
            agent_id=uuid.uuid4(),
            agent_key="agent",
            session_id=uuid.uuid4(),
            session_key="session",
            run_id=uuid.uuid4(),
        )
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture
async def closed_tool() -> AsyncIterator[WebFetchTool]:
    """The default policy: nothing on this machine is reachable."""
    tool = WebFetchTool(NetPolicy(), timeout_s=1.0, max_bytes=MAX_BYTES)
    try:
        yield tool
    finally:
        await tool.aclose()


@pytest.fixture
async def tool(site: Site) -> AsyncIterator[WebFetchTool]:
    """A policy that opens exactly the test server's address and port."""
    policy = NetPolicy(allow=(f"127.0.0.1:{site.port}",))
    tool = WebFetchTool(policy, timeout_s=1.0, max_bytes=MAX_BYTES)
    try:
        yield tool
    finally:
        await tool.aclose()


# --- the default policy refuses before connecting ------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        ("http://[::1]:{port}/", "::1 is a loopback address"),
        ("http://2130706433:{port}/", r"2130706433 \(127.0.0.1\) is a loopback address"),
        ("http://0x7f.1:{port}/", r"0x7f.1 \(127.0.0.1\) is a loopback address"),
        ("http://localhost:{port}/", r"localhost \(127.0.0.1\) is a loopback address"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "IPv4-mapped form of 169.254.169.254"),
    ],
)
async def test_default_policy_refuses_internal_addresses_without_connecting(
    closed_tool: WebFetchTool, ctx: ToolContext, site: Site, url: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message) as caught:
        await closed_tool.run(ctx, {"url": url.format(port=site.port)})
    assert "network policy does not allow it" in str(caught.value)
    assert site.seen == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:pw@example.com/", "contains credentials"),
        ("not a url", "only http and https"),
        ("http:///nohost", "has no host"),
    ],
)
async def test_bad_urls_are_tool_errors(
    closed_tool: WebFetchTool, ctx: ToolContext, url: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await closed_tool.run(ctx, {"url": url})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "`url` must be a non-empty string"),
        ({"url": 5}, "`url` must be a non-empty string"),
        ({"url": "http://example.com/", "max_chars": 0}, "`max_chars` must be"),
        ({"url": "http://example.com/", "max_chars": True}, "`max_chars` must be"),
    ],
)
async def test_bad_arguments_are_tool_errors(
    closed_tool: WebFetchTool, ctx: ToolContext, args: dict[str, object], message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await closed_tool.run(ctx, dict(args))


# --- an allow-listed server -----------------------------------------------------------------


async def test_fetches_an_allowed_page_as_readable_text(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    result = await tool.run(ctx, {"url": site.url("/")})
    head, _, text = result.partition("\n\n")
    assert head.splitlines() == [
        f"URL: {site.url('/')}",
        "Status: 200 OK",
        "Content-Type: text/html",
    ]
    assert text == readable_text(PAGE)
    assert text.splitlines() == [
        "Clawbus test page",
        "Hello there",
        "First paragraph over lines.",
        "one",
        "two & three",
    ]
    assert site.seen == ["/"]


async def test_returns_json_as_text_and_describes_binary(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    result = await tool.run(ctx, {"url": site.url("/data")})
    assert "Content-Type: application/json" in result
    assert json.loads(result.partition("\n\n")[2]) == {"answer": 42, "items": ["a", "b"]}

    described = await tool.run(ctx, {"url": site.url("/binary")})
    assert described.endswith("[application/octet-stream content, 1024 bytes: not shown]")


async def test_follows_an_allowed_redirect_and_reports_the_final_url(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    result = await tool.run(ctx, {"url": site.url("/hop")})
    assert result.startswith(f"URL: {site.url('/')}\nStatus: 200 OK")
    assert site.seen == ["/hop", "/"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-private", "10.0.0.5 is a private address"),
        ("/to-metadata", "169.254.169.254 is a cloud metadata address"),
        ("/to-other-port", "127.0.0.1 is a loopback address"),
        ("/to-file", "only http and https"),
    ],
)
async def test_refuses_redirects_the_policy_does_not_allow(
    tool: WebFetchTool, ctx: ToolContext, site: Site, other: Site, path: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await tool.run(ctx, {"url": site.url(path)})
    assert site.seen == [path]
    assert other.seen == []


async def test_caps_the_number_of_redirects(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    with pytest.raises(ToolError, match="redirected more than 5 times"):
        await tool.run(ctx, {"url": site.url("/loop")})
    assert len(site.seen) == 6  # the first request and five redirects, no more


async def test_truncates_a_body_over_max_bytes(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    result = await tool.run(ctx, {"url": site.url("/big")})
    assert f"[content truncated at {MAX_BYTES} bytes]" in result
    body = result.partition("\n\n")[2]
    assert body == "x" * MAX_BYTES


async def test_caps_the_result_at_max_chars(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    result = await tool.run(ctx, {"url": site.url("/big"), "max_chars": 100})
    assert len(result) < 200
    assert result.endswith("more characters]")
    assert tool.spec.parameters["properties"]["max_chars"]["maximum"] == MAX_RESULT_CHARS


async def test_a_slow_endpoint_hits_the_time_limit(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    with pytest.raises(ToolError, match=r"timed out after 1s"):
        await tool.run(ctx, {"url": site.url("/slow")})
    assert site.seen == ["/slow"]


async def test_an_http_error_status_is_a_tool_error(
    tool: WebFetchTool, ctx: ToolContext, site: Site
) -> None:
    with pytest.raises(ToolError, match="answered HTTP 404 Not Found"):
        await tool.run(ctx, {"url": site.url("/missing")})


async def test_an_allowed_address_that_refuses_connections_is_a_tool_error(
    ctx: ToolContext,
) -> None:
    # A port nothing listens on: the guard allows it, the connection fails.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = WebFetchTool(NetPolicy(allow=(f"127.0.0.1:{port}",)), timeout_s=1.0)
    try:
        with pytest.raises(ToolError, match="cannot fetch"):
            await tool.run(ctx, {"url": f"http://127.0.0.1:{port}/"})
    finally:
        await tool.aclose()


async def test_spec_is_what_the_model_sees(closed_tool: WebFetchTool) -> None:
    spec = closed_tool.spec
    assert spec.name == "web_fetch"
    assert spec.policy == "safe"
    assert spec.parameters["required"] == ["url"]
    assert set(spec.parameters["properties"]) == {"url", "max_chars"}
