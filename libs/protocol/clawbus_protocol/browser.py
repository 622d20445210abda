"""The browser service on the bus: what the gateway and the agent tools ask a browser-worker.

NATS request/reply on `Names.browser_subject`, one queue group shared by every
browser-worker replica: a `BrowserCall` in, a `BrowserReply` out (the result, or the error as
data). Pages live in a browser context per `BrowserTarget`: one per (tenant, session), or
per (tenant, profile) when a named profile is used, whose storage state persists in Postgres.
Contexts never share cookies or storage across targets, and never across tenants.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from clawbus_protocol.errors import ErrorInfo

MAX_URL_CHARS = 4096
PROFILE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
WaitUntil = Literal["load", "domcontentloaded", "networkidle", "commit"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrowserTarget(_Strict):
    """Whose page: the context is chosen by tenant and profile, else tenant and session."""

    tenant_id: UUID
    session_key: str = Field(min_length=1, max_length=256)
    profile: str | None = Field(default=None, pattern=PROFILE_PATTERN)


class StatusCall(_Strict):
    op: Literal["status"] = "status"


class NavigateCall(_Strict):
    op: Literal["navigate"] = "navigate"
    target: BrowserTarget
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    wait_until: WaitUntil = "load"
    timeout_ms: int | None = Field(default=None, ge=100, le=120_000)


class SnapshotCall(_Strict):
    op: Literal["snapshot"] = "snapshot"
    target: BrowserTarget
    max_chars: int = Field(default=20_000, ge=100, le=200_000)


class ScreenshotCall(_Strict):
    op: Literal["screenshot"] = "screenshot"
    target: BrowserTarget
    selector: str | None = Field(default=None, min_length=1, max_length=1000)
    full_page: bool = False
    format: Literal["png", "jpeg"] = "png"
    quality: int | None = Field(default=None, ge=1, le=100)  # jpeg only


class ActCall(_Strict):
    """Act on an element by the ref a snapshot gave it (`e12`)."""

    op: Literal["act"] = "act"
    target: BrowserTarget
    action: Literal["click", "type", "press", "select", "scroll"]
    ref: str | None = Field(default=None, pattern=r"^e[0-9]{1,6}$")  # None: the page (scroll)
    text: str | None = Field(default=None, max_length=10_000)  # type
    key: str | None = Field(default=None, max_length=50)  # press: "Enter", "Control+A"
    values: list[str] | None = Field(default=None, max_length=100)  # select
    delta_y: int | None = Field(default=None, ge=-100_000, le=100_000)  # scroll


class EvaluateCall(_Strict):
    """Run JavaScript in the page; the caller has checked the agent's policy allows it."""

    op: Literal["evaluate"] = "evaluate"
    target: BrowserTarget
    expression: str = Field(min_length=1, max_length=100_000)


class CloseCall(_Strict):
    """Close the target's context (a profile's storage state is saved first)."""

    op: Literal["close"] = "close"
    target: BrowserTarget


BrowserOp = Annotated[
    StatusCall | NavigateCall | SnapshotCall | ScreenshotCall | ActCall | EvaluateCall | CloseCall,
    Field(discriminator="op"),
]


class BrowserCall(BaseModel):
    call: BrowserOp


# --- results ----------------------------------------------------------------------------------


class PageInfo(BaseModel):
    kind: Literal["page"] = "page"
    url: str
    title: str
    status: int | None = None  # the main document's HTTP status, after a navigation


class SnapshotResult(BaseModel):
    kind: Literal["snapshot"] = "snapshot"
    url: str
    title: str
    text: str  # the page's readable text
    # An accessibility-tree outline, one element per line, actionable ones with a ref:
    #   - button "Save" [ref=e12]
    outline: str
    truncated: bool = False


class ScreenshotResult(BaseModel):
    kind: Literal["screenshot"] = "screenshot"
    media_id: UUID  # stored as media (Postgres); the gateway serves it at /v1/media/{id}
    mime_type: str
    size: int
    width: int | None = None
    height: int | None = None


class EvaluateResult(BaseModel):
    kind: Literal["evaluate"] = "evaluate"
    value: Any


class StatusResult(BaseModel):
    kind: Literal["status"] = "status"
    worker_id: str
    connected: bool  # the browser process is up
    browser_version: str | None
    contexts: int
    max_contexts: int


BrowserResult = Annotated[
    PageInfo | SnapshotResult | ScreenshotResult | EvaluateResult | StatusResult,
    Field(discriminator="kind"),
]


class BrowserReply(BaseModel):
    result: BrowserResult | None = None
    error: ErrorInfo | None = None
