"""The channel-bridge process: a `ChannelWorker` per channel, kept in step with Postgres.

Channels are read at start (those in `CLAWBUS_CHANNELS` are created or updated first), again
whenever a gateway announces a change on the bus (`names.channels_changed_subject`), and
every `bridge_reconcile_s` in case a notice was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from uuid import UUID

import redis.asyncio as aioredis
from clawbus_core import bus
from clawbus_core.config import resolve_endpoints
from clawbus_core.db import create_pool
from clawbus_core.events import RunRelay
from clawbus_core.runservice import RunService
from clawbus_core.secrets import secret_box
from clawbus_core.session_events import NatsEventPublisher, SessionAnnouncer
from clawbus_core.store import channels as store
from nats.aio.msg import Msg

from clawbus_bridge.adapters.discord import DiscordAdapter
from clawbus_bridge.adapters.telegram import TelegramAdapter
from clawbus_bridge.adapters.webhook import WebhookAdapter
from clawbus_bridge.settings import BridgeSettings
from clawbus_bridge.worker import AdapterFactory, ChannelWorker

log = logging.getLogger(__name__)

ADAPTERS: dict[str, AdapterFactory] = {
    "telegram": TelegramAdapter,
    "discord": DiscordAdapter,
    "webhook": WebhookAdapter,
}


class ChannelBridge:
    """`async with ChannelBridge(settings) as bridge: await bridge.serve(stop)`."""

    def __init__(
        self, settings: BridgeSettings, adapters: dict[str, AdapterFactory] | None = None
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.adapters = adapters if adapters is not None else dict(ADAPTERS)
        self.workers: dict[UUID, ChannelWorker] = {}
        self._reconcile_now = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChannelBridge:
        s = self.settings
        endpoints = resolve_endpoints(s)
        self.box = secret_box(s.secret_key.get_secret_value() if s.secret_key else None, s.data_dir)
        self.pool = await create_pool(endpoints.database_url, min_size=2, max_size=10)
        self.redis = aioredis.Redis.from_url(endpoints.redis_url, max_connections=64)
        self.nc = await bus.connect(endpoints.nats_url, name=f"channel-bridge:{s.bridge_id}")
        self.relay = RunRelay(self.redis, self.names, f"bridge-{s.bridge_id}")
        self.runs = RunService(
            self.pool, self.nc, self.relay, self.names, timeout_s=s.bridge_run_timeout_s
        )
        self.runs.announcer = SessionAnnouncer(
            NatsEventPublisher(self.nc, self.names, f"bridge-{s.bridge_id}")
        )
        await bus.ensure_runs_stream(
            self.runs.js, self.names, replicas=self.settings.nats_stream_replicas
        )
        await self.relay.start()
        await self._apply_config()
        await self.nc.subscribe(self.names.channels_changed_subject, cb=self._changed)
        await bus.settle(self.nc)
        await self.reconcile()
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="reconcile")
        log.info("channel-bridge %s ready: %d channels", s.bridge_id, len(self.workers))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        # Hand the channels over at once rather than after the lease lapses.
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                await worker.lease.release()
        self.workers.clear()
        await self.relay.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()
        await self.pool.close()

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def _apply_config(self) -> None:
        for config in self.settings.channels:
            tenant = await self.pool.fetchval(
                "SELECT id FROM tenants WHERE slug = $1", config.tenant
            )
            if tenant is None:
                raise ValueError(f"CLAWBUS_CHANNELS: tenant {config.tenant!r} not found")
            await store.create_channel(
                self.pool,
                self.box,
                self.names.namespace,
                tenant,
                name=config.name,
                channel_type=config.type,
                agent_key=config.agent,
                credentials=config.credentials,
                settings=config.settings,
                dm_policy=config.dm_policy,
                allow_from=config.allow_from,
                enabled=config.enabled,
                replace=True,
            )

    async def _changed(self, msg: Msg) -> None:
        del msg
        self._reconcile_now.set()

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._reconcile_now.wait(), timeout=self.settings.bridge_reconcile_s
                )
            self._reconcile_now.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("reading the channels failed; retrying")

    async def reconcile(self) -> None:
        channels = {c.id: c for c in await store.list_channels(self.pool, self.names.namespace)}
        for channel_id in set(self.workers) - set(channels):
            worker = self.workers.pop(channel_id)
            await worker.stop()
            await worker.lease.release()
        for channel_id, channel in channels.items():
            if (existing := self.workers.get(channel_id)) is not None:
                existing.update(channel)
                continue
            worker = ChannelWorker(
                channel=channel,
                settings=self.settings,
                pool=self.pool,
                redis=self.redis,
                box=self.box,
                runs=self.runs,
                adapters=self.adapters,
            )
            self.workers[channel_id] = worker
            worker.start()
