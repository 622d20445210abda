"""The operations on a target's page: navigate, snapshot, screenshot, act, evaluate.

Each takes the page (its target's lock held by the caller) and the call, and answers the
call's result model or raises the error as data:

    DestinationRefused  403  the URL, a redirect hop or the address is refused by the policy
    InvalidRequest      400  a selector, key or expression the page rejects; a missing field
    NotFound            404  no element has the ref (the page changed: take a new snapshot)
    PayloadTooLarge     413  a screenshot or evaluation result over the worker's limit
    Timeout             504  the page did not do it within the time limit
    UpstreamError       502  the site could not be reached (DNS, refused, TLS...)
    ServiceUnavailable  503  the page or the browser went away meanwhile (retryable)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clawbus_protocol.browser import (
    ActCall,
    EvaluateCall,
    EvaluateResult,
    NavigateCall,
    PageInfo,
    ScreenshotCall,
    SnapshotCall,
    SnapshotResult,
)
from clawbus_protocol.errors import (
    ClawbusError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Timeout,
    UpstreamError,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Frame, Page, Request
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from clawbus_browser.guard import NetGuard
from clawbus_browser.outline import REF_ATTRIBUTE, SNAPSHOT_JS

_REF_SELECTOR = f"[{REF_ATTRIBUTE}=%s]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _closed(exc: PlaywrightError) -> bool:
    return "has been closed" in str(exc) or "Target closed" in str(exc)


@contextlib.contextmanager
def page_errors(what: str) -> Iterator[None]:
    """Playwright's errors as ours: a timeout, a page that went away, or bad input."""
    try:
        yield
    except PlaywrightTimeoutError as exc:
        raise Timeout(f"{what} did not finish in time: {_first_line(exc)}") from None
    except PlaywrightError as exc:
        if _closed(exc):
            raise ServiceUnavailable(
                f"{what}: the page closed meanwhile (the browser may have restarted); retry"
            ) from None
        raise InvalidRequest(f"{what} failed: {_first_line(exc)}") from None


async def page_info(page: Page, status: int | None = None) -> PageInfo:
    with page_errors("reading the page title"):
        title = await page.title()
    return PageInfo(url=page.url, title=title, status=status)


# --- navigate ---------------------------------------------------------------------------------


async def navigate(page: Page, call: NavigateCall, guard: NetGuard, timeout_s: float) -> PageInfo:
    url = call.url
    if url != "about:blank":
        try:
            await guard.check(url)
        except socket.gaierror:
            raise UpstreamError(
                f"navigating to {url} failed: its host name does not resolve",
                retryable=False,
                url=url,
            ) from None
    failed: list[Request] = []
    error_page = asyncio.Event()

    def on_failed(request: Request) -> None:
        with contextlib.suppress(PlaywrightError):
            if request.is_navigation_request() and request.frame == page.main_frame:
                failed.append(request)

    def on_navigated(frame: Frame) -> None:
        if frame == page.main_frame and frame.url.startswith("chrome-error:"):
            error_page.set()

    page.on("requestfailed", on_failed)
    page.on("framenavigated", on_navigated)
    try:
        response = await page.goto(url, wait_until=call.wait_until, timeout=timeout_s * 1000)
    except PlaywrightTimeoutError:
        raise Timeout(
            f"{url} did not reach {call.wait_until!r} within {timeout_s:g}s", url=url
        ) from None
    except PlaywrightError as exc:
        # Chromium shows its error page a moment after the navigation failed; a navigation
        # started before it has would be interrupted by it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await error_page.wait()
        raise await _navigation_error(url, exc, failed, guard) from None
    finally:
        page.remove_listener("requestfailed", on_failed)
        page.remove_listener("framenavigated", on_navigated)
    return await page_info(page, response.status if response is not None else None)


async def _navigation_error(
    url: str, exc: PlaywrightError, failed: list[Request], guard: NetGuard
) -> ClawbusError:
    """Why a navigation failed: a refused hop (redirects included) names its address."""
    for request in reversed(failed):
        refusal = await guard.refusal_for(request.url)
        if refusal is not None:
            return refusal
    if _closed(exc):
        return ServiceUnavailable(
            "the page closed during the navigation (the browser may have restarted); retry"
        )
    reason = failed[-1].failure if failed and failed[-1].failure else _first_line(exc)
    return UpstreamError(f"navigating to {url} failed: {reason}", retryable=False, url=url)


# --- snapshot ---------------------------------------------------------------------------------


async def snapshot(page: Page, call: SnapshotCall, max_chars: int) -> SnapshotResult:
    limit = min(call.max_chars, max_chars)
    with page_errors("snapshot"):
        found: dict[str, Any] = await page.evaluate(
            SNAPSHOT_JS, {"maxText": limit, "maxOutline": limit, "refAttribute": REF_ATTRIBUTE}
        )
    return SnapshotResult(
        url=page.url,
        title=str(found["title"]),
        text=str(found["text"]),
        outline=str(found["outline"]),
        truncated=bool(found["textTruncated"] or found["outlineTruncated"]),
    )


# --- screenshot -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    content: bytes
    mime_type: str
    width: int | None
    height: int | None


async def screenshot(page: Page, call: ScreenshotCall, max_bytes: int) -> Image:
    if call.quality is not None and call.format != "jpeg":
        raise InvalidRequest("quality applies to jpeg screenshots only", param="quality")
    quality = call.quality if call.format == "jpeg" else None
    if call.selector is None:
        with page_errors("screenshot"):
            content = await page.screenshot(
                type=call.format, quality=quality, full_page=call.full_page
            )
    else:
        # A bare ref from a snapshot (`e12`) is accepted as the element's selector.
        selector = _ref_selector(call.selector) if _is_ref(call.selector) else call.selector
        element = page.locator(selector).first
        with page_errors(f"screenshot of {call.selector!r}"):
            if await element.count() == 0:
                raise NotFound(
                    f"no element on {page.url} matches {call.selector!r}", param="selector"
                )
            content = await element.screenshot(type=call.format, quality=quality)
    if len(content) > max_bytes:
        raise PayloadTooLarge(
            f"the screenshot is {len(content)} bytes, over this worker's limit of {max_bytes}: "
            "use jpeg with a lower quality, a selector, or full_page=false",
            size=len(content),
            limit=max_bytes,
        )
    width, height = image_size(content) or (None, None)
    return Image(content=content, mime_type=f"image/{call.format}", width=width, height=height)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame segment."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                data[i + 5 : i + 7], "big"
            )
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


# --- act --------------------------------------------------------------------------------------


def _is_ref(text: str) -> bool:
    return len(text) > 1 and text[0] == "e" and text[1:].isdigit()


def _ref_selector(ref: str) -> str:
    return _REF_SELECTOR % json.dumps(ref)


async def act(page: Page, call: ActCall) -> PageInfo:
    what = f"{call.action} on {call.ref}" if call.ref else call.action
    if call.action in ("click", "type", "select") and call.ref is None:
        raise InvalidRequest(f"{call.action} needs the ref of an element", param="ref")
    if call.action == "type" and call.text is None:
        raise InvalidRequest("type needs the text to type", param="text")
    if call.action == "press" and not call.key:
        raise InvalidRequest("press needs a key, e.g. 'Enter' or 'Control+A'", param="key")
    if call.action == "select" and not call.values:
        raise InvalidRequest("select needs the values (or labels) to select", param="values")
    with page_errors(what):
        element = None
        if call.ref is not None:
            element = page.locator(_ref_selector(call.ref))
            if await element.count() == 0:
                raise NotFound(
                    f"no element has the ref {call.ref} on {page.url}: refs belong to the "
                    "last snapshot and the page has changed since. Take a new snapshot and "
                    "use its refs",
                    param="ref",
                )
            element = element.first
        if call.action == "click" and element is not None:
            await element.click()
        elif call.action == "type" and element is not None and call.text is not None:
            await element.fill(call.text)
        elif call.action == "press" and call.key:
            await (
                element.press(call.key) if element is not None else page.keyboard.press(call.key)
            )
        elif call.action == "select" and element is not None and call.values:
            await element.select_option(call.values)
        elif call.action == "scroll":
            if element is not None:
                await element.scroll_into_view_if_needed()
            else:
                viewport = page.viewport_size
                delta = call.delta_y
                if delta is None:  # a screenful
                    delta = viewport["height"] if viewport is not None else 600
                await page.evaluate("dy => window.scrollBy(0, dy)", delta)
        # A click may have started a navigation: let it reach the document before answering.
        with contextlib.suppress(PlaywrightTimeoutError):
            await page.wait_for_load_state("domcontentloaded")
    return await page_info(page)


# --- evaluate ---------------------------------------------------------------------------------


async def evaluate(page: Page, call: EvaluateCall, max_chars: int) -> EvaluateResult:
    with page_errors("the expression"):
        value = await page.evaluate(call.expression)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"the expression's result ({type(value).__name__}) is not JSON; return plain "
            "values, arrays and objects",
            param="expression",
        ) from None
    if len(encoded) > max_chars:
        raise PayloadTooLarge(
            f"the expression's result is {len(encoded)} characters of JSON, over the limit of "
            f"{max_chars}; return less",
            size=len(encoded),
            limit=max_chars,
        )
    return EvaluateResult(value=value)
