"""`cron`: the agent schedules its own jobs (OpenClaw's cron tool): add, list, remove, run.

The jobs are the same ones the API writes (clawbus_core.store.cron, through the same wire
adapter, clawbus_core.cronjobs); the scheduler service fires them. An agent sees and
changes only its own jobs, and a job it adds runs as itself. Each change is announced on
the bus (`cron.changed`) so the scheduler's leader acts on it at once.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from clawbus_core.cron import to_ms
from clawbus_core.cronjobs import spec_from, view
from clawbus_core.store import cron as store
from clawbus_protocol.cron import CronJobFields
from clawbus_protocol.errors import ClawbusError, NotFound
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from pydantic import ValidationError

from clawbus_runner.tools.base import ToolContext, ToolError, ToolSpec
from clawbus_runner.tools.browser import NAMES_EXTRA, NATS_EXTRA

_ADD_FIELDS = (
    "name",
    "message",
    "expr",
    "tz",
    "everyMs",
    "atMs",
    "at",
    "sessionTarget",
    "missed",
    "deleteAfterRun",
    "model",
    "channel",
    "to",
)

_SPEC = ToolSpec(
    name="cron",
    description=(
        "Schedule your own recurring or one-off jobs. action=add creates a job that sends you "
        "`message` on a schedule: `expr` (a 5-field cron expression, with `tz`, an IANA time "
        "zone, default UTC), `everyMs` (an interval, at least 1000) or `atMs`/`at` (one time, "
        "ms since 1970 or ISO 8601). With `channel` (a channel's name) and `to` (a chat id) "
        "the job's answer is sent to that chat. action=list shows your jobs; action=remove "
        "deletes one and action=run runs one now (both take `id`: the job's id or name)."
    ),
    parameters={
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["add", "list", "remove", "run"]},
            "id": {"type": "string", "description": "The job's id or name (remove, run)."},
            "name": {"type": "string", "description": "A name for the new job (add)."},
            "message": {"type": "string", "description": "What the job asks you each time."},
            "expr": {"type": "string", "description": "A cron expression, e.g. '0 9 * * 1-5'."},
            "tz": {"type": "string", "description": "The expression's time zone."},
            "everyMs": {"type": "integer", "minimum": 1000},
            "atMs": {"type": "integer", "minimum": 0},
            "at": {"type": "string", "description": "One time, ISO 8601."},
            "sessionTarget": {"type": "string", "enum": ["job", "isolated", "main"]},
            "missed": {"type": "string", "enum": ["run_once", "skip"]},
            "deleteAfterRun": {"type": "boolean"},
            "model": {"type": "string"},
            "channel": {"type": "string", "description": "Deliver the answer on this channel."},
            "to": {"type": "string", "description": "The chat on that channel to deliver to."},
        },
        "required": ["action"],
        "additionalProperties": False,
    },
    policy="safe",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _names(ctx: ToolContext) -> Names:
    names = ctx.extras.get(NAMES_EXTRA)
    if not isinstance(names, Names):
        raise ToolError("cron jobs are not available in this runner")
    return names


def _line(job: store.Job) -> str:
    shown = view(job)
    s = shown.schedule
    when = s.expr or (f"every {s.every_ms} ms" if s.every_ms else s.at)
    next_run = shown.state.next_run_at_ms
    nxt = datetime.fromtimestamp(next_run / 1000, UTC).isoformat() if next_run else "never"
    state = "enabled" if shown.enabled else "disabled"
    return f"- {shown.name} (id {shown.id}): {when}, {state}, next run {nxt}"


class CronTool:
    spec = _SPEC

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        names = _names(ctx)
        try:
            return await self._act(ctx, names.namespace, args)
        except ClawbusError as exc:
            raise ToolError(exc.info.message) from None

    async def _act(self, ctx: ToolContext, namespace: str, args: dict[str, Any]) -> str:
        action = args.get("action")
        if action == "list":
            mine = [
                j
                for j in await store.list_jobs(ctx.pool, namespace, ctx.tenant_id)
                if j.agent_id == ctx.agent_id
            ]
            return "\n".join(_line(j) for j in mine) if mine else "you have no cron jobs"
        if action == "add":
            job = await self._add(ctx, namespace, args)
            await self._changed(ctx)
            return f"created cron job:\n{_line(job)}"
        if action in ("remove", "run"):
            job = await self._mine(ctx, namespace, args.get("id"))
            if action == "remove":
                await store.delete_job(ctx.pool, job)
                await self._changed(ctx)
                return f"removed cron job {job.spec.name} (id {job.id})"
            firing = await store.request_run(ctx.pool, job, now=_now())
            await self._changed(ctx)
            at = datetime.fromtimestamp(to_ms(firing.scheduled_for) / 1000, UTC).isoformat()
            return f"cron job {job.spec.name} will run now (firing for {at})"
        raise ToolError("action must be one of add, list, remove, run")

    async def _add(self, ctx: ToolContext, namespace: str, args: dict[str, Any]) -> store.Job:
        unknown = set(args) - {"action", "id", *_ADD_FIELDS}
        if unknown:
            raise ToolError(f"unknown arguments for add: {', '.join(sorted(unknown))}")
        fields = {k: args[k] for k in _ADD_FIELDS if args.get(k) is not None}
        if "channel" in fields or "to" in fields:
            fields["delivery"] = {
                "mode": "channel",
                "channel": fields.pop("channel", None),
                "to": fields.pop("to", None),
            }
        try:
            parsed = CronJobFields.model_validate({**fields, "agentId": ctx.agent_key})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolError(f"invalid arguments: {problems}") from None
        now = _now()
        written = spec_from(parsed, existing=None, now=now)
        return await store.create_job(ctx.pool, namespace, ctx.tenant_id, written.spec, now=now)

    async def _mine(self, ctx: ToolContext, namespace: str, ref: object) -> store.Job:
        if not isinstance(ref, str) or not ref.strip():
            raise ToolError("this action needs `id`: the job's id or name (see action=list)")
        job = await store.find_job(ctx.pool, namespace, ctx.tenant_id, ref)
        if job.agent_id != ctx.agent_id:
            raise NotFound(f"cron job {ref!r} not found")
        return job

    async def _changed(self, ctx: ToolContext) -> None:
        nc, names = ctx.extras.get(NATS_EXTRA), ctx.extras.get(NAMES_EXTRA)
        if isinstance(nc, NatsClient) and isinstance(names, Names):
            # A lost notice only delays the change until the leader's next look.
            with contextlib.suppress(NatsError):
                await nc.publish(names.cron_changed_subject, b"")
