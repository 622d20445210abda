"""The browser's HTTP and WebSocket shapes (000): /v1/browser/status, /v1/browser/navigate,
/v1/browser/screenshot, the WS method `browser.screenshot`, and the media a screenshot is
served as (GET /v1/media/{id}).

camelCase on the wire, as 000 writes its bodies. These are the edge's shapes only: the gateway
turns them into `clawbus_protocol.browser` calls to a browser-worker and back.

A request names a browser `profile` (a context per tenant and profile, whose cookies and
storage persist): 000's examples pass "default", and leaving it out means the same, so a page
opened by /navigate is the one /screenshot sees.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from clawbus_protocol.browser import MAX_URL_CHARS, PROFILE_PATTERN, WaitUntil

DEFAULT_PROFILE = "default"


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


class _Request(_Wire):
    # A misspelt field is an error the client hears about, not a silently ignored option.
    model_config = ConfigDict(extra="forbid")


class NavigateRequest(_Request):
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    profile: str = Field(default=DEFAULT_PROFILE, pattern=PROFILE_PATTERN)
    wait_until: WaitUntil = "load"
    timeout_ms: int | None = Field(default=None, ge=100, le=60_000)


class ScreenshotRequest(_Request):
    selector: str | None = Field(default=None, min_length=1, max_length=1000)
    full_page: StrictBool = False
    profile: str = Field(default=DEFAULT_PROFILE, pattern=PROFILE_PATTERN)
    format: Literal["png", "jpeg"] = "png"
    quality: int | None = Field(default=None, ge=1, le=100)  # jpeg only


class BrowserStatus(_Wire):
    """What the browser-worker replica that answered says about itself."""

    status: Literal["ok", "degraded"]  # degraded: its browser process is down
    worker_id: str
    running: bool
    browser_version: str | None
    contexts: int  # open browser contexts on that replica
    max_contexts: int


class BrowserPage(_Wire):
    """The page a navigation ended on."""

    success: bool = True
    url: str
    title: str
    status: int | None  # the main document's HTTP status
    profile: str


class BrowserScreenshot(_Wire):
    """A screenshot, stored as media of the caller's tenant; `url` serves its bytes."""

    media_id: UUID
    url: str  # /v1/media/{mediaId}
    mime_type: str
    width: int | None
    height: int | None
    size: int  # bytes


def media_url(media_id: UUID) -> str:
    return f"/v1/media/{media_id}"
