"""OpenClaw's session routes (000): GET /v1/sessions, GET and DELETE /v1/sessions/{key}.

All scoped to the caller's tenant and gated by the `sessions` permission. The list takes
`?limit=` (1-500, default 100), `?offset=` and `?agentId=`; one session comes with its last
`?limit=` messages. DELETE answers 204, or 409 while the session has a run queued or running
(abort it first: POST /v1/sessions/{key}/abort).
"""

from __future__ import annotations

from aiohttp import web
from clawbus_core.runservice import canonical_agent
from clawbus_core.store import sessions as store
from clawbus_protocol.openclaw_http import (
    SessionDetail,
    SessionInfo,
    SessionList,
    SessionMessage,
)

from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import require
from clawbus_gateway.turns import int_query, path_session_key

routes = web.RouteTableDef()

_DEFAULT_PAGE = 100


def _info(s: store.SessionSummary) -> SessionInfo:
    return SessionInfo(
        session_key=s.key,
        agent_id=s.agent_key,
        channel=s.channel,
        created_at=s.created_at,
        updated_at=s.updated_at,
        message_count=s.message_count,
    )


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    agent = request.query.get("agentId")
    found = await store.list_sessions(
        request.app[RUNS].pool,
        who.tenant_id,
        agent_key=canonical_agent(agent) if agent else None,
        limit=int_query(request, "limit", _DEFAULT_PAGE, 1, store.MAX_PAGE),
        offset=int_query(request, "offset", 0, 0, 2**31 - 1),
    )
    body = SessionList(sessions=[_info(s) for s in found])
    return web.json_response(text=body.model_dump_json())


@routes.get("/v1/sessions/{session_key}")
async def get_session(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    key = path_session_key(request)
    limit = int_query(request, "limit", _DEFAULT_PAGE, 1, store.MAX_PAGE)
    pool = request.app[RUNS].pool
    summary = await store.get_session(pool, who.tenant_id, key)
    messages = await store.history(pool, who.tenant_id, key, limit=limit)
    body = SessionDetail(
        **_info(summary).model_dump(),
        messages=[
            SessionMessage(role=m.role, content=m.content, run_id=m.run_id, created_at=m.created_at)
            for m in messages
        ],
    )
    return web.json_response(text=body.model_dump_json())


@routes.delete("/v1/sessions/{session_key}")
async def delete_session(request: web.Request) -> web.Response:
    who = require(request, "sessions")
    await store.delete_session(request.app[RUNS].pool, who.tenant_id, path_session_key(request))
    return web.Response(status=204)
