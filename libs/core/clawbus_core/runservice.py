"""The run service every surface uses: store the turn, publish the run, follow its events.

Surfaces (the gateway's OpenAI, OpenClaw, GoClaw routes; the channel-bridge's chat apps)
translate their request into a `Turn` and the run's events into their own frames; nothing
here knows any surface's wire format.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

from clawbus_protocol.errors import InvalidRequest, ServiceUnavailable
from clawbus_protocol.names import Names
from clawbus_protocol.runs import QueueMode, RunInput, RunOptions, RunRequest
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError as JetStreamAPIError

from clawbus_core import aborts, metrics, tracing
from clawbus_core.db import Pool
from clawbus_core.events import RunRelay, RunWatch
from clawbus_core.session_events import RunAnnouncement, SessionAnnouncer
from clawbus_core.store import runs as store

log = logging.getLogger(__name__)

DEFAULT_AGENT = "main"
_REPLAY_POLL_S = 0.25
_AGENT_ALIASES = {"default": DEFAULT_AGENT}


def canonical_agent(key: str) -> str:
    return _AGENT_ALIASES.get(key, key)


@dataclass
class Turn:
    """One user turn for an agent, as every surface describes it."""

    agent_key: str
    session_key: str | None  # None: a fresh session for this request only
    user_text: str
    input: RunInput
    options: RunOptions = field(default_factory=RunOptions)
    channel: str = "api"
    idempotency_key: str | None = None
    queue_mode: QueueMode | None = None  # None: the agent's own mode
    tenant_id: UUID = store.DEFAULT_TENANT


def _check_storable(turn: Turn) -> None:
    """Refuse what cannot be stored or echoed, for every surface, before any write:
    Postgres text cannot hold NUL."""
    fields = {
        "agent": turn.agent_key,
        "session": turn.session_key or "",
        "idempotency key": turn.idempotency_key or "",
        "system": turn.input.system or "",
        **{f"messages.{i}.content": m.content for i, m in enumerate(turn.input.messages)},
    }
    for name, value in fields.items():
        if "\x00" in value:
            raise InvalidRequest(f"{name} contains a NUL character, which cannot be stored")
    # A session key is echoed in the x-openclaw-session-key header, and keys are names: no
    # control characters (HTTP cannot carry them, and no chat app's ids hold them).
    key = turn.session_key or ""
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise InvalidRequest("session key must not contain control characters", param="sessionKey")


@dataclass(frozen=True)
class Submitted:
    run_id: UUID
    session_key: str
    watch: RunWatch
    existing: store.ExistingRun | None = None


class RunService:
    def __init__(
        self,
        pool: Pool,
        nc: NatsClient,
        relay: RunRelay,
        names: Names,
        *,
        timeout_s: float,
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.relay = relay
        self.names = names
        self.timeout_s = timeout_s
        # Set when session events are broadcast (see session_events.py): every run any
        # surface starts is announced.
        self.announcer: SessionAnnouncer | None = None

    @asynccontextmanager
    async def submit(self, turn: Turn) -> AsyncIterator[Submitted]:
        """Store and publish the turn's run; yield a watch on its events while the caller reads."""
        _check_storable(turn)
        run_id = uuid.uuid4()
        agent_key = canonical_agent(turn.agent_key)
        named_session = turn.session_key is not None
        session_key = turn.session_key or f"agent:{agent_key}:openai:{uuid.uuid4()}"
        # The run joins the current trace: stored with it (for a runner that executes it from
        # the database) and sent with its message.
        trace_context = tracing.inject_headers({})
        # Watch before publishing, so not even the first event can slip past.
        with self.relay.watch(run_id) as watch:
            created = await store.create_run(
                self.pool,
                run_id=run_id,
                session_id=uuid.uuid4(),
                tenant_id=turn.tenant_id,
                agent_key=agent_key,
                session_key=session_key,
                channel=turn.channel,
                idempotency_key=turn.idempotency_key or str(run_id),
                model=turn.options.model,
                user_text=turn.user_text,
                run_input=turn.input,
                options=turn.options,
                reply_to=self.relay.channel,
                queue_mode=turn.queue_mode,
                named_session=named_session,
                trace_context=trace_context,
            )
            if isinstance(created, store.ExistingRun):
                # The same request again: answer with that run, waiting for it if needed.
                # Its live events go to the gateway replica that started it, so this watch
                # reads the run's stream (polling it briefly) instead.
                with self.relay.watch(created.run_id, idle_fill_s=_REPLAY_POLL_S) as replay:
                    if created.status == "queued":
                        await self._publish_again(created.run_id)
                    yield Submitted(created.run_id, created.session_key, replay, existing=created)
                return
            run_input = turn.input.model_copy(
                update={"use_session_history": created.use_session_history}
            )
            request = RunRequest(
                run_id=run_id,
                idempotency_key=turn.idempotency_key or str(run_id),
                tenant_id=turn.tenant_id,
                agent_id=created.agent_id,
                agent_key=agent_key,
                session_id=created.session_id,
                session_key=session_key,
                input=run_input,
                options=turn.options,
                reply_to=self.relay.channel,
                queue_mode=created.queue_mode,
            )
            await self._publish(request, trace_context=trace_context)
            metrics.RUNS_SUBMITTED.labels(channel=turn.channel).inc()
            log.debug("run %s published for session %s", run_id, session_key)
            if self.announcer is not None:
                await self._announce(self.announcer, turn, request, watch, created)
            yield Submitted(run_id, session_key, watch)

    @staticmethod
    async def _announce(
        announcer: SessionAnnouncer,
        turn: Turn,
        request: RunRequest,
        watch: RunWatch,
        created: store.NewRun,
    ) -> None:
        run = RunAnnouncement(
            tenant_id=request.tenant_id,
            session_key=request.session_key,
            run_id=request.run_id,
            agent_key=request.agent_key,
            channel=turn.channel,
        )
        await announcer.accepted(run, turn.user_text, new_session=created.session_created)
        watch.observe(lambda event: announcer.observe(run, event))

    async def abort(
        self, tenant_id: UUID, *, run_id: UUID | None = None, session_key: str | None = None
    ) -> aborts.AbortResult:
        return await aborts.request_abort(
            self.pool,
            self.nc,
            self.relay.redis,
            self.names,
            tenant_id=tenant_id,
            run_id=run_id,
            session_key=session_key,
        )

    async def _publish_again(self, run_id: UUID) -> None:
        """A run still queued may never have been published (its publisher died between
        storing and publishing it): publish it again, which is harmless if it was."""
        request = await store.queued_request(self.pool, run_id, reply_to=self.relay.channel)
        if request is not None:
            await self._publish(request, fail_unpublished=False)

    async def _publish(
        self,
        request: RunRequest,
        *,
        trace_context: Mapping[str, str] | None = None,
        fail_unpublished: bool = True,
    ) -> None:
        """`trace_context`: the run's W3C trace headers (default: the current span's)."""
        if trace_context is None:
            trace_context = tracing.inject_headers({})
        try:
            await self.js.publish(
                self.names.runs_subject,
                request.model_dump_json().encode(),
                timeout=5.0,
                # The trace continues in the runner (W3C traceparent in the headers).
                headers={"Nats-Msg-Id": str(request.run_id), **trace_context},
            )
        except (TimeoutError, NatsError, JetStreamAPIError) as exc:
            # Nothing half-way: the stored run is closed as failed before the client hears.
            error = ServiceUnavailable(
                f"the run queue did not accept the run ({type(exc).__name__}); retry shortly",
                retry_after_ms=1000,
            )
            if fail_unpublished:
                await store.fail_run(self.pool, request.run_id, 0, error.info)
            log.warning("publishing run %s failed: %r", request.run_id, exc)
            raise error from exc
