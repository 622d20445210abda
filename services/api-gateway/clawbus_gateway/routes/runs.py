"""Run control: abort a run by id, or every unfinished run of a session.

These are clawbus routes (OpenClaw's own abort is the WS `chat.abort` method, which uses the
same `RunService.abort`).
"""

from __future__ import annotations

import uuid

from aiohttp import web
from clawbus_protocol.errors import InvalidRequest
from clawbus_protocol.runs import AbortResult

from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import require
from clawbus_gateway.turns import path_session_key

routes = web.RouteTableDef()


def _result(run_ids: list[uuid.UUID]) -> web.Response:
    body = AbortResult(aborted=bool(run_ids), run_ids=run_ids)
    return web.json_response(text=body.model_dump_json())


@routes.post("/v1/runs/{run_id}/abort")
async def abort_run(request: web.Request) -> web.Response:
    try:
        run_id = uuid.UUID(request.match_info["run_id"])
    except ValueError:
        raise InvalidRequest("run id must be a UUID", param="run_id") from None
    who = require(request, "chat")
    result = await request.app[RUNS].abort(who.tenant_id, run_id=run_id)
    return _result(result.run_ids)


@routes.post("/v1/sessions/{session_key}/abort")
async def abort_session(request: web.Request) -> web.Response:
    key = path_session_key(request)
    who = require(request, "chat")
    result = await request.app[RUNS].abort(who.tenant_id, session_key=key)
    return _result(result.run_ids)
