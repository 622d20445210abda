"""The browser's surfaces end to end: 000's /v1/browser/* routes, the WS method
`browser.screenshot`, GET /v1/media/{id}, and the agent's browser tools, through a running
system (gateway, agent-runner) and a real browser-worker driving Chromium, against a test page
served on loopback (opened to the browser by `net_allow`). Without a worker every surface
says so: 503 naming browser-worker, and a tool error the model reads. The shared client
(clawbus_core.browser_client) is also driven against a subscriber that stays silent or
answers strangely.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import WSMsgType, web
from clawbus_browser.service import BrowserWorker
from clawbus_browser.settings import BrowserSettings
from clawbus_core import bus
from clawbus_core.browser_client import call_browser
from clawbus_core.config import Endpoints
from clawbus_core.events import read_run_events
from clawbus_core.store import agents, api_keys
from clawbus_core.store.runs import DEFAULT_TENANT
from clawbus_fakes.models import FakeModelServer, RecordedRequest, Reply, ToolCall
from clawbus_gateway.principal import ALL_PERMISSIONS
from clawbus_protocol.browser import BrowserReply, PageInfo, StatusCall, StatusResult
from clawbus_protocol.errors import ClawbusError, NotFound, ServiceUnavailable, Timeout
from clawbus_protocol.names import Names
from clawbus_protocol.runs import ToolCallEvent, ToolResultEvent
from nats.aio.msg import Msg
from redis.asyncio import Redis

from tests.integration.test_browser_worker import png_pixels
from tests.system import System, patched_env, start_system

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BEFORE = "Not clicked yet"
AFTER = "Clicked: marigold"
PAGE = f"""<!doctype html>
<html><head><title>Clawbus test page</title></head>
<body>
  <h1>Browser surfaces</h1>
  <p id="status">{BEFORE}</p>
  <button onclick="document.getElementById('status').textContent = '{AFTER}'">Press me</button>
  <div id="swatch" style="position: absolute; left: 10px; top: 300px;
       width: 40px; height: 30px; background: rgb(30, 144, 255)"></div>
</body></html>"""
SWATCH = (30, 144, 255)
STATUS_JS = "document.getElementById('status').textContent"
# The snapshot outline names the button with its ref: `- button "Press me" [ref=e12]`.
BUTTON_REF = re.compile(r'button "Press me" \[ref=(e[0-9]+)\]')


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The test page, served on loopback."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def browser_worker(system: System) -> AsyncIterator[BrowserWorker]:
    """A real browser-worker on the system's endpoints and namespace."""
    with patched_env(system.env):
        settings = BrowserSettings(browser_worker_id=f"test-browser-{system.namespace}")
    async with BrowserWorker(settings) as worker:
        yield worker


@pytest.fixture
async def browsing(
    endpoints: Endpoints,
    namespace: str,
    fake_models: FakeModelServer,
    tmp_path: Path,
    page_url: str,
) -> AsyncIterator[System]:
    """A system whose browser may open the test page, with a browser-worker."""
    port = page_url.split(":")[2].rstrip("/")
    overrides = {"CLAWBUS_NET_ALLOW": json.dumps([f"127.0.0.1:{port}"])}
    async with (
        start_system(endpoints, namespace, fake_models, tmp_path, overrides=overrides) as system,
        browser_worker(system),
    ):
        yield system


@pytest.fixture
async def other_tenant_key(endpoints: Endpoints) -> AsyncIterator[str]:
    """An admin API key of another tenant."""
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2) as pool:
        tenant_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO tenants (id, slug, name) VALUES ($1, $2, 'Other')",
            tenant_id,
            f"browser-{tenant_id.hex}",
        )
        try:
            _, key = await api_keys.create_key(
                pool, tenant_id, "other", ["admin"], known_scopes=ALL_PERMISSIONS
            )
            yield key
        finally:
            await pool.execute("DELETE FROM tenants WHERE id = $1", tenant_id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ws_call(system: System, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request on the WebSocket control channel, and its response frame."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            system.url.replace("http", "ws", 1) + "/", headers=bearer(system.token)
        ) as ws,
    ):
        await ws.send_json({"id": 1, "method": method, "params": params})
        while True:
            msg = await ws.receive(timeout=120)
            assert msg.type is WSMsgType.TEXT, msg
            frame: dict[str, Any] = json.loads(msg.data)
            if frame["type"] == "res":
                assert frame["id"] == 1
                return frame


# --- 000's routes, the WS method and the media route --------------------------------------------


async def test_the_000_browser_examples_and_the_screenshot_as_media(
    browsing: System, page_url: str, other_tenant_key: str
) -> None:
    url = browsing.url
    async with aiohttp.ClientSession(headers=bearer(browsing.token)) as http:
        async with http.get(f"{url}/v1/browser/status") as r:
            assert r.status == 200, await r.text()
            status = await r.json()
        assert status["status"] == "ok" and status["running"] is True
        assert status["workerId"] == f"test-browser-{browsing.namespace}"
        assert status["browserVersion"]
        assert status["maxContexts"] >= 1

        async with http.post(
            f"{url}/v1/browser/navigate", json={"url": page_url, "profile": "default"}
        ) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        assert page == {
            "success": True,
            "url": page_url,
            "title": "Clawbus test page",
            "status": 200,
            "profile": "default",
        }

        # No profile named: the same "default" page.
        async with http.post(
            f"{url}/v1/browser/screenshot", json={"selector": "body", "fullPage": True}
        ) as r:
            assert r.status == 200, await r.text()
            shot = await r.json()
        assert shot["url"] == f"/v1/media/{shot['mediaId']}"
        assert shot["mimeType"] == "image/png"
        assert shot["width"] > 0 and shot["height"] > 0

        async with http.get(f"{url}{shot['url']}") as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"] == "image/png"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            image = await r.read()
        assert image.startswith(PNG_MAGIC)
        assert len(image) == shot["size"]

        # An element's screenshot: a PNG whose every pixel is the element's colour.
        async with http.post(f"{url}/v1/browser/screenshot", json={"selector": "#swatch"}) as r:
            assert r.status == 200, await r.text()
            swatch = await r.json()
        assert (swatch["width"], swatch["height"]) == (40, 30)
        async with http.get(f"{url}{swatch['url']}") as r:
            width, height, pixels = png_pixels(await r.read())
        assert (width, height) == (40, 30)
        assert set(pixels) == {SWATCH}

        # A destination the deployment does not open: the worker's refusal, passed through.
        async with http.post(
            f"{url}/v1/browser/navigate", json={"url": "http://10.255.255.1/"}
        ) as r:
            assert r.status == 403, await r.text()
            assert "10.255.255.1" in (await r.json())["error"]["message"]

        async with http.post(f"{url}/v1/browser/navigate", json={"url": page_url, "wait": 1}) as r:
            assert r.status == 400  # a misspelt field is refused, not ignored
            assert (await r.json())["error"]["param"] == "wait"

    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{url}{shot['url']}") as r:
            assert r.status == 401
        async with anonymous.get(f"{url}{shot['url']}", headers=bearer(other_tenant_key)) as r:
            assert r.status == 404, await r.text()  # another tenant's media does not exist
        async with anonymous.get(f"{url}/v1/media/not-a-uuid", headers=bearer(browsing.token)) as r:
            assert r.status == 404


async def test_the_ws_method_browser_screenshot(browsing: System, page_url: str) -> None:
    async with aiohttp.ClientSession(headers=bearer(browsing.token)) as http:
        async with http.post(f"{browsing.url}/v1/browser/navigate", json={"url": page_url}) as r:
            assert r.status == 200, await r.text()
        response = await ws_call(browsing, "browser.screenshot", {"fullPage": False})
        assert response["ok"] is True, response
        shot = response["result"]
        assert shot["url"] == f"/v1/media/{shot['mediaId']}"
        assert shot["mimeType"] == "image/png"
        async with http.get(f"{browsing.url}{shot['url']}") as r:
            assert r.status == 200
            assert (await r.read()).startswith(PNG_MAGIC)

        bad = await ws_call(browsing, "browser.screenshot", {"selector": ""})
        assert bad["ok"] is False
        assert bad["error"]["code"] == "invalid_request"


async def test_without_a_browser_worker_every_surface_names_it(system: System) -> None:
    async with aiohttp.ClientSession(headers=bearer(system.token)) as http:
        for method, path, body in [
            ("GET", "/v1/browser/status", None),
            ("POST", "/v1/browser/navigate", {"url": "https://example.com", "profile": "default"}),
            ("POST", "/v1/browser/screenshot", {"selector": "body", "fullPage": True}),
        ]:
            async with http.request(method, f"{system.url}{path}", json=body) as r:
                assert r.status == 503, (path, await r.text())
                error = (await r.json())["error"]
            assert error["code"] == "service_unavailable"
            assert error["details"]["service"] == "browser-worker"
            assert "browser-worker" in error["message"]
        # Over HTTP the browser tools are denied by default: they reach outside the agent.
        async with http.post(
            f"{system.url}/api/tools/browser_navigate/invoke",
            json={"params": {"url": "https://example.com"}},
        ) as r:
            assert r.status == 403, await r.text()
    response = await ws_call(system, "browser.screenshot", {"fullPage": True})
    assert response["ok"] is False
    assert response["error"]["details"]["service"] == "browser-worker"

    # In a run, the model reads why its browser call failed, and the run goes on.
    system.fake.script(
        "gpt-nobrowser",
        Reply(tool_calls=[ToolCall("browser_navigate", {"url": "https://example.com"})]),
        Reply(text="no browser today"),
    )
    async with aiohttp.ClientSession(headers=bearer(system.token)) as http:
        async with http.post(
            f"{system.url}/v1/agent/run",
            json={
                "message": "open example.com",
                "sessionKey": "agent:main:nobrowser",
                "options": {"model": "openai/gpt-nobrowser"},
            },
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["response"] == "no browser today"
    seen = system.fake.requests_for("gpt-nobrowser")[-1].messages[-1]
    assert seen["role"] == "tool"
    assert "browser-worker" in seen["content"]


# --- the agent's browser tools ------------------------------------------------------------------


def _last_tool_result(request: RecordedRequest) -> str | None:
    messages = request.messages
    if messages and messages[-1].get("role") == "tool":
        return str(messages[-1].get("content"))
    return None


def _browsing_agent(page_url: str) -> Any:
    """The scripted model: open the page, read it, click the button by the ref the snapshot
    gave it, read it again, and answer with what the status line says now."""

    def reply(request: RecordedRequest) -> Reply:
        seen = _last_tool_result(request)
        if seen is None:
            return Reply(tool_calls=[ToolCall("browser_navigate", {"url": page_url})])
        if seen.startswith("Opened the page") or seen.startswith("Done."):
            return Reply(tool_calls=[ToolCall("browser_snapshot", {})])
        if BEFORE in seen:
            found = BUTTON_REF.search(seen)
            if found is None:
                return Reply(text=f"no button ref in the snapshot: {seen[:500]}")
            return Reply(tool_calls=[ToolCall("browser_act", {"action": "click", "ref": found[1]})])
        if AFTER in seen:
            return Reply(text=f"The page now says: {AFTER}")
        return Reply(text=f"unexpected tool result: {seen[:500]}")

    return reply


async def test_an_agent_browses_reads_and_clicks_by_ref(
    browsing: System, page_url: str, endpoints: Endpoints, db: asyncpg.Connection
) -> None:
    browsing.fake.set_default("gpt-browser", _browsing_agent(page_url))
    async with aiohttp.ClientSession(headers=bearer(browsing.token)) as http:
        async with http.post(
            f"{browsing.url}/v1/agent/run",
            json={
                "message": "What does the test page say after you press its button?",
                "sessionKey": "agent:main:browsing",
                "options": {"model": "openai/gpt-browser"},
            },
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
    assert answer["response"] == f"The page now says: {AFTER}"

    # The model was offered the safe browser tools; browser_evaluate is dangerous: not offered.
    offered = {
        t["function"]["name"] for t in browsing.fake.requests_for("gpt-browser")[0].body["tools"]
    }
    assert {"browser_navigate", "browser_snapshot", "browser_screenshot", "browser_act"} <= offered
    assert "browser_evaluate" not in offered

    redis = Redis.from_url(endpoints.redis_url)
    try:
        events = list(
            await read_run_events(redis, Names(browsing.namespace), uuid.UUID(answer["runId"]))
        )
    finally:
        await redis.aclose()
    calls = [e.call.name for e in events if isinstance(e, ToolCallEvent)]
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert calls == ["browser_navigate", "browser_snapshot", "browser_act", "browser_snapshot"]
    assert [r.name for r in results] == calls
    assert not any(r.is_error for r in results), [r.result for r in results]
    assert BEFORE in str(results[1].result) and AFTER in str(results[3].result)

    # The transcript holds each call and its result.
    rows = await db.fetch(
        "SELECT role, tool_calls FROM messages WHERE run_id = $1::uuid ORDER BY run_step",
        answer["runId"],
    )
    stored = [json.loads(r["tool_calls"])[0]["name"] for r in rows if r["tool_calls"]]
    assert stored == calls
    assert [r["role"] for r in rows].count("tool") == len(calls)


@pytest.fixture
async def evaluator(endpoints: Endpoints) -> AsyncIterator[str]:
    """An agent whose tool policy allows the dangerous browser_evaluate, by name."""
    key = f"browser-eval-{uuid.uuid4().hex[:12]}"
    async with asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2) as pool:
        policy = {"allow": ["browser_evaluate"]}
        await agents.create_agent(pool, DEFAULT_TENANT, key, "Evaluator", tool_policy=policy)
        try:
            yield key
        finally:
            await pool.execute(
                "DELETE FROM agents WHERE tenant_id = $1 AND key = $2", DEFAULT_TENANT, key
            )


async def test_an_agent_allowed_browser_evaluate_runs_it_and_screenshots_as_media(
    browsing: System, page_url: str, evaluator: str
) -> None:
    browsing.fake.script(
        "gpt-evaluate",
        Reply(tool_calls=[ToolCall("browser_navigate", {"url": page_url})]),
        Reply(tool_calls=[ToolCall("browser_screenshot", {"fullPage": True})]),
        Reply(tool_calls=[ToolCall("browser_evaluate", {"expression": STATUS_JS})]),
        Reply(text="evaluated"),
    )
    async with aiohttp.ClientSession(headers=bearer(browsing.token)) as http:
        async with http.post(
            f"{browsing.url}/v1/agent/run",
            json={
                "message": "read the status line",
                "agentId": evaluator,
                "options": {"model": "openai/gpt-evaluate"},
            },
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["response"] == "evaluated"
        requests = browsing.fake.requests_for("gpt-evaluate")
        assert "browser_evaluate" in {t["function"]["name"] for t in requests[0].body["tools"]}
        shot, evaluated = (_last_tool_result(r) for r in requests[2:4])
        assert evaluated == json.dumps(BEFORE)
        # The screenshot tool names the media it stored: the gateway serves it.
        found = re.search(r"media ([0-9a-f-]{36})", shot or "")
        assert found is not None, shot
        async with http.get(f"{browsing.url}/v1/media/{found[1]}") as r:
            assert r.status == 200
            assert (await r.read()).startswith(PNG_MAGIC)


# --- the shared client ---------------------------------------------------------------------------


async def test_the_browser_client_names_silence_strange_answers_and_errors(
    endpoints: Endpoints, namespace: str
) -> None:
    """What a caller hears when a subscriber on the browser subject stays silent, answers in
    a shape the client does not know, answers another kind of result, or refuses."""
    names = Names(namespace)
    nc = await bus.connect(endpoints.nats_url, name="test-browser-client")
    answers: list[bytes] = []

    async def respond(msg: Msg) -> None:
        if answers:
            await msg.respond(answers.pop(0))
        # else: silence

    try:
        await nc.subscribe(names.browser_subject, "browser-workers", cb=respond)
        await bus.settle(nc)
        with pytest.raises(Timeout) as silent:
            await call_browser(nc, names, StatusCall(), timeout_s=0.5, expect=StatusResult)
        assert silent.value.info.details["service"] == "browser-worker"

        page = PageInfo(url="about:blank", title="")
        refused = NotFound("no element has the ref e7", param="ref")
        answers.extend(
            [
                b'{"result": {"kind": "mystery"}}',
                BrowserReply(result=page).model_dump_json().encode(),
                BrowserReply(error=refused.info).model_dump_json().encode(),
            ]
        )
        for _ in range(2):
            with pytest.raises(ServiceUnavailable, match="shape"):
                await call_browser(nc, names, StatusCall(), timeout_s=30, expect=StatusResult)
        with pytest.raises(ClawbusError) as carried:
            await call_browser(nc, names, StatusCall(), timeout_s=30, expect=StatusResult)
        assert carried.value.info == refused.info
    finally:
        await nc.drain()
