"""Session events to the WebSocket clients of every gateway replica, over NATS core.

The replica that runs a session's turn publishes each 001 event (`session:created`,
`message:received`, `message:sent`, `tool:invoked`, `error`) once on
`names.gateway_events_subject`; every replica, itself included, hears it and hands it to
its own clients that listen to that session (or to every session of the tenant).

Notices are fire-and-forget, like NATS core itself: the database stays the source of truth,
and a client that was away reads the session there (`session.get`). A client too slow to
take its events loses the overflow (counted in the log) rather than holding up the others.

The `Broadcaster` is also the registry of this replica's WebSocket clients, so shutdown
closes them all (1001) instead of waiting out the shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from uuid import UUID

from aiohttp import WSCloseCode, web
from clawbus_core import bus
from clawbus_core.session_events import NatsEventPublisher, SessionAnnouncer
from clawbus_protocol.names import Names
from clawbus_protocol.ws import SessionEvent, SessionEventNotice
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from pydantic import ValidationError

from clawbus_gateway.keys import RUNS, SETTINGS

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Listener:
    """One connected client: which session events it wants, and how to hand them over."""

    tenant_id: UUID
    # Must not block: called from the NATS subscription for every matching event.
    deliver: Callable[[SessionEvent], None]
    close: Callable[[WSCloseCode, str], Awaitable[None]]
    session_keys: set[str] = field(default_factory=set)
    all_sessions: bool = False

    @property
    def listening(self) -> bool:
        return self.all_sessions or bool(self.session_keys)

    def wants(self, notice: SessionEventNotice) -> bool:
        if notice.tenant_id != self.tenant_id:
            return False
        return self.all_sessions or notice.session_key in self.session_keys


class Broadcaster:
    def __init__(self, nc: NatsClient, names: Names, instance_id: str) -> None:
        self.nc = nc
        self.subject = names.gateway_events_subject
        self.instance_id = instance_id
        self._listeners: set[Listener] = set()
        self._subscription: Subscription | None = None
        self._publisher = NatsEventPublisher(nc, names, instance_id)
        self.started_at = time.monotonic()  # when this replica began serving clients

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(self.subject, cb=self._receive)
        await bus.settle(self.nc)  # subscribed at the server before the first client arrives

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None

    @contextlib.contextmanager
    def register(self, listener: Listener) -> Iterator[Listener]:
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    @property
    def clients(self) -> int:
        return len(self._listeners)

    async def publish(self, tenant_id: UUID, session_key: str, event: SessionEvent) -> None:
        await self._publisher.publish(tenant_id, session_key, event)

    async def close_all(self, code: WSCloseCode, reason: str) -> None:
        # Together: each close waits for its client's reply (or aiohttp's close timeout).
        await asyncio.gather(*(listener.close(code, reason) for listener in self._listeners))

    async def _receive(self, msg: Msg) -> None:
        try:
            notice = SessionEventNotice.model_validate_json(msg.data)
        except ValidationError:
            log.exception("dropping a malformed session event on %s", self.subject)
            return
        for listener in list(self._listeners):
            if listener.wants(notice):
                listener.deliver(notice.event)


BROADCASTER: web.AppKey[Broadcaster] = web.AppKey("broadcaster", Broadcaster)


async def broadcasting(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx, after the infrastructure's: shares the gateway's NATS connection."""
    settings = app[SETTINGS]
    broadcaster = Broadcaster(app[RUNS].nc, settings.names, settings.gateway_instance_id)
    await broadcaster.start()
    app[BROADCASTER] = broadcaster
    app[RUNS].announcer = SessionAnnouncer(broadcaster)
    try:
        yield
    finally:
        app[RUNS].announcer = None
        await broadcaster.stop()


async def close_clients(app: web.Application) -> None:
    """on_shutdown: WebSocket handlers would otherwise hold the shutdown until its timeout."""
    if BROADCASTER in app:
        await app[BROADCASTER].close_all(WSCloseCode.GOING_AWAY, "gateway shutting down")
