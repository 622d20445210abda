"""Session lanes: at most one active run per session across every runner, FIFO by `seq`.

A runner that wants to run anything in a session first takes the session's lease
(`sessions.lease_owner` / `lease_until`); the same statement claims the session's head run
(the oldest run still queued or running) for a new attempt and returns its stored request,
so the lease holder can run every queued run of the session in order, whichever runner's
message brought it. A dead holder's lease expires; the next taker re-claims the head run
with a higher attempt (the fence makes the dead attempt's late writes fail).

Releasing the lease succeeds only when nothing is queued, so a run that arrives while the
holder finishes is never stranded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from clawbus_protocol.runs import (
    ChatMessage,
    RunInput,
    RunOptions,
    RunRequest,
    ToolCall,
)

from clawbus_core.db import Pool

_CLAIM_NEXT = """
WITH l AS (
    UPDATE sessions SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
    WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())
    RETURNING id, session_key
), h AS (
    SELECT r.id FROM runs r JOIN l ON r.session_id = l.id
    WHERE r.status IN ('queued', 'running')
    ORDER BY r.seq LIMIT 1
), m AS (
    -- `collect`: runs waiting behind the head in collect mode are answered by it.
    UPDATE runs r SET status = 'completed', merged_into = (SELECT id FROM h),
                      finished_at = now()
    FROM h, runs head
    WHERE head.id = h.id AND head.queue_mode = 'collect' AND head.status = 'queued'
      AND r.session_id = head.session_id AND r.status = 'queued'
      AND r.queue_mode = 'collect' AND r.seq > head.seq
    RETURNING r.id, r.reply_to
), c AS (
    UPDATE runs r SET status = 'running', attempt = r.attempt + 1, runner_id = $4,
                      started_at = coalesce(r.started_at, now())
    FROM h WHERE r.id = h.id
    RETURNING r.id, r.attempt, r.idempotency_key, r.tenant_id, r.agent_id, r.session_id,
              r.input, r.options, r.reply_to, r.queue_mode, r.abort_requested_at,
              r.trace_context
)
SELECT (SELECT count(*) FROM l) AS leased,
       (SELECT session_key FROM l) AS session_key,
       c.*, a.key AS agent_key, a.updated_at AS agent_version,
       (SELECT coalesce(json_agg(json_build_object('id', m.id, 'reply_to', m.reply_to)),
                        '[]'::json) FROM m) AS merged
FROM (SELECT 1) one
LEFT JOIN c ON true
LEFT JOIN agents a ON a.id = c.agent_id
"""

# The session's transcript up to this run (and the runs merged into it): the latest
# compaction summary, then the messages after what it covers, newest `$3` of them.
_HISTORY = """
WITH upto AS (
    SELECT max(u.id) AS id FROM messages u
    WHERE u.run_id = $2 OR u.run_id IN (SELECT id FROM runs WHERE merged_into = $2)
), summary AS (
    SELECT content, covers_upto FROM messages
    WHERE session_id = $1 AND kind = 'summary' AND covers_upto <= (SELECT id FROM upto)
    ORDER BY id DESC LIMIT 1
)
SELECT (SELECT content FROM summary) AS summary,
       (SELECT covers_upto FROM summary) AS covers_upto,
       coalesce((
           SELECT json_agg(json_build_object(
                      'id', h.id, 'role', h.role, 'content', h.content,
                      'tool_calls', h.tool_calls, 'tool_call_id', h.tool_call_id)
                  ORDER BY h.id)
           FROM (SELECT m.id, m.role, m.content, m.tool_calls, m.tool_call_id
                 FROM messages m
                 WHERE m.session_id = $1 AND m.kind = 'message' AND m.role <> 'system'
                   AND m.id <= (SELECT id FROM upto)
                   AND m.id > coalesce((SELECT covers_upto FROM summary), 0)
                 ORDER BY m.id DESC LIMIT $3) h
       ), '[]'::json) AS messages
"""

_RENEW = """
UPDATE sessions SET lease_until = now() + make_interval(secs => $3)
WHERE id = $1 AND lease_owner = $2
RETURNING id
"""

_RELEASE = """
UPDATE sessions SET lease_owner = NULL, lease_until = NULL
WHERE id = $1 AND lease_owner = $2
  AND NOT EXISTS (SELECT 1 FROM runs WHERE session_id = $1 AND status IN ('queued', 'running'))
RETURNING id
"""

_STATE = """
SELECT r.status, s.lease_owner IS NOT NULL AND s.lease_until > now() AS lane_busy
FROM runs r JOIN sessions s ON s.id = r.session_id
WHERE r.id = $1
"""

_ACTIVE_BEFORE = """
SELECT id FROM runs
WHERE session_id = $1 AND status = 'running' AND seq < (SELECT seq FROM runs WHERE id = $2)
"""


@dataclass(frozen=True)
class HistoryMessage:
    id: int
    message: ChatMessage


@dataclass(frozen=True)
class History:
    summary: str | None
    covers_upto: int | None
    messages: list[HistoryMessage]


@dataclass(frozen=True)
class MergedRun:
    run_id: UUID
    reply_to: str | None


@dataclass(frozen=True)
class ClaimedRun:
    """A run this lane holder now executes, as attempt `attempt`."""

    request: RunRequest
    attempt: int
    abort_requested: bool
    merged: list[MergedRun]
    lease_owner: str
    agent_version: datetime  # changes with the agent, its bootstrap files and skills
    # W3C trace headers of the span that created the run (clawbus_core.tracing).
    trace_context: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Claim:
    leased: bool
    run: ClaimedRun | None  # None: the lane is ours but nothing is waiting in it


def _request(row: Any) -> RunRequest:
    raw_input = row["input"] or {"messages": []}
    return RunRequest(
        run_id=row["id"],
        idempotency_key=row["idempotency_key"],
        tenant_id=row["tenant_id"],
        agent_id=row["agent_id"],
        agent_key=row["agent_key"],
        session_id=row["session_id"],
        session_key=row["session_key"],
        input=RunInput.model_validate(raw_input),
        options=RunOptions.model_validate(row["options"] or {}),
        reply_to=row["reply_to"],
        queue_mode=row["queue_mode"],
    )


async def claim_next(
    pool: Pool, session_id: UUID, owner: str, *, lease_s: float, runner_id: str
) -> Claim:
    """Take (or keep) the session's lease and claim its head run, in one statement."""
    row = await pool.fetchrow(_CLAIM_NEXT, session_id, owner, lease_s, runner_id)
    assert row is not None
    if not row["leased"]:
        return Claim(leased=False, run=None)
    if row["id"] is None:
        return Claim(leased=True, run=None)
    merged = [MergedRun(UUID(m["id"]), m["reply_to"]) for m in json.loads(row["merged"])]
    return Claim(
        leased=True,
        run=ClaimedRun(
            request=_request(row),
            attempt=row["attempt"],
            abort_requested=row["abort_requested_at"] is not None,
            merged=merged,
            lease_owner=owner,
            agent_version=row["agent_version"],
            trace_context=row["trace_context"],
        ),
    )


async def load_history(pool: Pool, session_id: UUID, run_id: UUID, *, limit: int) -> History:
    row = await pool.fetchrow(_HISTORY, session_id, run_id, limit)
    assert row is not None
    messages = []
    for m in json.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]:
        calls = [ToolCall.model_validate(c) for c in m.get("tool_calls") or []]
        messages.append(
            HistoryMessage(
                id=m["id"],
                message=ChatMessage(
                    role=m["role"],
                    content=m["content"],
                    tool_calls=calls,
                    tool_call_id=m["tool_call_id"],
                ),
            )
        )
    return History(summary=row["summary"], covers_upto=row["covers_upto"], messages=messages)


async def renew(pool: Pool, session_id: UUID, owner: str, *, lease_s: float) -> bool:
    return await pool.fetchval(_RENEW, session_id, owner, lease_s) is not None


async def release(pool: Pool, session_id: UUID, owner: str) -> bool:
    """Give the lane up; False if runs are waiting (the holder must run them first)."""
    return await pool.fetchval(_RELEASE, session_id, owner) is not None


@dataclass(frozen=True)
class RunState:
    status: str
    lane_busy: bool

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "aborted")


async def run_state(pool: Pool, run_id: UUID) -> RunState | None:
    row = await pool.fetchrow(_STATE, run_id)
    return RunState(row["status"], row["lane_busy"]) if row is not None else None


async def running_before(pool: Pool, session_id: UUID, run_id: UUID) -> list[UUID]:
    """Runs of the session executing ahead of `run_id` (what an `interrupt` run aborts)."""
    return [r["id"] for r in await pool.fetch(_ACTIVE_BEFORE, session_id, run_id)]


__all__ = [
    "Claim",
    "ClaimedRun",
    "History",
    "HistoryMessage",
    "MergedRun",
    "RunState",
    "claim_next",
    "load_history",
    "release",
    "renew",
    "run_state",
    "running_before",
]
