"""Runs and their messages: intake (gateway), claim / complete / fail (runner).

Fencing: a run's `attempt` rises each time a runner claims it; completion and failure only
match the attempt that claimed it, so a stale runner's late write changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from clawbus_protocol.errors import ErrorInfo, NotFound
from clawbus_protocol.runs import ChatMessage, Usage

from clawbus_core.db import Pool

DEFAULT_TENANT = UUID("00000000-0000-0000-0000-000000000001")

RunStatus = Literal["queued", "running", "completed", "failed", "aborted"]

_INTAKE = """
WITH a AS (
    SELECT id FROM agents WHERE tenant_id = $1 AND key = $2
), s AS (
    INSERT INTO sessions (id, tenant_id, agent_id, session_key, channel)
    SELECT $3, $1, a.id, $4, $5 FROM a
    ON CONFLICT (tenant_id, session_key) DO UPDATE SET updated_at = now()
    RETURNING id, (xmax = 0) AS created
), r AS (
    INSERT INTO runs (id, tenant_id, session_id, agent_id, idempotency_key, model)
    SELECT $6, $1, s.id, a.id, $7, $8 FROM s, a
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING id, session_id
), m AS (
    INSERT INTO messages (tenant_id, session_id, run_id, run_step, role, content)
    SELECT $1, r.session_id, r.id, 0, 'user', $9 FROM r
)
SELECT (SELECT id FROM a) AS agent_id,
       (SELECT id FROM s) AS session_id,
       (SELECT created FROM s) AS session_created,
       (SELECT id FROM r) AS run_id
"""

_EXISTING = """
SELECT r.id, r.status, r.session_id, r.model, r.finish_reason, r.error,
       m.content AS text,
       u.prompt_tokens, u.completion_tokens, u.total_tokens
FROM runs r
LEFT JOIN messages m ON m.run_id = r.id AND m.role = 'assistant'
LEFT JOIN usage u ON u.run_id = r.id
WHERE r.tenant_id = $1 AND r.idempotency_key = $2
ORDER BY m.run_step DESC NULLS LAST
LIMIT 1
"""

_CLAIM = """
WITH c AS (
    UPDATE runs SET status = 'running', attempt = attempt + 1, runner_id = $2,
                    started_at = coalesce(started_at, now())
    WHERE id = $1 AND status IN ('queued', 'running')
    RETURNING id, session_id, agent_id, attempt
)
SELECT c.attempt, a.model AS agent_model, a.system_prompt,
       CASE WHEN $3::bool THEN (
           SELECT coalesce(json_agg(json_build_object('role', h.role, 'content', h.content)
                                    ORDER BY h.id), '[]'::json)
           FROM (SELECT m.id, m.role, m.content FROM messages m
                 WHERE m.session_id = c.session_id
                   AND m.role IN ('user', 'assistant')
                   AND m.id <= (SELECT max(u.id) FROM messages u WHERE u.run_id = c.id)
                 ORDER BY m.id DESC LIMIT $4) h
       ) END AS history
FROM c JOIN agents a ON a.id = c.agent_id
"""

_COMPLETE = """
WITH r AS (
    UPDATE runs SET status = 'completed', finished_at = now(), finish_reason = $3, model = $4
    WHERE id = $1 AND attempt = $2 AND status = 'running'
    RETURNING id, tenant_id, session_id, agent_id
), m AS (
    INSERT INTO messages (tenant_id, session_id, run_id, run_step, role, content)
    SELECT tenant_id, session_id, id, 1, 'assistant', $5 FROM r
    ON CONFLICT (run_id, run_step) DO NOTHING
), u AS (
    INSERT INTO usage (tenant_id, run_id, session_id, agent_id, model,
                       prompt_tokens, completion_tokens, total_tokens)
    SELECT tenant_id, id, session_id, agent_id, $4, $6, $7, $8 FROM r
    ON CONFLICT (run_id, model) DO NOTHING
), s AS (
    UPDATE sessions SET updated_at = now() WHERE id = (SELECT session_id FROM r)
)
SELECT count(*) FROM r
"""

_FAIL = """
UPDATE runs SET status = 'failed', finished_at = now(), error = $3, model = coalesce($4, model)
WHERE id = $1 AND attempt = $2 AND status IN ('queued', 'running')
RETURNING id
"""


@dataclass(frozen=True)
class NewRun:
    run_id: UUID
    agent_id: UUID
    session_id: UUID
    session_created: bool


@dataclass(frozen=True)
class ExistingRun:
    """A run an earlier request with the same idempotency key created."""

    run_id: UUID
    session_id: UUID
    status: RunStatus
    model: str | None
    text: str | None
    finish_reason: str | None
    usage: Usage
    error: ErrorInfo | None


@dataclass(frozen=True)
class Claim:
    attempt: int
    agent_model: str | None
    system_prompt: str
    history: list[ChatMessage] | None


async def create_run(
    pool: Pool,
    *,
    run_id: UUID,
    session_id: UUID,
    tenant_id: UUID,
    agent_key: str,
    session_key: str,
    channel: str,
    idempotency_key: str,
    model: str | None,
    user_text: str,
) -> NewRun | ExistingRun:
    """Store the session (if new), the run and the user message in one statement."""
    row = await pool.fetchrow(
        _INTAKE,
        tenant_id,
        agent_key,
        session_id,
        session_key,
        channel,
        run_id,
        idempotency_key,
        model,
        user_text,
    )
    assert row is not None
    if row["agent_id"] is None:
        raise NotFound(f"agent {agent_key!r} not found", param="model", agent=agent_key)
    if row["run_id"] is None:
        existing = await find_run(pool, tenant_id, idempotency_key)
        assert existing is not None
        return existing
    return NewRun(
        run_id=row["run_id"],
        agent_id=row["agent_id"],
        session_id=row["session_id"],
        session_created=row["session_created"],
    )


async def find_run(pool: Pool, tenant_id: UUID, idempotency_key: str) -> ExistingRun | None:
    row = await pool.fetchrow(_EXISTING, tenant_id, idempotency_key)
    if row is None:
        return None
    return ExistingRun(
        run_id=row["id"],
        session_id=row["session_id"],
        status=row["status"],
        model=row["model"],
        text=row["text"],
        finish_reason=row["finish_reason"],
        usage=Usage(
            prompt_tokens=row["prompt_tokens"] or 0,
            completion_tokens=row["completion_tokens"] or 0,
            total_tokens=row["total_tokens"] or 0,
        ),
        error=ErrorInfo.model_validate(row["error"]) if row["error"] else None,
    )


async def claim_run(
    pool: Pool, run_id: UUID, runner_id: str, *, with_history: bool, history_limit: int
) -> Claim | None:
    """Take the run for a new attempt; None when it is already finished (a duplicate)."""
    row = await pool.fetchrow(_CLAIM, run_id, runner_id, with_history, history_limit)
    if row is None:
        return None
    history: list[ChatMessage] | None = None
    if row["history"] is not None:
        history = [ChatMessage.model_validate(m) for m in json.loads(row["history"])]
    return Claim(
        attempt=row["attempt"],
        agent_model=row["agent_model"],
        system_prompt=row["system_prompt"],
        history=history,
    )


async def complete_run(
    pool: Pool,
    run_id: UUID,
    attempt: int,
    *,
    text: str,
    model: str,
    finish_reason: str,
    usage: Usage,
) -> bool:
    """Store the reply and usage and mark the run completed; False if the attempt is stale."""
    updated: int = await pool.fetchval(
        _COMPLETE,
        run_id,
        attempt,
        finish_reason,
        model,
        text,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )
    return updated == 1


async def fail_run(
    pool: Pool, run_id: UUID, attempt: int, error: ErrorInfo, *, model: str | None = None
) -> bool:
    """Mark the run failed with its error; False if the attempt is stale or it already ended."""
    row: Any = await pool.fetchrow(_FAIL, run_id, attempt, error.model_dump(mode="json"), model)
    return row is not None
