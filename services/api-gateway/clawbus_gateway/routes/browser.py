"""000's browser control: GET /v1/browser/status, POST /v1/browser/navigate and
POST /v1/browser/screenshot (and the WS method `browser.screenshot`, routes/ws.py).

Thin clients of the browser service (clawbus_core.browser_client): each route checks the
`browser` permission, reads its body, and asks any browser-worker over NATS. The page is the
caller's tenant's context for the body's `profile` ("default" when left out, as 000's
examples use it), so /navigate and /screenshot see the same page. A screenshot is stored as
media of the tenant by the worker and served by GET /v1/media/{id} (routes/media.py).

No browser-worker running: 503 naming it in `details.service`; a worker's refusal (a blocked
URL, an unknown selector) comes back as its own error.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from clawbus_core.browser_client import DEFAULT_TIMEOUT_S, call_browser
from clawbus_core.runservice import RunService
from clawbus_protocol.browser import (
    BrowserOp,
    BrowserTarget,
    NavigateCall,
    PageInfo,
    ScreenshotCall,
    ScreenshotResult,
    StatusCall,
    StatusResult,
)
from clawbus_protocol.openclaw_browser import (
    BrowserPage,
    BrowserScreenshot,
    BrowserStatus,
    NavigateRequest,
    ScreenshotRequest,
    media_url,
)
from clawbus_protocol.openclaw_http import MAX_KEY_CHARS
from pydantic import BaseModel

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import Principal, require

__all__ = ["routes", "screenshot", "target"]

routes = web.RouteTableDef()

R = TypeVar("R", bound=BaseModel)


def target(who: Principal, profile: str) -> BrowserTarget:
    """The caller's tenant's context for `profile`. The worker picks the context by profile;
    the session key names who asked, for the worker's logs."""
    session = f"api:browser:{who.name or who.kind}"[:MAX_KEY_CHARS]
    return BrowserTarget(tenant_id=who.tenant_id, session_key=session, profile=profile)


async def _ask(runs: RunService, op: BrowserOp, expect: type[R]) -> R:
    return await call_browser(
        runs.nc, runs.names, op, timeout_s=min(DEFAULT_TIMEOUT_S, runs.timeout_s), expect=expect
    )


def _json(body: BaseModel) -> web.Response:
    return web.json_response(text=body.model_dump_json())


async def screenshot(
    runs: RunService, who: Principal, body: ScreenshotRequest
) -> BrowserScreenshot:
    """A screenshot of the profile's page, stored as the tenant's media (HTTP and WS)."""
    call = ScreenshotCall(
        target=target(who, body.profile),
        selector=body.selector,
        full_page=body.full_page,
        format=body.format,
        quality=body.quality,
    )
    shot = await _ask(runs, call, ScreenshotResult)
    return BrowserScreenshot(
        media_id=shot.media_id,
        url=media_url(shot.media_id),
        mime_type=shot.mime_type,
        width=shot.width,
        height=shot.height,
        size=shot.size,
    )


@routes.get("/v1/browser/status")
async def status(request: web.Request) -> web.Response:
    require(request, "browser")
    found = await _ask(request.app[RUNS], StatusCall(), StatusResult)
    return _json(
        BrowserStatus(
            status="ok" if found.connected else "degraded",
            worker_id=found.worker_id,
            running=found.connected,
            browser_version=found.browser_version,
            contexts=found.contexts,
            max_contexts=found.max_contexts,
        )
    )


@routes.post("/v1/browser/navigate")
async def navigate(request: web.Request) -> web.Response:
    who = require(request, "browser")
    body = await read_model(request, NavigateRequest)
    call = NavigateCall(
        target=target(who, body.profile),
        url=body.url,
        wait_until=body.wait_until,
        timeout_ms=body.timeout_ms,
    )
    page = await _ask(request.app[RUNS], call, PageInfo)
    return _json(
        BrowserPage(url=page.url, title=page.title, status=page.status, profile=body.profile)
    )


@routes.post("/v1/browser/screenshot")
async def take_screenshot(request: web.Request) -> web.Response:
    who = require(request, "browser")
    body = await read_model(request, ScreenshotRequest)
    return _json(await screenshot(request.app[RUNS], who, body))
