"""Cron jobs as the surfaces write and show them (clawbus_protocol.cron), over the one store
(clawbus_core.store.cron). The gateway's routes and the agent tool `cron` both use these:

- `spec_from(fields, existing=..., now=...)`: a write's fields as a checked JobSpec. The
  flat fields 003 sends (`message`, `expr`, `deliver`, `channel`, `to`, legacy `kind`,
  `everyMs`, `atMs`) and the nested ones OpenClaw sends (`schedule`, `payload`, `delivery`)
  say the same things; a nested field wins over its flat twin. On update, what a write
  leaves out keeps its value.
- `view(job)` and `run_view(firing)`: a stored job and a firing as the surfaces show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from clawbus_protocol.cron import (
    ActiveHoursSpec,
    CronJob,
    CronJobFields,
    CronRun,
    HeartbeatSpec,
    JobDelivery,
    JobPayload,
    JobSchedule,
    JobState,
    ScheduleKindName,
    ScheduleSpec,
)
from clawbus_protocol.errors import InvalidRequest
from yarl import URL

from clawbus_core.cron import ActiveHours, Schedule, from_ms, parse_instant, to_ms, whole_ms
from clawbus_core.db import refuse_unstorable
from clawbus_core.sessionkeys import normalize_agent_id
from clawbus_core.store.cron import (
    Delivery,
    Firing,
    Heartbeat,
    Job,
    JobSpec,
    Payload,
    PayloadKind,
)

_PAYLOAD_KINDS: dict[str, PayloadKind] = {
    "message": "message",
    "agentTurn": "message",
    "agent_turn": "message",
    "systemEvent": "system_event",
    "system_event": "system_event",
}


@dataclass(frozen=True)
class Written:
    spec: JobSpec
    reschedule: bool  # the schedule, enabled flag or active hours changed


def _text(value: str | None) -> str | None:
    """A string field, None when empty (003's example sends `"channel": ""`)."""
    return value if value else None


def _ms(value: datetime | None) -> int | None:
    return to_ms(value) if value is not None else None


def _schedule(fields: CronJobFields, existing: Job | None, now: datetime) -> Schedule:
    nested = fields.schedule or ScheduleSpec()
    kind = nested.kind or fields.kind
    expr = _text(nested.expr) or _text(fields.expr)
    tz = _text(nested.tz) or _text(fields.tz)
    every_ms = nested.every_ms or fields.every_ms
    at_ms = nested.at_ms if nested.at_ms is not None else fields.at_ms
    at = _text(nested.at)
    current = existing.spec.schedule if existing is not None else None
    if kind is None:
        named: tuple[tuple[ScheduleKindName, object], ...] = (
            ("cron", expr),
            ("every", every_ms),
            ("at", at if at_ms is None else at_ms),
        )
        given = [name for name, value in named if value is not None]
        if len(given) > 1:
            raise InvalidRequest(
                "schedule: give one of expr (cron), everyMs or atMs, not several",
                param="schedule",
            )
        if not given:
            if current is None:
                raise InvalidRequest(
                    "schedule: a schedule is required: expr (a cron expression), everyMs "
                    "(an interval) or atMs (a single time)",
                    param="schedule",
                )
            if tz is not None and current.kind == "cron" and current.expr is not None:
                return Schedule.cron(current.expr.text, tz)
            return current
        kind = given[0]
    if kind == "cron":
        if expr is None:
            raise InvalidRequest("schedule.expr: a cron schedule needs expr", param="schedule.expr")
        return Schedule.cron(expr, tz)
    if kind == "every":
        if every_ms is None:
            raise InvalidRequest(
                "schedule.everyMs: an every schedule needs everyMs", param="schedule.everyMs"
            )
        if nested.anchor_ms is not None:
            anchor = from_ms(nested.anchor_ms, "schedule.anchorMs")
        elif current is not None and current.kind == "every" and current.anchor is not None:
            anchor = current.anchor  # the grid stays where it was
        else:
            anchor = whole_ms(now)
        return Schedule.every(every_ms, anchor)
    if at_ms is not None:
        return Schedule.once(from_ms(at_ms, "schedule.atMs"))
    if at is not None:
        return Schedule.once(parse_instant(at))
    raise InvalidRequest("schedule.atMs: an at schedule needs atMs (or at)", param="schedule.atMs")


def _delivery(fields: CronJobFields, existing: Job | None) -> Delivery:
    payload = fields.payload
    nested = fields.delivery
    deliver = payload.deliver if payload and payload.deliver is not None else fields.deliver
    if nested is not None:
        mode = "channel" if nested.mode == "announce" else nested.mode
        channel, to, url = _text(nested.channel), _text(nested.to), _text(nested.url)
    else:
        channel = _text(payload.channel if payload else None) or _text(fields.channel)
        to = _text(payload.to if payload else None) or _text(fields.to)
        url = None
        if deliver is False:
            mode = "none"
        elif deliver or channel or to:
            mode = "channel"
        else:
            return existing.spec.delivery if existing is not None else Delivery()
    if mode == "channel":
        if channel is None:
            raise InvalidRequest(
                "delivery.channel: delivering to a channel needs the channel (its name)",
                param="delivery.channel",
            )
        if to is None:
            raise InvalidRequest(
                "delivery.to: delivering to a channel needs the chat to send to (e.g. a "
                "Telegram chat id)",
                param="delivery.to",
            )
        return Delivery("channel", channel=channel, to=to)
    if mode == "webhook":
        return Delivery("webhook", url=_webhook_url(url))
    return Delivery()


def _webhook_url(url: str | None) -> str:
    try:
        parsed = URL(url or "")
    except (ValueError, TypeError):
        parsed = URL()
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(
            "delivery.url: a webhook delivery needs an http(s) URL", param="delivery.url"
        )
    return str(parsed)


def _heartbeat(fields: CronJobFields, existing: Job | None) -> Heartbeat | None:
    given = fields.heartbeat
    if given is None:
        return existing.spec.heartbeat if existing is not None else None
    hours = given.active_hours
    window = ActiveHours.parse(hours.start, hours.end, hours.tz) if hours else None
    return Heartbeat(window=window, ack_max_chars=given.ack_max_chars)


def spec_from(fields: CronJobFields, *, existing: Job | None, now: datetime) -> Written:
    """The job `fields` describe: a new one (`existing` None) or `existing` changed."""
    refuse_unstorable(fields.model_dump(exclude_none=True, by_alias=True))
    old = existing.spec if existing is not None else None
    payload = fields.payload
    heartbeat = _heartbeat(fields, existing)
    agent = normalize_agent_id(fields.agent_id or (old.agent_key if old else "main"))
    name = fields.name or (old.name if old else None)
    if name is None and heartbeat is not None:
        name = f"heartbeat-{agent}"
    if name is None:
        raise InvalidRequest("name: a job needs a name", param="name")
    kind_in = payload.kind if payload else None
    kind = _PAYLOAD_KINDS[kind_in] if kind_in else (old.payload.kind if old else "message")
    text = next(
        (t for t in (payload and payload.message, payload and payload.text, fields.message) if t),
        old.payload.text if old else "",
    )
    if not text.strip() and heartbeat is None:
        raise InvalidRequest(
            "message: a job needs a message (what the agent is asked each time)",
            param="message",
        )
    model = (
        (payload.model if payload else None) or fields.model or (old.payload.model if old else None)
    )
    target = fields.session_target or (
        old.session_target if old else ("main" if kind == "system_event" else "job")
    )
    spec = JobSpec(
        name=name,
        agent_key=agent,
        schedule=_schedule(fields, existing, now),
        payload=Payload(kind, text, model),
        delivery=_delivery(fields, existing),
        session_target=target,
        heartbeat=heartbeat,
        enabled=fields.enabled if fields.enabled is not None else (old.enabled if old else True),
        missed=fields.missed or (old.missed if old else "run_once"),
        delete_after_run=(
            fields.delete_after_run
            if fields.delete_after_run is not None
            else (old.delete_after_run if old else False)
        ),
    )
    reschedule = old is None or (
        (spec.schedule, spec.enabled, spec.heartbeat) != (old.schedule, old.enabled, old.heartbeat)
    )
    return Written(spec, reschedule)


# --- showing ----------------------------------------------------------------------------------


def _heartbeat_view(heartbeat: Heartbeat | None) -> HeartbeatSpec | None:
    if heartbeat is None:
        return None
    window = heartbeat.window
    hours = None
    if window is not None:
        start, end = window.clock_times
        hours = ActiveHoursSpec(start=start, end=end, tz=window.tz)
    return HeartbeatSpec(active_hours=hours, ack_max_chars=heartbeat.ack_max_chars)


def view(job: Job) -> CronJob:
    spec = job.spec
    s = spec.schedule
    delivery = spec.delivery
    last = job.last
    return CronJob(
        id=str(job.id),
        name=spec.name,
        agent_id=spec.agent_key,
        enabled=spec.enabled,
        schedule=JobSchedule(
            kind=s.kind,
            expr=s.expr.text if s.expr is not None else None,
            tz=s.tz if s.kind == "cron" else None,
            every_ms=s.every_ms,
            anchor_ms=_ms(s.anchor),
            at_ms=_ms(s.at),
            at=s.at.isoformat(timespec="milliseconds") if s.at is not None else None,
        ),
        session_target=spec.session_target,
        payload=JobPayload(
            kind="heartbeat" if spec.heartbeat is not None else spec.payload.kind,
            message=spec.payload.text,
            model=spec.payload.model,
            deliver=delivery.mode != "none",
            channel=delivery.channel,
            to=delivery.to,
        ),
        delivery=JobDelivery(
            mode=delivery.mode, channel=delivery.channel, to=delivery.to, url=delivery.url
        ),
        missed=spec.missed,
        delete_after_run=spec.delete_after_run,
        heartbeat=_heartbeat_view(spec.heartbeat),
        state=JobState(
            next_run_at_ms=_ms(job.next_run_at) if spec.enabled else None,
            last_run_at_ms=_ms(last.scheduled_for) if last else None,
            last_status=last.status if last else None,
            last_error=last.error.message if last and last.error else None,
            last_duration_ms=last.duration_ms if last else None,
            last_run_id=str(last.run_id) if last and last.run_id else None,
            total_runs=job.total_runs,
            consecutive_failures=job.consecutive_failures,
            next_retry_at_ms=_ms(job.next_retry_at),
        ),
        created_at_ms=to_ms(job.created_at),
        updated_at_ms=to_ms(job.updated_at),
    )


def run_view(firing: Firing) -> CronRun:
    return CronRun(
        scheduled_for_ms=to_ms(firing.scheduled_for),
        manual=firing.manual,
        status=firing.status,
        run_id=str(firing.run_id) if firing.run_id else None,
        started_at_ms=_ms(firing.started_at),
        finished_at_ms=_ms(firing.finished_at),
        duration_ms=firing.duration_ms,
        error=firing.error,
        result=firing.result,
        delivery_status=firing.delivery_status,
        delivery_error=firing.delivery_error,
    )
