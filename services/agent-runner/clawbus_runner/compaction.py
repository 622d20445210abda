"""Compaction: when a session's history nears the model's context budget, older turns are
summarised into a stored summary message and the run continues with summary + recent turns.

Nothing is deleted: the summary is a new `messages` row (kind `summary`) that says which
messages it covers; the next history load starts from it. If summarising fails, the run
fails with the original error and the history is exactly as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clawbus_core.db import Pool
from clawbus_core.models import ModelRef
from clawbus_protocol.runs import ChatMessage, RunRequest

from clawbus_runner import observe
from clawbus_runner.context import Conversation, summary_message
from clawbus_runner.providers import Finish, ModelCall, Providers, TextDelta

log = logging.getLogger(__name__)

# Share of the budget the kept (recent) turns may use; the rest is for the summary and reply.
KEEP_SHARE = 0.4
_SUMMARY_SYSTEM = (
    "You compact a conversation between a user and an assistant so it can continue "
    "without its full history. Write a concise summary that keeps every fact, decision, "
    "open question, name, number, file path and commitment a continuation needs. "
    "Write only the summary."
)
_STORE = """
INSERT INTO messages (tenant_id, session_id, role, kind, content, covers_upto)
VALUES ($1, $2, 'system', 'summary', $3, $4)
"""


def estimate_tokens(system: str, messages: list[ChatMessage]) -> int:
    """A provider-independent estimate (~4 characters per token), good enough to decide."""
    chars = len(system) + sum(len(m.content) + 16 for m in messages)
    chars += sum(len(str(c.arguments)) + len(c.name) for m in messages for c in m.tool_calls)
    return chars // 4 + 1


@dataclass(frozen=True)
class Split:
    older: list[ChatMessage]
    covers_upto: int
    recent: list[ChatMessage]
    recent_ids: list[int | None]


def split(conversation: Conversation, budget_tokens: int) -> Split | None:
    """Older turns to summarise and recent turns to keep (cut at a user message, so a tool
    exchange is never split); None when there is nothing stored to summarise."""
    messages, ids = conversation.messages, conversation.ids
    if len(ids) != len(messages) or len(messages) < 3:
        return None
    keep_budget = int(budget_tokens * KEEP_SHARE)
    cut = len(messages) - 1  # the newest user message is always kept
    used = estimate_tokens("", messages[cut:])
    for i in range(len(messages) - 2, 0, -1):
        used += estimate_tokens("", [messages[i]])
        if used > keep_budget:
            break
        if messages[i].role == "user":
            cut = i
    older = [(m, ids[i]) for i, m in enumerate(messages[:cut])]
    stored = [i for _, i in older if i is not None]
    if not stored:
        return None
    return Split(
        older=[m for m, _ in older],
        covers_upto=max(stored),
        recent=messages[cut:],
        recent_ids=ids[cut:],
    )


def _transcript(messages: list[ChatMessage]) -> str:
    lines = []
    for m in messages:
        text = m.content
        if m.tool_calls:
            text += " " + " ".join(f"[called {c.name}({c.arguments})]" for c in m.tool_calls)
        lines.append(f"{m.role}: {text}")
    return "\n".join(lines)


async def compact(
    pool: Pool,
    *,
    providers: Providers,
    model: ModelRef,
    request: RunRequest,
    conversation: Conversation,
    budget_tokens: int,
) -> Conversation | None:
    """Summarise the older part of the conversation with `model` and store the summary.

    Returns the compacted conversation, or None when there is nothing to compact. Raises
    what the model call raised if summarising fails (nothing is stored then)."""
    parts = split(conversation, budget_tokens)
    if parts is None:
        return None
    call = ModelCall(
        model=model,
        system=_SUMMARY_SYSTEM,
        messages=[ChatMessage(role="user", content=_transcript(parts.older))],
    )
    pieces: list[str] = []
    with observe.model_call(model) as observed:
        async for event in providers.get(model).stream(call):
            observed.saw(event)
            if isinstance(event, TextDelta):
                pieces.append(event.text)
            elif isinstance(event, Finish):
                break
    summary = "".join(pieces).strip()
    if not summary:
        return None
    await pool.execute(_STORE, request.tenant_id, request.session_id, summary, parts.covers_upto)
    log.info(
        "session %s: compacted %d messages (up to id %d) into a summary",
        request.session_key,
        len(parts.older),
        parts.covers_upto,
    )
    return Conversation(
        messages=[summary_message(summary), *parts.recent],
        ids=[None, *parts.recent_ids],
        summary=summary,
    )
