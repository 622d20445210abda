"""Cron jobs and their firings (migration 0007): what the gateway and the agent tool write,
and what the scheduler's leader records.

Exactly once: `claim_due` records a due time's firing (cron_runs, UNIQUE (job_id,
scheduled_for)) and advances the job's `next_run_at` in one transaction that holds the job's
row (FOR UPDATE SKIP LOCKED), so a time is recorded once however many schedulers look.
`pending` hands each recorded firing to the leader to start its run, under an idempotency key
naming the job and the time (`Firing.idempotency_key`): a firing started twice (a leader died
between starting the run and noting it) is still one run. `ended` finds the firings whose run
has ended, and `record_end` writes how, with the job's failure backoff.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg
from clawbus_protocol.errors import Conflict, ErrorInfo, InvalidRequest, NotFound

from clawbus_core.cron import (
    ActiveHours,
    CronExpr,
    MissedPolicy,
    Schedule,
    next_in_window,
    plan,
    whole_ms,
)
from clawbus_core.db import Pool
from clawbus_core.store import channels

log = logging.getLogger(__name__)

SessionTarget = Literal["job", "isolated", "main"]
PayloadKind = Literal["message", "system_event"]
DeliveryMode = Literal["none", "channel", "webhook"]
FiringStatus = Literal["pending", "running", "completed", "failed", "aborted", "skipped"]
DeliveryStatus = Literal["none", "queued", "delivered", "suppressed", "failed"]

# A failed firing's job waits this long before it fires again, by consecutive failures
# (the last one repeats); a one-off (`at`) job is retried this many times, then disabled.
BACKOFF_S = (30, 60, 300, 900, 3600)
AT_RETRIES = 3
MAX_RESULT_CHARS = 16_000
MAX_JOBS = 1000  # per tenant: bounds what a list answers
RunEnd = Literal["completed", "failed", "aborted"]
FINAL_RUN_STATUSES: tuple[RunEnd, ...] = ("completed", "failed", "aborted")


@dataclass(frozen=True)
class Payload:
    kind: PayloadKind
    text: str
    model: str | None = None


@dataclass(frozen=True)
class Delivery:
    mode: DeliveryMode = "none"
    channel: str | None = None  # as given (name or id); the channel's name once stored
    channel_id: UUID | None = None
    to: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    window: ActiveHours | None = None
    ack_max_chars: int = 300


@dataclass(frozen=True)
class JobSpec:
    """A job's writable fields, checked (see clawbus_core.cronjobs for the wire's)."""

    name: str
    agent_key: str
    schedule: Schedule
    payload: Payload
    delivery: Delivery = Delivery()
    session_target: SessionTarget = "job"
    heartbeat: Heartbeat | None = None
    enabled: bool = True
    missed: MissedPolicy = "run_once"
    delete_after_run: bool = False


@dataclass(frozen=True)
class Firing:
    id: int
    job_id: UUID
    scheduled_for: datetime
    manual: bool
    status: FiringStatus
    run_id: UUID | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error: ErrorInfo | None = None
    result: str | None = None
    delivery_status: DeliveryStatus | None = None
    delivery_error: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The run's key: the job and the time (whole milliseconds, UTC)."""
        return f"cron:{self.job_id}:{self.scheduled_for.isoformat(timespec='milliseconds')}"


@dataclass(frozen=True)
class Job:
    id: UUID
    namespace: str
    tenant_id: UUID
    agent_id: UUID
    spec: JobSpec
    consecutive_failures: int
    next_retry_at: datetime | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last: Firing | None = None  # the latest firing
    total_runs: int = 0

    @property
    def kind(self) -> Literal["heartbeat", "cron"]:
        """What fires: an agent's heartbeat, or a cron job (its runs' channel and metrics)."""
        return "heartbeat" if self.spec.heartbeat is not None else "cron"

    @property
    def window(self) -> ActiveHours | None:
        return self.spec.heartbeat.window if self.spec.heartbeat is not None else None


# --- rows <-> values --------------------------------------------------------------------------

_JOB = """
    j.id, j.namespace, j.tenant_id, j.agent_id, a.key AS agent_key, j.name, j.enabled,
    j.schedule_kind, j.cron_expr, j.tz, j.every_ms, j.anchor_at, j.at_time, j.payload,
    j.session_target, j.delivery, j.heartbeat, j.missed, j.delete_after_run,
    j.consecutive_failures, j.next_retry_at, j.next_run_at, j.last_run_at, j.created_at,
    j.updated_at
"""
_FIRING = """
    c.id AS firing_id, c.job_id, c.scheduled_for, c.manual, c.status, c.run_id, c.started_at,
    c.finished_at, c.duration_ms, c.error, c.result, c.delivery_status, c.delivery_error
"""
# A job as the surfaces show it: with its latest firing and how many it has had.
_SHOWN = f"""
SELECT {_JOB}, {_FIRING}, n.total
FROM cron_jobs j JOIN agents a ON a.id = j.agent_id
LEFT JOIN LATERAL (
    SELECT * FROM cron_runs WHERE job_id = j.id ORDER BY scheduled_for DESC LIMIT 1
) c ON true
LEFT JOIN LATERAL (SELECT count(*)::int AS total FROM cron_runs WHERE job_id = j.id) n ON true
"""  # noqa: S608 (constant clauses)

_RUN_NOW = f"""
INSERT INTO cron_runs AS c (job_id, scheduled_for, manual) VALUES ($1, $2, true)
ON CONFLICT (job_id, scheduled_for) DO UPDATE SET manual = c.manual
RETURNING {_FIRING}
"""  # noqa: S608 (constant clauses)
_HISTORY = f"""
SELECT {_FIRING} FROM cron_runs c WHERE c.job_id = $1 ORDER BY c.scheduled_for DESC LIMIT $2
"""  # noqa: S608 (constant clauses)
_DUE = f"""
SELECT {_JOB} FROM cron_jobs j JOIN agents a ON a.id = j.agent_id
WHERE j.namespace = $1 AND j.enabled AND j.next_run_at <= $2
ORDER BY j.next_run_at LIMIT $3
FOR UPDATE OF j SKIP LOCKED
"""  # noqa: S608 (constant clauses)
_RECORD = f"""
INSERT INTO cron_runs AS c (job_id, scheduled_for) VALUES ($1, $2)
ON CONFLICT (job_id, scheduled_for) DO NOTHING
RETURNING {_FIRING}
"""  # noqa: S608 (constant clauses)
_STOP = "UPDATE cron_jobs SET enabled = false, next_run_at = NULL WHERE id = $1"
_PENDING = f"""
SELECT {_JOB}, {_FIRING} FROM cron_runs c JOIN cron_jobs j ON j.id = c.job_id
JOIN agents a ON a.id = j.agent_id
WHERE j.namespace = $1 AND c.status = 'pending'
ORDER BY c.scheduled_for LIMIT $2
"""  # noqa: S608 (constant clauses)


def _schedule(row: asyncpg.Record) -> Schedule:
    kind = row["schedule_kind"]
    if kind == "cron":
        return Schedule("cron", expr=CronExpr.parse(row["cron_expr"]), tz=row["tz"])
    if kind == "every":
        return Schedule("every", every_ms=row["every_ms"], anchor=row["anchor_at"])
    return Schedule("at", at=row["at_time"])


def _heartbeat(raw: Mapping[str, Any] | None) -> Heartbeat | None:
    if raw is None:
        return None
    hours = raw.get("active_hours")
    window = ActiveHours.parse(hours["start"], hours["end"], hours.get("tz")) if hours else None
    return Heartbeat(window=window, ack_max_chars=int(raw.get("ack_max_chars", 300)))


def _heartbeat_json(heartbeat: Heartbeat | None) -> dict[str, Any] | None:
    if heartbeat is None:
        return None
    window = heartbeat.window
    hours = None
    if window is not None:
        start, end = window.clock_times
        hours = {"start": start, "end": end, "tz": window.tz}
    return {"active_hours": hours, "ack_max_chars": heartbeat.ack_max_chars}


def _delivery(raw: Mapping[str, Any]) -> Delivery:
    channel_id = raw.get("channel_id")
    return Delivery(
        mode=raw.get("mode", "none"),
        channel=raw.get("channel"),
        channel_id=UUID(channel_id) if channel_id else None,
        to=raw.get("to"),
        url=raw.get("url"),
    )


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": delivery.mode}
    if delivery.mode == "channel":
        out |= {"channel": delivery.channel, "channel_id": str(delivery.channel_id)}
        out["to"] = delivery.to
    elif delivery.mode == "webhook":
        out["url"] = delivery.url
    return out


def _firing(row: asyncpg.Record) -> Firing | None:
    if row["firing_id"] is None:
        return None
    error = row["error"]
    return Firing(
        id=row["firing_id"],
        job_id=row["job_id"],
        scheduled_for=row["scheduled_for"],
        manual=row["manual"],
        status=row["status"],
        run_id=row["run_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        error=ErrorInfo.model_validate(error) if error else None,
        result=row["result"],
        delivery_status=row["delivery_status"],
        delivery_error=row["delivery_error"],
    )


def _job(row: asyncpg.Record, *, shown: bool = False) -> Job:
    payload = row["payload"]
    spec = JobSpec(
        name=row["name"],
        agent_key=row["agent_key"],
        schedule=_schedule(row),
        payload=Payload(payload["kind"], payload["text"], payload.get("model")),
        delivery=_delivery(row["delivery"]),
        session_target=row["session_target"],
        heartbeat=_heartbeat(row["heartbeat"]),
        enabled=row["enabled"],
        missed=row["missed"],
        delete_after_run=row["delete_after_run"],
    )
    return Job(
        id=row["id"],
        namespace=row["namespace"],
        tenant_id=row["tenant_id"],
        agent_id=row["agent_id"],
        spec=spec,
        consecutive_failures=row["consecutive_failures"],
        next_retry_at=row["next_retry_at"],
        next_run_at=row["next_run_at"],
        last_run_at=row["last_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last=_firing(row) if shown else None,
        total_runs=row["total"] if shown else 0,
    )


def first_run(spec: JobSpec, now: datetime) -> datetime | None:
    """When a job created, changed or enabled at `now` is first due."""
    if not spec.enabled:
        return None
    schedule = spec.schedule
    if schedule.kind == "at":
        return schedule.at
    window = spec.heartbeat.window if spec.heartbeat is not None else None
    return next_in_window(schedule, now, window)


def check_name(name: str) -> str:
    clean = name.strip()
    if not clean or any(unicodedata.category(ch) in ("Cc", "Cf") for ch in clean):
        raise InvalidRequest(
            "a job name must not be empty or hold control characters", param="name"
        )
    return clean


# --- jobs: the gateway's and the tool's side --------------------------------------------------


async def _resolve(
    pool: Pool, namespace: str, tenant_id: UUID, spec: JobSpec
) -> tuple[UUID, JobSpec]:
    """The agent's id, and the spec with its delivery channel resolved to the channel."""
    agent_id = await pool.fetchval(
        "SELECT id FROM agents WHERE tenant_id = $1 AND key = $2",
        tenant_id,
        spec.agent_key.strip().lower(),
    )
    if agent_id is None:
        raise NotFound(f"agent {spec.agent_key!r} not found", param="agentId")
    delivery = spec.delivery
    if delivery.mode == "channel":
        assert delivery.channel is not None
        try:
            channel = await channels.find_channel(pool, namespace, tenant_id, delivery.channel)
        except NotFound:
            raise NotFound(
                f"channel {delivery.channel!r} not found", param="delivery.channel"
            ) from None
        delivery = replace(delivery, channel=channel.name, channel_id=channel.id)
    return agent_id, replace(spec, delivery=delivery)


def _columns(spec: JobSpec) -> list[Any]:
    s = spec.schedule
    return [
        check_name(spec.name),
        spec.enabled,
        s.kind,
        s.expr.text if s.expr is not None else None,
        s.tz,
        s.every_ms,
        s.anchor,
        s.at,
        {"kind": spec.payload.kind, "text": spec.payload.text, "model": spec.payload.model},
        spec.session_target,
        _delivery_json(spec.delivery),
        _heartbeat_json(spec.heartbeat),
        spec.missed,
        spec.delete_after_run,
    ]


_INSERT = """
INSERT INTO cron_jobs (id, namespace, tenant_id, agent_id, name, enabled, schedule_kind,
    cron_expr, tz, every_ms, anchor_at, at_time, payload, session_target, delivery, heartbeat,
    missed, delete_after_run, next_run_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (namespace, tenant_id, name) DO NOTHING
RETURNING id
"""

_UPDATE = """
UPDATE cron_jobs SET agent_id = $4, name = $5, enabled = $6, schedule_kind = $7,
    cron_expr = $8, tz = $9, every_ms = $10, anchor_at = $11, at_time = $12, payload = $13,
    session_target = $14, delivery = $15, heartbeat = $16, missed = $17,
    delete_after_run = $18, next_run_at = CASE WHEN $20 THEN $19 ELSE next_run_at END,
    updated_at = now()
WHERE id = $1 AND namespace = $2 AND tenant_id = $3
RETURNING id
"""


def _taken(spec: JobSpec, exc: asyncpg.UniqueViolationError) -> Conflict:
    if "one_heartbeat" in str(exc.constraint_name or ""):
        return Conflict(f"agent {spec.agent_key!r} already has a heartbeat", param="heartbeat")
    return Conflict(f"a cron job named {spec.name!r} already exists", param="name")


async def create_job(
    pool: Pool, namespace: str, tenant_id: UUID, spec: JobSpec, *, now: datetime
) -> Job:
    agent_id, spec = await _resolve(pool, namespace, tenant_id, spec)
    jobs = await pool.fetchval(
        "SELECT count(*) FROM cron_jobs WHERE namespace = $1 AND tenant_id = $2",
        namespace,
        tenant_id,
    )
    if jobs >= MAX_JOBS:
        raise Conflict(f"the tenant has {MAX_JOBS} cron jobs, the most it may have; delete some")
    job_id = uuid.uuid4()
    try:
        created = await pool.fetchval(
            _INSERT, job_id, namespace, tenant_id, agent_id, *_columns(spec), first_run(spec, now)
        )
    except asyncpg.UniqueViolationError as exc:
        raise _taken(spec, exc) from None
    if created is None:
        raise Conflict(f"a cron job named {spec.name!r} already exists", param="name")
    return await find_job(pool, namespace, tenant_id, str(job_id))


async def update_job(
    pool: Pool, job: Job, spec: JobSpec, *, now: datetime, reschedule: bool
) -> Job:
    """Replace the job's fields; with `reschedule` (its schedule or enabled flag changed) it
    is next due at its first time after `now`."""
    agent_id, spec = await _resolve(pool, job.namespace, job.tenant_id, spec)
    try:
        updated = await pool.fetchval(
            _UPDATE,
            job.id,
            job.namespace,
            job.tenant_id,
            agent_id,
            *_columns(spec),
            first_run(spec, now),
            reschedule,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _taken(spec, exc) from None
    if updated is None:
        raise NotFound(f"cron job {str(job.id)!r} not found", param="id")
    return await find_job(pool, job.namespace, job.tenant_id, str(job.id))


async def find_job(pool: Pool, namespace: str, tenant_id: UUID, ref: str) -> Job:
    """The job a request names: by id, or by name."""
    if "\x00" in ref or len(ref) > 200:
        raise NotFound(f"cron job {ref[:100]!r} not found", param="id")
    try:
        job_id: UUID | None = UUID(ref)
    except ValueError:
        job_id = None
    row = await pool.fetchrow(
        f"{_SHOWN} WHERE j.namespace = $1 AND j.tenant_id = $2 "
        "AND (j.id = $3 OR ($3::uuid IS NULL AND j.name = $4))",
        namespace,
        tenant_id,
        job_id,
        ref.strip(),
    )
    if row is None:
        raise NotFound(f"cron job {ref!r} not found", param="id")
    return _job(row, shown=True)


async def list_jobs(pool: Pool, namespace: str, tenant_id: UUID) -> list[Job]:
    rows = await pool.fetch(
        f"{_SHOWN} WHERE j.namespace = $1 AND j.tenant_id = $2 ORDER BY j.created_at, j.id",
        namespace,
        tenant_id,
    )
    return [_job(r, shown=True) for r in rows]


async def set_enabled(pool: Pool, job: Job, enabled: bool, *, now: datetime) -> Job:
    """Enabled, it is next due at its first time after `now` (times passed while it was
    disabled are not missed ones)."""
    spec = replace(job.spec, enabled=enabled)
    await pool.execute(
        "UPDATE cron_jobs SET enabled = $2, next_run_at = $3, updated_at = now() WHERE id = $1",
        job.id,
        enabled,
        first_run(spec, now),
    )
    return await find_job(pool, job.namespace, job.tenant_id, str(job.id))


async def delete_job(pool: Pool, job: Job) -> None:
    await pool.execute("DELETE FROM cron_jobs WHERE id = $1", job.id)


async def request_run(pool: Pool, job: Job, *, now: datetime) -> Firing:
    """Record a firing for now (run now): the scheduler's leader starts its run."""
    row = await pool.fetchrow(
        _RUN_NOW,
        job.id,
        whole_ms(now),
    )
    assert row is not None
    firing = _firing(row)
    assert firing is not None
    return firing


async def history(pool: Pool, job_id: UUID, *, limit: int = 20) -> list[Firing]:
    rows = await pool.fetch(
        _HISTORY,
        job_id,
        limit,
    )
    return [f for f in map(_firing, rows) if f is not None]


# --- firings: the scheduler's side ------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """What one `claim_due` did: the firings it recorded, and the jobs whose due time it
    passed over without a firing (missed under the `skip` policy, or outside active hours)."""

    firings: list[Firing]
    passed_over: list[Job]


async def claim_due(
    conn: asyncpg.Connection,
    namespace: str,
    now: datetime,
    *,
    grace: timedelta,
    limit: int = 100,
) -> Claimed:
    """Record the firings of the jobs due at `now` and advance each job (see
    clawbus_core.cron.plan), all in one transaction."""
    recorded: list[Firing] = []
    passed_over: list[Job] = []
    async with conn.transaction():
        rows = await conn.fetch(
            _DUE,
            namespace,
            now,
            limit,
        )
        for row in rows:
            try:
                job = _job(row)
                assert job.next_run_at is not None
                due = job.next_run_at
                step = plan(
                    job.spec.schedule,
                    due,
                    now,
                    missed=job.spec.missed,
                    grace=grace,
                    window=job.window,
                )
            except InvalidRequest as exc:
                # A stored schedule that no longer reads (a time zone gone from tzdata): the
                # job stops, with the reason, rather than stopping every job after it.
                log.warning("cron job %s stops: %s", row["id"], exc.info.message)
                await conn.execute(_STOP, row["id"])
                continue
            if step.fire:
                fired = await conn.fetchrow(
                    _RECORD,
                    job.id,
                    due,
                )
                if fired is not None and (firing := _firing(fired)) is not None:
                    recorded.append(firing)
            else:
                passed_over.append(job)
            await conn.execute(
                "UPDATE cron_jobs SET next_run_at = $2, "
                "last_run_at = CASE WHEN $3 THEN $4 ELSE last_run_at END, "
                "enabled = enabled AND $2::timestamptz IS NOT NULL WHERE id = $1",
                job.id,
                step.next_run_at,
                step.fire,
                due,
            )
    return Claimed(recorded, passed_over)


async def next_due(pool: Pool, namespace: str) -> datetime | None:
    """When the deployment's next job is due (the leader sleeps until then)."""
    value: datetime | None = await pool.fetchval(
        "SELECT min(next_run_at) FROM cron_jobs WHERE namespace = $1 AND enabled "
        "AND next_run_at IS NOT NULL",
        namespace,
    )
    return value


async def pending(pool: Pool, namespace: str, *, limit: int = 100) -> list[tuple[Firing, Job]]:
    """Firings recorded whose run is not started yet, oldest first."""
    rows = await pool.fetch(
        _PENDING,
        namespace,
        limit,
    )
    out = []
    for row in rows:
        firing = _firing(row)
        assert firing is not None
        out.append((firing, _job(row)))
    return out


async def started(pool: Pool, firing: Firing, run_id: UUID) -> None:
    await pool.execute(
        "UPDATE cron_runs SET run_id = $2, status = 'running', "
        "started_at = coalesce(started_at, now()) WHERE id = $1 AND status = 'pending'",
        firing.id,
        run_id,
    )


@dataclass(frozen=True)
class Ended:
    """A firing whose run has ended (or is gone: its session was deleted)."""

    firing: Firing
    job: Job
    run_status: RunEnd | None  # None: the run no longer exists
    run_error: ErrorInfo | None
    text: str | None  # the answer, when the run completed
    run_started_at: datetime | None
    run_finished_at: datetime | None


async def ended(pool: Pool, namespace: str, *, limit: int = 100) -> list[Ended]:
    rows = await pool.fetch(
        f"""
        SELECT {_JOB}, {_FIRING}, r.status AS run_status, r.error AS run_error,
               r.started_at AS run_started_at, r.finished_at AS run_finished_at,
               (SELECT m.content FROM messages m WHERE m.run_id = r.id AND m.role = 'assistant'
                  AND m.kind = 'message' ORDER BY m.id DESC LIMIT 1) AS text
        FROM cron_runs c JOIN cron_jobs j ON j.id = c.job_id JOIN agents a ON a.id = j.agent_id
        LEFT JOIN runs r ON r.id = c.run_id
        WHERE j.namespace = $1 AND c.status = 'running'
          AND (r.id IS NULL OR r.status = ANY($2::text[]))
        ORDER BY c.id LIMIT $3
        """,  # noqa: S608 (constant clauses)
        namespace,
        list(FINAL_RUN_STATUSES),
        limit,
    )
    out = []
    for row in rows:
        firing = _firing(row)
        assert firing is not None
        error = row["run_error"]
        out.append(
            Ended(
                firing=firing,
                job=_job(row),
                run_status=row["run_status"],
                run_error=ErrorInfo.model_validate(error) if error else None,
                text=row["text"] if row["run_status"] == "completed" else None,
                run_started_at=row["run_started_at"],
                run_finished_at=row["run_finished_at"],
            )
        )
    return out


_END = """
UPDATE cron_runs SET status = $2, error = $3, result = $4, delivery_status = $5,
    delivery_error = $6, finished_at = $7, duration_ms = $8, started_at = coalesce(started_at, $7)
WHERE id = $1 AND status IN ('pending', 'running')
RETURNING job_id
"""

# How the job goes on after a firing: a success clears the backoff; a failure counts and
# holds the job back (BACKOFF_S), retrying a one-off job up to AT_RETRIES times.
_SUCCEEDED = """
UPDATE cron_jobs SET consecutive_failures = 0, next_retry_at = NULL WHERE id = $1
RETURNING schedule_kind = 'at' AND delete_after_run AS delete
"""
_FAILED = """
WITH wait AS (
    SELECT $2::timestamptz + make_interval(
        secs => ($3::int[])[least(consecutive_failures + 1, cardinality($3::int[]))]) AS until,
        consecutive_failures + 1 AS failures
    FROM cron_jobs WHERE id = $1
)
UPDATE cron_jobs j SET consecutive_failures = wait.failures, next_retry_at = wait.until,
    next_run_at = CASE
        WHEN j.schedule_kind <> 'at' THEN greatest(j.next_run_at, wait.until)
        WHEN wait.failures <= $4 THEN wait.until
    END,
    enabled = CASE WHEN j.schedule_kind = 'at' THEN wait.failures <= $4 ELSE j.enabled END
FROM wait WHERE j.id = $1
"""


async def record_end(
    pool: Pool,
    firing: Firing,
    *,
    status: FiringStatus,
    now: datetime,
    error: ErrorInfo | None = None,
    result: str | None = None,
    delivery_status: DeliveryStatus | None = None,
    delivery_error: str | None = None,
    duration_ms: int | None = None,
) -> None:
    """Write how the firing ended (at `now`; its run took `duration_ms`) and what that means
    for its job (see `_FAILED`)."""
    async with pool.acquire() as conn, conn.transaction():
        job_id = await conn.fetchval(
            _END,
            firing.id,
            status,
            error.model_dump(mode="json") if error is not None else None,
            result[:MAX_RESULT_CHARS] if result is not None else None,
            delivery_status,
            delivery_error[:1000] if delivery_error else None,
            now,
            duration_ms,
        )
        if job_id is None:
            return  # recorded already (by a leader before this one)
        if status == "completed":
            if await conn.fetchval(_SUCCEEDED, job_id):
                await conn.execute("DELETE FROM cron_jobs WHERE id = $1", job_id)
        elif status == "failed":
            await conn.execute(_FAILED, job_id, now, list(BACKOFF_S), AT_RETRIES)
