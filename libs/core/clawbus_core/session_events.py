"""001's session events (`session:created`, `message:received`, `message:sent`,
`tool:invoked`, `error`) for every run any surface starts, broadcast to every replica.

RunService announces the accepted message when it stores a run, and observes the run's
events while the surface that started it reads them. Announcements go out on NATS
(`names.gateway_events_subject`, see `NatsEventPublisher`); every gateway replica's
Broadcaster hands them to its WebSocket subscribers. A run whose client left stops being
observed (its later events are not announced).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from clawbus_protocol import ws as frames
from clawbus_protocol.names import Names
from clawbus_protocol.runs import DoneEvent, ErrorEvent, RunEvent, ToolCallEvent
from clawbus_protocol.ws import SessionEvent, SessionEventNotice
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RunAnnouncement:
    """One run's identity, as its events are announced."""

    tenant_id: UUID
    session_key: str
    run_id: UUID
    agent_key: str
    channel: str


class EventPublisher(Protocol):
    async def publish(self, tenant_id: UUID, session_key: str, event: SessionEvent) -> None: ...


class NatsEventPublisher:
    """Publishes session events for every gateway replica's WebSocket clients."""

    def __init__(self, nc: NatsClient, names: Names, origin: str) -> None:
        self.nc = nc
        self.subject = names.gateway_events_subject
        self.origin = origin

    async def publish(self, tenant_id: UUID, session_key: str, event: SessionEvent) -> None:
        notice = SessionEventNotice(
            tenant_id=tenant_id, session_key=session_key, origin=self.origin, event=event
        )
        try:
            await self.nc.publish(self.subject, notice.model_dump_json().encode())
        except NatsError as exc:
            # A lost notice loses a live view, never data: the run goes on.
            log.warning("could not publish %s for session %r: %r", event.type, session_key, exc)


class SessionAnnouncer:
    def __init__(self, publisher: EventPublisher) -> None:
        self.publisher = publisher

    async def accepted(self, run: RunAnnouncement, text: str, *, new_session: bool) -> None:
        now = _now_ms()
        if new_session:
            created = frames.SessionCreated(
                session_key=run.session_key,
                agent_id=run.agent_key,
                channel=run.channel,
                timestamp=now,
            )
            await self._publish(run, frames.SessionCreatedEvent(payload=created))
        received = frames.MessageEvent(
            session_key=run.session_key,
            run_id=run.run_id,
            channel=run.channel,
            role="user",
            message=text,
            timestamp=now,
        )
        await self._publish(run, frames.MessageReceivedEvent(payload=received))

    async def observe(self, run: RunAnnouncement, event: RunEvent) -> None:
        """Announce what a run event means for the session (most events mean nothing)."""
        if isinstance(event, ToolCallEvent):
            invoked = frames.ToolInvoked(
                session_key=run.session_key,
                run_id=run.run_id,
                call_id=event.call.id,
                tool=event.call.name,
                params=event.call.arguments,
                timestamp=_now_ms(),
            )
            await self._publish(run, frames.ToolInvokedEvent(payload=invoked))
        elif isinstance(event, DoneEvent):
            sent = frames.MessageEvent(
                session_key=run.session_key,
                run_id=run.run_id,
                channel=run.channel,
                role="assistant",
                message=event.text,
                timestamp=_now_ms(),
            )
            await self._publish(run, frames.MessageSentEvent(payload=sent))
        elif isinstance(event, ErrorEvent):
            data = frames.SessionErrorData(
                session_key=run.session_key,
                run_id=run.run_id,
                error=event.error.envelope().error,
                timestamp=_now_ms(),
            )
            await self._publish(run, frames.SessionErrorEvent(payload=data))

    async def _publish(self, run: RunAnnouncement, event: frames.SessionEvent) -> None:
        # Announcing is a side show: a failure is logged, never the run's or client's problem.
        try:
            await self.publisher.publish(run.tenant_id, run.session_key, event)
        except Exception:
            log.warning("announcing %s for run %s failed", event.type, run.run_id, exc_info=True)
