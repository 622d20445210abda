"""What the leader does with a firing: start its run, and when the run has ended, record how
and deliver its answer.

A firing's run is an ordinary run (clawbus_core.runservice): stored with the idempotency key
`cron:<job id>:<scheduled time>` and published on JetStream, in the job's session. Starting
the same firing again (a new leader finds it still `pending`) finds that run instead of
making another.

When the run has ended the answer goes where the job says: to a chat through the
channel-bridge's outbox (`channel_deliveries`, which the bridge holding the channel sends
exactly once), to a webhook, or nowhere; a heartbeat's `HEARTBEAT_OK` goes nowhere.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import asyncpg
from clawbus_core import sessionkeys
from clawbus_core.cron import to_ms
from clawbus_core.db import Pool
from clawbus_core.runservice import RunService, Turn
from clawbus_core.store import channels, workspace
from clawbus_core.store import cron as store
from clawbus_protocol.cron import CronWebhook
from clawbus_protocol.errors import ClawbusError, ErrorInfo, NotFound
from clawbus_protocol.runs import ChatMessage, RunInput, RunOptions
from opentelemetry import trace

from clawbus_scheduler import heartbeat
from clawbus_scheduler.webhooks import Webhooks

log = logging.getLogger(__name__)

# How starting a firing went (clawbus_core.metrics.SCHEDULER_FIRINGS counts them); None: not
# handled yet (tried again next step), or its run was started before (by an earlier leader).
Started = Literal["submitted", "skipped", "failed"] | None


def session_key(job: store.Job, firing: store.Firing) -> str:
    """Where the firing's run happens: the job's own `cron:<jobId>` session, a session of
    this firing alone, the agent's main session, or the agent's heartbeat session."""
    spec = job.spec
    agent = spec.agent_key
    if spec.heartbeat is not None:
        return sessionkeys.main_key(agent, "heartbeat")
    if spec.session_target == "main":
        return sessionkeys.main_key(agent)
    if spec.session_target == "isolated":
        return sessionkeys.cron_key(f"{job.id}-{to_ms(firing.scheduled_for)}", agent=agent)
    return sessionkeys.cron_key(str(job.id), agent=agent)


def turn_for(job: store.Job, firing: store.Firing, text: str) -> Turn:
    spec = job.spec
    return Turn(
        agent_key=spec.agent_key,
        session_key=session_key(job, firing),
        user_text=text,
        input=RunInput(messages=[ChatMessage(role="user", content=text)]),
        options=RunOptions(model=spec.payload.model),
        channel=job.kind,
        idempotency_key=firing.idempotency_key,
        tenant_id=job.tenant_id,
    )


class Firings:
    def __init__(self, pool: Pool, runs: RunService, webhooks: Webhooks) -> None:
        self.pool = pool
        self.runs = runs
        self.webhooks = webhooks

    async def _text(self, job: store.Job) -> str | None:
        """What the run is asked; None when a heartbeat has nothing to check."""
        spec = job.spec
        if spec.heartbeat is None:
            if spec.payload.kind == "system_event":
                return f"[System event from cron job {spec.name!r}] {spec.payload.text}"
            return spec.payload.text
        try:
            file = await workspace.read_file(
                self.pool, job.tenant_id, job.agent_id, heartbeat.HEARTBEAT_FILE
            )
        except NotFound:
            return heartbeat.prompt(spec.payload.text, None)
        if heartbeat.is_empty(file.content):
            return None
        return heartbeat.prompt(spec.payload.text, file.content)

    async def start(self, firing: store.Firing, job: store.Job, now: datetime) -> Started:
        """Start the firing's run (or find the one already started for it)."""
        text = await self._text(job)
        if text is None:
            await store.record_end(
                self.pool, firing, status="skipped", now=now, delivery_status="none"
            )
            return "skipped"
        try:
            async with self.runs.submit(turn_for(job, firing, text)) as submitted:
                run_id, new = submitted.run_id, submitted.existing is None
        except ClawbusError as exc:
            if exc.info.retryable:  # the bus or database is away: try again next step
                log.warning("cron job %s: starting its run failed: %s", job.id, exc.info.message)
                return None
            # It can never run as it is (its agent is gone, its text cannot be stored).
            await store.record_end(
                self.pool, firing, status="failed", now=now, error=exc.info, delivery_status="none"
            )
            return "failed"
        trace.get_current_span().set_attribute("clawbus.run_id", str(run_id))
        await store.started(self.pool, firing, run_id)
        return "submitted" if new else None

    async def finish(self, ended: store.Ended, now: datetime) -> None:
        firing = ended.firing
        if ended.run_status is None:
            error = ErrorInfo(code="not_found", message="the firing's run was deleted")
            await store.record_end(
                self.pool, firing, status="failed", now=now, error=error, delivery_status="none"
            )
            return
        delivered: store.DeliveryStatus = "none"
        why = None
        if ended.run_status == "completed":
            delivered, why = await self._deliver(ended)
        duration = None
        if ended.run_started_at is not None and ended.run_finished_at is not None:
            duration = to_ms(ended.run_finished_at) - to_ms(ended.run_started_at)
        await store.record_end(
            self.pool,
            firing,
            status=ended.run_status,
            now=now,
            error=ended.run_error,
            result=ended.text,
            delivery_status=delivered,
            delivery_error=why,
            duration_ms=duration,
        )

    async def _deliver(self, ended: store.Ended) -> tuple[store.DeliveryStatus, str | None]:
        job, firing = ended.job, ended.firing
        text = (ended.text or "").strip()
        hb = job.spec.heartbeat
        if not text:
            return "none", None
        if hb is not None and heartbeat.is_ack(text, hb.ack_max_chars):
            return "suppressed", None
        delivery = job.spec.delivery
        assert firing.run_id is not None
        if delivery.mode == "channel":
            assert delivery.channel_id is not None
            target = {"chat_id": delivery.to, "reply_to": None, "thread_id": None}
            try:
                await channels.add_delivery(self.pool, firing.run_id, delivery.channel_id, target)
            except asyncpg.ForeignKeyViolationError:
                return "failed", f"channel {delivery.channel!r} no longer exists"
            return "queued", None
        if delivery.mode == "webhook":
            assert delivery.url is not None
            body = CronWebhook(
                job_id=str(job.id),
                job_name=job.spec.name,
                agent_id=job.spec.agent_key,
                run_id=str(firing.run_id),
                scheduled_for_ms=to_ms(firing.scheduled_for),
                text=text,
            )
            problem = await self.webhooks.post(delivery.url, body, firing.idempotency_key)
            if problem is not None:
                log.warning("cron job %s: webhook delivery failed: %s", job.id, problem)
                return "failed", problem
            return "delivered", None
        return "none", None


def utcnow() -> datetime:
    return datetime.now(UTC)
