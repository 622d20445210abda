"""One channel on one bridge replica: hold its lease, run its adapter, route what comes in,
deliver what the outbox owes.

Every replica runs a `ChannelWorker` per enabled channel, but only the one holding the
channel's lease (`Lease`, in Redis) connects to the platform; the others wait to take over.
The holder:

- runs the adapter, which hands each inbound message to `receive`: the DM policy decides
  whether it reaches the agent (pairing, allowlist, open), and if it does, its run is stored
  (idempotency key: the channel and the platform's message id, so a re-read update is the
  same run) with its delivery in the outbox, before `receive` returns;
- follows each run it started (typing indicator while it runs) and delivers its reply when
  it ends; and sweeps the outbox for replies of runs nobody followed (after a failover);
- writes the channel's status: `connecting`, `connected`, or `error` with the reason, and
  backs off (doubling, with jitter) after failures.

Metrics (clawbus_core.metrics): `CHANNEL_MESSAGES{direction="in"}` counts a message when it
becomes a new run (not a re-read duplicate, a refused sender or unaddressed group chatter),
`{direction="out"}` each reply chunk the platform accepted (not pairing codes);
`CHANNELS_CONNECTED` counts the channels this replica holds and has connected, from the
adapter's `connected` until it stops for any reason (failure, disable, lease lost, shutdown).
Each accepted message opens the span `channel.inbound <type>`, where its run's trace starts
(a webhook request's own `traceparent`, if the gateway sent one, is its parent).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from clawbus_core import metrics, sessionkeys, tracing
from clawbus_core.db import Pool
from clawbus_core.runservice import RunService, Turn
from clawbus_core.secrets import SecretBox
from clawbus_core.store import channels as store
from clawbus_core.store.channels import Channel, Delivery
from clawbus_protocol.channels import WebhookAnswer, WebhookRequest
from clawbus_protocol.errors import ClawbusError, InternalError, NotFound
from clawbus_protocol.runs import ChatMessage, RunInput
from nats.aio.msg import Msg
from opentelemetry import context as otel_context
from opentelemetry import trace

from clawbus_bridge.adapters.base import (
    Adapter,
    ChannelContext,
    ChannelFailure,
    Inbound,
    SendFailure,
)
from clawbus_bridge.format import split
from clawbus_bridge.lease import Lease
from clawbus_bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

AdapterFactory = Callable[[ChannelContext], Adapter]

_TYPING_EVERY_S = 4.0  # Telegram shows "typing" for 5 s


def pairing_text(code: str, minutes: int) -> str:
    return (
        "I don't know you yet. To talk to me, ask my operator to approve this pairing code:\n\n"
        f"{store.format_code(code)}\n\nIt is valid for {minutes} minutes."
    )


def failure_text(error: dict[str, Any] | None) -> str:
    code = (error or {}).get("code", "error")
    return f"Sorry, I could not answer that ({code}). Please try again."


def agent_text(inbound: Inbound) -> str:
    """What the agent reads: the message, who wrote it in a group, and its media."""
    parts = []
    if inbound.chat_kind == "group":
        who = inbound.sender_name or inbound.sender_id
        parts.append(f"[{who} (id {inbound.sender_id}) in the group]")
    if inbound.edited:
        parts.append("[edited message]")
    if inbound.text:
        parts.append(inbound.text)
    for media in inbound.media:
        name = f" {media.file_name}" if media.file_name else ""
        note = (
            f"[{media.kind}{name} attached: media {media.media_id}, "
            f"{media.mime_type or 'unknown type'}, {media.size} bytes]"
        )
        parts.append(note if media.text is None else f"{note}\n{media.text}")
    return "\n".join(parts)


class ChannelWorker:
    def __init__(
        self,
        *,
        channel: Channel,
        settings: BridgeSettings,
        pool: Pool,
        redis: aioredis.Redis,
        box: SecretBox,
        runs: RunService,
        adapters: dict[str, AdapterFactory],
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.pool = pool
        self.box = box
        self.runs = runs
        self.nc = runs.nc
        self.adapters = adapters
        self.owner = settings.bridge_id
        self.lease = Lease(
            redis,
            f"{settings.names.namespace}:channel:{channel.id}:lease",
            self.owner,
            settings.bridge_lease_s,
        )
        self.adapter: Adapter | None = None
        self._follows: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.holding = False
        self._up = False  # counted in CHANNELS_CONNECTED

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"channel-{self.channel.name}")

    def update(self, channel: Channel) -> None:
        """A newer view of the channel (enabled flag, settings); applied at once."""
        changed = (channel.enabled, channel.updated_at) != (
            self.channel.enabled,
            self.channel.updated_at,
        )
        self.channel = channel
        if changed:
            self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            if not self.channel.enabled:
                await self._idle(self.settings.bridge_reconcile_s)
                continue
            if not await self.lease.acquire():
                # Another replica holds it: try again within a third of the lease.
                await self._idle(self.settings.bridge_lease_s / 3 * random.uniform(0.5, 1.0))
                continue
            self.holding = True
            wait_s = 0.0
            try:
                await self._hold()
                failures = 0
            except ChannelFailure as exc:
                failures += 1
                wait_s = self._backoff(failures, exc)
                log.warning(
                    "channel %s: %s (retrying in %.1fs)", self.channel.name, exc.reason, wait_s
                )
                await self._status("error", exc.reason)
            except Exception as exc:  # infrastructure or a bug: logged, retried, shown
                failures += 1
                wait_s = self._backoff(failures, None)
                log.exception("channel %s failed (retrying in %.1fs)", self.channel.name, wait_s)
                await self._status("error", f"{type(exc).__name__}: {exc}")
            finally:
                self.holding = False
                self._counted_up(False)
            if wait_s:
                # Keep the lease while backing off: one replica retries, not all of them.
                await self._hold_idle(wait_s)
            await self.lease.release()

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _hold_idle(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if not self.channel.enabled or not await self.lease.renew():
                return
            await self._idle(min(left, self.settings.bridge_lease_s / 3))

    def _backoff(self, failures: int, exc: ChannelFailure | None) -> float:
        s = self.settings
        if exc is not None and exc.retry_after_s:
            return float(exc.retry_after_s)
        if exc is not None and exc.permanent:
            return s.bridge_backoff_max_s
        base: float = min(s.bridge_backoff_max_s, s.bridge_backoff_min_s * 2.0 ** (failures - 1))
        return base * random.uniform(0.5, 1.0)

    def _counted_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            metrics.CHANNELS_CONNECTED.labels(channel_type=self.channel.type).inc(1 if up else -1)

    async def _status(self, status: store.ChannelStatus, reason: str | None = None) -> None:
        try:
            await store.set_status(self.pool, self.channel.id, status, reason)
        except Exception:  # noqa: BLE001 (a status is a view: failing to write it loses nothing)
            log.warning("channel %s: writing status %s failed", self.channel.name, status)

    async def _hold(self) -> None:
        """Run the channel while this replica holds its lease and it stays enabled."""
        credentials = await store.credentials(self.pool, self.box, self.channel.id)
        if not credentials:
            await self._status("not_configured", "the channel has no credentials")
            await self._idle(self.settings.bridge_reconcile_s)
            return
        factory = self.adapters.get(self.channel.type)
        if factory is None:
            raise ChannelFailure(
                f"channel type {self.channel.type!r} is not supported yet", permanent=True
            )
        await self._status("connecting")
        ctx = ChannelContext(
            channel=self.channel,
            credentials=credentials,
            settings=self.settings,
            pool=self.pool,
            receive=self.receive,
            connected=self._connected,
        )
        adapter = factory(ctx)
        self.adapter = adapter
        subject = self.settings.names.channel_inbound_subject(self.channel.id)
        inbound = await self.nc.subscribe(subject, cb=self._webhook)
        tasks = [
            asyncio.create_task(adapter.run(), name=f"{self.channel.name}-adapter"),
            asyncio.create_task(self._keep_lease(), name=f"{self.channel.name}-lease"),
            asyncio.create_task(self._sweep(), name=f"{self.channel.name}-sweep"),
        ]
        try:
            await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
        finally:
            with contextlib.suppress(Exception):
                await inbound.unsubscribe()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.adapter = None
            for task in list(self._follows):
                task.cancel()
            await asyncio.gather(*self._follows, return_exceptions=True)
            await adapter.aclose()
        run = tasks[0]
        if run.done() and not run.cancelled() and (exc := run.exception()) is not None:
            raise exc

    async def _connected(self, account: str | None) -> None:
        try:
            await store.set_status(self.pool, self.channel.id, "connected", account=account)
        except Exception:  # noqa: BLE001 (a status is a view: failing to write it loses nothing)
            log.warning("channel %s: writing status connected failed", self.channel.name)
        self._counted_up(True)
        log.info("channel %s connected as %s", self.channel.name, account or "?")

    async def _keep_lease(self) -> None:
        """Returns when the lease is lost or the channel is disabled."""
        while self.channel.enabled:
            await self._idle(self.settings.bridge_lease_s / 3)
            if not await self.lease.renew():
                log.warning("channel %s: lease lost; another replica takes over", self.channel.name)
                return
        await self._status("disabled")

    # --- inbound ------------------------------------------------------------------------------

    def _handler(self) -> Callable[[dict[str, str], bytes], Awaitable[None]]:
        handle = getattr(self.adapter, "handle", None)
        if handle is None:
            raise NotFound(f"channel {self.channel.name!r} takes no webhook requests")
        return cast(Callable[[dict[str, str], bytes], Awaitable[None]], handle)

    async def _webhook(self, msg: Msg) -> None:
        """A webhook request for this channel (only the lease holder subscribes): the adapter
        checks it and hands its message to `receive`; the answer says how it went."""
        answer = WebhookAnswer()
        # The request's trace (if the gateway sent one) continues into the message's run.
        token = otel_context.attach(tracing.extract_context(msg.headers))
        try:
            request = WebhookRequest.model_validate_json(msg.data)
            await self._handler()(request.headers, base64.b64decode(request.body))
        except ClawbusError as exc:
            answer = WebhookAnswer(error=exc.info)
        except Exception:
            log.exception("channel %s: a webhook request failed", self.channel.name)
            answer = WebhookAnswer(error=InternalError("see the channel-bridge log").info)
        finally:
            otel_context.detach(token)
        with contextlib.suppress(Exception):
            await msg.respond(answer.model_dump_json().encode())

    async def receive(self, inbound: Inbound) -> None:
        """Route one message; returns once its run (if any) is stored."""
        channel = self.channel
        if inbound.chat_kind == "group" and not (inbound.addressed and self._group_admits(inbound)):
            return
        if inbound.chat_kind == "direct" and not await self._may_talk(inbound):
            return
        span = tracing.tracer().start_as_current_span(
            f"channel.inbound {channel.type}",
            kind=trace.SpanKind.CONSUMER,
            attributes={"clawbus.channel": channel.name, "clawbus.channel_type": channel.type},
        )
        with span:  # the run's trace starts here: _follow (started inside) publishes it
            await self._run_for(inbound)

    async def _run_for(self, inbound: Inbound) -> None:
        """Store the message's run and start following it; returns once it is stored."""
        channel = self.channel
        session = self._session_key(inbound)
        turn = Turn(
            agent_key=channel.agent_key,
            session_key=session,
            user_text=agent_text(inbound),
            input=RunInput(messages=[ChatMessage(role="user", content=agent_text(inbound))]),
            channel=channel.type,
            idempotency_key=f"channel:{channel.id}:{inbound.platform_id}",
            tenant_id=channel.tenant_id,
        )
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._follow(turn, inbound, stored))
        self._follows.add(task)
        task.add_done_callback(self._follows.discard)
        try:
            await stored
        except ClawbusError as exc:
            if exc.info.retryable:
                raise  # not stored: the update is read again after the backoff
            if self.adapter is not None and self.adapter.reports_refusals:
                raise  # the webhook's caller gets the error
            # This message can never become a run (bad text, missing agent): skip it.
            log.warning(
                "channel %s: message %s dropped: %s",
                channel.name,
                inbound.platform_id,
                exc.info.message,
            )

    def _group_admits(self, inbound: Inbound) -> bool:
        """The channel's `groupPolicy`: `open` (default) admits any member of any group,
        `allowlist` the members of the chats in `groups` (only the senders in
        `groupAllowFrom`, if given), `disabled` nobody. Refused messages are dropped
        silently, as unaddressed group chatter is."""
        settings = self.channel.settings
        policy = settings.get("groupPolicy", "open")
        if policy == "open":
            return True
        if policy != "allowlist":
            return False
        group = inbound.group_id or inbound.chat_id
        senders = {str(s) for s in settings.get("groupAllowFrom", [])}
        return group in {str(g) for g in settings.get("groups", [])} and (
            not senders or inbound.sender_id in senders
        )

    async def _may_talk(self, inbound: Inbound) -> bool:
        channel = self.channel
        if inbound.sender_id in channel.allow_from or channel.dm_policy == "open":
            return True
        if channel.dm_policy == "allowlist":
            log.info(
                "channel %s: sender %s is not on the allowlist", channel.name, inbound.sender_id
            )
            return False
        state = await store.pairing(
            self.pool,
            channel.id,
            inbound.sender_id,
            display_name=inbound.sender_name,
            ttl_s=self.settings.bridge_pairing_ttl_s,
            resend_after_s=self.settings.bridge_pairing_resend_s,
        )
        if state.approved:
            return True
        if state.send_code and state.code is not None and self.adapter is not None:
            minutes = max(1, int(self.settings.bridge_pairing_ttl_s // 60))
            try:
                await self.adapter.send(
                    inbound.target(), pairing_text(state.code, minutes), reply=False, nonce=""
                )
            except SendFailure as exc:
                log.warning("channel %s: sending a pairing code failed: %s", channel.name, exc)
        return False

    def _session_key(self, inbound: Inbound) -> str:
        channel = self.channel
        if inbound.chat_kind == "direct":
            scope = channel.settings.get("dmScope", "per-channel-peer")
            return sessionkeys.direct_key(
                channel.agent_key, inbound.sender_id, dm_scope=scope, channel=channel.type
            )
        group = inbound.group_id or inbound.chat_id
        key = sessionkeys.group_key(channel.agent_key, channel.type, group)
        if inbound.thread_id is not None:
            marker = sessionkeys.thread_marker_for(channel.type)
            key = sessionkeys.thread_key(key, inbound.thread_id, marker=marker)
        return key

    async def _follow(self, turn: Turn, inbound: Inbound, stored: asyncio.Future[None]) -> None:
        """Store the run (resolving `stored`), then follow it and deliver its reply."""
        try:
            async with self.runs.submit(turn) as sub:
                await store.add_delivery(self.pool, sub.run_id, self.channel.id, inbound.target())
                if sub.existing is None:
                    await store.count(self.pool, self.channel.id, received=1)
                    metrics.CHANNEL_MESSAGES.labels(
                        channel_type=self.channel.type, direction="in"
                    ).inc()
                # Still the inbound span: `receive` waits for `stored` before ending it.
                trace.get_current_span().set_attribute("clawbus.run_id", str(sub.run_id))
                stored.set_result(None)
                if sub.existing is None or sub.existing.status in ("queued", "running"):
                    await self._watch(sub.watch, inbound)
                await self.deliver(sub.run_id)
        except BaseException as exc:
            if not stored.done():
                stored.set_exception(
                    exc if isinstance(exc, Exception) else ChannelFailure("stopped")
                )
            if not isinstance(exc, Exception):
                raise
            log.warning("channel %s: following a run failed: %r", self.channel.name, exc)

    async def _watch(self, watch: Any, inbound: Inbound) -> None:
        typing = asyncio.create_task(self._typing(inbound.target()))
        try:
            async for event in watch.events(timeout_s=self.settings.bridge_run_timeout_s):
                if event.type in ("done", "error", "aborted"):
                    return
        except ClawbusError as exc:  # the run outlived the wait: the sweeper delivers it
            log.info("channel %s: %s", self.channel.name, exc.info.message)
        finally:
            typing.cancel()

    async def _typing(self, target: dict[str, Any]) -> None:
        while self.adapter is not None:
            await self.adapter.typing(target)
            await asyncio.sleep(_TYPING_EVERY_S)

    # --- outbound -----------------------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.bridge_sweep_s)
            try:
                await self.deliver(None)
            except (OSError, ClawbusError):
                log.warning(
                    "channel %s: sweeping the outbox failed", self.channel.name, exc_info=True
                )

    async def deliver(self, run_id: Any) -> None:
        """Send what the outbox owes: one run's reply, or (None) every reply due."""
        adapter = self.adapter
        if adapter is None:
            return
        lease_s = self.settings.bridge_delivery_lease_s
        for delivery in await store.claim_deliveries(
            self.pool, self.channel.id, self.owner, lease_s=lease_s, run_id=run_id
        ):
            await self._deliver_one(adapter, delivery, lease_s)

    async def _deliver_one(self, adapter: Adapter, delivery: Delivery, lease_s: float) -> None:
        if delivery.run_status == "completed":
            chunks = split(delivery.text or "", adapter.limit)
        elif delivery.run_status == "failed":
            chunks = [failure_text(delivery.error)]
        else:  # aborted: the user (or an operator) stopped it; nothing to say
            chunks = []
        for index in range(delivery.chunks_sent, len(chunks)):
            if not await store.sending(
                self.pool, delivery.run_id, self.owner, index, lease_s=lease_s
            ):
                return  # the claim lapsed and another replica took the delivery over
            try:
                platform_id = await adapter.send(
                    delivery.target,
                    chunks[index],
                    reply=index == 0,
                    nonce=f"{delivery.run_id.hex[:16]}{index:04d}",
                )
            except SendFailure as exc:
                if exc.permanent:
                    await store.finish_delivery(
                        self.pool, delivery.run_id, self.owner, failed=exc.reason
                    )
                else:
                    await store.release_delivery(self.pool, delivery.run_id, self.owner, exc.reason)
                log.warning(
                    "channel %s: delivering run %s: %s",
                    self.channel.name,
                    delivery.run_id,
                    exc.reason,
                )
                return
            await store.sent(self.pool, delivery.run_id, self.owner, index, platform_id)
            metrics.CHANNEL_MESSAGES.labels(channel_type=self.channel.type, direction="out").inc()
        await store.finish_delivery(self.pool, delivery.run_id, self.owner)
