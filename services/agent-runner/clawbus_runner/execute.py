"""Executing one run attempt: claim, stream the model, store, emit the terminal event."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum

from clawbus_core.db import Pool
from clawbus_core.events import Fenced, Redis, RunEventWriter
from clawbus_core.models import ModelCatalog
from clawbus_core.store import runs as store
from clawbus_protocol.errors import ClawbusError, InternalError, Timeout
from clawbus_protocol.names import Names
from clawbus_protocol.runs import DoneEvent, ErrorEvent, RunRequest, ToolCall, Usage

from clawbus_runner.context import build_context
from clawbus_runner.providers import Finish, ModelCall, Providers, TextDelta, ToolCallOut
from clawbus_runner.settings import RunnerSettings

log = logging.getLogger(__name__)


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

    async def run(self, request: RunRequest) -> Outcome:
        claim = await store.claim_run(
            self.pool,
            request.run_id,
            self.settings.runner_id,
            with_history=request.input.use_session_history,
            history_limit=self.settings.runner_history_limit,
        )
        if claim is None:
            return Outcome.DUPLICATE
        try:
            writer = await RunEventWriter.open(
                self.redis, self.names, request.run_id, claim.attempt, request.reply_to
            )
        except Fenced:
            return Outcome.FENCED
        model_id = request.options.model or claim.agent_model or self.settings.default_model
        try:
            async with asyncio.timeout(self.settings.runner_run_timeout_s):
                return await self._answer(request, claim, writer, model_id)
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

    async def _answer(
        self, request: RunRequest, claim: store.Claim, writer: RunEventWriter, model_id: str
    ) -> Outcome:
        ref = self.catalog.resolve(model_id)
        system, messages = build_context(request, claim)
        call = ModelCall(model=ref, system=system, messages=messages, options=request.options)
        finish = Finish(reason="stop", usage=Usage())
        tool_calls: list[ToolCall] = []
        try:
            async for event in self.providers.get(ref).stream(call):
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
        await writer.flush()
        text = writer.visible_text
        stored = await store.complete_run(
            self.pool,
            request.run_id,
            claim.attempt,
            text=text,
            model=ref.id,
            finish_reason=finish.reason,
            usage=finish.usage,
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
