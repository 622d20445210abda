"""What every HTTP surface does around a run: read the request's run headers and target,
build the turn's text, wait for the run's result.

The surfaces (OpenAI chat completions, OpenAI responses, OpenClaw agent runs) differ only in
their wire shapes; these pieces are theirs in common.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast, get_args
from uuid import UUID

from aiohttp import web
from clawbus_core import sessionkeys
from clawbus_core.db import Pool
from clawbus_core.models import ModelCatalog
from clawbus_core.runservice import DEFAULT_AGENT, Submitted, Turn, canonical_agent
from clawbus_core.store import runs as store
from clawbus_protocol.errors import ClawbusError, ErrorCode, InvalidRequest, NotFound
from clawbus_protocol.runs import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    QueueMode,
    RunEvent,
    RunInput,
    RunOptions,
    ToolCall,
    Usage,
)

from clawbus_gateway.keys import CATALOG
from clawbus_gateway.principal import require

MAX_KEY_CHARS = 256
SESSION_HEADER = "x-openclaw-session-key"
RUN_ID_HEADER = "x-clawbus-run-id"

_AGENT_PREFIXES = ("openclaw:", "openclaw/", "agent:", "goclaw:")
_AGENT_HEADERS = ("x-openclaw-agent-id", "x-goclaw-agent-id")


def header(request: web.Request, name: str) -> str | None:
    """A key-like header (session, agent, idempotency key...), length-checked."""
    value = request.headers.get(name)
    if value is not None and not 0 < len(value) <= MAX_KEY_CHARS:
        raise InvalidRequest(f"header {name} must be 1 to {MAX_KEY_CHARS} characters", param=name)
    return value


def target(model: str, request: web.Request, catalog: ModelCatalog) -> tuple[str, str | None]:
    """(agent key, model override) an OpenAI-style `model` names.

    `openclaw`, `openclaw:<agent>`, `agent:<agent>`, `goclaw:<agent>` name an agent (header
    `x-openclaw-agent-id` / `x-goclaw-agent-id` otherwise, default `main`); any other value
    is a `provider/model` id run by that agent.
    """
    header_agent = next((a for h in _AGENT_HEADERS if (a := header(request, h))), None)
    for prefix in _AGENT_PREFIXES:
        if model.startswith(prefix):
            agent = model[len(prefix) :]
            if not agent:
                raise InvalidRequest(f"model {model!r} names no agent", param="model")
            return agent, None
    if model == "openclaw":
        return header_agent or DEFAULT_AGENT, None
    return header_agent or DEFAULT_AGENT, catalog.resolve(model).id


def openclaw_agent(agent_id: str | None, session: str | None) -> str:
    """The agent an OpenClaw request names: `agentId`, else the agent of an
    `agent:<id>:...` session key, else the default."""
    if agent_id is not None:
        return canonical_agent(sessionkeys.normalize_agent_id(agent_id))
    if session is not None and session.lower().startswith("agent:"):
        named = sessionkeys.parse(session).agent
        if named is not None:
            return canonical_agent(named)
    return DEFAULT_AGENT


def openclaw_turn(
    request: web.Request,
    *,
    message: str,
    agent_id: str | None,
    session: str | None,
    model: str | None,
) -> Turn:
    """The turn an OpenClaw-style request (000 agent run, 002 chat) asks for: one user
    message, the named agent, its main session unless one is named, an optional model."""
    who = require(request, "chat")
    agent = openclaw_agent(agent_id, session)
    messages = [ChatMessage(role="user", content=message)]
    return Turn(
        agent_key=agent,
        session_key=session or sessionkeys.main_key(agent),
        user_text=user_text(messages, param="message"),
        input=RunInput(messages=messages),
        options=RunOptions(
            model=request.app[CATALOG].resolve(model).id if model is not None else None
        ),
        idempotency_key=header(request, "Idempotency-Key"),
        queue_mode=queue_mode(request),
        tenant_id=who.tenant_id,
    )


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """`?name=` as an integer in [low, high]; 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(f"?{name}= must be an integer from {low} to {high}", param=name)
    return value


def path_session_key(request: web.Request) -> str:
    """The `{session_key}` of the route's path, bounded like every session key."""
    key = request.match_info["session_key"]
    if not 0 < len(key) <= MAX_KEY_CHARS or "\x00" in key:
        raise InvalidRequest(
            f"session key must be 1 to {MAX_KEY_CHARS} characters", param="sessionKey"
        )
    return key


def session_key(request: web.Request, agent_key: str, user: str | None) -> str | None:
    """The session an OpenAI-style request names: the header, else one per `user`."""
    key = header(request, SESSION_HEADER)
    if key is None and user:
        key = f"agent:{agent_key}:openai-user:{user}"
    return key


def queue_mode(request: web.Request) -> QueueMode | None:
    value = header(request, "x-clawbus-queue-mode")
    if value is None:
        return None
    if value not in get_args(QueueMode):
        raise InvalidRequest(
            f"x-clawbus-queue-mode must be one of {', '.join(get_args(QueueMode))}",
            param="x-clawbus-queue-mode",
        )
    return cast(QueueMode, value)


def user_text(messages: list[ChatMessage], *, param: str) -> str:
    """The turn's user text: the trailing user messages, which must exist and say something."""
    if not messages or messages[-1].role != "user":
        raise InvalidRequest("the last message must be a user message", param=param)
    trailing: list[str] = []
    for message in reversed(messages):
        if message.role != "user":
            break
        trailing.insert(0, message.content)
    if not any(t.strip() for t in trailing):
        raise InvalidRequest("the user message is empty", param=param)
    return "\n\n".join(trailing)


def run_headers(run_id: UUID, session: str) -> dict[str, str]:
    """Headers every run answer carries: the run (for resuming a stream) and its session."""
    return {RUN_ID_HEADER: str(run_id), SESSION_HEADER: session}


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A completed run's answer."""

    text: str
    finish_reason: str
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)


def _aborted(run_id: UUID) -> ClawbusError:
    return ClawbusError(f"run {run_id} was aborted", code=ErrorCode.ABORTED)


async def outcome(sub: Submitted, events: AsyncIterator[RunEvent]) -> Outcome:
    """Wait for the run's end: its answer, or its failure raised as the error it carries."""
    async for event in events:
        if isinstance(event, DoneEvent):
            return Outcome(event.text, event.finish_reason, event.usage, event.tool_calls)
        if isinstance(event, ErrorEvent):
            raise ClawbusError.from_info(event.error)
        if event.type == "aborted":
            raise _aborted(sub.run_id)
    raise ClawbusError(f"run {sub.run_id} ended without a result")


def replayed(sub: Submitted, run: store.ExistingRun) -> Outcome:
    """A retried request (same Idempotency-Key) gets the first request's result."""
    if run.status == "completed":
        return Outcome(run.text or "", run.finish_reason or "stop", run.usage, run.tool_calls)
    if run.error is not None:
        raise ClawbusError.from_info(run.error)
    raise _aborted(sub.run_id)


def finished(sub: Submitted) -> store.ExistingRun | None:
    """The earlier run a retried request found, if it has already ended."""
    if sub.existing is not None and sub.existing.status not in ("queued", "running"):
        return sub.existing
    return None


# --- looking a run up by id ---------------------------------------------------------------------

# Belongs with the run queries in clawbus_core.store.runs (not this module's owner's file).
_RUN = """
SELECT r.status, s.session_key FROM runs r JOIN sessions s ON s.id = r.session_id
WHERE r.tenant_id = $1 AND r.id = $2
"""


@dataclass(frozen=True)
class RunRef:
    run_id: UUID
    status: store.RunStatus
    session_key: str


async def find_run(pool: Pool, tenant_id: UUID, run_id: UUID, *, param: str) -> RunRef:
    row = await pool.fetchrow(_RUN, tenant_id, run_id)
    if row is None:
        raise NotFound(f"run {run_id} not found", param=param)
    return RunRef(run_id, row["status"], row["session_key"])
