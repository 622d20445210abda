"""The browser tools: `browser_navigate`, `browser_snapshot`, `browser_screenshot`,
`browser_act` and (dangerous: only for agents whose policy allows it by name)
`browser_evaluate`.

Each is a thin client of the browser service (clawbus_core.browser_client): it turns the
model's arguments into one `clawbus_protocol.browser` call and the worker's result into text.
The page is the run's: a browser context per (tenant, session), so a run's navigate, snapshot
and act see one page and no other session's cookies; a direct invocation outside any session
uses `api:tools`. The worker guards every URL (private and internal addresses are refused).

What the model can act on (a refused URL, an unknown ref, no browser-worker running) comes
back as a ToolError: the run goes on and the model reads why. The NATS connection and names
come from `ToolContext.extras` (`nats`, `names`), which the agent-runner fills.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from clawbus_core.browser_client import DEFAULT_TIMEOUT_S, call_browser
from clawbus_protocol.browser import (
    ActCall,
    BrowserOp,
    BrowserTarget,
    EvaluateCall,
    EvaluateResult,
    NavigateCall,
    PageInfo,
    ScreenshotCall,
    ScreenshotResult,
    SnapshotCall,
    SnapshotResult,
)
from clawbus_protocol.errors import ClawbusError
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ValidationError

from clawbus_runner.tools.base import MAX_RESULT_CHARS, Tool, ToolContext, ToolError, ToolSpec

__all__ = ["NAMES_EXTRA", "NATS_EXTRA", "browser_tools"]

# The keys of ToolContext.extras these tools read.
NATS_EXTRA = "nats"
NAMES_EXTRA = "names"
# The session a tool invoked outside any run browses in.
DIRECT_SESSION = "api:tools"
DEFAULT_SNAPSHOT_CHARS = 20_000
# The outline and the text each get up to maxChars: both must fit in one tool result.
MAX_SNAPSHOT_CHARS = MAX_RESULT_CHARS // 2 - 1000

R = TypeVar("R", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)

_WAIT_UNTIL = {
    "type": "string",
    "enum": ["load", "domcontentloaded", "networkidle", "commit"],
    "description": "When the navigation counts as done (default load).",
}
_NEXT = "Read the page and its element refs with browser_snapshot."


def _call(model: type[M], args: Mapping[str, Any], fields: Mapping[str, str], **given: Any) -> M:
    """`model` built from the tool's `args` (renamed by `fields`, tool name -> call field)
    and `given`; a wrong or unknown argument is a ToolError naming it as the model wrote it."""
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise ToolError(f"unknown argument(s) {', '.join(unknown)}; expected: {', '.join(fields)}")
    names = {field: arg for arg, field in fields.items()}
    try:
        return model.model_validate({fields[name]: value for name, value in args.items()} | given)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "(arguments)"
        raise ToolError(f"invalid argument {names.get(field, field)}: {first['msg']}") from None


class _BrowserTool(ABC, Generic[R]):
    """One browser call per use: `op` builds it, `render` says what came back."""

    spec: ToolSpec
    expect: type[R]

    @abstractmethod
    def op(self, target: BrowserTarget, args: Mapping[str, Any]) -> BrowserOp: ...

    @abstractmethod
    def render(self, result: R) -> str: ...

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        nc, names = ctx.extras.get(NATS_EXTRA), ctx.extras.get(NAMES_EXTRA)
        if not isinstance(nc, NatsClient) or not isinstance(names, Names):
            raise ToolError("the browser is not available in this agent-runner")
        target = BrowserTarget(
            tenant_id=ctx.tenant_id, session_key=ctx.session_key or DIRECT_SESSION
        )
        op = self.op(target, args)
        try:
            result = await call_browser(
                nc, names, op, timeout_s=DEFAULT_TIMEOUT_S, expect=self.expect
            )
        except ClawbusError as exc:  # refused, unknown ref, no worker, timed out
            raise ToolError(f"{self.spec.name}: {exc.info.message}") from None
        return self.render(result)


def _page(page: PageInfo) -> str:
    status = f" (HTTP {page.status})" if page.status is not None else ""
    return f"URL: {page.url}{status}\nTitle: {page.title}"


class NavigateTool(_BrowserTool[PageInfo]):
    spec = ToolSpec(
        name="browser_navigate",
        description=(
            "Open a URL in this session's browser page (a real Chromium; cookies persist for "
            "the session). Private and internal network addresses are refused. " + _NEXT
        ),
        parameters={
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The http or https URL to open."},
                "waitUntil": _WAIT_UNTIL,
            },
            "required": ["url"],
            "additionalProperties": False,
        },
    )
    expect = PageInfo

    def op(self, target: BrowserTarget, args: Mapping[str, Any]) -> BrowserOp:
        return _call(NavigateCall, args, {"url": "url", "waitUntil": "wait_until"}, target=target)

    def render(self, result: PageInfo) -> str:
        return f"Opened the page.\n{_page(result)}\n{_NEXT}"


class SnapshotTool(_BrowserTool[SnapshotResult]):
    spec = ToolSpec(
        name="browser_snapshot",
        description=(
            "Read this session's browser page: its URL, title, an outline of its elements "
            "(actionable ones carry a ref such as e12, for browser_act) and its readable text."
        ),
        parameters={
            "type": "object",
            "properties": {
                "maxChars": {
                    "type": "integer",
                    "minimum": 100,
                    "maximum": MAX_SNAPSHOT_CHARS,
                    "description": (
                        f"Most characters of outline, of text (default {DEFAULT_SNAPSHOT_CHARS})"
                    ),
                }
            },
            "additionalProperties": False,
        },
    )
    expect = SnapshotResult

    def op(self, target: BrowserTarget, args: Mapping[str, Any]) -> BrowserOp:
        limit = args.get("maxChars", DEFAULT_SNAPSHOT_CHARS)
        if isinstance(limit, int) and limit > MAX_SNAPSHOT_CHARS:
            raise ToolError(f"invalid argument maxChars: at most {MAX_SNAPSHOT_CHARS}")
        given = {**args, "maxChars": limit}
        return _call(SnapshotCall, given, {"maxChars": "max_chars"}, target=target)

    def render(self, result: SnapshotResult) -> str:
        note = "\n[the page was longer: truncated]" if result.truncated else ""
        return (
            f"URL: {result.url}\nTitle: {result.title}\n\n"
            f"Elements (act on one with browser_act and its ref):\n{result.outline}\n\n"
            f"Text:\n{result.text}{note}"
        )


class ScreenshotTool(_BrowserTool[ScreenshotResult]):
    spec = ToolSpec(
        name="browser_screenshot",
        description=(
            "Take a screenshot of this session's browser page (or of the element a CSS "
            "selector names); it is stored as media and its id returned."
        ),
        parameters={
            "type": "object",
            "properties": {
                "selector": {
                    "type": "string",
                    "description": "A CSS selector (default: the page).",
                },
                "fullPage": {
                    "type": "boolean",
                    "description": "The whole scrollable page, not only the viewport.",
                },
            },
            "additionalProperties": False,
        },
    )
    expect = ScreenshotResult

    def op(self, target: BrowserTarget, args: Mapping[str, Any]) -> BrowserOp:
        fields = {"selector": "selector", "fullPage": "full_page"}
        return _call(ScreenshotCall, args, fields, target=target)

    def render(self, result: ScreenshotResult) -> str:
        size = f"{result.width}x{result.height} px, " if result.width and result.height else ""
        return (
            f"Screenshot stored as media {result.media_id} ({result.mime_type}, {size}"
            f"{result.size} bytes), served at /v1/media/{result.media_id}."
        )


class ActTool(_BrowserTool[PageInfo]):
    spec = ToolSpec(
        name="browser_act",
        description=(
            "Act on an element of this session's browser page by the ref browser_snapshot "
            "gave it: click it, type text into it, press a key, select options, or scroll "
            "(without a ref: the page). Snapshot again to see what changed."
        ),
        parameters={
            "type": "object",
            "properties": {
                "action": {
                    "type": "string",
                    "enum": ["click", "type", "press", "select", "scroll"],
                },
                "ref": {
                    "type": "string",
                    "pattern": "^e[0-9]{1,6}$",
                    "description": "The element's ref from browser_snapshot, e.g. e12.",
                },
                "text": {"type": "string", "description": "For type: the text to enter."},
                "key": {"type": "string", "description": "For press: e.g. Enter, Control+A."},
                "values": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "For select: the option values or labels.",
                },
                "deltaY": {"type": "integer", "description": "For scroll: pixels, down > 0."},
            },
            "required": ["action"],
            "additionalProperties": False,
        },
    )
    expect = PageInfo

    def op(self, target: BrowserTarget, args: Mapping[str, Any]) -> BrowserOp:
        fields = {
            "action": "action",
            "ref": "ref",
            "text": "text",
            "key": "key",
            "values": "values",
            "deltaY": "delta_y",
        }
        return _call(ActCall, args, fields, target=target)

    def render(self, result: PageInfo) -> str:
        return f"Done.\n{_page(result)}\nSnapshot again to see what changed."


class EvaluateTool(_BrowserTool[EvaluateResult]):
    spec = ToolSpec(
        name="browser_evaluate",
        description=(
            "Run a JavaScript expression in this session's browser page and return its value "
            "as JSON (a promise is awaited)."
        ),
        parameters={
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. document.title"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        policy="dangerous",
    )
    expect = EvaluateResult

    def op(self, target: BrowserTarget, args: Mapping[str, Any]) -> BrowserOp:
        return _call(EvaluateCall, args, {"expression": "expression"}, target=target)

    def render(self, result: EvaluateResult) -> str:
        return json.dumps(result.value, ensure_ascii=False, default=str)


def browser_tools() -> list[Tool]:
    return [NavigateTool(), SnapshotTool(), ScreenshotTool(), ActTool(), EvaluateTool()]
