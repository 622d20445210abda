"""Tools outside runs: the runner side of 001's /api/tools and /api/tools/:name/invoke.

Every runner replica answers `Names.tools_list_subject` and `Names.tools_invoke_subject` in
one queue group, so a gateway's request reaches exactly one of them. A runner owns the tool
code and enforces both policies here, where the tools run:

- the agent's own tool policy (a tool the agent is not offered cannot be invoked for it);
- the HTTP policy: only tools marked `http` (read-only ones) may be invoked directly, plus
  the ones the operator names in `runner_tools_http_allow`. The rest are refused with 403.

An invocation runs with the agent's tenant and id, outside any session or run, under the
same timeout as a tool call inside a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import redis.asyncio as aioredis
from clawbus_core import bus
from clawbus_core.db import Pool
from clawbus_core.store import agents as agents_store
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorInfo,
    Forbidden,
    InternalError,
    InvalidRequest,
    NotFound,
    Timeout,
)
from clawbus_protocol.names import Names
from clawbus_protocol.tools import (
    ToolDescriptor,
    ToolInvokeReply,
    ToolInvokeRequest,
    ToolsListReply,
    ToolsListRequest,
)
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from clawbus_runner import observe
from clawbus_runner.settings import RunnerSettings
from clawbus_runner.tools import MAX_RESULT_CHARS, Tool, ToolContext, ToolError, ToolPolicy
from clawbus_runner.tools.base import ToolRegistry, ToolSpec

log = logging.getLogger(__name__)

QUEUE_GROUP = "agent-runners"


class ToolService:
    def __init__(
        self,
        *,
        settings: RunnerSettings,
        pool: Pool,
        redis: aioredis.Redis,
        names: Names,
        tools: ToolRegistry,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.names = names
        self.tools = tools
        self.extras = extras or {}
        self.http_allow = frozenset(settings.runner_tools_http_allow)
        self._subscriptions: list[Subscription] = []

    async def start(self, nc: NatsClient) -> None:
        self._subscriptions = [
            await nc.subscribe(self.names.tools_list_subject, QUEUE_GROUP, cb=self._on_list),
            await nc.subscribe(self.names.tools_invoke_subject, QUEUE_GROUP, cb=self._on_invoke),
        ]
        await bus.settle(nc)

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await sub.unsubscribe()
        self._subscriptions = []

    def invokable(self, spec: ToolSpec) -> bool:
        return spec.http or spec.name in self.http_allow

    async def list_tools(self, request: ToolsListRequest) -> ToolsListReply:
        _, policy = await self._agent(request.tenant_id, request.agent_key)
        # Every registered tool, whether the agent is offered it or not (`enabled` says).
        everything = ToolPolicy(allow=frozenset(self.tools.names()))
        return ToolsListReply(
            tools=[
                ToolDescriptor(
                    name=spec.name,
                    description=spec.description,
                    parameters=dict(spec.parameters),
                    enabled=policy.permits(spec),
                    invokable=self.invokable(spec) and policy.permits(spec),
                )
                for spec in self.tools.specs(everything)
            ]
        )

    async def invoke(self, request: ToolInvokeRequest) -> ToolInvokeReply:
        tool = self.tools.get(request.tool)
        if tool is None:
            raise NotFound(f"no tool named {request.tool!r}", param="name")
        agent_id, policy = await self._agent(request.tenant_id, request.agent_key)
        with observe.tool_call(tool.spec.name) as seen:
            if not policy.permits(tool.spec):
                seen.deny()
                raise Forbidden(
                    f"agent {request.agent_key!r} is not offered the tool {request.tool!r}",
                    tool=request.tool,
                )
            if not self.invokable(tool.spec):
                seen.deny()
                raise Forbidden(
                    f"tool {request.tool!r} may not be invoked over HTTP: it writes or reaches "
                    "outside the agent's store. An operator can allow it by name in "
                    "CLAWBUS_RUNNER_TOOLS_HTTP_ALLOW",
                    tool=request.tool,
                )
            output = await self._run(tool, agent_id, request)
        log.info("tool %s invoked by %s for agent %s", tool.spec.name, request.caller, agent_id)
        if len(output) > MAX_RESULT_CHARS:
            output = output[:MAX_RESULT_CHARS] + f"\n[truncated at {MAX_RESULT_CHARS} characters]"
        return ToolInvokeReply(result=output)

    async def _run(self, tool: Tool, agent_id: UUID, request: ToolInvokeRequest) -> str:
        ctx = ToolContext(
            pool=self.pool,
            redis=self.redis,
            tenant_id=request.tenant_id,
            agent_id=agent_id,
            agent_key=request.agent_key,
            session_id=None,
            session_key=None,
            run_id=None,
            extras=self.extras,
        )
        limit = self.settings.runner_tool_timeout_s
        try:
            async with asyncio.timeout(limit):
                return await tool.run(ctx, request.params)
        except ToolError as exc:
            raise InvalidRequest(f"tool {request.tool}: {exc}", tool=request.tool) from None
        except TimeoutError:
            raise Timeout(f"tool {request.tool} did not finish within {limit:.0f}s") from None

    async def _agent(self, tenant_id: UUID, agent_key: str) -> tuple[UUID, ToolPolicy]:
        profile = await agents_store.get_agent_by_key(self.pool, tenant_id, agent_key)
        if profile is None:
            raise NotFound(f"agent {agent_key!r} not found", param="agentId")
        return profile.id, ToolPolicy.from_json(profile.tool_policy)

    async def _on_list(self, msg: Msg) -> None:
        await _answer(msg, ToolsListRequest, self.list_tools, ToolsListReply)

    async def _on_invoke(self, msg: Msg) -> None:
        with observe.consuming(msg.headers):
            await _answer(msg, ToolInvokeRequest, self.invoke, ToolInvokeReply)


Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


async def _answer(
    msg: Msg,
    request_type: type[Req],
    handle: Callable[[Req], Awaitable[Rep]],
    reply_type: type[Rep],
) -> None:
    """Decode the request, run it, reply with the result or the error as data."""
    error: ErrorInfo
    try:
        reply = await handle(request_type.model_validate_json(msg.data))
    except ValidationError as exc:
        error = InvalidRequest(f"bad tool request: {exc.errors()[0]['msg']}").info
    except ClawbusError as exc:
        error = exc.info
    except Exception:
        log.exception("tool service request on %s failed", msg.subject)
        error = InternalError("the tool failed; see the agent-runner log").info
    else:
        await msg.respond(reply.model_dump_json().encode())
        return
    await msg.respond(reply_type.model_validate({"error": error}).model_dump_json().encode())
