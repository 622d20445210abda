"""What a run's model calls are built from: the agent's context and the conversation.

`AgentContext` is the agent as configured (models, tool policy and the tools it allows) and
its system prompt: its own prompt, its workspace bootstrap files (AGENTS.md, SOUL.md, ...)
and its skills list, loaded per run in one query; `Conversation` is what the model sees of the
session: the client's messages for a stateless run, else the stored transcript since the
latest compaction summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from clawbus_core.bootstrap import assemble_system_prompt
from clawbus_core.db import Pool
from clawbus_core.store import agents as agents_store
from clawbus_core.store.lanes import ClaimedRun, load_history
from clawbus_protocol.runs import ChatMessage, RunRequest

from clawbus_runner.providers import ToolDef
from clawbus_runner.tools import ToolPolicy, ToolRegistry


@dataclass(frozen=True)
class AgentContext:
    agent_id: UUID
    model: str | None
    fallbacks: tuple[str, ...]
    prompt: str
    # The prompt without the agent's tools and skills, for runs offering a client's tools.
    prompt_without_tools: str
    policy: ToolPolicy
    tool_defs: tuple[ToolDef, ...]
    context_tokens: int
    default_model: str
    version: datetime  # agents.updated_at when loaded (see ClaimedRun.agent_version)

    def models(self, request: RunRequest) -> list[str]:
        """The primary model (the request's choice, else the agent's), then fallbacks."""
        primary = request.options.model or self.model or self.default_model
        return [primary, *(m for m in self.fallbacks if m != primary)]

    def system_prompt(self, request: RunRequest) -> str:
        own = self.prompt if request.options.tools is None else self.prompt_without_tools
        return "\n\n".join(p for p in (own, request.input.system) if p)


async def load_agent_context(
    pool: Pool, tenant_id: UUID, agent_id: UUID, tools: ToolRegistry, *, default_model: str
) -> AgentContext:
    """The agent, its bootstrap files and enabled skills (one query), as one system prompt
    and the tools its policy allows."""
    profile, files, skills = await agents_store.load_context(pool, tenant_id, agent_id)
    policy = ToolPolicy.from_json(profile.tool_policy)
    specs = tools.specs(policy)
    prompt = assemble_system_prompt(
        profile.system_prompt, files, skills, [spec.name for spec in specs]
    )
    return AgentContext(
        agent_id=agent_id,
        model=profile.model,
        fallbacks=profile.fallbacks,
        prompt=prompt,
        prompt_without_tools=assemble_system_prompt(profile.system_prompt, files, skills, []),
        policy=policy,
        tool_defs=tuple(ToolDef(s.name, s.description, s.parameters) for s in specs),
        context_tokens=profile.context_tokens,
        default_model=default_model,
        version=profile.updated_at,
    )


@dataclass(frozen=True)
class Conversation:
    messages: list[ChatMessage]
    # For compaction: the stored message id of each history message (None: not stored).
    ids: list[int | None] = field(default_factory=list)
    summary: str | None = None


async def load_conversation(pool: Pool, run: ClaimedRun, *, history_limit: int) -> Conversation:
    request = run.request
    if not request.input.use_session_history:
        return Conversation(messages=list(request.input.messages))
    history = await load_history(pool, request.session_id, request.run_id, limit=history_limit)
    messages = [h.message for h in history.messages]
    ids: list[int | None] = [h.id for h in history.messages]
    if history.summary:
        messages.insert(0, summary_message(history.summary))
        ids.insert(0, None)
    start = _window_start(messages)
    return Conversation(messages=messages[start:], ids=ids[start:], summary=history.summary)


def summary_message(summary: str) -> ChatMessage:
    """How a compaction summary is shown to the model: the first turn of the history."""
    return ChatMessage(role="user", content=f"[Summary of the earlier conversation]\n{summary}")


def _window_start(messages: list[ChatMessage]) -> int:
    """A history window may start inside a tool exchange; providers refuse tool results
    whose call is not there, so the window starts at its first user message."""
    return next((i for i, m in enumerate(messages) if m.role == "user"), 0)
