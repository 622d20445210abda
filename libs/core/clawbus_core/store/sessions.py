"""Sessions as every surface lists them: summaries, one session, its history, deletion.

Surfaces (000 `/v1/sessions`, 001 `/api/sessions`, 002 `/api/v1/sessions`, WS
`session.list` / `session.get`) render these records in their own shapes; the queries live
here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from clawbus_protocol.errors import Conflict, NotFound

from clawbus_core.db import Pool

MAX_PAGE = 500

_SUMMARY_COLUMNS = """
    s.id, s.session_key, s.channel, s.title, s.created_at, s.updated_at,
    a.key AS agent_key,
    (SELECT count(*) FROM messages m WHERE m.session_id = s.id AND m.kind = 'message')
        AS message_count,
    (SELECT count(*) FROM runs r WHERE r.session_id = s.id AND r.status IN ('queued', 'running'))
        AS active_runs
"""

_LIST = f"""
SELECT {_SUMMARY_COLUMNS}
FROM sessions s JOIN agents a ON a.id = s.agent_id
WHERE s.tenant_id = $1 AND ($2::text IS NULL OR a.key = $2)
ORDER BY s.updated_at DESC, s.id
LIMIT $3 OFFSET $4
"""  # noqa: S608 (constant columns, not input)

_GET = f"""
SELECT {_SUMMARY_COLUMNS}
FROM sessions s JOIN agents a ON a.id = s.agent_id
WHERE s.tenant_id = $1 AND s.session_key = $2
"""  # noqa: S608

_COUNT = "SELECT count(*) FROM sessions WHERE tenant_id = $1"

_HISTORY = """
SELECT h.id, h.role, h.content, h.tool_calls, h.tool_call_id, h.run_id, h.created_at
FROM (SELECT m.* FROM messages m JOIN sessions s ON s.id = m.session_id
      WHERE s.tenant_id = $1 AND s.session_key = $2 AND m.kind = 'message'
      ORDER BY m.id DESC LIMIT $3) h
ORDER BY h.id
"""

_DELETE = """
WITH s AS (
    SELECT id FROM sessions WHERE tenant_id = $1 AND session_key = $2
), busy AS (
    SELECT count(*) AS n FROM runs WHERE session_id = (SELECT id FROM s)
      AND status IN ('queued', 'running')
), d AS (
    DELETE FROM sessions WHERE id = (SELECT id FROM s) AND (SELECT n FROM busy) = 0
    RETURNING id
)
SELECT (SELECT count(*) FROM s) AS found, (SELECT n FROM busy) AS busy,
       (SELECT count(*) FROM d) AS deleted
"""


@dataclass(frozen=True)
class SessionSummary:
    id: UUID
    key: str
    agent_key: str
    channel: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    active_runs: int


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    role: str
    content: str
    tool_calls: Any
    tool_call_id: str | None
    run_id: UUID | None
    created_at: datetime


def _summary(row: Any) -> SessionSummary:
    return SessionSummary(
        id=row["id"],
        key=row["session_key"],
        agent_key=row["agent_key"],
        channel=row["channel"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
        active_runs=row["active_runs"],
    )


async def list_sessions(
    pool: Pool,
    tenant_id: UUID,
    *,
    agent_key: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[SessionSummary]:
    """Most recently active first; `limit` is capped at MAX_PAGE."""
    rows = await pool.fetch(
        _LIST, tenant_id, agent_key, max(1, min(limit, MAX_PAGE)), max(0, offset)
    )
    return [_summary(r) for r in rows]


async def count_sessions(pool: Pool, tenant_id: UUID) -> int:
    count: int = await pool.fetchval(_COUNT, tenant_id)
    return count


async def get_session(pool: Pool, tenant_id: UUID, key: str) -> SessionSummary:
    row = await pool.fetchrow(_GET, tenant_id, key)
    if row is None:
        raise NotFound(f"session {key!r} not found", param="sessionKey")
    return _summary(row)


async def history(pool: Pool, tenant_id: UUID, key: str, *, limit: int = 100) -> list[HistoryEntry]:
    """The session's last `limit` messages (capped at MAX_PAGE), oldest first."""
    await get_session(pool, tenant_id, key)  # NotFound for an unknown session
    rows = await pool.fetch(_HISTORY, tenant_id, key, max(1, min(limit, MAX_PAGE)))
    return [
        HistoryEntry(
            id=r["id"],
            role=r["role"],
            content=r["content"],
            tool_calls=r["tool_calls"],
            tool_call_id=r["tool_call_id"],
            run_id=r["run_id"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def delete_session(pool: Pool, tenant_id: UUID, key: str) -> None:
    """Delete the session with its runs and messages. A session with a run still queued or
    running is refused (409): abort it first, so nothing is cut off half-way."""
    row = await pool.fetchrow(_DELETE, tenant_id, key)
    assert row is not None
    if not row["found"]:
        raise NotFound(f"session {key!r} not found", param="sessionKey")
    if row["busy"]:
        raise Conflict(
            f"session {key!r} has {row['busy']} unfinished run(s); abort them first",
            param="sessionKey",
        )
