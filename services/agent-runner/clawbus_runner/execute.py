"""Executing one claimed run attempt: the model/tool loop, storing, the terminal event.

A run is a loop of model steps. A step streams the model's text to the run's events; if
the model asked for tools, each call is checked against the agent's policy, executed with
a time limit, and its `tool_call` / `tool_result` events emitted; the results go back to
the model in the next step. The loop ends when the model answers without tools, at the
step limit, or when the same call repeats (loop detection).

A run that brings the client's own tools (`RunOptions.tools`, OpenAI function calling)
offers the model those instead of the agent's and never runs them: a step that calls tools
ends the run with finish reason `tool_calls`, the calls in its `done` event.

Everything the run produced (assistant turns, tool results, the answer, usage per model)
is stored in one statement when the run ends, matching only the attempt that claimed it;
so a crash mid-run leaves nothing half-written and a redelivery never stores twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal
from uuid import UUID

from clawbus_core.db import Pool
from clawbus_core.events import Fenced, Redis, RunEventWriter
from clawbus_core.models import ModelCatalog
from clawbus_core.store import runs as store
from clawbus_core.store.lanes import ClaimedRun
from clawbus_protocol.errors import ClawbusError, ErrorCode, InternalError, Timeout
from clawbus_protocol.names import Names
from clawbus_protocol.runs import (
    AbortedEvent,
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    RunRequest,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)

from clawbus_runner import observe
from clawbus_runner.compaction import compact, estimate_tokens
from clawbus_runner.context import AgentContext, Conversation
from clawbus_runner.exchanges import paired
from clawbus_runner.failover import ContextLengthExceeded, FailoverStream, ModelFailover
from clawbus_runner.providers import (
    Finish,
    ModelCall,
    ProviderEvent,
    Providers,
    TextDelta,
    ToolCallOut,
    ToolDef,
)
from clawbus_runner.settings import RunnerSettings
from clawbus_runner.tools import MAX_RESULT_CHARS, Tool, ToolContext, ToolError, ToolRegistry

log = logging.getLogger(__name__)


class Outcome(Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    FENCED = "fenced"  # a newer attempt owns the run; leave the message to it


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    lane_released: bool = False  # the run's end also released its session's lane


class RunAborted(Exception):
    """Raised inside a run's task when an abort request reached this runner."""


class Prefetch:
    """A model stream started before the claim, its first event already in flight."""

    def __init__(self, call: ModelCall, stream: FailoverStream) -> None:
        self.call = call
        self.stream = stream
        self._stream: AsyncIterator[ProviderEvent] = stream
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
            await self.stream.aclose()


@dataclass
class _StepResult:
    text: str
    tool_calls: list[ToolCall]
    finish: Finish
    model: str


@dataclass
class _Progress:
    """What the run has produced so far: stored when it ends, however it ends."""

    messages: list[store.StoredMessage] = field(default_factory=list)
    usage: dict[str, Usage] = field(default_factory=dict)
    model: str | None = None
    partial: list[str] = field(default_factory=list)  # text of the step in flight
    released: bool = False  # storing the run's end released the session's lane

    def add(self, message: ChatMessage) -> None:
        self.messages.append(store.StoredMessage(len(self.messages) + 1, message))

    def count(self, model: str, usage: Usage) -> None:
        self.model = model
        self.usage[model] = self.usage.get(model, Usage()) + usage


@dataclass
class Executor:
    settings: RunnerSettings
    pool: Pool
    redis: Redis
    names: Names
    catalog: ModelCatalog
    providers: Providers
    tools: ToolRegistry
    failover: ModelFailover
    tool_extras: dict[str, Any] = field(default_factory=dict)
    # Runs an abort notice named; their tasks get cancelled and record `aborted`.
    aborting: set[UUID] = field(default_factory=set)

    def prefetch(self, request: RunRequest, context: AgentContext | None) -> Prefetch | None:
        """Start the model call before the claim, when the claim cannot change it.

        A run that carries its whole conversation (every OpenAI-style request does) needs
        nothing from the claim but the agent's context, which rarely changes: the call starts
        with the last context seen for the agent and is used only if the run's real first
        call is identical; otherwise it is cancelled. Callers prefetch on first deliveries
        only: a redelivered run may already be finished.
        """
        if context is None or request.input.use_session_history:
            return None
        try:
            models = context.models(request)
            call = self._call(request, context, list(request.input.messages), models[0])
            stream = self.failover.stream(call, fallbacks=models[1:])
        except ClawbusError:
            return None
        return Prefetch(call, stream)

    def _call(
        self, request: RunRequest, context: AgentContext, messages: list[ChatMessage], model: str
    ) -> ModelCall:
        tools = context.tool_defs
        if request.options.tools is not None:
            tools = tuple(
                ToolDef(t.name, t.description, t.parameters, t.strict)
                for t in request.options.tools
            )
        return ModelCall(
            model=self.catalog.resolve(model),
            system=context.system_prompt(request),
            messages=messages,
            options=request.options,
            tools=tools,
        )

    async def execute(
        self,
        run: ClaimedRun,
        context: AgentContext,
        conversation: Conversation,
        prefetch: Prefetch | None,
    ) -> RunResult:
        progress = _Progress()
        outcome = await self._execute(run, context, conversation, prefetch, progress)
        return RunResult(outcome, lane_released=progress.released)

    async def _execute(
        self,
        run: ClaimedRun,
        context: AgentContext,
        conversation: Conversation,
        prefetch: Prefetch | None,
        progress: _Progress,
    ) -> Outcome:
        request = run.request
        try:
            writer = await RunEventWriter.open(
                self.redis, self.names, request.run_id, run.attempt, request.reply_to
            )
        except Fenced:
            if prefetch is not None:
                await prefetch.cancel()
            return Outcome.FENCED
        if run.abort_requested:  # flagged before anyone could tell this runner
            return await self._abort(run, writer, progress)
        try:
            async with asyncio.timeout(self.settings.runner_run_timeout_s):
                return await self._loop(
                    run, context, conversation, writer, progress=progress, prefetch=prefetch
                )
        except RunAborted:
            return await self._abort(run, writer, progress)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if request.run_id not in self.aborting or task is None:
                raise
            task.uncancel()  # the abort is this run's to record, not the slot's to die of
            return await self._abort(run, writer, progress)
        except TimeoutError:
            limit = self.settings.runner_run_timeout_s
            timeout = Timeout(f"run {request.run_id} exceeded the {limit:.0f}s run time limit")
            return await self._fail(run, writer, progress, timeout)
        except Fenced:
            log.info("run %s attempt %d superseded; stopping", request.run_id, run.attempt)
            return Outcome.FENCED
        except ClawbusError as exc:
            return await self._fail(run, writer, progress, exc)
        finally:
            if prefetch is not None:
                await prefetch.cancel()
            await writer.aclose()

    async def _loop(
        self,
        run: ClaimedRun,
        context: AgentContext,
        conversation: Conversation,
        writer: RunEventWriter,
        *,
        progress: _Progress,
        prefetch: Prefetch | None,
    ) -> Outcome:
        request = run.request
        models = context.models(request)
        budget = context.context_tokens
        compacted = False
        if (
            conversation.ids
            and estimate_tokens(context.system_prompt(request), conversation.messages)
            > budget * self.settings.runner_compact_at
        ):
            conversation = await self._compact(run, context, conversation) or conversation
            compacted = True
        history = paired(conversation.messages)
        produced: list[ChatMessage] = []  # this run's own turns, after the history
        repeats: Counter[str] = Counter()
        for step in range(self.settings.runner_max_tool_steps + 1):
            call = self._call(request, context, history + produced, models[0])
            use = prefetch if step == 0 and prefetch is not None and prefetch.call == call else None
            if use is None and prefetch is not None:
                await prefetch.cancel()
            prefetch = None
            try:
                result = await self._model_step(call, models[1:], writer, progress, use)
            except ContextLengthExceeded as overflow:
                shorter = (
                    None
                    if compacted
                    else await self._compact_or(overflow, run, context, conversation)
                )
                if shorter is None:
                    raise
                compacted, conversation = True, shorter
                history = paired(conversation.messages)
                call = self._call(request, context, history + produced, models[0])
                result = await self._model_step(call, models[1:], writer, progress, None)
            assistant = ChatMessage(
                role="assistant", content=result.text, tool_calls=result.tool_calls
            )
            progress.add(assistant)
            if not result.tool_calls or request.options.tools is not None:
                return await self._complete(run, writer, progress, result)
            if step == self.settings.runner_max_tool_steps:
                raise ClawbusError(
                    f"the agent used tools in {step} consecutive steps without answering; "
                    f"stopped at the limit (CLAWBUS_RUNNER_MAX_TOOL_STEPS={step})",
                    code=ErrorCode.INTERNAL_ERROR,
                    retryable=False,
                    kind="tool_step_limit",
                )
            produced.append(assistant)
            for tool_call in result.tool_calls:
                key = f"{tool_call.name}:{json.dumps(tool_call.arguments, sort_keys=True)}"
                repeats[key] += 1
                if repeats[key] >= self.settings.runner_tool_loop_repeats:
                    raise ClawbusError(
                        f"tool loop detected: {tool_call.name} was called "
                        f"{repeats[key]} times with the same arguments",
                        code=ErrorCode.INTERNAL_ERROR,
                        retryable=False,
                        kind="tool_loop",
                        tool=tool_call.name,
                    )
                result_message = await self._tool(run, context, writer, tool_call)
                progress.add(result_message)
                produced.append(result_message)
        raise AssertionError("unreachable: the loop returns or raises at the step limit")

    async def _model_step(
        self,
        call: ModelCall,
        fallbacks: list[str],
        writer: RunEventWriter,
        progress: _Progress,
        prefetch: Prefetch | None,
    ) -> _StepResult:
        finish = Finish(reason="stop", usage=Usage())
        calls: list[ToolCall] = []
        pieces = progress.partial = []
        stream = prefetch.stream if prefetch is not None else self.failover.stream(call, fallbacks)
        events = prefetch.events() if prefetch is not None else stream
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    pieces.append(event.text)
                    await writer.delta(event.text)
                elif isinstance(event, ToolCallOut):
                    calls.append(event.call)
                else:
                    finish = event
        except (ClawbusError, Fenced, RunAborted):
            raise
        except Exception as exc:  # a provider bug must not leave the run hanging
            log.exception("model call to %s crashed", call.model.id)
            raise InternalError(
                f"model call to {call.model.id} failed unexpectedly: {exc}"
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()
        model = stream.model.id if stream.model is not None else call.model.id
        progress.partial = []
        progress.count(model, finish.usage)
        return _StepResult("".join(pieces), calls, finish, model)

    async def _compact_or(
        self,
        overflow: ClawbusError,
        run: ClaimedRun,
        context: AgentContext,
        conversation: Conversation,
    ) -> Conversation | None:
        """Compact after a context-length error; if summarising fails, that error is not the
        run's story: the overflow is raised (the stored history is untouched either way)."""
        try:
            return await self._compact(run, context, conversation)
        except ClawbusError as exc:
            log.warning("run %s: compaction failed: %s", run.request.run_id, exc.info.message)
            raise overflow from exc

    async def _compact(
        self, run: ClaimedRun, context: AgentContext, conversation: Conversation
    ) -> Conversation | None:
        """Summarise older history (with the run's primary model); None if nothing to."""
        request = run.request
        model = self.catalog.resolve(context.models(request)[0])
        return await compact(
            self.pool,
            providers=self.providers,
            model=model,
            request=request,
            conversation=conversation,
            budget_tokens=context.context_tokens,
        )

    async def _tool(
        self, run: ClaimedRun, context: AgentContext, writer: RunEventWriter, call: ToolCall
    ) -> ChatMessage:
        request = run.request
        await writer.emit(ToolCallEvent(run_id=request.run_id, seq=0, call=call))
        output, is_error = await self._run_tool(run, context, call)
        await writer.emit(
            ToolResultEvent(
                run_id=request.run_id,
                seq=0,
                call_id=call.id,
                name=call.name,
                result=output,
                is_error=is_error,
            )
        )
        return ChatMessage(role="tool", content=output, tool_call_id=call.id, name=call.name)

    async def _run_tool(
        self, run: ClaimedRun, context: AgentContext, call: ToolCall
    ) -> tuple[str, bool]:
        """The tool's output and whether it is an error, for the model to see."""
        tool = self.tools.get(call.name)
        name = tool.spec.name if tool is not None else observe.UNKNOWN_TOOL
        with observe.tool_call(name) as seen:
            if tool is None or not context.policy.permits(tool.spec):
                seen.deny()
                return f"tool {call.name!r} is not available to this agent", True
            output, is_error = await self._call_tool(run, tool, call)
            if is_error:
                seen.fail()
            return output, is_error

    async def _call_tool(self, run: ClaimedRun, tool: Tool, call: ToolCall) -> tuple[str, bool]:
        request = run.request
        ctx = ToolContext(
            pool=self.pool,
            redis=self.redis,
            tenant_id=request.tenant_id,
            agent_id=request.agent_id,
            agent_key=request.agent_key,
            session_id=request.session_id,
            session_key=request.session_key,
            run_id=request.run_id,
            extras=self.tool_extras,
        )
        try:
            async with asyncio.timeout(self.settings.runner_tool_timeout_s):
                output = await tool.run(ctx, call.arguments)
        except ToolError as exc:
            return str(exc), True
        except ClawbusError as exc:
            return exc.info.message, True
        except TimeoutError:
            limit = self.settings.runner_tool_timeout_s
            return f"tool {call.name} did not finish within {limit:.0f}s", True
        except (RunAborted, Fenced, asyncio.CancelledError):
            raise
        except Exception as exc:  # a tool bug is the model's problem to route around, not ours
            log.exception("run %s: tool %s crashed", request.run_id, call.name)
            return f"tool {call.name} failed: {type(exc).__name__}", True
        if len(output) > MAX_RESULT_CHARS:
            output = output[:MAX_RESULT_CHARS] + f"\n[truncated at {MAX_RESULT_CHARS} characters]"
        return output, False

    async def _complete(
        self, run: ClaimedRun, writer: RunEventWriter, progress: _Progress, result: _StepResult
    ) -> Outcome:
        request = run.request
        # The answer is the last step's text; for a one-step run, what the client was shown
        # (a retried attempt does not resend text an earlier attempt already streamed).
        text = writer.visible_text if len(progress.messages) == 1 else result.text
        last = progress.messages[-1]
        progress.messages[-1] = store.StoredMessage(
            last.step, last.message.model_copy(update={"content": text})
        )
        # Calls that end a run are the client's to run, whatever the provider named the stop.
        reason = "tool_calls" if result.tool_calls else result.finish.reason
        # The last deltas go out while the run commits; `done` follows both.
        _, stored = await asyncio.gather(
            writer.flush(), self._finish(run, progress, "completed", finish_reason=reason)
        )
        if not stored:
            return Outcome.FENCED
        total = sum(progress.usage.values(), Usage())
        done = DoneEvent(
            run_id=request.run_id,
            seq=0,
            text=text,
            model=result.model,
            finish_reason=reason,
            usage=total,
            tool_calls=result.tool_calls,
        )
        await writer.emit(done)
        await self._tell_merged(run, done)
        return Outcome.COMPLETED

    async def _finish(
        self,
        run: ClaimedRun,
        progress: _Progress,
        status: Literal["completed", "failed", "aborted"],
        *,
        finish_reason: str | None = None,
        error: ClawbusError | None = None,
    ) -> bool:
        finished = await store.finish_run(
            self.pool,
            run.request.run_id,
            run.attempt,
            status=status,
            messages=progress.messages,
            usage=progress.usage,
            model=progress.model,
            finish_reason=finish_reason,
            error=error.info if error is not None else None,
            lease_owner=run.lease_owner,
        )
        progress.released = finished.released
        return finished.stored

    async def _fail(
        self, run: ClaimedRun, writer: RunEventWriter, progress: _Progress, exc: ClawbusError
    ) -> Outcome:
        request = run.request
        log.info("run %s failed: %s (%s)", request.run_id, exc.info.code, exc.info.message)
        # A failed run keeps its transcript clean (only the user's message stays); the
        # tokens it used are still counted.
        progress.messages.clear()
        if not await self._finish(run, progress, "failed", error=exc):
            return Outcome.FENCED
        try:
            event = ErrorEvent(run_id=request.run_id, seq=0, error=exc.info)
            await writer.emit(event)
            await self._tell_merged(run, event)
        except Fenced:
            return Outcome.FENCED
        return Outcome.FAILED

    async def _abort(self, run: ClaimedRun, writer: RunEventWriter, progress: _Progress) -> Outcome:
        """Record what was produced so far (the partial answer too) and emit `aborted`."""
        request = run.request
        if progress.partial:
            progress.add(ChatMessage(role="assistant", content="".join(progress.partial)))
        # A tool call cut short still gets a result: providers refuse a history with a call
        # and no result, and this transcript is the session's history from now on.
        answered = {m.message.tool_call_id for m in progress.messages if m.message.tool_call_id}
        for call in [c for m in progress.messages for c in m.message.tool_calls]:
            if call.id not in answered:
                progress.add(
                    ChatMessage(
                        role="tool",
                        content="aborted before the tool finished",
                        tool_call_id=call.id,
                        name=call.name,
                    )
                )
        with contextlib.suppress(Fenced):
            await writer.flush()
        if not await self._finish(run, progress, "aborted", finish_reason="aborted"):
            return Outcome.FENCED
        try:
            event = AbortedEvent(
                run_id=request.run_id, seq=0, text=writer.visible_text, reason="aborted"
            )
            await writer.emit(event)
            await self._tell_merged(run, event)
        except Fenced:
            return Outcome.FENCED
        log.info("run %s aborted", request.run_id)
        return Outcome.ABORTED

    async def _tell_merged(
        self, run: ClaimedRun, event: DoneEvent | ErrorEvent | AbortedEvent
    ) -> None:
        """Runs merged into this one (`collect`) end with the same terminal event."""
        for merged in run.merged:
            writer = await RunEventWriter.open(
                self.redis, self.names, merged.run_id, 0, merged.reply_to
            )
            copy = event.model_copy(update={"run_id": merged.run_id})
            with contextlib.suppress(Fenced):
                await writer.emit(copy)
            await writer.aclose()
