"""The browser-worker against the real system Chromium, real NATS, Postgres and Redis.

Pages come from aiohttp servers on 127.0.0.1 started here. The "open" workers' deployment
allows 127.0.0.1 (CLAWBUS_NET_ALLOW), so they can load the test pages; the "strict" worker's
allows only the test site's port, so everything else on loopback (the `other` server, a
redirect to it, a subresource from it) and the metadata address are refused. Every refusal
is checked both ways: the caller gets a clear 403, and the `other` server never saw a request.

Callers use the one client of the service (clawbus_core.browser_client), as the gateway and
the agent tools do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import nats
import psutil
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from clawbus_browser.pool import target_key
from clawbus_browser.service import BrowserWorker
from clawbus_browser.settings import BrowserSettings
from clawbus_core.browser_client import call_browser
from clawbus_core.config import Endpoints
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_protocol.browser import (
    ActCall,
    BrowserOp,
    BrowserTarget,
    CloseCall,
    EvaluateCall,
    EvaluateResult,
    NavigateCall,
    PageInfo,
    ScreenshotCall,
    ScreenshotResult,
    SnapshotCall,
    SnapshotResult,
    StatusCall,
    StatusResult,
)
from clawbus_protocol.errors import ClawbusError, ErrorCode
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel

from tests.system import processes, wait_for

CHROMIUM = Path("/usr/bin/chromium")
BOX_RGB = (18, 200, 91)

R = TypeVar("R", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- the sites -----------------------------------------------------------------------------


@dataclass
class Site:
    port: int
    seen: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends /slow requests

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve(routes: dict[str, Handler]) -> AsyncIterator[Site]:
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request.path_qs)
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield Site(port=runner.addresses[0][1], seen=seen)
    finally:
        await runner.cleanup()


def html(body: str, title: str = "Test page") -> web.Response:
    return web.Response(
        text=f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>",
        content_type="text/html",
    )


HOME = """
<h1>Welcome</h1>
<p id="status">Nothing saved yet.</p>
<label for="email">Email</label> <input id="email" type="email">
<button onclick="document.getElementById('status').textContent = 'Saved: ' +
    document.getElementById('email').value">Save</button>
<a href="/docs">Docs</a>
<button style="display: none">Hidden</button>
"""

BOX = f"""
<style>body {{ margin: 0; background: white }}
#box {{ width: 40px; height: 30px; background: rgb{BOX_RGB}; margin: 20px }}</style>
<div id="box"></div>
"""


@pytest.fixture
async def other() -> AsyncIterator[Site]:
    """A server on loopback that no test worker's policy opens except the open workers'."""

    async def page(_: web.Request) -> web.Response:
        return web.json_response({"secret": "internal"})

    async with serve({"/": page, "/{tail:.*}": page}) as found:
        yield found


@pytest.fixture
async def site(other: Site) -> AsyncIterator[Site]:
    release = asyncio.Event()  # lets the slow handler finish when the test is over

    async def home(_: web.Request) -> web.Response:
        return html(HOME, "Home")

    async def box(_: web.Request) -> web.Response:
        return html(BOX, "Box")

    async def set_cookie(request: web.Request) -> web.Response:
        response = html("<p>cookie set</p>")
        response.set_cookie("flavour", request.query.get("v", "plain"), max_age=3600)
        return response

    async def to_other(_: web.Request) -> web.Response:
        raise web.HTTPFound(other.url("/from-redirect"))

    async def subresources(_: web.Request) -> web.Response:
        return html(
            f"""<p id="result">pending</p>
            <img src="{other.url("/pixel.png")}">
            <script>
              new WebSocket("ws://127.0.0.1:{other.port}/socket");
              fetch("{other.url("/api")}").then(
                () => document.getElementById("result").textContent = "fetch reached",
                () => document.getElementById("result").textContent = "fetch blocked");
            </script>"""
        )

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return html("<p>late</p>")

    routes: dict[str, Handler] = {
        "/": home,
        "/box": box,
        "/set-cookie": set_cookie,
        "/to-other": to_other,
        "/subresources": subresources,
        "/slow": slow,
    }
    async with serve(routes) as found:
        found.release = release
        try:
            yield found
        finally:
            release.set()


# --- workers and callers ----------------------------------------------------------------


def worker_settings(
    endpoints: Endpoints, namespace: str, worker_id: str, allow: list[str]
) -> BrowserSettings:
    return BrowserSettings(
        nats_url=endpoints.nats_url,
        database_url=endpoints.database_url,
        redis_url=endpoints.redis_url,
        namespace=namespace,
        net_allow=allow,
        browser_worker_id=worker_id,
        browser_op_timeout_s=20,
    )


@pytest.fixture
async def nc(endpoints: Endpoints) -> AsyncIterator[NatsClient]:
    client = await nats.connect(endpoints.nats_url)
    try:
        yield client
    finally:
        await client.close()


@dataclass
class Caller:
    nc: NatsClient
    names: Names

    async def __call__(self, op: BrowserOp, expect: type[R], timeout_s: float = 60) -> R:
        return await call_browser(self.nc, self.names, op, timeout_s=timeout_s, expect=expect)

    async def error(self, op: BrowserOp, timeout_s: float = 60) -> ClawbusError:
        with pytest.raises(ClawbusError) as caught:
            await call_browser(self.nc, self.names, op, timeout_s=timeout_s, expect=BaseModel)
        return caught.value


@pytest.fixture
async def open_worker(endpoints: Endpoints, namespace: str) -> AsyncIterator[BrowserWorker]:
    settings = worker_settings(endpoints, namespace, "open-1", ["127.0.0.1"])
    async with BrowserWorker(settings) as worker:
        yield worker


@pytest.fixture
def browser(open_worker: BrowserWorker, nc: NatsClient, namespace: str) -> Caller:
    return Caller(nc, Names(namespace))


@pytest.fixture
async def strict(endpoints: Endpoints, nc: NatsClient, site: Site) -> AsyncIterator[Caller]:
    """A worker whose deployment opens only the test site's port on loopback."""
    namespace = f"t{secrets.token_hex(5)}"
    settings = worker_settings(endpoints, namespace, "strict-1", [f"127.0.0.1:{site.port}"])
    async with BrowserWorker(settings):
        yield Caller(nc, Names(namespace))


def target(
    session: str | None = None, *, profile: str | None = None, tenant: uuid.UUID = DEFAULT_TENANT
) -> BrowserTarget:
    return BrowserTarget(
        tenant_id=tenant, session_key=session or f"s-{secrets.token_hex(4)}", profile=profile
    )


def ref_of(outline: str, role: str, name: str) -> str:
    found = re.search(rf'^- {role} "{re.escape(name)}".*\[ref=(e\d+)\]', outline, re.M)
    assert found is not None, f"no {role} {name!r} in the outline:\n{outline}"
    return found.group(1)


# --- a tiny PNG decoder (zlib only), to check a screenshot's pixels -----------------------


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, up_left = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(line)
        previous = line
    pixels = [
        (row[x * bpp], row[x * bpp + 1], row[x * bpp + 2]) for row in rows for x in range(width)
    ]
    return width, height, pixels


async def media(db: asyncpg.Connection, media_id: uuid.UUID) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT tenant_id, kind, mime_type, size, content FROM media WHERE id = $1", media_id
    )
    assert row is not None
    return row


# --- pages ---------------------------------------------------------------------------------


async def test_navigate_snapshot_and_outline(browser: Caller, site: Site) -> None:
    t = target()
    page = await browser(NavigateCall(target=t, url=site.url("/")), PageInfo)
    assert (page.status, page.title, page.url) == (200, "Home", site.url("/"))

    snap = await browser(SnapshotCall(target=t), SnapshotResult)
    assert "Welcome" in snap.text and "Nothing saved yet." in snap.text
    assert "Hidden" not in snap.text
    assert snap.truncated is False
    lines = snap.outline.splitlines()
    assert lines[0] == '- heading "Welcome" [level=1]'
    assert re.fullmatch(r'- textbox "Email" \[ref=e\d+\]', lines[1]), lines
    assert re.fullmatch(r'- button "Save" \[ref=e\d+\]', lines[2]), lines
    assert re.fullmatch(r'- link "Docs" \[ref=e\d+\]', lines[3]), lines
    assert len(lines) == 4, "the hidden button is not in the outline"

    small = await browser(SnapshotCall(target=t, max_chars=100), SnapshotResult)
    assert small.truncated is True
    assert len(small.text) <= 100 and len(small.outline) <= 100

    status = await browser(StatusCall(), StatusResult)
    assert status.worker_id == "open-1" and status.connected and status.contexts == 1


async def test_act_by_ref_changes_the_page(browser: Caller, site: Site) -> None:
    t = target()
    await browser(NavigateCall(target=t, url=site.url("/")), PageInfo)
    outline = (await browser(SnapshotCall(target=t), SnapshotResult)).outline
    email, save = ref_of(outline, "textbox", "Email"), ref_of(outline, "button", "Save")

    await browser(ActCall(target=t, action="type", ref=email, text="ada@example.com"), PageInfo)
    await browser(ActCall(target=t, action="click", ref=save), PageInfo)
    after = await browser(SnapshotCall(target=t), SnapshotResult)
    assert "Saved: ada@example.com" in after.text
    assert '- textbox "Email"' in after.outline and ': "ada@example.com"' in after.outline

    docs = ref_of(after.outline, "link", "Docs")
    moved = await browser(ActCall(target=t, action="click", ref=docs), PageInfo)
    assert moved.url == site.url("/docs")

    # The old page's refs are gone with it: a clear 404 that says what to do.
    stale = await browser.error(ActCall(target=t, action="click", ref=save))
    assert stale.info.code == ErrorCode.NOT_FOUND
    assert "new snapshot" in stale.info.message

    missing = await browser.error(ActCall(target=t, action="click"))
    assert missing.info.code == ErrorCode.INVALID_REQUEST and "ref" in missing.info.message
    bad_key = await browser.error(ActCall(target=t, action="press", key="NoSuchKey"))
    assert bad_key.info.code == ErrorCode.INVALID_REQUEST


async def test_evaluate(browser: Caller, site: Site) -> None:
    t = target()
    await browser(NavigateCall(target=t, url=site.url("/")), PageInfo)
    value = await browser(
        EvaluateCall(target=t, expression="({title: document.title, n: 1 + 2})"), EvaluateResult
    )
    assert value.value == {"title": "Home", "n": 3}
    thrown = await browser.error(
        EvaluateCall(target=t, expression="(() => { throw new Error('boom') })()")
    )
    assert thrown.info.code == ErrorCode.INVALID_REQUEST and "boom" in thrown.info.message
    not_json = await browser.error(EvaluateCall(target=t, expression="NaN"))
    assert not_json.info.code == ErrorCode.INVALID_REQUEST and "JSON" in not_json.info.message


async def test_screenshot_of_an_element_is_its_pixels(
    browser: Caller, site: Site, db: asyncpg.Connection
) -> None:
    t = target()
    await browser(NavigateCall(target=t, url=site.url("/box")), PageInfo)
    shot = await browser(ScreenshotCall(target=t, selector="#box"), ScreenshotResult)
    assert (shot.mime_type, shot.width, shot.height) == ("image/png", 40, 30)

    row = await media(db, shot.media_id)
    assert (row["tenant_id"], row["kind"], row["mime_type"]) == (
        DEFAULT_TENANT,
        "screenshot",
        "image/png",
    )
    assert row["size"] == shot.size == len(row["content"])
    width, height, pixels = png_pixels(bytes(row["content"]))
    assert (width, height) == (40, 30)
    assert set(pixels) == {BOX_RGB}

    page = await browser(ScreenshotCall(target=t, format="jpeg", quality=50), ScreenshotResult)
    assert (page.mime_type, page.width, page.height) == ("image/jpeg", 1280, 800)
    assert bytes((await media(db, page.media_id))["content"])[:2] == b"\xff\xd8"

    nothing = await browser.error(ScreenshotCall(target=t, selector="#nope"))
    assert nothing.info.code == ErrorCode.NOT_FOUND
    bad = await browser.error(ScreenshotCall(target=t, quality=50))
    assert bad.info.code == ErrorCode.INVALID_REQUEST


# --- isolation and profiles ----------------------------------------------------------------


async def cookies(browser: Caller, t: BrowserTarget, site: Site) -> str:
    await browser(NavigateCall(target=t, url=site.url("/")), PageInfo)
    return str(
        (await browser(EvaluateCall(target=t, expression="document.cookie"), EvaluateResult)).value
    )


@pytest.fixture
async def second_tenant(db: asyncpg.Connection) -> AsyncIterator[uuid.UUID]:
    tenant = uuid.uuid4()
    await db.execute(
        "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, 'Browser test')",
        tenant,
        f"browser-{tenant.hex[:12]}",
    )
    try:
        yield tenant
    finally:
        await db.execute("DELETE FROM tenants WHERE id = $1", tenant)


async def test_sessions_and_tenants_never_share_cookies(
    browser: Caller, site: Site, second_tenant: uuid.UUID
) -> None:
    a = target("chat-a")
    await browser(NavigateCall(target=a, url=site.url("/set-cookie?v=vanilla")), PageInfo)
    assert await cookies(browser, a, site) == "flavour=vanilla"
    assert await cookies(browser, target("chat-b"), site) == ""
    assert await cookies(browser, target("chat-a", tenant=second_tenant), site) == ""
    # A profile has its own context, whichever session uses it (its rows go with the tenant).
    profile = target("chat-a", profile="work", tenant=second_tenant)
    assert await cookies(browser, profile, site) == ""


async def test_profile_keeps_cookies_across_contexts(
    browser: Caller, site: Site, db: asyncpg.Connection, second_tenant: uuid.UUID
) -> None:
    work = target("first", profile="work", tenant=second_tenant)

    async def saved() -> list[str]:
        state = await db.fetchval(
            "SELECT storage_state FROM browser_profiles WHERE tenant_id = $1 AND name = 'work'",
            second_tenant,
        )
        return [c["value"] for c in json.loads(state)["cookies"]] if state else []

    await browser(NavigateCall(target=work, url=site.url("/set-cookie?v=mint")), PageInfo)
    assert await saved() == ["mint"], "saved after the call that set it"
    await browser(NavigateCall(target=work, url=site.url("/set-cookie?v=lime")), PageInfo)
    closed = await browser(CloseCall(target=work), StatusResult)
    assert closed.contexts == 0
    assert await saved() == ["lime"]

    # Another session of the same profile: a new context, the profile's cookies.
    again = target("second", profile="work", tenant=second_tenant)
    assert await cookies(browser, again, site) == "flavour=lime"
    assert await cookies(browser, target("first", profile="home", tenant=second_tenant), site) == ""


# --- the SSRF guard ------------------------------------------------------------------------


async def test_refused_destinations(strict: Caller, site: Site, other: Site) -> None:
    t = target()
    loopback = await strict.error(NavigateCall(target=t, url=other.url("/")))
    assert loopback.info.code == ErrorCode.FORBIDDEN
    assert "127.0.0.1 is a loopback address" in loopback.info.message
    assert loopback.info.details["port"] == other.port

    metadata = await strict.error(NavigateCall(target=t, url="http://169.254.169.254/latest/"))
    assert metadata.info.code == ErrorCode.FORBIDDEN
    assert "cloud metadata" in metadata.info.message

    local_file = await strict.error(NavigateCall(target=t, url="file:///etc/passwd"))
    assert local_file.info.code == ErrorCode.FORBIDDEN

    by_name = await strict.error(NavigateCall(target=t, url=f"http://localhost:{other.port}/"))
    assert by_name.info.code == ErrorCode.FORBIDDEN
    assert "localhost (127.0.0.1) is a loopback address" in by_name.info.message

    # Allowed first hop, refused redirect target.
    redirected = await strict.error(NavigateCall(target=t, url=site.url("/to-other")))
    assert redirected.info.code == ErrorCode.FORBIDDEN
    assert "loopback" in redirected.info.message
    assert redirected.info.details["port"] == other.port
    assert "/to-other" in site.seen

    # An allowed page whose image, fetch and WebSocket (which no route handler sees: the
    # SOCKS proxy refuses it) go to a refused address: the page loads, they fail.
    page = await strict(NavigateCall(target=t, url=site.url("/subresources")), PageInfo)
    assert page.status == 200
    result = await wait_for(lambda: _text_unless_pending(strict, t), timeout_s=20, interval_s=0.1)
    assert result == "fetch blocked"
    assert other.seen == []


async def _text_unless_pending(caller: Caller, t: BrowserTarget) -> str | None:
    value = (
        await caller(
            EvaluateCall(target=t, expression="document.getElementById('result').textContent"),
            EvaluateResult,
        )
    ).value
    return None if value == "pending" else str(value)


# --- limits -------------------------------------------------------------------------------


async def test_slow_page_times_out(browser: Caller, site: Site) -> None:
    t = target()
    slow = await browser.error(NavigateCall(target=t, url=site.url("/slow"), timeout_ms=500))
    assert slow.info.code == ErrorCode.TIMEOUT and slow.info.retryable
    assert "within 0.5s" in slow.info.message
    page = await browser(NavigateCall(target=t, url=site.url("/")), PageInfo)
    assert page.title == "Home"


async def test_context_limit_evicts_the_least_recently_used_idle_one(
    endpoints: Endpoints,
    namespace: str,
    nc: NatsClient,
    site: Site,
    db: asyncpg.Connection,
    second_tenant: uuid.UUID,
) -> None:
    caller = Caller(nc, Names(namespace))
    settings = worker_settings(endpoints, namespace, "small", ["127.0.0.1"])
    settings.browser_max_contexts = 2
    async with BrowserWorker(settings) as worker:
        oldest = target("oldest", profile="lru", tenant=second_tenant)
        await caller(NavigateCall(target=oldest, url=site.url("/set-cookie?v=lru")), PageInfo)
        b, c, d = target("b"), target("c"), target("d")
        await caller(NavigateCall(target=b, url=site.url("/")), PageInfo)
        await caller(NavigateCall(target=c, url=site.url("/")), PageInfo)  # evicts `oldest`
        assert worker.pool.contexts == 2
        state = await db.fetchval(
            "SELECT storage_state FROM browser_profiles WHERE tenant_id = $1 AND name = 'lru'",
            second_tenant,
        )
        assert [c["value"] for c in json.loads(state)["cookies"]] == ["lru"], (
            "the evicted profile keeps its cookies"
        )

        # Both contexts busy: a third target is refused at once, retryably.
        busy = [
            asyncio.create_task(caller(NavigateCall(target=t, url=site.url("/slow")), PageInfo))
            for t in (b, c)
        ]
        await wait_for(lambda: site.seen.count("/slow") == 2, timeout_s=20)
        refused = await caller.error(NavigateCall(target=d, url=site.url("/")))
        assert refused.info.code == ErrorCode.SERVICE_UNAVAILABLE and refused.info.retryable
        assert "all its 2 browser contexts in use" in refused.info.message
        site.release.set()
        assert [p.title for p in await asyncio.gather(*busy)] == ["Test page", "Test page"]
        await caller(NavigateCall(target=d, url=site.url("/")), PageInfo)


async def test_idle_contexts_are_closed_and_released(
    endpoints: Endpoints, namespace: str, nc: NatsClient, site: Site
) -> None:
    caller = Caller(nc, Names(namespace))
    settings = worker_settings(endpoints, namespace, "idler", ["127.0.0.1"])
    settings.browser_idle_s = 0.5
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        async with BrowserWorker(settings) as worker:
            t = target()
            holder_key = Names(namespace).browser_holder_key(target_key(t))
            await caller(NavigateCall(target=t, url=site.url("/")), PageInfo)
            assert await redis.get(holder_key) == b"idler"
            await wait_for(lambda: worker.pool.contexts == 0, timeout_s=20)
            await wait_for(lambda: _gone(redis, holder_key), timeout_s=10)
    finally:
        await redis.aclose()


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


# --- replicas, crashes, a killed worker ----------------------------------------------------


async def test_concurrent_screenshots_across_two_replicas(
    endpoints: Endpoints, namespace: str, nc: NatsClient, site: Site
) -> None:
    caller = Caller(nc, Names(namespace))
    async with contextlib.AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(
                BrowserWorker(worker_settings(endpoints, namespace, f"replica-{i}", ["127.0.0.1"]))
            )
            for i in (1, 2)
        ]
        targets = [target(f"replicas-{i}") for i in range(4)]
        for t in targets:
            await caller(NavigateCall(target=t, url=site.url("/box")), PageInfo)
        # Each call reaches the replica holding its page, whichever replica NATS gave it to:
        # on a replica without the page, #box would not exist.
        shots = await asyncio.gather(
            *(
                caller(ScreenshotCall(target=targets[i % 4], selector="#box"), ScreenshotResult)
                for i in range(20)
            )
        )
        assert all((s.width, s.height) == (40, 30) for s in shots)
        assert len({s.media_id for s in shots}) == 20
        assert sum(w.forwarded for w in workers) > 0
        assert sum(w.pool.contexts for w in workers) == 4


async def test_a_crashed_browser_is_started_again(
    open_worker: BrowserWorker, browser: Caller, site: Site
) -> None:
    first, second = target(), target()
    await browser(NavigateCall(target=first, url=site.url("/")), PageInfo)
    main = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.name().startswith("chromium") and not any(a.startswith("--type=") for a in p.cmdline())
    ]
    assert len(main) == 1, main
    main[0].kill()
    await wait_for(lambda: not open_worker.pool.connected, timeout_s=20)

    page = await browser(NavigateCall(target=second, url=site.url("/box")), PageInfo)
    assert page.title == "Box"
    again = await browser(NavigateCall(target=first, url=site.url("/")), PageInfo)
    assert again.title == "Home"
    assert open_worker.pool.launches == 2


async def test_killed_worker_process_fails_the_call_then_another_takes_over(
    endpoints: Endpoints, namespace: str, nc: NatsClient, site: Site, tmp_path: Path
) -> None:
    caller = Caller(nc, Names(namespace))
    env = {
        "CLAWBUS_NATS_URL": endpoints.nats_url,
        "CLAWBUS_DATABASE_URL": endpoints.database_url,
        "CLAWBUS_REDIS_URL": endpoints.redis_url,
        "CLAWBUS_NAMESPACE": namespace,
        "CLAWBUS_DATA_DIR": str(tmp_path),
        "CLAWBUS_NET_ALLOW": '["127.0.0.1"]',
        "CLAWBUS_BROWSER_WORKER_ID": "doomed",
    }
    t = target()
    with processes() as spawn:
        worker = spawn("browser-worker", ["browser-worker"], env, tmp_path / "worker.log")
        try:
            status = await wait_for(lambda: _status(caller), timeout_s=60, interval_s=0.2)
            assert status.worker_id == "doomed"
            await caller(NavigateCall(target=t, url=site.url("/")), PageInfo)

            hanging = asyncio.create_task(
                caller(NavigateCall(target=t, url=site.url("/slow")), PageInfo, timeout_s=6)
            )
            await wait_for(lambda: "/slow" in site.seen, timeout_s=20)
            worker.kill9()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)  # its Playwright driver and Chromium
        with pytest.raises(ClawbusError) as caught:
            await asyncio.wait_for(hanging, timeout=30)
        assert caught.value.info.code == ErrorCode.TIMEOUT
        assert caught.value.info.retryable

    # A retry reaches a live replica, which takes the page over from the dead holder.
    settings = worker_settings(endpoints, namespace, "survivor", ["127.0.0.1"])
    async with BrowserWorker(settings):
        page = await caller(NavigateCall(target=t, url=site.url("/box")), PageInfo)
        assert page.title == "Box"
        assert (await caller(StatusCall(), StatusResult)).worker_id == "survivor"


async def _status(caller: Caller) -> StatusResult | None:
    try:
        return await caller(StatusCall(), StatusResult, timeout_s=2)
    except ClawbusError:
        return None
