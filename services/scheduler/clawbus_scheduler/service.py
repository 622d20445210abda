"""The scheduler process: one of any number of replicas; the leader fires the jobs.

`async with Scheduler(settings) as scheduler: await scheduler.serve(stop)`.

Every replica tries to lead (clawbus_scheduler.leader); the one that does loops:

1. record the firings of the jobs due now and advance those jobs (one transaction on the
   lock's connection: clawbus_core.store.cron.claim_due);
2. start the run of every firing recorded and not started yet (this step's, or one a
   previous leader recorded and died before starting);
3. record how each started firing's run ended, and deliver its answer;

then sleeps until the next job is due, at most `scheduler_tick_s`, or until `cron.changed`
on the bus says a job was created or edited. Nothing is kept in memory between steps: a
replica that takes over reads everything from Postgres. Standbys retry the lock every
`scheduler_standby_retry_s`.

Each firing started runs in the span `cron.fire` (its run's trace starts there) and is counted
in `SCHEDULER_FIRINGS{kind, outcome}`; `SCHEDULER_LEADER` is 1 while this replica leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

import asyncpg
import redis.asyncio as aioredis
from clawbus_core import bus, metrics, tracing
from clawbus_core.config import resolve_endpoints
from clawbus_core.db import create_pool
from clawbus_core.events import RunRelay
from clawbus_core.netguard import NetPolicy
from clawbus_core.runservice import RunService
from clawbus_core.session_events import NatsEventPublisher, SessionAnnouncer
from clawbus_core.store import cron as store
from nats.aio.msg import Msg
from opentelemetry import trace

from clawbus_scheduler.firing import Firings, utcnow
from clawbus_scheduler.leader import Leadership
from clawbus_scheduler.settings import SchedulerSettings
from clawbus_scheduler.webhooks import Webhooks

log = logging.getLogger(__name__)

# Losing these means losing the lock's session: the replica steps down.
_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, TimeoutError)
_MIN_SLEEP_S = 0.02


class Scheduler:
    def __init__(self, settings: SchedulerSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.names = settings.names
        self.clock = clock
        self._wake = asyncio.Event()

    async def __aenter__(self) -> Scheduler:
        s = self.settings
        endpoints = resolve_endpoints(s)
        self.pool = await create_pool(endpoints.database_url, min_size=1, max_size=5)
        self.redis = aioredis.Redis.from_url(endpoints.redis_url, max_connections=16)
        self.nc = await bus.connect(endpoints.nats_url, name=f"scheduler:{s.scheduler_id}")
        self.relay = RunRelay(self.redis, self.names, f"scheduler-{s.scheduler_id}")
        self.runs = RunService(self.pool, self.nc, self.relay, self.names, timeout_s=600)
        self.runs.announcer = SessionAnnouncer(
            NatsEventPublisher(self.nc, self.names, f"scheduler-{s.scheduler_id}")
        )
        await bus.ensure_runs_stream(
            self.runs.js, self.names, replicas=self.settings.nats_stream_replicas
        )
        await self.relay.start()
        self.webhooks = Webhooks(NetPolicy.from_entries(s.net_allow), s.scheduler_webhook_timeout_s)
        self.firings = Firings(self.pool, self.runs, self.webhooks)
        self.leadership = Leadership(endpoints.database_url, self.names.namespace, s.scheduler_id)
        await self.nc.subscribe(self.names.cron_changed_subject, cb=self._changed)
        await bus.settle(self.nc)
        log.info("scheduler %s ready (namespace %s)", s.scheduler_id, self.names.namespace)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Hand the lead over at once rather than when the connection times out.
        await self.leadership.step_down()
        await self.webhooks.aclose()
        await self.relay.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()
        await self.pool.close()

    async def _changed(self, msg: Msg) -> None:
        del msg
        self._wake.set()

    async def serve(self, stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            if not self.leadership.leading:
                try:
                    leads = await self.leadership.try_lead()
                except Exception as exc:  # noqa: BLE001 (a standby keeps trying, whatever failed)
                    log.warning("scheduler %s cannot reach the database: %r", s.scheduler_id, exc)
                    leads = False
                if not leads:
                    await self._sleep(stop, s.scheduler_standby_retry_s, wakeable=False)
                    continue
                log.info("scheduler %s is the leader", s.scheduler_id)
            wait_s = await self._step()
            await self._sleep(stop, wait_s, wakeable=True)

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wakeable: bool) -> None:
        events = [asyncio.create_task(stop.wait())]
        if wakeable:
            events.append(asyncio.create_task(self._wake.wait()))
        try:
            await asyncio.wait(events, timeout=max(seconds, _MIN_SLEEP_S))
        finally:
            for task in events:
                task.cancel()
            await asyncio.gather(*events, return_exceptions=True)
        self._wake.clear()

    async def _step(self) -> float:
        """One round of the leader's work; how long to sleep before the next."""
        s = self.settings
        conn = self.leadership.conn
        assert conn is not None
        try:
            claimed = await store.claim_due(
                conn,
                self.names.namespace,
                self.clock(),
                grace=timedelta(seconds=s.scheduler_misfire_grace_s),
                limit=s.scheduler_batch,
            )
            for job in claimed.passed_over:
                metrics.SCHEDULER_FIRINGS.labels(kind=job.kind, outcome="missed").inc()
        except Exception as exc:
            if isinstance(exc, _LOST) or conn.is_closed():
                log.warning(
                    "scheduler %s lost its lock's session (%r); stepping down", s.scheduler_id, exc
                )
                await self.leadership.step_down()
                return 0
            log.exception("scheduler %s: recording due firings failed; retrying", s.scheduler_id)
            return s.scheduler_tick_s
        try:
            await self._start_and_finish()
            due = await store.next_due(self.pool, self.names.namespace)
        except Exception:
            log.exception("scheduler %s: a step failed; retrying", s.scheduler_id)
            return s.scheduler_tick_s
        if due is None:
            return s.scheduler_tick_s
        return min(s.scheduler_tick_s, (due - self.clock()).total_seconds())

    async def _fire(self, firing: store.Firing, job: store.Job) -> None:
        kind = job.kind
        with tracing.tracer().start_as_current_span(
            "cron.fire",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "clawbus.cron.job_id": str(job.id),
                "clawbus.cron.kind": kind,
                "clawbus.cron.scheduled_for": firing.scheduled_for.isoformat(),
            },
        ) as span:
            outcome = await self.firings.start(firing, job, self.clock())
            if outcome is not None:
                span.set_attribute("clawbus.cron.outcome", outcome)
                metrics.SCHEDULER_FIRINGS.labels(kind=kind, outcome=outcome).inc()

    async def _start_and_finish(self) -> None:
        """Start the recorded firings' runs, then record the ended ones; one firing that
        fails is logged and tried again next step, without holding up the others."""
        s, namespace = self.settings, self.names.namespace
        for firing, job in await store.pending(self.pool, namespace, limit=s.scheduler_batch):
            try:
                await self._fire(firing, job)
            except Exception:
                log.exception("cron job %s: starting the firing %s failed", job.id, firing.id)
        for ended in await store.ended(self.pool, namespace, limit=s.scheduler_batch):
            try:
                await self.firings.finish(ended, self.clock())
            except Exception:
                log.exception(
                    "cron job %s: recording the firing %s failed", ended.job.id, ended.firing.id
                )
