"""Runs and their messages: intake (gateway), claim / complete / fail (runner).

Fencing: a run's `attempt` rises each time a runner claims it; completion and failure only
match the attempt that claimed it, so a stale runner's late write changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from clawbus_protocol.errors import ErrorInfo, NotFound
from clawbus_protocol.runs import (
    ChatMessage,
    QueueMode,
    RunInput,
    RunOptions,
    RunRequest,
    ToolCall,
    Usage,
)

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
    INSERT INTO runs (id, tenant_id, session_id, agent_id, idempotency_key, model,
                      input, options, reply_to, queue_mode, trace_context)
    SELECT $6, $1, s.id, a.id, $7, $8,
           jsonb_set($10::jsonb, '{use_session_history}', to_jsonb($11::bool AND NOT s.created)),
           $12::jsonb, $13, coalesce($14, a.queue_mode), $15::jsonb
    FROM s, (SELECT id, queue_mode FROM agents WHERE tenant_id = $1 AND key = $2) a
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING id, session_id, input, queue_mode
), m AS (
    INSERT INTO messages (tenant_id, session_id, run_id, run_step, role, content, tool_call_id)
    SELECT $1, r.session_id, r.id, x.step, x.role, x.content, x.tool_call_id
    FROM r, jsonb_to_recordset($9::jsonb) AS x(step int, role text, content text, tool_call_id text)
    ORDER BY x.step
)
SELECT (SELECT id FROM a) AS agent_id,
       (SELECT id FROM s) AS session_id,
       (SELECT created FROM s) AS session_created,
       (SELECT id FROM r) AS run_id,
       (SELECT (input->>'use_session_history')::bool FROM r) AS use_session_history,
       (SELECT queue_mode FROM r) AS queue_mode
"""

_EXISTING = """
SELECT r.id, r.status, r.session_id, r.model, r.finish_reason, r.error, s.session_key,
       a.content AS text, a.tool_calls,
       u.prompt_tokens, u.completion_tokens, u.total_tokens
FROM runs r
JOIN sessions s ON s.id = r.session_id
LEFT JOIN LATERAL (
    SELECT m.content, m.tool_calls FROM messages m WHERE m.run_id = r.id AND m.role = 'assistant'
    ORDER BY m.run_step DESC LIMIT 1
) a ON true
LEFT JOIN LATERAL (
    SELECT sum(prompt_tokens)::int AS prompt_tokens,
           sum(completion_tokens)::int AS completion_tokens,
           sum(total_tokens)::int AS total_tokens
    FROM usage WHERE run_id = r.id
) u ON true
WHERE r.tenant_id = $1 AND r.idempotency_key = $2
"""

# A queued run as it was published (to publish it again: see queued_request).
_QUEUED = """
SELECT r.id, r.tenant_id, r.agent_id, a.key AS agent_key, r.session_id, s.session_key,
       r.idempotency_key, r.input, r.options, r.queue_mode
FROM runs r JOIN sessions s ON s.id = r.session_id JOIN agents a ON a.id = r.agent_id
WHERE r.id = $1 AND r.status = 'queued'
"""

_FINISH = """
WITH r AS (
    UPDATE runs SET status = $3, finished_at = now(), finish_reason = $4,
                    model = coalesce($5, model), error = $6, steps = $7
    WHERE id = $1 AND attempt = $2 AND status = 'running'
    RETURNING id, tenant_id, session_id, agent_id
), merged AS (
    UPDATE runs SET status = $3, finished_at = now(), error = $6
    WHERE merged_into = (SELECT id FROM r)
), m AS (
    INSERT INTO messages (tenant_id, session_id, run_id, run_step, role, content,
                          tool_calls, tool_call_id)
    SELECT r.tenant_id, r.session_id, r.id, x.step, x.role, x.content, x.tool_calls,
           x.tool_call_id
    FROM r, jsonb_to_recordset($8::jsonb)
         AS x(step int, role text, content text, tool_calls jsonb, tool_call_id text)
    ON CONFLICT (run_id, run_step) DO NOTHING
), u AS (
    INSERT INTO usage (tenant_id, run_id, session_id, agent_id, model,
                       prompt_tokens, completion_tokens, total_tokens)
    SELECT r.tenant_id, r.id, r.session_id, r.agent_id, x.model,
           x.prompt_tokens, x.completion_tokens, x.total_tokens
    FROM r, jsonb_to_recordset($9::jsonb)
         AS x(model text, prompt_tokens int, completion_tokens int, total_tokens int)
    ON CONFLICT (run_id, model) DO NOTHING
), s AS (
    -- The lane is released with the run when nothing else waits in the session.
    UPDATE sessions SET updated_at = now(),
           lease_owner = CASE WHEN free.yes THEN NULL ELSE lease_owner END,
           lease_until = CASE WHEN free.yes THEN NULL ELSE lease_until END
    FROM (SELECT $10::text IS NOT NULL AND NOT EXISTS (
              SELECT 1 FROM runs q, r
              WHERE q.session_id = r.session_id AND q.id <> r.id
                AND q.status IN ('queued', 'running')) AS yes) free
    WHERE id = (SELECT session_id FROM r) AND (lease_owner = $10 OR $10::text IS NULL)
    RETURNING lease_owner IS NULL AS released
)
SELECT (SELECT count(*) FROM r) AS stored,
       coalesce((SELECT released FROM s), false) AS released
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
    use_session_history: bool
    queue_mode: QueueMode


@dataclass(frozen=True)
class ExistingRun:
    """A run an earlier request with the same idempotency key created."""

    run_id: UUID
    session_id: UUID
    session_key: str
    status: RunStatus
    model: str | None
    text: str | None
    finish_reason: str | None
    usage: Usage
    error: ErrorInfo | None
    tool_calls: list[ToolCall] = field(default_factory=list)  # the answer's calls


@dataclass(frozen=True)
class Finished:
    stored: bool
    released: bool  # the session's lane was released with the run


@dataclass(frozen=True)
class StoredMessage:
    """A message a run produced, stored when the run ends (steps count from 1)."""

    step: int
    message: ChatMessage

    def row(self) -> dict[str, Any]:
        m = self.message
        calls = [c.model_dump(mode="json") for c in m.tool_calls] or None
        return {
            "step": self.step,
            "role": m.role,
            "content": m.content,
            "tool_calls": calls,
            "tool_call_id": m.tool_call_id,
        }


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
    run_input: RunInput,
    options: RunOptions,
    reply_to: str | None,
    queue_mode: QueueMode | None,
    named_session: bool,
    trace_context: Mapping[str, str] | None = None,
) -> NewRun | ExistingRun:
    """Store the session (if new), the run (with its request, so that any runner holding
    the session's lane can run it) and the turn's messages (see `_intake`) in one statement.
    The session's history is used when the session is named and existed before this run."""
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
        _intake(user_text, run_input),
        run_input.model_dump(mode="json"),
        named_session,
        options.model_dump(mode="json", exclude_none=True),
        reply_to,
        queue_mode,
        dict(trace_context) if trace_context else None,
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
        use_session_history=row["use_session_history"],
        queue_mode=row["queue_mode"],
    )


def _intake(user_text: str, run_input: RunInput) -> list[dict[str, Any]]:
    """The messages a turn adds to its session: the results of the model's tool calls the
    client answers with (they must follow those calls in the transcript), then the user's
    text, if any. Numbered up to step 0; the run's own messages count from 1."""
    last_assistant = max(
        (i for i, m in enumerate(run_input.messages) if m.role == "assistant"), default=-1
    )
    rows: list[dict[str, Any]] = [
        {"role": "tool", "content": m.content, "tool_call_id": m.tool_call_id}
        for m in run_input.messages[last_assistant + 1 :]
        if m.role == "tool"
    ]
    if user_text or not rows:
        rows.append({"role": "user", "content": user_text, "tool_call_id": None})
    return [{"step": i - len(rows) + 1, **row} for i, row in enumerate(rows)]


_LAST_CALLS = """
SELECT m.tool_calls
FROM sessions s
JOIN LATERAL (
    SELECT r.id FROM runs r WHERE r.session_id = s.id AND r.status = 'completed'
    ORDER BY r.created_at DESC LIMIT 1
) r ON true
JOIN LATERAL (
    SELECT m.tool_calls FROM messages m WHERE m.run_id = r.id AND m.role = 'assistant'
    ORDER BY m.run_step DESC LIMIT 1
) m ON true
WHERE s.tenant_id = $1 AND s.session_key = $2
"""


async def last_response_calls(pool: Pool, tenant_id: UUID, session_key: str) -> list[ToolCall]:
    """The tool calls the session's last completed run ended with (none if it answered)."""
    stored = await pool.fetchval(_LAST_CALLS, tenant_id, session_key)
    return [ToolCall.model_validate(c) for c in stored or ()]


async def find_run(pool: Pool, tenant_id: UUID, idempotency_key: str) -> ExistingRun | None:
    row = await pool.fetchrow(_EXISTING, tenant_id, idempotency_key)
    if row is None:
        return None
    return ExistingRun(
        run_id=row["id"],
        session_id=row["session_id"],
        session_key=row["session_key"],
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
        tool_calls=[ToolCall.model_validate(c) for c in row["tool_calls"] or []],
    )


async def finish_run(
    pool: Pool,
    run_id: UUID,
    attempt: int,
    *,
    status: Literal["completed", "failed", "aborted"],
    messages: list[StoredMessage],
    usage: dict[str, Usage],
    model: str | None,
    finish_reason: str | None = None,
    error: ErrorInfo | None = None,
    lease_owner: str | None = None,
) -> Finished:
    """End the run: status, its messages and usage per model, in one statement that only
    matches the attempt that claimed it (`stored` False if a newer attempt owns the run).
    With `lease_owner`, the session's lane is released too if nothing else waits in it."""
    row = await pool.fetchrow(
        _FINISH,
        run_id,
        attempt,
        status,
        finish_reason,
        model,
        error.model_dump(mode="json") if error is not None else None,
        sum(1 for m in messages if m.message.role == "assistant"),
        [m.row() for m in messages],
        [{"model": name, **u.model_dump()} for name, u in usage.items()],
        lease_owner,
    )
    assert row is not None
    return Finished(stored=row["stored"] == 1, released=row["released"])


async def fail_run(
    pool: Pool, run_id: UUID, attempt: int, error: ErrorInfo, *, model: str | None = None
) -> bool:
    """Mark the run failed with its error; False if the attempt is stale or it already ended."""
    row: Any = await pool.fetchrow(_FAIL, run_id, attempt, error.model_dump(mode="json"), model)
    return row is not None


async def queued_request(pool: Pool, run_id: UUID, *, reply_to: str | None) -> RunRequest | None:
    """The RunRequest of a run still queued, rebuilt from its row (None once it started).

    A process that stored a run and died before publishing it leaves it queued with nothing
    on the bus; whoever meets it again (a retried request, a re-read chat update) publishes
    it again. JetStream drops a copy within its dedup window and runners skip a run that is
    no longer queued, so a run published twice still runs once.
    """
    row = await pool.fetchrow(_QUEUED, run_id)
    if row is None:
        return None
    return RunRequest(
        run_id=row["id"],
        idempotency_key=row["idempotency_key"],
        tenant_id=row["tenant_id"],
        agent_id=row["agent_id"],
        agent_key=row["agent_key"],
        session_id=row["session_id"],
        session_key=row["session_key"],
        input=RunInput.model_validate(row["input"]),
        options=RunOptions.model_validate(row["options"]),
        reply_to=reply_to,
        queue_mode=row["queue_mode"],
    )
