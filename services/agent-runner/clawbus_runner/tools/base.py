"""The tool registry: what a tool is, what it is given, what it returns.

A tool has a name, a description and a JSON schema for its arguments (what the model sees),
and a policy flag: `safe` tools are offered to every agent, `dangerous` ones only to agents
whose tool policy allows them by name. Later services extend the registry (browser, cron,
message, MCP) by registering more tools; nothing here knows any particular tool.

A tool reports a problem the model can act on (a missing file, a refused URL) by raising
`ToolError`: the run continues and the model sees the message as the tool's result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

import redis.asyncio as aioredis
from clawbus_core.db import Pool

Policy = Literal["safe", "dangerous"]

# A tool result the model sees is capped: a huge file or page must not flood the context.
MAX_RESULT_CHARS = 64_000


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object
    policy: Policy = "safe"
    # Whether a client may invoke it directly over HTTP (001's /api/tools/:name/invoke)
    # without the operator allowing it by name: only tools that read and reach nothing
    # outside the agent's own store. Writing, fetching and running things is denied.
    http: bool = False


@dataclass(frozen=True)
class ToolContext:
    """What a tool may touch: the run's tenant, agent and session, and shared resources."""

    pool: Pool
    redis: aioredis.Redis
    tenant_id: UUID
    agent_id: UUID
    agent_key: str
    # None when a client invokes the tool directly, outside any session or run.
    session_id: UUID | None
    session_key: str | None
    run_id: UUID | None
    # Service-specific resources later tools need (browser client, NATS...), by name.
    extras: Mapping[str, Any] = field(default_factory=dict)


class ToolError(Exception):
    """A failure the model should see and may recover from (not a bug, not an infra error)."""


class Tool(Protocol):
    spec: ToolSpec

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        """Do the work; return the text the model sees. Raise ToolError for bad input."""
        ...


@dataclass(frozen=True)
class ToolPolicy:
    """An agent's tool policy (agents.tool_policy): `allow` names dangerous tools it may use,
    `deny` removes tools it must not use, `only` (if set) is the complete list it may use."""

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    only: frozenset[str] | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> ToolPolicy:
        raw = raw or {}

        def names(key: str) -> frozenset[str]:
            value = raw.get(key) or []
            return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()

        only = raw.get("only")
        return cls(
            allow=names("allow"),
            deny=names("deny"),
            only=frozenset(str(v) for v in only) if isinstance(only, list) else None,
        )

    def permits(self, spec: ToolSpec) -> bool:
        if spec.name in self.deny:
            return False
        if self.only is not None and spec.name not in self.only:
            return False
        return spec.policy == "safe" or spec.name in self.allow


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.spec.name in self._tools:
            raise ValueError(f"tool {tool.spec.name!r} is registered twice")
        self._tools[tool.spec.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(self, policy: ToolPolicy) -> list[ToolSpec]:
        """The tools an agent with `policy` is offered, in registration order."""
        return [t.spec for t in self._tools.values() if policy.permits(t.spec)]

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools
