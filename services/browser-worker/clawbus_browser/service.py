"""The browser-worker process: browser calls from the bus, answered by this replica's pages.

Every replica answers `Names.browser_subject` in the queue group `browser-workers` (a
`BrowserCall` in, a `BrowserReply` out, errors as data) and its own
`Names.browser_worker_subject`, where other replicas forward the calls for the targets this
one holds (clawbus_browser.holders). Work is bounded: `browser_concurrency` operations run at
once, `browser_max_pending` calls may wait, and a call past that is refused with a
retryable 503 at once; every operation has a time limit.

Each call this replica answers is counted in `BROWSER_OPERATIONS{op, outcome}` (outcome `ok`
or the error's code; `op` is `unknown` for a call that could not be read or was refused as
busy before it was read) and runs in the span `browser <op>`, a child of the caller's span
when the request carried a `traceparent` (clawbus_core.browser_client sends it). A call passed
on to the holder of its target is counted there, not here, and carries the trace along.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import redis.asyncio as aioredis
from clawbus_core import bus, metrics, tracing
from clawbus_core.config import resolve_endpoints
from clawbus_core.db import create_pool
from clawbus_core.netguard import NetPolicy
from clawbus_core.store.media import store_media
from clawbus_protocol.browser import (
    ActCall,
    BrowserCall,
    BrowserOp,
    BrowserReply,
    BrowserResult,
    CloseCall,
    EvaluateCall,
    NavigateCall,
    ScreenshotCall,
    ScreenshotResult,
    SnapshotCall,
    StatusCall,
    StatusResult,
)
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorInfo,
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    Timeout,
)
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import trace
from pydantic import ValidationError
from redis.exceptions import RedisError

from clawbus_browser import ops
from clawbus_browser.guard import NetGuard
from clawbus_browser.holders import Holders
from clawbus_browser.pool import BrowserPool, target_key
from clawbus_browser.profiles import ProfileStore
from clawbus_browser.settings import BrowserSettings
from clawbus_browser.socks import SocksProxy

log = logging.getLogger(__name__)

QUEUE_GROUP = "browser-workers"

PageOp = NavigateCall | SnapshotCall | ScreenshotCall | ActCall | EvaluateCall
TargetedOp = PageOp | CloseCall
# Time on top of an operation's own limit: waiting for the page's lock and a worker slot,
# and a forwarded call's extra hop.
_SLACK_S = 5.0


class BrowserWorker:
    """`async with BrowserWorker(settings) as worker: await worker.serve(stop)`."""

    def __init__(self, settings: BrowserSettings) -> None:
        self.settings = settings
        self.names = settings.names
        self.worker_id = settings.browser_worker_id
        self.guard = NetGuard(NetPolicy.from_entries(settings.net_allow))
        self.forwarded = 0  # calls this replica passed to the holder of their target
        self._concurrency = asyncio.Semaphore(settings.browser_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscriptions: list[Subscription] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> BrowserWorker:
        s = self.settings
        if not s.browser_chromium_path.exists():
            raise SystemExit(
                f"Chromium not found at {s.browser_chromium_path}: install it (Debian: "
                "`apt-get install chromium`, as `make run` does) or set "
                "CLAWBUS_BROWSER_CHROMIUM_PATH"
            )
        endpoints = resolve_endpoints(s)
        stack = self._stack
        try:
            self.db = await create_pool(endpoints.database_url, min_size=1, max_size=5)
            stack.push_async_callback(self.db.close)
            self.redis = aioredis.Redis.from_url(endpoints.redis_url, max_connections=16)
            stack.push_async_callback(self.redis.aclose)
            self.holders = Holders(
                self.redis, self.names, self.worker_id, ttl_s=2 * s.browser_idle_s + 60
            )
            proxy = await stack.enter_async_context(SocksProxy(self.guard.policy))
            self.pool = await stack.enter_async_context(
                BrowserPool(
                    s,
                    guard=self.guard,
                    proxy_url=proxy.url,
                    profiles=ProfileStore(self.db, max_bytes=s.browser_max_profile_bytes),
                    on_retire=self.holders.release,
                )
            )
            self.nc = await bus.connect(endpoints.nats_url, name=f"browser-worker:{self.worker_id}")
            stack.push_async_callback(self._close_nats)
            self._subscriptions = [
                await self.nc.subscribe(self.names.browser_subject, QUEUE_GROUP, cb=self._shared),
                await self.nc.subscribe(
                    self.names.browser_worker_subject(self.worker_id), cb=self._direct
                ),
            ]
            await bus.settle(self.nc)  # subscribed at the server: ready means reachable
        except BaseException:
            await stack.aclose()
            raise
        log.info(
            "browser-worker %s ready: Chromium %s, up to %d contexts",
            self.worker_id,
            self.pool.browser_version,
            s.browser_max_contexts,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Stop taking calls, let those in flight finish, then close the pages (profiles saved).
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions = []
        if self._tasks:
            _, late = await asyncio.wait(
                self._tasks, timeout=self.settings.browser_op_timeout_s + _SLACK_S
            )
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._stack.aclose()

    async def _close_nats(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()

    # --- calls from the bus ---------------------------------------------------------------

    async def _shared(self, msg: Msg) -> None:
        self._accept(msg, forwarded=False)

    async def _direct(self, msg: Msg) -> None:
        self._accept(msg, forwarded=True)

    def _accept(self, msg: Msg, *, forwarded: bool) -> None:
        if len(self._tasks) >= self.settings.browser_max_pending:
            busy = ServiceUnavailable(
                f"browser-worker {self.worker_id} has {len(self._tasks)} calls waiting; "
                "retry shortly",
                retry_after_ms=1000,
                worker_id=self.worker_id,
            )
            task = asyncio.create_task(self._reply(msg, BrowserReply(error=busy.info), "unknown"))
        else:
            task = asyncio.create_task(self._answer(msg, forwarded=forwarded))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg, *, forwarded: bool) -> None:
        """Decode the call, run it (or pass it to its target's holder), reply."""
        with tracing.tracer().start_as_current_span(
            "browser",
            context=tracing.extract_context(msg.headers),
            kind=trace.SpanKind.SERVER,
            attributes={"clawbus.browser_worker": self.worker_id},
        ) as span:
            await self._answer_in(msg, span, forwarded=forwarded)

    async def _answer_in(self, msg: Msg, span: trace.Span, *, forwarded: bool) -> None:
        error: ErrorInfo
        name = "unknown"
        try:
            op = BrowserCall.model_validate_json(msg.data).call
            name = op.op
            span.update_name(f"browser {name}")
            if not isinstance(op, StatusCall) and await self._passed_on(msg, op, forwarded):
                span.set_attribute("clawbus.browser_forwarded", True)
                return
            result = await self.handle(op)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            error = InvalidRequest(
                f"bad browser call: {where}: {first['msg']}", param=where or None
            ).info
        except ClawbusError as exc:
            error = exc.info
        except Exception:
            log.exception("browser call on %s failed", msg.subject)
            error = InternalError("the browser call failed; see the browser-worker log").info
        else:
            await self._reply(msg, BrowserReply(result=result), name)
            return
        await self._reply(msg, BrowserReply(error=error), name)

    async def _passed_on(self, msg: Msg, op: TargetedOp, forwarded: bool) -> bool:
        """Claim the call's target, or pass the call to the replica holding it and relay its
        answer; whether it was passed on. A call forwarded here is always served here."""
        key = target_key(op.target)
        try:
            holder = await self.holders.claim(key)  # renews this replica's claim
        except RedisError:
            log.warning("Redis unreachable: serving %s here without claiming it", key)
            return False
        for _ in range(3):
            if forwarded or holder == self.worker_id:
                return False
            try:
                answer = await self.nc.request(
                    self.names.browser_worker_subject(holder),
                    msg.data,
                    timeout=self.budget_s(op) + _SLACK_S,
                    headers=tracing.inject_headers({}) or None,  # the holder joins the trace
                )
            except NoRespondersError:  # the holder is gone, and its pages with it
                log.info("browser-worker %s is gone; taking over %s", holder, key)
                holder = await self.holders.take_over(key, holder)
                continue
            except (TimeoutError, NatsTimeoutError):
                raise Timeout(
                    f"browser-worker {holder}, which holds this page, did not answer "
                    f"{op.op!r} in time",
                    worker_id=holder,
                ) from None
            self.forwarded += 1
            with contextlib.suppress(Exception):  # the caller may have gone (its timeout)
                await msg.respond(answer.data)
            return True
        raise ServiceUnavailable("the page's browser-worker keeps changing; retry")

    def budget_s(self, op: BrowserOp) -> float:
        """How long an operation may take, waiting included."""
        limit = self.settings.browser_op_timeout_s
        if isinstance(op, NavigateCall) and op.timeout_ms is not None:
            limit = op.timeout_ms / 1000
        return limit + _SLACK_S

    # --- the operations -------------------------------------------------------------------

    async def handle(self, op: BrowserOp) -> BrowserResult:
        if isinstance(op, StatusCall):
            return self.status()
        if isinstance(op, CloseCall):
            await self.pool.close(op.target)
            return self.status()
        budget = self.budget_s(op)
        try:
            async with asyncio.timeout(budget):
                return await self._run(op)
        except TimeoutError:
            raise Timeout(
                f"the browser did not finish {op.op!r} within {budget:g}s",
                worker_id=self.worker_id,
            ) from None

    async def _run(self, op: PageOp) -> BrowserResult:
        # The page's lock first, then a worker slot: calls queued behind one busy page must
        # not hold the slots other pages need.
        s = self.settings
        if isinstance(op, ScreenshotCall):
            async with self.pool.page(op.target) as page, self._concurrency:
                image = await ops.screenshot(page, op, s.browser_max_screenshot_bytes)
            media_id = await store_media(
                self.db,
                op.target.tenant_id,
                kind="screenshot",
                content=image.content,
                mime_type=image.mime_type,
                file_name=f"screenshot.{'jpg' if op.format == 'jpeg' else 'png'}",
            )
            return ScreenshotResult(
                media_id=media_id,
                mime_type=image.mime_type,
                size=len(image.content),
                width=image.width,
                height=image.height,
            )
        async with self.pool.page(op.target) as page, self._concurrency:
            if isinstance(op, NavigateCall):
                timeout_s = op.timeout_ms / 1000 if op.timeout_ms else s.browser_op_timeout_s
                return await ops.navigate(page, op, self.guard, timeout_s)
            if isinstance(op, SnapshotCall):
                return await ops.snapshot(page, op, s.browser_max_text_chars)
            if isinstance(op, ActCall):
                return await ops.act(page, op)
            return await ops.evaluate(page, op, s.browser_max_text_chars)

    async def _reply(self, msg: Msg, reply: BrowserReply, op: str) -> None:
        data = reply.model_dump_json().encode()
        limit = self.nc.max_payload
        if len(data) > limit:
            too_big = PayloadTooLarge(
                f"the answer is {len(data)} bytes, over the bus's limit of {limit}; ask for "
                "less (a smaller max_chars)",
                size=len(data),
                limit=limit,
            )
            reply = BrowserReply(error=too_big.info)
            data = reply.model_dump_json().encode()
        outcome = "ok" if reply.error is None else str(reply.error.code)
        metrics.BROWSER_OPERATIONS.labels(op=op, outcome=outcome).inc()
        if reply.error is not None:
            trace.get_current_span().set_status(trace.StatusCode.ERROR, outcome)
        with contextlib.suppress(Exception):  # the caller may have gone (its timeout)
            await msg.respond(data)

    def status(self) -> StatusResult:
        return StatusResult(
            worker_id=self.worker_id,
            connected=self.pool.connected,
            browser_version=self.pool.browser_version,
            contexts=self.pool.contexts,
            max_contexts=self.settings.browser_max_contexts,
        )
