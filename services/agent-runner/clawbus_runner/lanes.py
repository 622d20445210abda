"""Session lanes on the runner side: one active run per session, cluster-wide, FIFO.

A delivered run first takes its session's lane (`clawbus_core.store.lanes`). The lane holder
runs the session's queued runs in order from their stored requests, whichever runner's
message brought them, renewing its lease while it works, and releases the lane only when
nothing is left. A run whose session is busy is handed back to the queue with a delay: the
holder will run it, and the redelivery then finds it finished and acks it; if the holder
died, the redelivery finds the lease expired and takes the lane over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from enum import Enum
from uuid import UUID

from clawbus_core import aborts, tracing
from clawbus_core.db import Pool
from clawbus_core.events import Redis
from clawbus_core.store import lanes as store
from clawbus_core.store import runs as runs_store
from clawbus_protocol.errors import ClawbusError, ErrorCode
from clawbus_protocol.names import Names
from clawbus_protocol.runs import AbortNotice, RunRequest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry import context as otel_context

from clawbus_runner import observe
from clawbus_runner.context import AgentContext, load_agent_context, load_conversation
from clawbus_runner.execute import Executor, Outcome, Prefetch, RunResult
from clawbus_runner.settings import RunnerSettings

log = logging.getLogger(__name__)

_MAX_CONTEXTS = 10_000
_ABORT_MEMORY_S = 120.0


class Delivery(Enum):
    DONE = "done"  # the message's run has finished (here or anywhere): ack
    BUSY = "busy"  # its session is busy elsewhere: hand back with a delay


@dataclass
class Lanes:
    settings: RunnerSettings
    pool: Pool
    redis: Redis
    nc: NatsClient
    names: Names
    executor: Executor
    # The last context seen per agent, for prefetching (a miss only costs speed).
    _contexts: dict[UUID, AgentContext] = field(default_factory=dict)
    _running: dict[UUID, asyncio.Task[RunResult]] = field(default_factory=dict)
    _abort_seen: dict[UUID, float] = field(default_factory=dict)

    # --- abort notices -------------------------------------------------------------------
    async def on_abort(self, msg: Msg) -> None:
        try:
            notice = AbortNotice.model_validate_json(msg.data)
        except ValueError:
            log.warning("ignoring a malformed abort notice")
            return
        now = asyncio.get_running_loop().time()
        for run_id in notice.run_ids:
            self._abort_seen[run_id] = now
            self.executor.aborting.add(run_id)
            task = self._running.get(run_id)
            if task is not None:
                task.cancel()
        self._forget_old_aborts(now)

    def _forget_old_aborts(self, now: float) -> None:
        for run_id, seen in list(self._abort_seen.items()):
            if now - seen > _ABORT_MEMORY_S:
                del self._abort_seen[run_id]
                self.executor.aborting.discard(run_id)

    # --- one delivery ----------------------------------------------------------------------
    async def handle(self, request: RunRequest, *, first_delivery: bool) -> Delivery:
        owner = f"{self.settings.runner_id}:{uuid.uuid4().hex[:12]}"
        cached = self._contexts.get(request.agent_id)
        prefetch = self.executor.prefetch(request, cached) if first_delivery else None
        try:
            claim = await self._claim(request.session_id, owner)
        except BaseException:
            if prefetch is not None:
                await prefetch.cancel()
            raise
        if not claim.leased:
            if prefetch is not None:
                await prefetch.cancel()
            return await self._busy(request)
        renewer = asyncio.create_task(self._renew(request.session_id, owner))
        try:
            ran_it = await self._drain(request, owner, claim, prefetch)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if ran_it:
            return Delivery.DONE
        state = await store.run_state(self.pool, request.run_id)
        return Delivery.DONE if state is None or state.finished else Delivery.BUSY

    async def _busy(self, request: RunRequest) -> Delivery:
        state = await store.run_state(self.pool, request.run_id)
        if state is None or state.finished:
            return Delivery.DONE
        if request.queue_mode == "interrupt":
            ahead = await store.running_before(self.pool, request.session_id, request.run_id)
            for run_id in ahead:
                await aborts.request_abort(
                    self.pool,
                    self.nc,
                    self.redis,
                    self.names,
                    tenant_id=request.tenant_id,
                    run_id=run_id,
                    reason=f"interrupted by run {request.run_id}",
                )
        return Delivery.BUSY

    async def _drain(
        self,
        request: RunRequest,
        owner: str,
        claim: store.Claim,
        prefetch: Prefetch | None,
    ) -> bool:
        """Run the session's waiting runs in order until the lane is released; True if the
        delivered run was among them and ended (so its message can be acked)."""
        ran_it = False
        try:
            while True:
                while claim.run is not None:
                    run = claim.run
                    mine = run.request.run_id == request.run_id
                    if prefetch is not None and not mine:
                        await prefetch.cancel()
                        prefetch = None
                    context = await self._context(run)
                    if mine:
                        result = await self._run(run, context, prefetch)
                    else:  # its message came to another delivery: its trace is stored
                        trace = tracing.extract_context(run.trace_context)
                        result = await self._run(run, context, None, trace=trace)
                    prefetch = None
                    ran_it = ran_it or (mine and result.outcome is not Outcome.FENCED)
                    if result.lane_released:
                        return ran_it
                    claim = await self._claim(request.session_id, owner)
                    if not claim.leased:
                        log.warning("lost the lane of session %s", request.session_id)
                        return ran_it
                if await store.release(self.pool, request.session_id, owner):
                    return ran_it
                claim = await self._claim(request.session_id, owner)
                if not claim.leased:
                    return ran_it
        finally:
            if prefetch is not None:
                await prefetch.cancel()

    async def _claim(self, session_id: UUID, owner: str) -> store.Claim:
        return await store.claim_next(
            self.pool,
            session_id,
            owner,
            lease_s=self.settings.runner_lease_s,
            runner_id=self.settings.runner_id,
        )

    async def _run(
        self,
        run: store.ClaimedRun,
        context: AgentContext,
        prefetch: Prefetch | None,
        *,
        trace: otel_context.Context | None = None,
    ) -> RunResult:
        """Run one claimed run in a task of its own; `trace`: the run's trace context when
        it is not the current one (the run came with another message)."""
        with observe.running(run, trace) as observed:
            log.debug("run %s: attempt %d started", run.request.run_id, run.attempt)
            result = await self._attempt(run, context, prefetch)
            observed.ended(result.outcome.value)
            log.debug(
                "run %s: attempt %d %s", run.request.run_id, run.attempt, result.outcome.value
            )
            return result

    async def _attempt(
        self, run: store.ClaimedRun, context: AgentContext, prefetch: Prefetch | None
    ) -> RunResult:
        run_id = run.request.run_id
        if run.attempt > self.settings.runner_max_attempts:
            return await self._give_up(run)
        conversation = await load_conversation(
            self.pool, run, history_limit=self.settings.runner_history_limit
        )
        task = asyncio.create_task(
            self.executor.execute(run, context, conversation, prefetch), name=f"run-{run_id}"
        )
        self._running[run_id] = task
        if run_id in self.executor.aborting:  # the notice came before the task existed
            task.cancel()
        try:
            return await task
        finally:
            self._running.pop(run_id, None)

    async def _give_up(self, run: store.ClaimedRun) -> RunResult:
        limit = self.settings.runner_max_attempts
        error = ClawbusError(
            f"run {run.request.run_id} was started {limit} times without finishing "
            "(runners crashed or lost it each time); giving up",
            code=ErrorCode.INTERNAL_ERROR,
            retryable=False,
            kind="max_attempts",
        )
        await runs_store.finish_run(
            self.pool,
            run.request.run_id,
            run.attempt,
            status="failed",
            messages=[],
            usage={},
            model=None,
            error=error.info,
        )
        return RunResult(Outcome.FAILED)

    async def _context(self, run: store.ClaimedRun) -> AgentContext:
        """The run's agent context: the one loaded before if the agent has not changed since
        (its version comes with the claim), else loaded now."""
        agent_id = run.request.agent_id
        cached = self._contexts.get(agent_id)
        if cached is not None and cached.version == run.agent_version:
            return cached
        context = await load_agent_context(
            self.pool,
            run.request.tenant_id,
            agent_id,
            self.executor.tools,
            default_model=self.settings.default_model,
        )
        if len(self._contexts) >= _MAX_CONTEXTS:
            self._contexts.clear()
        self._contexts[agent_id] = context
        return context

    async def _renew(self, session_id: UUID, owner: str) -> None:
        interval = self.settings.runner_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await store.renew(
                    self.pool, session_id, owner, lease_s=self.settings.runner_lease_s
                ):
                    log.warning("lane lease of session %s was taken over", session_id)
                    return
            except Exception:
                log.exception("renewing the lane lease of session %s failed", session_id)
