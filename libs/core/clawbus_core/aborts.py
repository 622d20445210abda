"""Abort by run id or by session, from any surface.

The database decides: a run still queued is closed as `aborted` here (no runner can claim it
afterwards) and its watchers get an `aborted` event; a running run is flagged
(`abort_requested_at`) and every runner is told over NATS; the one executing it stops
within milliseconds, records what was produced so far and emits `aborted` itself. A runner
that claims a flagged run, or reaches a step boundary of one, stops too, so a lost notice
only delays the abort.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from clawbus_protocol.errors import NotFound
from clawbus_protocol.names import Names
from clawbus_protocol.runs import AbortedEvent, AbortNotice
from nats.aio.client import Client as NatsClient

from clawbus_core import bus
from clawbus_core.db import Pool
from clawbus_core.events import Redis, RunEventWriter

_FLAG = """
WITH target AS (
    SELECT r.id FROM runs r
    WHERE r.tenant_id = $1 AND r.status IN ('queued', 'running')
      AND (r.id = $2 OR r.session_id = (
               SELECT id FROM sessions WHERE tenant_id = $1 AND session_key = $3))
), flagged AS (
    UPDATE runs r SET abort_requested_at = coalesce(r.abort_requested_at, now()),
                      status = CASE WHEN r.status = 'queued' THEN 'aborted' ELSE r.status END,
                      finished_at = CASE WHEN r.status = 'queued' THEN now()
                                         ELSE r.finished_at END
    FROM target WHERE r.id = target.id AND r.status IN ('queued', 'running')
    RETURNING r.id, r.status, r.session_id, r.reply_to
)
SELECT f.id, f.status, f.session_id, f.reply_to,
       (SELECT count(*) FROM runs WHERE tenant_id = $1 AND id = $2) AS run_exists,
       (SELECT count(*) FROM sessions WHERE tenant_id = $1 AND session_key = $3) AS session_exists
FROM (SELECT 1) one LEFT JOIN flagged f ON true
"""


@dataclass(frozen=True)
class AbortResult:
    run_ids: list[UUID]  # runs that were queued or running and are now stopping
    queued: list[UUID]  # of those, the ones closed at once (they never started)


async def request_abort(
    pool: Pool,
    nc: NatsClient,
    redis: Redis,
    names: Names,
    *,
    tenant_id: UUID,
    run_id: UUID | None = None,
    session_key: str | None = None,
    reason: str = "aborted by request",
) -> AbortResult:
    """Abort one run, or every unfinished run of a session. NotFound if neither exists."""
    rows = await pool.fetch(_FLAG, tenant_id, run_id, session_key)
    if rows and not rows[0]["run_exists"] and not rows[0]["session_exists"]:
        what = f"run {run_id}" if run_id is not None else f"session {session_key!r}"
        raise NotFound(f"{what} not found")
    hit = [r for r in rows if r["id"] is not None]
    queued = [r for r in hit if r["status"] == "aborted"]
    running = [r["id"] for r in hit if r["status"] == "running"]
    for row in queued:
        # The run never started: nobody else writes its events (attempt 0 is below any
        # runner's), so the aborted event is ours to send.
        writer = await RunEventWriter.open(redis, names, row["id"], 0, row["reply_to"])
        await writer.emit(AbortedEvent(run_id=row["id"], seq=0, reason=reason))
        await writer.aclose()
    if running:
        notice_abort = AbortNotice(run_ids=running, reason=reason)
        await nc.publish(names.runs_abort_subject, notice_abort.model_dump_json().encode())
    await bus.settle(nc)
    return AbortResult(run_ids=[r["id"] for r in hit], queued=[r["id"] for r in queued])
