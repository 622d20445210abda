"""The agent-runner worker: many replicas share one durable pull consumer of the runs stream.

Each of `runner_concurrency` slots holds its own pull subscription and takes one run at a
time, so a message goes straight to a free slot. A run is acked only after its result is
committed; while it runs, in-progress acks keep JetStream from redelivering it; if this
process dies, JetStream redelivers it to another replica after `runner_ack_wait_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import asyncpg
import redis.asyncio as aioredis
from clawbus_core import bus
from clawbus_core.config import resolve_endpoints
from clawbus_core.db import create_pool
from clawbus_core.models import ModelCatalog
from clawbus_protocol.runs import RunRequest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from clawbus_runner import observe
from clawbus_runner.execute import Executor
from clawbus_runner.failover import ModelFailover, RetryPolicy
from clawbus_runner.lanes import Delivery, Lanes
from clawbus_runner.providers import Providers
from clawbus_runner.settings import RunnerSettings
from clawbus_runner.tool_service import ToolService
from clawbus_runner.tools.browser import NAMES_EXTRA, NATS_EXTRA
from clawbus_runner.toolset import build_tools

log = logging.getLogger(__name__)

# Failures of our own infrastructure: the run is handed back to the queue, not failed.
_INFRA_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    RedisConnectionError,
)


class AgentRunner:
    """`async with AgentRunner(settings) as runner: await runner.serve(stop)`."""

    def __init__(self, settings: RunnerSettings) -> None:
        self.settings = settings
        self.names = settings.names
        self._stopping = asyncio.Event()
        self._slots: list[asyncio.Task[None]] = []
        self._queue_watch: asyncio.Task[None] | None = None
        self.completed = 0

    async def __aenter__(self) -> AgentRunner:
        endpoints = resolve_endpoints(self.settings)
        catalog = ModelCatalog.from_settings(self.settings)
        self.pool = await create_pool(
            endpoints.database_url, min_size=2, max_size=self.settings.runner_db_pool_size
        )
        self.redis = aioredis.Redis.from_url(
            endpoints.redis_url, max_connections=self.settings.runner_concurrency + 8
        )
        self.nc = await bus.connect(
            endpoints.nats_url, name=f"agent-runner:{self.settings.runner_id}"
        )
        self.js: JetStreamContext = self.nc.jetstream()
        await bus.ensure_runs_stream(
            self.js, self.names, replicas=self.settings.nats_stream_replicas
        )
        await bus.ensure_runners_consumer(
            self.js,
            self.names,
            ack_wait_s=self.settings.runner_ack_wait_s,
            max_deliver=self.settings.runner_max_deliver,
        )
        self.providers = Providers()
        self.tools = build_tools(self.settings)
        self.executor = Executor(
            settings=self.settings,
            pool=self.pool,
            redis=self.redis,
            names=self.names,
            catalog=catalog,
            providers=self.providers,
            tools=self.tools.registry,
            failover=ModelFailover(self.providers, catalog, RetryPolicy()),
            tool_extras={NATS_EXTRA: self.nc, NAMES_EXTRA: self.names},  # the browser tools
        )
        self.lanes = Lanes(
            settings=self.settings,
            pool=self.pool,
            redis=self.redis,
            nc=self.nc,
            names=self.names,
            executor=self.executor,
        )
        await self.nc.subscribe(self.names.runs_abort_subject, cb=self.lanes.on_abort)
        self.tool_service = ToolService(
            settings=self.settings,
            pool=self.pool,
            redis=self.redis,
            names=self.names,
            tools=self.tools.registry,
            extras=self.executor.tool_extras,
        )
        await self.tool_service.start(self.nc)
        self._queue_watch = asyncio.create_task(
            observe.watch_queue(self.js, self.names, interval_s=self.settings.runner_queue_poll_s),
            name="runner-queue-watch",
        )
        self._slots = [
            asyncio.create_task(self._slot(i), name=f"runner-slot-{i}")
            for i in range(self.settings.runner_concurrency)
        ]
        log.info(
            "agent-runner %s ready: %d slots on %s",
            self.settings.runner_id,
            len(self._slots),
            self.names.runs_stream,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()
        if self._queue_watch is not None:
            self._queue_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._queue_watch
        await self.providers.aclose()
        await self.tools.aclose()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()
        await self.pool.close()

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def drain(self) -> None:
        """Stop taking runs; give in-flight ones `runner_drain_s`, then hand them back."""
        self._stopping.set()
        if not self._slots:
            return
        _, pending = await asyncio.wait(self._slots, timeout=self.settings.runner_drain_s + 3)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []

    async def _slot(self, index: int) -> None:
        psub = await self.js.pull_subscribe_bind(
            durable=self.names.runners_consumer, stream=self.names.runs_stream
        )
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await psub.fetch(1, timeout=self.settings.runner_fetch_wait_s)
                except (TimeoutError, NatsTimeoutError):
                    continue
                except ConnectionClosedError:
                    return
                except Exception:
                    log.exception("slot %d: fetch failed; retrying", index)
                    await asyncio.sleep(1.0)
                    continue
                for msg in msgs:
                    if self._stopping.is_set():
                        await msg.nak()  # hand it straight to another replica
                    else:
                        await self._handle(msg)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        try:
            request = RunRequest.model_validate_json(msg.data)
        except ValidationError:
            log.exception("discarding a malformed run request")
            await msg.term()
            return
        with observe.delivery(msg, request, self.names):
            await self._run_delivery(msg, request)

    async def _run_delivery(self, msg: Msg, request: RunRequest) -> None:
        delivery = msg.metadata.num_delivered
        log.debug("run %s: delivery %d", request.run_id, delivery)
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        try:
            outcome = await self.lanes.handle(request, first_delivery=delivery == 1)
        except asyncio.CancelledError:
            # Drain ran out of time: the run goes back to the queue for another attempt.
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # A stray CancelledError from inside the run is a bug; it must not kill the slot.
            log.error("run %s: cancelled from inside; requeued", request.run_id)
            return
        except _INFRA_ERRORS:
            log.exception("run %s: infrastructure error; requeueing", request.run_id)
            await msg.nak(delay=1.0)
            return
        except Exception:
            # A bug must cost one delivery, never the slot: requeue with a pause.
            log.exception("run %s: unexpected error; requeueing", request.run_id)
            await msg.nak(delay=5.0)
            return
        finally:
            keep_alive.cancel()
        log.debug("run %s: %s", request.run_id, outcome.value)
        if outcome is Delivery.DONE:
            await msg.ack()
            self.completed += 1
        else:
            # Its session is busy: the lane holder will run it; look again after a while
            # (sooner at first, then up to the lease time, when a dead holder's lane frees).
            await msg.nak(delay=min(self.settings.runner_lease_s, 0.25 * 2 ** min(delivery, 6)))

    async def _keep_alive(self, msg: Msg) -> None:
        interval = max(0.5, self.settings.runner_ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()
