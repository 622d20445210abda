"""The gateway's OpenAPI 3.1 document, generated from one table of operations and the protocol
models; served at GET /docs/openapi.json, with Swagger UI at GET /docs (routes/docs.py).

`OPERATIONS` holds every HTTP route the gateway serves, one `Operation` each: method, path,
who may call it, the request model, the answers, the parameters. Documenting a route is one
entry: tests/unit/test_openapi.py fails for a route of the app without one, and for an entry
without a route. `EXCLUDED` names the routes deliberately left out, each with its reason.

Schemas are the pydantic models' own (`models_json_schema`): requests in validation mode,
answers in serialization mode, both by alias (000's and 002's models speak camelCase). A
server-sent event answer is described event by event, the way OpenAPI 3.1 tools read a
`text/event-stream` schema: an object {event, data, id} whose `data` is the JSON
(`contentMediaType` / `contentSchema`) of that event's model, or a literal such as `[DONE]`.

Errors: each operation lists the error statuses it can answer, derived from what it takes
(a body: 400 and 413; path parameters: 404; a permission: 403; ...) plus its own, all in the
envelope its path answers in (`envelope_for`): 002's under /api/v1, 001's under the rest of
/api, clawbus's everywhere else. Each operation names what it needs in `x-clawbus-permission`:
a permission, null for any valid credential, or "public".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from clawbus_protocol import __version__, channels, cron, logs
from clawbus_protocol import errors as clawbus_errors
from clawbus_protocol import openclaw_api as oc001
from clawbus_protocol import openclaw_browser as ocb
from clawbus_protocol import openclaw_http as oc000
from clawbus_protocol import openclaw_v1 as oc002
from clawbus_protocol.config import ConfigDocument, ConfigOverrides
from clawbus_protocol.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Health,
    ModelList,
)
from clawbus_protocol.responses import (
    ContentPartEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    OutputItemEvent,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    Response,
    ResponseLifecycleEvent,
    ResponsesRequest,
)
from clawbus_protocol.runs import AbortResult
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from clawbus_gateway.auth import PASSWORD_HEADER
from clawbus_gateway.principal import Permission

OPENAPI_VERSION = "3.1.0"
DOCUMENT_PATH = "/docs/openapi.json"
REF_TEMPLATE = "#/components/schemas/{model}"

# A permission the route requires, None for any valid credential, or "public" (no credential).
Access = Permission | Literal["public"] | None
Model = type[BaseModel]


def envelope_for(path: str) -> Model:
    """The error envelope the gateway answers in under `path` (its middlewares decide by path,
    and so does this)."""
    if path == "/api/v1" or path.startswith("/api/v1/"):
        return oc002.ErrorEnvelope
    if path == "/api" or path.startswith("/api/"):
        return oc001.ErrorEnvelope
    return clawbus_errors.ErrorEnvelope


# --- the table's vocabulary -------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str
    example: Any = None

    @property
    def required(self) -> bool:
        return self.where == "path"


@dataclass(frozen=True)
class Json:
    """An application/json answer: `model`'s JSON, or any JSON object when None."""

    model: Model | None = None


@dataclass(frozen=True)
class Frame:
    """One kind of server-sent event: its `event:` names ("message" when the frame sends
    none) and what its `data` is: a model's JSON, or a literal string."""

    data: tuple[Model | str, ...]
    events: tuple[str, ...] = ("message",)


@dataclass(frozen=True)
class Events:
    """A text/event-stream answer."""

    frames: tuple[Frame, ...]


@dataclass(frozen=True)
class Text:
    """A body that is not JSON (the Swagger UI page)."""

    media_type: str


Content = Json | Events | Text


@dataclass(frozen=True)
class Reply:
    description: str
    content: tuple[Content, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str  # OpenAPI style: /v1/sessions/{session_key}
    operation_id: str
    summary: str
    tag: str
    access: Access
    replies: dict[int, Reply]
    request: Model | None = None
    example: dict[str, Any] | None = None  # a minimal valid request body
    streamed: bool = False  # the body's `"stream": true` asks for server-sent events
    params: tuple[Param, ...] = ()
    # Error statuses beyond the ones derived from the rest of the entry (see error_statuses).
    errors: frozenset[int] = frozenset()
    rate_limited: bool = True
    description: str = ""

    @property
    def envelope(self) -> Model:
        return envelope_for(self.path)

    @property
    def public(self) -> bool:
        return self.access == "public"

    def error_statuses(self) -> list[int]:
        """Every error status this operation may answer, besides 5XX (which all may)."""
        statuses = set(self.errors)
        if not self.public:
            statuses.add(401)
            if self.access is not None:
                statuses.add(403)
        if self.request is not None or self.params:
            statuses.add(400)
        if self.request is not None:
            statuses.add(413)
        if any(p.where == "path" for p in self.params):
            statuses.add(404)
        if self.rate_limited:
            statuses.add(429)
        return sorted(statuses - self.replies.keys())


# --- shared parameters ------------------------------------------------------------------------

_KEY = {"type": "string", "minLength": 1, "maxLength": 256}
_AGENT = {"type": "string", "minLength": 1, "maxLength": 64}
SESSION_KEY = Param(
    "session_key", "path", _KEY, "The session's key, e.g. agent:main:main", "agent:main:main"
)
OFFSET = Param(
    "offset", "query", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, "Sessions skipped"
)


def limit(default: int, what: str) -> Param:
    schema = {"type": "integer", "minimum": 1, "maximum": 500, "default": default}
    return Param("limit", "query", schema, f"How many {what} (1-500, default {default})")


def _header(name: str, description: str, schema: dict[str, Any] = _KEY) -> Param:
    return Param(name, "header", schema, description)


RUN_HEADERS = (
    _header("Idempotency-Key", "A retried request with the same key gets the first one's run"),
    _header(
        "x-clawbus-queue-mode",
        "What the run does while its session is busy (default followup)",
        {"type": "string", "enum": ["followup", "collect", "interrupt"]},
    ),
)
OPENAI_TARGET = (
    _header("x-openclaw-session-key", "The session to run in (else one per `user`, else none)"),
    _header("x-openclaw-agent-id", "The agent, when `model` does not name one (default main)"),
    _header("x-goclaw-agent-id", "GoClaw's name for x-openclaw-agent-id"),
)
RESUME = (
    _header(
        "Last-Event-ID",
        "Resume a dropped stream after this event id (needs the run's id)",
        {"type": "string", "pattern": "^[0-9]+$"},
    ),
    _header("x-clawbus-run-id", "The run to resume (from the first answer)", {"type": "string"}),
    Param("runId", "query", {"type": "string"}, "The run to resume, as x-clawbus-run-id"),
)
CHANNEL_ID = Param("id", "path", {"type": "string"}, "The channel's name", "telegram")
_JOB_REF = {"type": "string", "minLength": 1, "maxLength": 100}
INSTANCE_ID = Param("id", "path", {"type": "string"}, "The channel's name or uuid", "telegram")
RUN_ID = Param(
    "run_id",
    "path",
    {"type": "string", "format": "uuid"},
    "The run's id (x-clawbus-run-id of its answer)",
    "00000000-0000-4000-8000-000000000000",
)


# --- the operations ---------------------------------------------------------------------------

OPENAI = "OpenAI"
OC000 = "OpenClaw 000"
OC001 = "OpenClaw 001"
OC002 = "OpenClaw 002"
GOCLAW = "GoClaw 004"
CLAWGO = "clawgo 003"
CLAWBUS = "clawbus"
DOCS = "Docs"

TAGS = {
    OPENAI: "The OpenAI-compatible surface: Chat Completions, Responses, models",
    OC000: "OpenClaw's gateway HTTP API: status, agent runs, sessions, channels, browser",
    OC001: "OpenClaw's second HTTP API, under /api, and the /ws control channel",
    OC002: "OpenClaw's REST API v1, under /api/v1",
    GOCLAW: "GoClaw's management API: channel instances",
    CLAWGO: "clawgo's gateway API (003): cron actions, logs",
    CLAWBUS: "clawbus's own routes: health, run control, channel pairing",
    DOCS: "This document and Swagger UI",
}

_CHUNKS = Frame((ChatCompletionChunk, clawbus_errors.ErrorEnvelope, "[DONE]"))
_RESPONSE_EVENTS = (
    Frame(
        (ResponseLifecycleEvent,),
        (
            "response.created",
            "response.in_progress",
            "response.completed",
            "response.failed",
            "response.incomplete",
        ),
    ),
    Frame((OutputItemEvent,), ("response.output_item.added", "response.output_item.done")),
    Frame((ContentPartEvent,), ("response.content_part.added", "response.content_part.done")),
    Frame((OutputTextDeltaEvent,), ("response.output_text.delta",)),
    Frame((OutputTextDoneEvent,), ("response.output_text.done",)),
    Frame((FunctionCallArgumentsDeltaEvent,), ("response.function_call_arguments.delta",)),
    Frame((FunctionCallArgumentsDoneEvent,), ("response.function_call_arguments.done",)),
)
_AGENT_EVENTS = (
    Frame((oc000.StreamDelta,), ("delta",)),
    Frame((oc000.StreamDone,), ("done",)),
    Frame((clawbus_errors.ErrorEnvelope,), ("error",)),
)
_CHAT_V1_EVENTS = (
    Frame((oc002.StreamStart,), ("start",)),
    Frame((oc002.StreamDelta,), ("delta",)),
    Frame((oc002.StreamDone,), ("done",)),
    Frame((oc002.ErrorEnvelope,), ("error",)),
)

_RUN_ERRORS = frozenset({404, 409})  # 404: no such agent, model or run; 409: run aborted
_REPLAYED = "; a retry (same Idempotency-Key) of a finished run gets its answer as JSON"
_NO_BROWSER = "No browser-worker is running (`details.service` names it); retry later"
_PROFILE = (
    "The page is the tenant's browser context for `profile` (default `default`), so "
    "/v1/browser/navigate and /v1/browser/screenshot see the same page."
)


def _control_channel(path: str, operation_id: str, tag: str) -> Operation:
    return Operation(
        "GET",
        path,
        operation_id,
        "The WebSocket control channel",
        tag,
        None,
        {101: Reply("Switching to the WebSocket protocol (frames: clawbus_protocol.ws)")},
        errors=frozenset({400, 403}),
        description=(
            "Connect with `Upgrade: websocket`; a plain GET is answered 400. Browsers may pass "
            "the credential as `?token=` or `?password=` (accepted on upgrades only); an "
            "Origin outside gateway_allowed_origins is refused 403."
        ),
    )


# Each entry: method, path, operationId, summary, tag, access, {status: reply}, then the rest
# by name. Laid out by hand, as a table.
# fmt: off
OPERATIONS: tuple[Operation, ...] = (
    # --- clawbus ---
    Operation(
        "GET", "/health", "getHealth", "Liveness", CLAWBUS, "public",
        {200: Reply("Up", (Json(Health),)),
         503: Reply("Degraded: the bus is down", (Json(Health),))},
        rate_limited=False,
    ),
    Operation(
        "POST", "/v1/runs/{run_id}/abort", "abortRun", "Abort a run", CLAWBUS, "chat",
        {200: Reply("What is stopping", (Json(AbortResult),))},
        params=(RUN_ID,),
    ),
    Operation(
        "POST", "/v1/sessions/{session_key}/abort", "abortSession",
        "Abort every unfinished run of a session", CLAWBUS, "chat",
        {200: Reply("What is stopping", (Json(AbortResult),))},
        params=(SESSION_KEY,),
    ),
    # --- OpenAI ---
    Operation(
        "GET", "/v1/models", "listModels", "The models this gateway can run", OPENAI, None,
        {200: Reply("The model catalog", (Json(ModelList),))},
    ),
    Operation(
        "POST", "/v1/chat/completions", "createChatCompletion", "Chat Completions", OPENAI, "chat",
        {200: Reply(
            "The completion; with `stream: true` its chunks as server-sent events, then `[DONE]`"
            + _REPLAYED,
            (Json(ChatCompletion), Events((_CHUNKS,))),
        )},
        request=ChatCompletionRequest,
        example={"model": "clawbus/echo", "messages": [{"role": "user", "content": "hello"}]},
        streamed=True,
        params=(*OPENAI_TARGET, *RUN_HEADERS, *RESUME),
        errors=_RUN_ERRORS,
    ),
    Operation(
        "POST", "/v1/responses", "createResponse", "Responses", OPENAI, "chat",
        {200: Reply(
            "The response; with `stream: true` the Responses stream events" + _REPLAYED,
            (Json(Response), Events(_RESPONSE_EVENTS)),
        )},
        request=ResponsesRequest,
        example={"model": "clawbus/echo", "input": "hello"},
        streamed=True,
        params=(*OPENAI_TARGET, *RUN_HEADERS, *RESUME),
        errors=_RUN_ERRORS,
    ),
    # --- OpenClaw 000 ---
    _control_channel("/", "openControlChannel", OC000),
    Operation(
        "GET", "/status", "getStatus", "Gateway status", OC000, None,
        {200: Reply("Up", (Json(oc000.GatewayStatus),)),
         503: Reply("Degraded: the bus is down", (Json(oc000.GatewayStatus),))},
    ),
    Operation(
        "POST", "/v1/agent/run", "runAgent", "Run an agent turn", OC000, "chat",
        {200: Reply("The agent's answer", (Json(oc000.AgentRunResult),))},
        request=oc000.AgentRunRequest, example={"message": "hello"},
        params=RUN_HEADERS, errors=_RUN_ERRORS,
    ),
    Operation(
        "POST", "/v1/agent/run/stream", "runAgentStream", "Run an agent turn, streamed", OC000,
        "chat",
        {200: Reply(
            "`delta` events, then `done` (or `error`)" + _REPLAYED,
            (Events(_AGENT_EVENTS), Json(oc000.AgentRunResult)),
        )},
        request=oc000.AgentRunRequest, example={"message": "hello"},
        params=(*RUN_HEADERS, *RESUME), errors=_RUN_ERRORS,
    ),
    Operation(
        "GET", "/v1/sessions", "listSessions", "List sessions", OC000, "sessions",
        {200: Reply("The caller's tenant's sessions", (Json(oc000.SessionList),))},
        params=(
            limit(100, "sessions"), OFFSET, Param("agentId", "query", _KEY, "Only this agent's"),
        ),
    ),
    Operation(
        "GET", "/v1/sessions/{session_key}", "getSession", "A session and its last messages",
        OC000, "sessions",
        {200: Reply("The session, messages oldest first", (Json(oc000.SessionDetail),))},
        params=(SESSION_KEY, limit(100, "messages")),
    ),
    Operation(
        "DELETE", "/v1/sessions/{session_key}", "deleteSession", "Delete a session", OC000,
        "sessions",
        {204: Reply("Deleted")},
        params=(SESSION_KEY,),
        errors=frozenset({409}),  # a run of it is queued or running: abort it first
    ),
    Operation(
        "GET", "/v1/channels", "listChannels", "List channels", OC000, "channels",
        {200: Reply("The tenant's channels", (Json(channels.ChannelList),))},
    ),
    Operation(
        "POST", "/v1/channels/{id}/enable", "enableChannel", "Enable a channel", OC000,
        "channels",
        {200: Reply("The channel, enabled", (Json(channels.ChannelInfo),))},
        params=(CHANNEL_ID,),
    ),
    Operation(
        "POST", "/v1/channels/{id}/disable", "disableChannel", "Disable a channel", OC000,
        "channels",
        {200: Reply("The channel, disabled", (Json(channels.ChannelInfo),))},
        params=(CHANNEL_ID,),
    ),
    Operation(
        "GET", "/v1/channels/{id}/status", "getChannelStatus", "A channel's status", OC000,
        "channels",
        {200: Reply("The channel", (Json(channels.ChannelInfo),))},
        params=(CHANNEL_ID,),
    ),
    Operation(
        "GET", "/v1/browser/status", "getBrowserStatus", "Browser status", OC000, "browser",
        {200: Reply("The browser-worker that answered", (Json(ocb.BrowserStatus),)),
         503: Reply(_NO_BROWSER, (Json(),))},
    ),
    Operation(
        "POST", "/v1/browser/screenshot", "takeScreenshot", "Screenshot a page", OC000,
        "browser",
        {200: Reply("Stored as media of the tenant; `url` serves it",
                    (Json(ocb.BrowserScreenshot),)),
         503: Reply(_NO_BROWSER, (Json(),))},
        request=ocb.ScreenshotRequest, example={"selector": "body", "fullPage": True},
        errors=frozenset({404}),  # no element matches the selector
        description=_PROFILE,
    ),
    Operation(
        "POST", "/v1/browser/navigate", "navigateBrowser", "Open a page", OC000, "browser",
        {200: Reply("The page it ended on", (Json(ocb.BrowserPage),)),
         503: Reply(_NO_BROWSER, (Json(),))},
        request=ocb.NavigateRequest,
        example={"url": "https://example.com", "profile": "default"},
        description=_PROFILE,
    ),
    Operation(
        "GET", "/v1/media/{media_id}", "getMedia", "A stored media item's bytes", CLAWBUS, None,
        {200: Reply("The bytes, with the item's mime type", (Text("*/*"),))},
        params=(Param("media_id", "path", {"type": "string"},
                      "The media's id (a screenshot's `mediaId`)",
                      "00000000-0000-4000-8000-000000000000"),),
        description=(
            "Only the caller's tenant's media; any other id is 404. Served with "
            "`X-Content-Type-Options: nosniff` and a sandboxing Content-Security-Policy."
        ),
    ),
    # --- OpenClaw 001 ---
    _control_channel("/ws", "openWebSocket", OC001),
    Operation(
        "GET", "/api/status", "getApiStatus", "Gateway status", OC001, None,
        {200: Reply("Running", (Json(oc001.ApiStatus),)),
         503: Reply("Degraded: the bus is down", (Json(oc001.ApiStatus),))},
    ),
    Operation(
        "GET", "/api/sessions", "listApiSessions", "List sessions", OC001, "sessions",
        {200: Reply("The caller's tenant's sessions", (Json(oc001.ApiSessionList),))},
        params=(limit(100, "sessions"), OFFSET),
    ),
    Operation(
        "GET", "/api/sessions/{session_key}", "getApiSession", "A session and its last messages",
        OC001, "sessions",
        {200: Reply("The session, messages oldest first", (Json(oc001.ApiSessionDetail),))},
        params=(SESSION_KEY, limit(100, "messages")),
    ),
    Operation(
        "DELETE", "/api/sessions/{session_key}", "deleteApiSession", "Delete a session", OC001,
        "sessions",
        {204: Reply("Deleted")},
        params=(SESSION_KEY,), errors=frozenset({409}),
    ),
    Operation(
        "POST", "/api/messages", "sendMessage", "Send a user's message on a channel", OC001,
        "chat",
        {200: Reply("The agent's reply", (Json(oc001.MessageSent),))},
        request=oc001.SendMessage,
        example={"channel": "webchat", "userId": "alice", "message": "hello"},
        params=RUN_HEADERS, errors=_RUN_ERRORS,  # 404: an unknown agent
    ),
    Operation(
        "GET", "/api/channels", "listApiChannels", "List channels", OC001, "channels",
        {200: Reply("The tenant's channels", (Json(channels.ApiChannelList),))},
    ),
    Operation(
        "GET", "/api/tools", "listTools", "The tools an agent has", OC001, "tools",
        {200: Reply("The agent's tools", (Json(oc001.ApiToolList),))},
        params=(Param("agentId", "query", _AGENT, "The agent (default main)"),),
        errors=frozenset({404}),  # an unknown agent
    ),
    Operation(
        "POST", "/api/tools/{name}/invoke", "invokeTool", "Invoke a tool", OC001, "tools",
        {200: Reply("The tool's result", (Json(oc001.ToolInvoked),))},
        request=oc001.InvokeTool, example={"params": {}},
        params=(Param("name", "path", _AGENT, "The tool's name", "web_fetch"),),
    ),
    Operation(
        "GET", "/api/cron", "listCronJobs", "Cron jobs, or one with its latest firings", OC001,
        "cron",
        {200: Reply("`{ok, jobs}`; with `?id=`, `{ok, job, runs}` (003's single-job answer)",
                    (Json(cron.CronListing),))},
        params=(Param("id", "query", _JOB_REF, "One job (its id or name), with its firings"),),
        errors=frozenset({404}),  # ?id= names no job
        description="001's list and 003's list and single-job read, in 003's envelope.",
    ),
    Operation(
        "POST", "/api/cron", "cronAction",
        "Create, update, delete, enable, disable, get or list cron jobs", CLAWGO, "cron",
        {200: Reply("`{ok, result}`: the job; the jobs (list); or what was deleted",
                    (Json(cron.CronResult),))},
        request=cron.CronRequest,
        example={"action": "create", "name": "daily-check", "message": "Run daily check",
                 "expr": "0 9 * * *", "deliver": False, "channel": "", "to": ""},
        params=(Param("id", "query", _JOB_REF, "The job (id or name) when the body has none"),),
        errors=frozenset({404, 409}),  # no such job, agent or channel; the name is taken
        description=(
            "003's actions. The schedule is `expr` (+ `tz`), `everyMs` or `atMs` (legacy "
            "`kind`), flat or as `schedule`; delivery is `deliver` + `channel` + `to`, or "
            "`delivery` {mode none|channel|webhook}. The scheduler service fires the jobs."
        ),
    ),
    Operation(
        "POST", "/api/cron/{job_id}/run", "runCronJob", "Run a cron job now", OC001, "cron",
        {200: Reply("The firing, recorded; the scheduler's leader starts its run",
                    (Json(cron.CronRunStarted),))},
        params=(Param("job_id", "path", _JOB_REF, "The job's id or name", "daily-check"),),
    ),
    Operation(
        "GET", "/api/config", "getConfig", "The effective configuration", OC001, "config",
        {200: Reply("Secrets masked; `_meta` names what PATCH may change",
                    (Json(ConfigDocument),))},
    ),
    Operation(
        "PATCH", "/api/config", "patchConfig", "Change the runtime configuration", OC001,
        "config",
        {200: Reply("The new effective configuration", (Json(ConfigDocument),))},
        request=ConfigOverrides, example={"logging": {"level": "info"}},
    ),
    Operation(
        "GET", "/api/logs/recent", "getRecentLogs", "The latest log entries of every service",
        CLAWGO, "admin",
        {200: Reply("`{ok, logs}`: redacted entries, newest last", (Json(logs.LogList),))},
        params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                          "default": 10},
                      "How many entries (1-200, default 10)"),),
    ),
    Operation(
        "GET", "/api/logs/live", "tailLogs", "New log entries as they are written", CLAWGO,
        "admin",
        {101: Reply("Switching to the WebSocket protocol: one `{ok, type: \"log_entry\", "
                    "entry}` frame per new entry (clawbus_protocol.logs.LogEntryFrame)")},
        errors=frozenset({400}),
        description=(
            "Connect with `Upgrade: websocket`; a plain GET is answered 400. Browsers may pass "
            "the credential as `?token=` (accepted on upgrades only); an Origin outside "
            "gateway_allowed_origins is refused 403."
        ),
    ),
    # --- OpenClaw 002 ---
    Operation(
        "POST", "/api/v1/chat", "chatV1", "Send a message", OC002, "chat",
        {200: Reply(
            "The answer; with `stream: true` the events of /api/v1/chat/stream",
            (Json(oc002.ChatResponse), Events(_CHAT_V1_EVENTS)),
        )},
        request=oc002.ChatRequest, example={"message": "hello"}, streamed=True,
        params=(*RUN_HEADERS, *RESUME), errors=_RUN_ERRORS,
    ),
    Operation(
        "POST", "/api/v1/chat/stream", "chatStreamV1", "Send a message, streamed", OC002, "chat",
        {200: Reply(
            "`start`, `delta` events, then `done` (or `error`)" + _REPLAYED,
            (Events(_CHAT_V1_EVENTS), Json(oc002.ChatResponse)),
        )},
        request=oc002.ChatRequest, example={"message": "hello"},
        params=(*RUN_HEADERS, *RESUME), errors=_RUN_ERRORS,
    ),
    Operation(
        "GET", "/api/v1/sessions", "listSessionsV1", "List sessions", OC002, "sessions",
        {200: Reply("The caller's tenant's sessions", (Json(oc002.SessionList),))},
        params=(limit(100, "sessions"), OFFSET),
    ),
    Operation(
        "GET", "/api/v1/sessions/{session_key}/history", "sessionHistoryV1",
        "A session's last messages", OC002, "sessions",
        {200: Reply("Messages, oldest first", (Json(oc002.History),))},
        params=(SESSION_KEY, limit(50, "messages")),
    ),
    Operation(
        "DELETE", "/api/v1/sessions/{session_key}", "deleteSessionV1", "Delete a session",
        OC002, "sessions",
        {204: Reply("Deleted")},
        params=(SESSION_KEY,), errors=frozenset({409}),
    ),
    Operation(
        "GET", "/api/v1/status", "getStatusV1", "Gateway status", OC002, None,
        {200: Reply("Healthy", (Json(oc002.Status),)),
         503: Reply("Degraded: the bus is down", (Json(oc002.Status),))},
    ),
    # --- GoClaw 004 ---
    Operation(
        "GET", "/v1/channel-instances", "listChannelInstances", "List channel instances",
        GOCLAW, "channels",
        {200: Reply("The tenant's channels", (Json(channels.ChannelInstanceList),))},
    ),
    Operation(
        "POST", "/v1/channel-instances", "createChannelInstance", "Create a channel", GOCLAW,
        "channels",
        {201: Reply("Created", (Json(channels.ChannelInstance),))},
        request=channels.ChannelInstanceWrite,
        example={"name": "support-bot", "channel_type": "webhook", "enabled": False},
        errors=frozenset({404, 409}),  # an unknown agent; the name is taken
    ),
    Operation(
        "GET", "/v1/channel-instances/{id}", "getChannelInstance", "A channel", GOCLAW,
        "channels",
        {200: Reply("The channel (credentials are never returned)",
                    (Json(channels.ChannelInstance),))},
        params=(INSTANCE_ID,),
    ),
    Operation(
        "PUT", "/v1/channel-instances/{id}", "replaceChannelInstance", "Replace a channel",
        GOCLAW, "channels",
        {200: Reply("Replaced; omitted credentials are kept", (Json(channels.ChannelInstance),))},
        request=channels.ChannelInstanceWrite,
        example={"name": "telegram", "channel_type": "telegram"},
        params=(INSTANCE_ID,),
    ),
    Operation(
        "DELETE", "/v1/channel-instances/{id}", "deleteChannelInstance", "Delete a channel",
        GOCLAW, "channels",
        {204: Reply("Deleted")},
        params=(INSTANCE_ID,),
    ),
    # --- clawbus: pairing ---
    Operation(
        "GET", "/v1/channels/{id}/pairing", "listPairings", "Senders waiting for approval",
        CLAWBUS, "channels",
        {200: Reply("Pending pairing codes", (Json(channels.PairingList),))},
        params=(CHANNEL_ID,),
    ),
    Operation(
        "POST", "/v1/channels/{id}/pairing/approve", "approvePairing",
        "Approve a sender by its pairing code", CLAWBUS, "channels",
        {200: Reply("Approved", (Json(channels.PairingApproved),))},
        request=channels.PairingApprove, example={"code": "ABCD-1234"},
        params=(CHANNEL_ID,),
    ),
    Operation(
        "POST", "/v1/webhooks/{channel_id}", "receiveWebhook",
        "A webhook channel's inbound message, or a Telegram update in webhook mode",
        CLAWBUS, "public",
        {200: Reply("Accepted: stored, the reply follows on the channel",
                    (Json(channels.WebhookAccepted),)),
         503: Reply("No channel-bridge serves this channel now; retry later", (Json(),))},
        params=(Param("channel_id", "path", {"type": "string", "format": "uuid"},
                      "The channel's uuid", "00000000-0000-4000-8000-000000000000"),),
        errors=frozenset({401, 413}),
        description=(
            "No gateway credential: the request's own signature is checked by the bridge "
            "replica holding the channel. A webhook channel's body is "
            '`{"id", "from": {"id", "name"}, "chat": {"id", "type"}, "text"}` signed with '
            "`X-Clawbus-Timestamp` and `X-Clawbus-Signature: sha256=HMAC(secret, "
            "timestamp + '.' + body)`; Telegram's carries `X-Telegram-Bot-Api-Secret-Token`."
        ),
    ),
    # --- Docs ---
    Operation(
        "GET", DOCUMENT_PATH, "getOpenApiDocument", "This document", DOCS, "public",
        {200: Reply("The OpenAPI 3.1 document", (Json(),))},
    ),
    Operation(
        "GET", "/docs", "getSwaggerUi", "Swagger UI for this document", DOCS, "public",
        {200: Reply("The Swagger UI page", (Text("text/html"),))},
    ),
)
# fmt: on

# Routes of the app that the document leaves out: (method, path as aiohttp writes it, why).
EXCLUDED: tuple[tuple[str, str, str], ...] = (
    ("GET", "/docs/static", "Swagger UI's own files (scripts, styles), not an API"),
)


# --- building the document --------------------------------------------------------------------

_STATUS_TEXT = {
    101: "Switching Protocols",
    400: "Invalid request",
    401: "Missing or wrong credentials",
    403: "The credential lacks the permission",
    404: "Not found",
    409: "Conflict",
    413: "Request body over the limit",
    429: "Rate limited (Retry-After says when to retry)",
}
_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The gateway token, a configured API token or an API key (goclaw_...)",
    },
    "basic": {"type": "http", "scheme": "basic", "description": "Any user, the gateway password"},
    "password": {
        "type": "apiKey",
        "in": "header",
        "name": PASSWORD_HEADER,
        "description": "The gateway password",
    },
}
_ANY_CREDENTIAL: list[dict[str, list[str]]] = [{name: []} for name in _SECURITY_SCHEMES]


class _Names(GenerateJsonSchema):
    """Component names: the model's name, or `module.Name` (e.g. openclaw_v1.StreamDelta) when
    two protocol modules have a model of that name."""

    def normalize_name(self, name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9.\-_]", "_", name.removeprefix("clawbus_protocol."))


@dataclass
class _Schemas:
    """The component schemas of a set of operations, and the reference to each model."""

    refs: dict[tuple[Model, JsonSchemaMode], dict[str, Any]] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, operations: Iterable[Operation]) -> _Schemas:
        wanted: dict[tuple[Model, JsonSchemaMode], None] = {}
        for op in operations:
            if op.request is not None:
                wanted[(op.request, "validation")] = None
            for model in _answer_models(op):
                wanted[(model, "serialization")] = None
        keys, schema = models_json_schema(
            list(wanted), ref_template=REF_TEMPLATE, schema_generator=_Names
        )
        return cls(refs={k: keys[k] for k in wanted}, components=schema.get("$defs", {}))

    def ref(self, model: Model, mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
        return self.refs[(model, mode)]


def _answer_models(op: Operation) -> Iterable[Model]:
    yield op.envelope
    for reply in op.replies.values():
        for content in reply.content:
            if isinstance(content, Json) and content.model is not None:
                yield content.model
            elif isinstance(content, Events):
                for frame in content.frames:
                    yield from (d for d in frame.data if not isinstance(d, str))


def _event_schema(frame: Frame, schemas: _Schemas) -> dict[str, Any]:
    kinds: list[dict[str, Any]] = [
        {"const": d}
        if isinstance(d, str)
        else {"contentMediaType": "application/json", "contentSchema": schemas.ref(d)}
        for d in frame.data
    ]
    data = kinds[0] if len(kinds) == 1 else {"anyOf": kinds}
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": list(frame.events)},
            "data": {"type": "string", **data},
            "id": {"type": "string"},
        },
    }


def _media(content: Content, schemas: _Schemas, error: Model | None) -> tuple[str, Any]:
    if isinstance(content, Text):
        return content.media_type, {"schema": {"type": "string"}}
    if isinstance(content, Events):
        events = [_event_schema(f, schemas) for f in content.frames]
        schema = events[0] if len(events) == 1 else {"anyOf": events}
        return "text/event-stream", {"schema": schema}
    schema = {"type": "object"} if content.model is None else schemas.ref(content.model)
    if error is not None:  # an error status may also carry the error envelope
        schema = {"anyOf": [schema, schemas.ref(error)]}
    return "application/json", {"schema": schema}


def _responses(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, reply in sorted(op.replies.items()):
        error = op.envelope if status >= 400 else None
        answer: dict[str, Any] = {"description": reply.description}
        if reply.content:
            answer["content"] = dict(_media(c, schemas, error) for c in reply.content)
        out[str(status)] = answer
    envelope = {"application/json": {"schema": schemas.ref(op.envelope)}}
    for status in op.error_statuses():
        out[str(status)] = {"description": _STATUS_TEXT[status], "content": envelope}
    out["5XX"] = {"description": "Server or upstream failure", "content": envelope}
    return out


def _parameter(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": param.name,
        "in": param.where,
        "required": param.required,
        "description": param.description,
        "schema": param.schema,
    }
    if param.example is not None:
        out["example"] = param.example
    return out


def _access_text(access: Access) -> str:
    if access == "public":
        return "Public: no credential."
    if access is None:
        return "Any valid credential."
    return f"Needs the `{access}` permission."


def _examples(example: dict[str, Any], *, streamed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"minimal": {"value": example}}
    if streamed:
        out["stream"] = {
            "summary": "Answered as server-sent events",
            "value": example | {"stream": True},
        }
    return out


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    description = " ".join(filter(None, (op.description, _access_text(op.access))))
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": description,
        "tags": [op.tag],
        "security": [] if op.public else _ANY_CREDENTIAL,
        "x-clawbus-permission": op.access,
    }
    if op.params:
        out["parameters"] = [_parameter(p) for p in op.params]
    if op.request is not None:
        media: dict[str, Any] = {"schema": schemas.ref(op.request, "validation")}
        if op.example is not None:
            media["examples"] = _examples(op.example, streamed=op.streamed)
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    out["responses"] = _responses(op, schemas)
    return out


def build(operations: Sequence[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI document of `operations`."""
    schemas = _Schemas.of(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    used = {op.tag for op in operations}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "clawbus gateway",
            "version": __version__,
            "description": (
                "One gateway, the surfaces of several: OpenAI, OpenClaw (000, 001, 002) and "
                "clawbus's own. Errors come in the envelope of the surface's path. "
                "`x-clawbus-permission` on each operation names the permission it needs "
                "(null: any valid credential; public: none)."
            ),
        },
        "tags": [
            {"name": name, "description": text} for name, text in TAGS.items() if name in used
        ],
        "paths": paths,
        "components": {"schemas": schemas.components, "securitySchemes": _SECURITY_SCHEMES},
    }


@cache
def document_json() -> bytes:
    """The served document, built once per process: it depends on this table alone."""
    return json.dumps(build(), separators=(",", ":")).encode()
