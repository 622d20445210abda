"""Executing one run attempt: claim, stream the model, store, emit the terminal event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import cast
from uuid import UUID

from clawbus_core.db import Pool
from clawbus_core.events import Fenced, Redis, RunEventWriter
from clawbus_core.models import ModelCatalog
from clawbus_core.store import runs as store
from clawbus_protocol.errors import ClawbusError, InternalError, Timeout
from clawbus_protocol.names import Names
from clawbus_protocol.runs import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    RunRequest,
    ToolCall,
    Usage,
)

from clawbus_runner.context import build_context
from clawbus_runner.providers import (
    Finish,
    ModelCall,
    ProviderEvent,
    Providers,
    TextDelta,
    ToolCallOut,
)
from clawbus_runner.settings import RunnerSettings

log = logging.getLogger(__name__)


_MAX_AGENT_VIEWS = 10_000


@dataclass(frozen=True)
class _AgentView:
    model: str | None
    system_prompt: str


class _Prefetch:
    """A model stream started early, its first event already in flight."""

    def __init__(self, call: ModelCall, stream: AsyncIterator[ProviderEvent]) -> None:
        self.call = call
        self._stream = stream
        self._first: asyncio.Future[ProviderEvent] = asyncio.ensure_future(anext(stream))

    async def events(self) -> AsyncIterator[ProviderEvent]:
        try:
            first = await self._first
        except StopAsyncIteration:
            return
        yield first
        async for event in self._stream:
            yield event

    async def cancel(self) -> None:
        self._first.cancel()
        with contextlib.suppress(BaseException):
            await self._first
        with contextlib.suppress(Exception):
            await cast(AsyncGenerator[ProviderEvent, None], self._stream).aclose()


class Outcome(Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    DUPLICATE = "duplicate"  # already finished by an earlier delivery
    FENCED = "fenced"  # a newer attempt owns the run; leave the message to it


@dataclass
class Executor:
    settings: RunnerSettings
    pool: Pool
    redis: Redis
    names: Names
    catalog: ModelCatalog
    providers: Providers

    # The last claim's view of each agent, for prefetching (bounded; a miss only costs speed).
    _agents: dict[UUID, _AgentView] = field(default_factory=dict)

    async def run(self, request: RunRequest, *, first_delivery: bool = True) -> Outcome:
        prefetch = self._prefetch(request) if first_delivery else None
        try:
            claim = await store.claim_run(
                self.pool,
                request.run_id,
                self.settings.runner_id,
                with_history=request.input.use_session_history,
                history_limit=self.settings.runner_history_limit,
            )
            writer: RunEventWriter | None = None
            if claim is not None:
                self._remember(request, claim)
                with contextlib.suppress(Fenced):
                    writer = await RunEventWriter.open(
                        self.redis, self.names, request.run_id, claim.attempt, request.reply_to
                    )
        except BaseException:
            if prefetch is not None:
                await prefetch.cancel()
            raise
        if claim is None or writer is None:
            if prefetch is not None:
                await prefetch.cancel()
            return Outcome.DUPLICATE if claim is None else Outcome.FENCED
        model_id = request.options.model or claim.agent_model or self.settings.default_model
        try:
            async with asyncio.timeout(self.settings.runner_run_timeout_s):
                return await self._answer(request, claim, writer, model_id, prefetch)
        except TimeoutError:
            limit = self.settings.runner_run_timeout_s
            timeout = Timeout(f"run {request.run_id} exceeded the {limit:.0f}s run time limit")
            return await self._fail(request, claim.attempt, writer, timeout, model_id)
        except Fenced:
            log.info("run %s attempt %d superseded; stopping", request.run_id, claim.attempt)
            return Outcome.FENCED
        except ClawbusError as exc:
            return await self._fail(request, claim.attempt, writer, exc, model_id)
        finally:
            await writer.aclose()

    def _prefetch(self, request: RunRequest) -> _Prefetch | None:
        """Start the model call before the claim, when the claim cannot change it.

        A run that carries its whole conversation (every OpenAI-style request does) needs
        nothing from the claim but the agent's prompt and model, which rarely change: the
        call starts with the last claim's view of the agent and is used only if the claim
        shows the same call; otherwise it is cancelled. Only on a first delivery: a
        redelivered run may already be finished.
        """
        view = self._agents.get(request.agent_id)
        if view is None or request.input.use_session_history:
            return None
        try:
            call = self._call(request, view.model, view.system_prompt, None)
        except ClawbusError:
            return None
        return _Prefetch(call, self.providers.get(call.model).stream(call))

    def _remember(self, request: RunRequest, claim: store.Claim) -> None:
        if len(self._agents) >= _MAX_AGENT_VIEWS:
            self._agents.clear()
        self._agents[request.agent_id] = _AgentView(claim.agent_model, claim.system_prompt)

    def _call(
        self,
        request: RunRequest,
        agent_model: str | None,
        system_prompt: str,
        history: list[ChatMessage] | None,
    ) -> ModelCall:
        model_id = request.options.model or agent_model or self.settings.default_model
        ref = self.catalog.resolve(model_id)
        system, messages = build_context(request, system_prompt, history)
        return ModelCall(model=ref, system=system, messages=messages, options=request.options)

    async def _answer(
        self,
        request: RunRequest,
        claim: store.Claim,
        writer: RunEventWriter,
        model_id: str,
        prefetch: _Prefetch | None,
    ) -> Outcome:
        call = self._call(request, claim.agent_model, claim.system_prompt, claim.history)
        ref = call.model
        if prefetch is not None and prefetch.call == call:
            events = prefetch.events()
        else:
            if prefetch is not None:
                await prefetch.cancel()
            events = self.providers.get(ref).stream(call)
        finish = Finish(reason="stop", usage=Usage())
        tool_calls: list[ToolCall] = []
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    await writer.delta(event.text)
                elif isinstance(event, ToolCallOut):
                    tool_calls.append(event.call)
                else:
                    finish = event
        except (ClawbusError, Fenced):
            raise
        except Exception as exc:  # a provider bug must not leave the run hanging
            log.exception("run %s: provider %s crashed", request.run_id, ref.provider)
            raise InternalError(f"model call to {ref.id} failed unexpectedly: {exc}") from exc
        text = writer.visible_text
        # The last deltas go out while the reply commits; `done` follows both.
        _, stored = await asyncio.gather(
            writer.flush(),
            store.complete_run(
                self.pool,
                request.run_id,
                claim.attempt,
                text=text,
                model=ref.id,
                finish_reason=finish.reason,
                usage=finish.usage,
            ),
        )
        if not stored:
            return Outcome.FENCED
        await writer.emit(
            DoneEvent(
                run_id=request.run_id,
                seq=0,
                text=text,
                model=ref.id,
                finish_reason=finish.reason,
                usage=finish.usage,
                tool_calls=tool_calls,
            )
        )
        return Outcome.COMPLETED

    async def _fail(
        self,
        request: RunRequest,
        attempt: int,
        writer: RunEventWriter,
        exc: ClawbusError,
        model_id: str,
    ) -> Outcome:
        log.info("run %s failed: %s (%s)", request.run_id, exc.info.code, exc.info.message)
        if not await store.fail_run(self.pool, request.run_id, attempt, exc.info, model=model_id):
            return Outcome.FENCED
        try:
            await writer.emit(ErrorEvent(run_id=request.run_id, seq=0, error=exc.info))
        except Fenced:
            return Outcome.FENCED
        return Outcome.FAILED
