"""Cron jobs and heartbeats as the surfaces write and show them: 003's (clawgo) GET/POST
/api/cron with `{"ok": true, ...}` envelopes and its `action`s, 001's GET /api/cron and POST
/api/cron/{id}/run, and the agent tool `cron`.

One job shape serves them all: clawgo's (`schedule` {kind, expr, tz, everyMs, atMs},
`payload` {kind, message, deliver, channel, to}, `state`, `createdAtMs`, `deleteAfterRun`)
with OpenClaw's fields beside it (`agentId`, `sessionTarget`, `delivery` {mode, channel,
to}) and clawbus's (`missed`, `heartbeat`, the schedule's `anchorMs`/`at`). Writes take the
same fields, nested (`schedule`, `payload`, `delivery`) or flat as 003's body shows them
(`name`, `message`, `expr`, `deliver`, `channel`, `to`, legacy `kind`/`everyMs`/`atMs`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool
from pydantic.alias_generators import to_camel

from clawbus_protocol.errors import ErrorInfo

CronAction = Literal["create", "update", "delete", "enable", "disable", "get", "list"]
ScheduleKindName = Literal["cron", "every", "at"]
SessionTarget = Literal["job", "isolated", "main"]
MissedPolicy = Literal["run_once", "skip"]
# Input spellings: OpenClaw's agentTurn / systemEvent, clawgo's agent_turn.
PayloadKindIn = Literal["message", "agentTurn", "agent_turn", "systemEvent", "system_event"]
PayloadKind = Literal["message", "system_event", "heartbeat"]
DeliveryModeIn = Literal["none", "channel", "announce", "webhook"]
DeliveryMode = Literal["none", "channel", "webhook"]
FiringStatus = Literal["pending", "running", "completed", "failed", "aborted", "skipped"]
DeliveryStatus = Literal["none", "queued", "delivered", "suppressed", "failed"]

MAX_MESSAGE_CHARS = 100_000
MAX_NAME_CHARS = 100
_MS = Field(default=None, ge=0, le=253_402_300_799_999)  # up to 9999-12-31


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


class _Input(_Wire):
    model_config = ConfigDict(extra="forbid")


# --- what a write may say ---------------------------------------------------------------------


class ScheduleSpec(_Input):
    kind: ScheduleKindName | None = None
    expr: str | None = Field(default=None, max_length=200)
    tz: str | None = Field(default=None, max_length=64)
    every_ms: int | None = Field(default=None, ge=1, le=10**12)
    anchor_ms: int | None = _MS
    at_ms: int | None = _MS
    at: str | None = Field(default=None, max_length=64)  # ISO 8601 (OpenClaw)


class PayloadSpec(_Input):
    kind: PayloadKindIn | None = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    text: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)  # systemEvent's
    model: str | None = Field(default=None, min_length=1, max_length=200)
    deliver: StrictBool | None = None
    channel: str | None = Field(default=None, max_length=100)
    to: str | None = Field(default=None, max_length=200)


class DeliverySpec(_Input):
    mode: DeliveryModeIn
    channel: str | None = Field(default=None, max_length=100)  # the channel's name or id
    to: str | None = Field(default=None, max_length=200)  # the chat (e.g. a Telegram chat id)
    url: str | None = Field(default=None, max_length=2000)  # webhook


class ActiveHoursSpec(_Input):
    start: str = Field(max_length=5)  # "08:00"
    end: str = Field(max_length=5)  # "22:00"; "24:00" is midnight
    tz: str | None = Field(default=None, max_length=64)


class HeartbeatSpec(_Input):
    """Makes the job the agent's heartbeat (one per agent): its prompt carries HEARTBEAT.md,
    it runs in the agent's heartbeat session, only within `activeHours`, and a reply of
    HEARTBEAT_OK (with at most `ackMaxChars` besides) is not delivered."""

    active_hours: ActiveHoursSpec | None = None
    ack_max_chars: int = Field(default=300, ge=0, le=10_000)


class CronJobFields(_Input):
    """A job's writable fields. On create the omitted ones take their defaults; on update
    only the given ones change."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    agent_id: str | None = Field(default=None, min_length=1, max_length=64)
    enabled: StrictBool | None = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    # 003's flat schedule fields, and the legacy kind/everyMs/atMs.
    expr: str | None = Field(default=None, max_length=200)
    tz: str | None = Field(default=None, max_length=64)
    kind: ScheduleKindName | None = None
    every_ms: int | None = Field(default=None, ge=1, le=10**12)
    at_ms: int | None = _MS
    # 003's flat delivery fields.
    deliver: StrictBool | None = None
    channel: str | None = Field(default=None, max_length=100)
    to: str | None = Field(default=None, max_length=200)
    schedule: ScheduleSpec | None = None
    payload: PayloadSpec | None = None
    delivery: DeliverySpec | None = None
    session_target: SessionTarget | None = None
    missed: MissedPolicy | None = None
    delete_after_run: StrictBool | None = None
    heartbeat: HeartbeatSpec | None = None


class CronRequest(CronJobFields):
    """POST /api/cron (003): an action and its arguments; `id` may also come as ?id=."""

    action: CronAction
    id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)


# --- what is shown ----------------------------------------------------------------------------


class JobSchedule(_Wire):
    kind: ScheduleKindName
    expr: str | None = None
    tz: str | None = None
    every_ms: int | None = None
    anchor_ms: int | None = None
    at_ms: int | None = None
    at: str | None = None


class JobPayload(_Wire):
    kind: PayloadKind
    message: str
    model: str | None = None
    # clawgo's view of the delivery, kept in step with `delivery`.
    deliver: bool
    channel: str | None = None
    to: str | None = None


class JobDelivery(_Wire):
    mode: DeliveryMode
    channel: str | None = None  # the channel's name
    to: str | None = None
    url: str | None = None


class JobState(_Wire):
    next_run_at_ms: int | None = None
    last_run_at_ms: int | None = None
    last_status: FiringStatus | None = None
    last_error: str | None = None
    last_duration_ms: int | None = None
    last_run_id: str | None = None
    total_runs: int = 0
    consecutive_failures: int = 0
    next_retry_at_ms: int | None = None


class CronJob(_Wire):
    id: str
    name: str
    agent_id: str
    enabled: bool
    schedule: JobSchedule
    session_target: SessionTarget
    payload: JobPayload
    delivery: JobDelivery
    missed: MissedPolicy
    delete_after_run: bool
    heartbeat: HeartbeatSpec | None = None
    state: JobState
    created_at_ms: int
    updated_at_ms: int


class CronRun(_Wire):
    """One firing: the time it was for, the run it started and how that ended."""

    scheduled_for_ms: int
    manual: bool
    status: FiringStatus
    run_id: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    duration_ms: int | None = None
    error: ErrorInfo | None = None
    result: str | None = None
    delivery_status: DeliveryStatus | None = None
    delivery_error: str | None = None


class CronJobList(_Wire):
    """GET /api/cron (001 and 003)."""

    ok: Literal[True] = True
    jobs: list[CronJob]


class CronJobDetail(_Wire):
    """GET /api/cron?id= (003), with the job's latest firings (clawbus addition)."""

    ok: Literal[True] = True
    job: CronJob
    runs: list[CronRun]


class CronListing(RootModel[CronJobList | CronJobDetail]):
    """GET /api/cron: the jobs, or (`?id=`) one job with its latest firings."""


class CronDeleted(_Wire):
    id: str
    deleted: Literal[True] = True


class CronResult(_Wire):
    """POST /api/cron (003): the job (create, update, enable, disable, get), the jobs
    (list), or what was deleted."""

    ok: Literal[True] = True
    result: CronJob | list[CronJob] | CronDeleted


class CronRunStarted(_Wire):
    """POST /api/cron/{id}/run (001): the firing recorded, and its run once started."""

    ok: Literal[True] = True
    job_id: str
    scheduled_for_ms: int
    status: FiringStatus
    run_id: str | None = None


class CronWebhook(_Wire):
    """What a job with webhook delivery POSTs when a firing's run completes (header
    `Idempotency-Key: cron:<job id>:<scheduled time>`: a retried delivery repeats it)."""

    job_id: str
    job_name: str
    agent_id: str
    run_id: str
    scheduled_for_ms: int
    status: Literal["completed"] = "completed"
    text: str
