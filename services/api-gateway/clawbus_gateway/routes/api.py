"""OpenClaw's HTTP API (001), under /api: GET /api/status, GET /api/sessions (+ GET and DELETE
/api/sessions/:id), POST /api/messages, GET /api/tools and POST /api/tools/:name/invoke.

Thin adapters over the same services as every other surface: the session store, the run
service, and the agent-runners' tool service (asked over the bus, see clawbus_runner.
tool_service, which enforces the HTTP tool policy). /api/channels is routes/channels.py,
/api/config routes/config.py, /api/cron routes/cron.py. Errors
leave in 001's envelope (clawbus_gateway.errors).

- A session's `id` is its session key; `userId` is the peer of a direct-message session.
- POST /api/messages enters `message` into the session of `userId` on `channel`
  (`agent:<agent>:<channel>:direct:<userId>`, the per-channel-peer shape) as that user's
  message, and answers with the agent's reply once the run ends.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import psutil
from aiohttp import web
from clawbus_core import sessionkeys
from clawbus_core.store import channels
from clawbus_core.store import sessions as store
from clawbus_protocol.errors import (
    ClawbusError,
    InvalidRequest,
    ServiceUnavailable,
    Timeout,
)
from clawbus_protocol.openclaw_api import (
    MAX_PARAMS_CHARS,
    ApiMessage,
    ApiSession,
    ApiSessionDetail,
    ApiSessionList,
    ApiStatus,
    ApiTool,
    ApiToolList,
    InvokeTool,
    Memory,
    MessageSent,
    MessageUsage,
    SendMessage,
    ToolInvoked,
)
from clawbus_protocol.tools import (
    ToolInvokeReply,
    ToolInvokeRequest,
    ToolsListReply,
    ToolsListRequest,
)
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import principal, require
from clawbus_gateway.turns import (
    finished,
    int_query,
    openclaw_agent,
    openclaw_turn,
    outcome,
    path_session_key,
    replayed,
    run_headers,
)

routes = web.RouteTableDef()

_DEFAULT_PAGE = 100
_DEFAULT_MESSAGES = 100
_MIB = 2**20
# How long a gateway waits for a runner to list tools.
_LIST_WAIT_S = 10.0
_TOOL_NAME_CHARS = 64


# --- status -----------------------------------------------------------------------------------


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    who = principal(request)
    runs = request.app[RUNS]
    bus_ok = runs.nc.is_connected
    body = ApiStatus(
        gateway="running" if bus_ok else "degraded",
        channels={
            c.name: c.shown_status
            for c in await channels.list_channels(runs.pool, runs.names.namespace, who.tenant_id)
        },
        sessions=await store.count_sessions(runs.pool, who.tenant_id),
        memory=Memory(
            used=psutil.Process().memory_info().rss // _MIB,
            total=psutil.virtual_memory().total // _MIB,
        ),
    )
    return web.json_response(text=body.model_dump_json(), status=200 if bus_ok else 503)


# --- sessions ---------------------------------------------------------------------------------


def _user_id(key: str) -> str | None:
    try:
        parsed = sessionkeys.parse(key)
    except InvalidRequest:  # a key stored before today's rules: it simply names no user
        return None
    return parsed.peer if parsed.kind == "direct" else None


def _session(s: store.SessionSummary) -> ApiSession:
    return ApiSession(
        id=s.key,
        channel=s.channel,
        user_id=_user_id(s.key),
        message_count=s.message_count,
        last_activity=s.updated_at,
        agent_id=s.agent_key,
        created_at=s.created_at,
    )


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    found = await store.list_sessions(
        request.app[RUNS].pool,
        who.tenant_id,
        limit=int_query(request, "limit", _DEFAULT_PAGE, 1, store.MAX_PAGE),
        offset=int_query(request, "offset", 0, 0, 2**31 - 1),
    )
    body = ApiSessionList(sessions=[_session(s) for s in found])
    return web.json_response(text=body.model_dump_json())


@routes.get("/api/sessions/{session_key}")
async def get_session(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    key = path_session_key(request)
    limit = int_query(request, "limit", _DEFAULT_MESSAGES, 1, store.MAX_PAGE)
    pool = request.app[RUNS].pool
    summary = await store.get_session(pool, who.tenant_id, key)
    messages = await store.history(pool, who.tenant_id, key, limit=limit)
    body = ApiSessionDetail(
        **_session(summary).model_dump(),
        messages=[
            ApiMessage(role=m.role, content=m.content, timestamp=m.created_at) for m in messages
        ],
    )
    return web.json_response(text=body.model_dump_json())


@routes.delete("/api/sessions/{session_key}")
async def delete_session(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    await store.delete_session(request.app[RUNS].pool, who.tenant_id, path_session_key(request))
    return web.Response(status=204)


# --- messages ---------------------------------------------------------------------------------


@routes.post("/api/messages")
async def send_message(request: web.Request) -> web.Response:
    require(request, "chat")
    body = await read_model(request, SendMessage)
    agent = openclaw_agent(body.agent_id, None)
    session = sessionkeys.direct_key(
        agent, body.user_id, dm_scope="per-channel-peer", channel=body.channel
    )
    turn = openclaw_turn(request, message=body.message, agent_id=agent, session=session, model=None)
    turn = dataclasses.replace(turn, channel=body.channel)
    runs = request.app[RUNS]
    async with runs.submit(turn) as sub:
        if (done := finished(sub)) is not None:
            result = replayed(sub, done)
        else:
            result = await outcome(sub, sub.watch.events(timeout_s=runs.timeout_s))
    answer = MessageSent(
        id=str(sub.run_id),
        session_id=sub.session_key,
        channel=body.channel,
        user_id=body.user_id,
        reply=result.text,
        usage=MessageUsage.of(result.usage),
    )
    return web.json_response(
        text=answer.model_dump_json(), headers=run_headers(sub.run_id, sub.session_key)
    )


# --- tools ------------------------------------------------------------------------------------


R = TypeVar("R", bound=BaseModel)


async def _ask_runner(
    request: web.Request, subject: str, question: BaseModel, reply_type: type[R], wait_s: float
) -> R:
    """One request/reply with any agent-runner; its error (as data) raised here."""
    runs = request.app[RUNS]
    try:
        msg = await runs.nc.request(subject, question.model_dump_json().encode(), timeout=wait_s)
    except NoRespondersError:
        raise ServiceUnavailable(
            "no agent-runner is running to answer for the tools; start one "
            "(`clawbus agent-runner`) and retry",
            service="agent-runner",
        ) from None
    except (TimeoutError, NatsTimeoutError):
        raise Timeout(f"no agent-runner answered within {wait_s:.0f}s") from None
    try:
        reply = reply_type.model_validate_json(msg.data)
    except ValidationError:
        raise ServiceUnavailable(
            "an agent-runner answered in a shape this gateway does not know"
        ) from None
    error = getattr(reply, "error", None)
    if error is not None:
        raise ClawbusError.from_info(error)
    return reply


def _agent_query(request: web.Request) -> str:
    agent = request.query.get("agentId")
    if agent is not None and not 0 < len(agent) <= _TOOL_NAME_CHARS:
        raise InvalidRequest(f"?agentId= must be 1 to {_TOOL_NAME_CHARS} characters")
    return openclaw_agent(agent, None)


@routes.get("/api/tools")
async def list_tools(request: web.Request) -> web.Response:
    who = require(request, "tools")
    agent = _agent_query(request)
    runs = request.app[RUNS]
    reply = await _ask_runner(
        request,
        runs.names.tools_list_subject,
        ToolsListRequest(tenant_id=who.tenant_id, agent_key=agent),
        ToolsListReply,
        _LIST_WAIT_S,
    )
    body = ApiToolList(
        tools=[
            ApiTool(
                name=t.name,
                description=t.description,
                enabled=t.enabled,
                invokable=t.invokable,
                parameters=t.parameters,
            )
            for t in reply.tools
        ]
    )
    return web.json_response(text=body.model_dump_json())


@routes.post("/api/tools/{name}/invoke")
async def invoke_tool(request: web.Request) -> web.Response:
    who = require(request, "tools")
    name = request.match_info["name"]
    if not 0 < len(name) <= _TOOL_NAME_CHARS:
        raise InvalidRequest(f"tool name must be 1 to {_TOOL_NAME_CHARS} characters", param="name")
    body = await read_model(request, InvokeTool)
    question = ToolInvokeRequest(
        tenant_id=who.tenant_id,
        agent_key=openclaw_agent(body.agent_id, None),
        tool=name,
        params=body.params,
        caller=who.name or who.kind,
    )
    if len(question.model_dump_json()) > MAX_PARAMS_CHARS:
        raise InvalidRequest(f"params are larger than {MAX_PARAMS_CHARS} characters")
    runs = request.app[RUNS]
    # The runner stops the tool at its own timeout (runner_tool_timeout_s) and answers.
    reply = await _ask_runner(
        request, runs.names.tools_invoke_subject, question, ToolInvokeReply, runs.timeout_s
    )
    answer = ToolInvoked(tool=name, result=reply.result or "")
    return web.json_response(text=answer.model_dump_json())
