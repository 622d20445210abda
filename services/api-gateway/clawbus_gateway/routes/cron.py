"""Cron jobs, as 001 and 003 show them, over the one job store (clawbus_core.store.cron) and
its wire adapter (clawbus_core.cronjobs); the scheduler service fires them.

- 001: GET /api/cron (the jobs), POST /api/cron/{job_id}/run (run now)
- 003: GET /api/cron (the jobs; `?id=` one job, with its latest firings), POST /api/cron with
  an `action`: create | update | delete | enable | disable | get | list (the job's `id` in
  the body or as `?id=`)

001 and 003 share GET /api/cron: one handler, one shape (003's `{"ok": true, "jobs": [...]}`;
001 shows no body). `{job_id}` and `id` take the job's id or its name. Run now records a
firing for now; the scheduler's leader starts its run. Every change is announced on the bus
(`names.cron_changed_subject`) so the leader acts on it at once. Routes need `cron`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from aiohttp import web
from clawbus_core.cron import to_ms
from clawbus_core.cronjobs import run_view, spec_from, view
from clawbus_core.store import cron as store
from clawbus_protocol.cron import (
    CronDeleted,
    CronJob,
    CronJobDetail,
    CronJobList,
    CronRequest,
    CronResult,
    CronRunStarted,
)
from clawbus_protocol.errors import InvalidRequest
from nats.errors import Error as NatsError
from pydantic import BaseModel

from clawbus_gateway.body import read_model
from clawbus_gateway.keys import RUNS
from clawbus_gateway.principal import Principal, require

routes = web.RouteTableDef()

HISTORY = 20  # firings shown with one job


def _json(body: BaseModel) -> web.Response:
    return web.json_response(text=body.model_dump_json())


def _now() -> datetime:
    return datetime.now(UTC)


async def _changed(request: web.Request) -> None:
    """Wake the scheduler's leader; the database already holds the change, so a lost notice
    only delays it until the leader's next look (within `scheduler_tick_s`)."""
    runs = request.app[RUNS]
    with contextlib.suppress(NatsError):
        await runs.nc.publish(runs.names.cron_changed_subject, b"")


async def _job(request: web.Request, who: Principal, ref: str | None) -> store.Job:
    if ref is None or not ref.strip():
        raise InvalidRequest("id: this action needs the job's id (or name)", param="id")
    runs = request.app[RUNS]
    return await store.find_job(runs.pool, runs.names.namespace, who.tenant_id, ref)


@routes.get("/api/cron")
async def list_jobs(request: web.Request) -> web.Response:
    who = require(request, "cron")
    runs = request.app[RUNS]
    if "id" in request.query:
        job = await _job(request, who, request.query["id"])
        firings = await store.history(runs.pool, job.id, limit=HISTORY)
        return _json(CronJobDetail(job=view(job), runs=[run_view(f) for f in firings]))
    jobs = await store.list_jobs(runs.pool, runs.names.namespace, who.tenant_id)
    return _json(CronJobList(jobs=[view(j) for j in jobs]))


@routes.post("/api/cron")
async def act(request: web.Request) -> web.Response:
    who = require(request, "cron")
    body = await read_model(request, CronRequest)
    runs = request.app[RUNS]
    pool, namespace = runs.pool, runs.names.namespace
    ref = body.id or request.query.get("id")
    now = _now()
    result: CronJob | list[CronJob] | CronDeleted
    if body.action == "list":
        result = [view(j) for j in await store.list_jobs(pool, namespace, who.tenant_id)]
    elif body.action == "create":
        written = spec_from(body, existing=None, now=now)
        result = view(await store.create_job(pool, namespace, who.tenant_id, written.spec, now=now))
    else:
        job = await _job(request, who, ref)
        if body.action == "get":
            result = view(job)
        elif body.action == "update":
            written = spec_from(body, existing=job, now=now)
            updated = await store.update_job(
                pool, job, written.spec, now=now, reschedule=written.reschedule
            )
            result = view(updated)
        elif body.action == "delete":
            await store.delete_job(pool, job)
            result = CronDeleted(id=str(job.id))
        else:
            enabled = body.action == "enable"
            result = view(await store.set_enabled(pool, job, enabled, now=now))
    if body.action not in ("get", "list"):
        await _changed(request)
    return _json(CronResult(result=result))


@routes.post("/api/cron/{job_id}/run")
async def run_now(request: web.Request) -> web.Response:
    who = require(request, "cron")
    job = await _job(request, who, request.match_info["job_id"])
    firing = await store.request_run(request.app[RUNS].pool, job, now=_now())
    await _changed(request)
    return _json(
        CronRunStarted(
            job_id=str(job.id),
            scheduled_for_ms=to_ms(firing.scheduled_for),
            status=firing.status,
            run_id=str(firing.run_id) if firing.run_id else None,
        )
    )
