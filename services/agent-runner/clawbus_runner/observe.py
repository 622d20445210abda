"""What the agent-runner measures and traces, in one place: deliveries, runs, model calls,
tool calls and the work queue. The metric objects are clawbus_core.metrics'.

Business code only marks where each thing starts and ends:

    with observe.delivery(msg, request, names):    # a run message taken off the bus
        with observe.running(run) as observed:    # one attempt of one run on this runner
            observed.ended(outcome)
    with observe.model_call(ref) as call:         # one try of one model (no current span:
        call.saw(event)                           # it lives in async generators)
    with observe.tool_call(name) as tool:         # one tool call, run or refused
        tool.deny() / tool.fail()

Traces: the gateway's `traceparent` comes in the run message's headers; `delivery` makes it
the current context, so a run's `run` span is its child, and the `chat <model>` and
`tool <name>` spans are children of `run`. A model call prefetched on receipt (before the
run's lane is claimed, see lanes.py) starts before `run` does, so its span is a sibling of
`run` in the same trace. Every log record inside a delivery or run carries its run id,
session key and agent (clawbus_core.logs), and the trace and span ids.

Label values stay bounded: providers and models as configured (a provider configured without
a model list is capped at `_MAX_OPEN_MODELS` names, then `other`), tool names as registered
(`unknown` for a name the registry lacks), run statuses and outcomes from fixed sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Literal, cast, get_args

from clawbus_core import metrics, tracing
from clawbus_core.logs import log_context
from clawbus_core.models import ModelRef
from clawbus_core.store.lanes import ClaimedRun
from clawbus_protocol.errors import ClawbusError
from clawbus_protocol.names import Names
from clawbus_protocol.runs import RunRequest
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from clawbus_runner.providers import Finish, ProviderEvent

log = logging.getLogger(__name__)

RunStatus = Literal["completed", "failed", "aborted"]
ToolOutcome = Literal["ok", "error", "denied"]

UNKNOWN_TOOL = "unknown"
OTHER_MODEL = "other"
_MAX_OPEN_MODELS = 64
_open_models: dict[str, set[str]] = {}


# --- deliveries and runs -------------------------------------------------------------------


@contextlib.contextmanager
def consuming(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context a message's headers carry the current one inside the block."""
    token = otel_context.attach(tracing.extract_context(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def delivery(msg: Msg, request: RunRequest, names: Names) -> Iterator[None]:
    """A run message taken off the bus: its trace continues here, its ids go on every log."""
    if msg.metadata.num_delivered > 1:
        metrics.BUS_REDELIVERIES.labels(stream=names.runs_stream).inc()
    with (
        consuming(msg.headers),
        log_context(
            run_id=request.run_id, session_key=request.session_key, agent=request.agent_key
        ),
    ):
        yield


_RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))


class RunObservation:
    """One attempt of one run: say how it ended with `ended`. A run that raises (it goes back
    to the queue) or ends otherwise (`fenced`: a newer attempt owns it) is not counted."""

    def __init__(self) -> None:
        self.status: RunStatus | None = None
        self.outcome = "unfinished"

    def ended(self, outcome: str) -> None:
        self.outcome = outcome
        self.status = cast(RunStatus, outcome) if outcome in _RUN_STATUSES else None


@contextlib.contextmanager
def running(
    run: ClaimedRun, parent: otel_context.Context | None = None
) -> Iterator[RunObservation]:
    """The `run` span (current inside the block, so the run's task inherits it), its log
    fields, and the run metrics. `parent`: the run's own trace context when it is not the
    current one (a run this runner executes for another delivery, see lanes.py); the
    current span is then linked."""
    request = run.request
    links: list[Link] = []
    if parent is not None:
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            links.append(Link(current))
    span = tracing.tracer().start_span(
        "run",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "clawbus.run_id": str(request.run_id),
            "clawbus.session_key": request.session_key,
            "clawbus.agent": request.agent_key,
            "clawbus.attempt": run.attempt,
        },
    )
    observed = RunObservation()
    started = time.monotonic()
    metrics.RUNS_ACTIVE.inc()
    try:
        with (
            trace.use_span(span, end_on_exit=True),
            log_context(
                run_id=request.run_id, session_key=request.session_key, agent=request.agent_key
            ),
        ):
            yield observed
            status = observed.status
            span.set_attribute("clawbus.run.outcome", observed.outcome)
            if status == "failed":
                span.set_status(Status(StatusCode.ERROR, "the run failed"))
            if status is not None:
                metrics.RUNS_FINISHED.labels(status=status).inc()
                metrics.RUN_DURATION.labels(status=status).observe(time.monotonic() - started)
    finally:
        metrics.RUNS_ACTIVE.dec()


# --- model calls ---------------------------------------------------------------------------


def model_label(ref: ModelRef) -> str:
    """The model's name, bounded: any listed name; unlisted ones up to a cap per provider."""
    if ref.config.models:
        return ref.name if ref.name in ref.config.models else OTHER_MODEL
    seen = _open_models.setdefault(ref.provider, set())
    if ref.name in seen:
        return ref.name
    if len(seen) < _MAX_OPEN_MODELS:
        seen.add(ref.name)
        return ref.name
    return OTHER_MODEL


class ModelCallObservation:
    """One try of one model, from request to last event. Its span is never made current:
    the call runs inside async generators, which must not leave a context behind."""

    def __init__(self, ref: ModelRef) -> None:
        self.provider = ref.provider
        self.model = model_label(ref)
        self.span = tracing.tracer().start_span(
            f"chat {ref.name}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": ref.provider,
                "gen_ai.request.model": ref.name,
            },
        )
        self._started = time.monotonic()
        self._first_token = False
        self.finished = False

    def saw(self, event: ProviderEvent) -> None:
        if isinstance(event, Finish):
            self.finished = True
            usage = event.usage
            self.span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "gen_ai.response.finish_reasons": [event.reason],
                }
            )
            tokens = metrics.MODEL_TOKENS
            tokens.labels(self.provider, self.model, "input").inc(usage.prompt_tokens)
            tokens.labels(self.provider, self.model, "output").inc(usage.completion_tokens)
        elif not self._first_token:
            self._first_token = True
            metrics.MODEL_TTFT.labels(self.provider, self.model).observe(
                time.monotonic() - self._started
            )

    def __enter__(self) -> ModelCallObservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration = time.monotonic() - self._started
        outcome: Literal["ok", "error"] | None = "ok"
        if isinstance(exc, Exception):
            outcome = "error"
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, _describe(exc)))
            self.span.set_attribute("error.type", _error_type(exc))
        elif exc is not None and not self.finished:
            # Closed or cancelled before its answer ended: an abort or a discarded prefetch,
            # neither the model's success nor its failure.
            outcome = None
            self.span.set_attribute("clawbus.cancelled", True)
        if outcome is not None:
            metrics.MODEL_DURATION.labels(self.provider, self.model, outcome).observe(duration)
        self.span.end()


def model_call(ref: ModelRef) -> ModelCallObservation:
    return ModelCallObservation(ref)


# --- tool calls ----------------------------------------------------------------------------


class ToolObservation:
    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.outcome: ToolOutcome = "ok"

    def deny(self) -> None:
        """The tool was refused (unknown, or not this agent's to use): it never ran."""
        self.outcome = "denied"

    def fail(self) -> None:
        """The tool ran and reported an error (to the model or the caller)."""
        self.outcome = "error"


@contextlib.contextmanager
def tool_call(name: str) -> Iterator[ToolObservation]:
    """One tool call: `name` must be a registered tool's (else `UNKNOWN_TOOL`). An exception
    out of the block counts as an error; a cancellation (an abort) is not counted."""
    span = tracing.tracer().start_span(f"tool {name}", attributes={"clawbus.tool.name": name})
    observed = ToolObservation(span)
    started = time.monotonic()
    with trace.use_span(span, end_on_exit=True):
        try:
            yield observed
        except Exception:
            if observed.outcome == "ok":
                observed.fail()
            _count_tool(name, observed, started)
            raise
        except BaseException:
            span.set_attribute("clawbus.cancelled", True)
            raise
        _count_tool(name, observed, started)


def _count_tool(name: str, observed: ToolObservation, started: float) -> None:
    observed.span.set_attribute("clawbus.tool.outcome", observed.outcome)
    if observed.outcome == "error":
        observed.span.set_status(Status(StatusCode.ERROR, "the tool failed"))
    metrics.TOOL_CALLS.labels(tool=name, outcome=observed.outcome).inc()
    if observed.outcome != "denied":
        metrics.TOOL_DURATION.labels(tool=name).observe(time.monotonic() - started)


# --- the work queue ------------------------------------------------------------------------


async def watch_queue(
    js: JetStreamContext, names: Names, *, interval_s: float, timeout_s: float = 5.0
) -> None:
    """Copy the runs consumer's counts into the queue gauges every `interval_s`, until
    cancelled. A failed look is logged (once per outage) and tried again next time."""
    stream, consumer = names.runs_stream, names.runners_consumer
    labels = {"stream": stream, "consumer": consumer}
    failing = False
    while True:
        try:
            info = await js.consumer_info(stream, consumer, timeout=timeout_s)
        except (OSError, NatsError) as exc:  # timeouts, a reconnecting or closed connection
            if not failing:
                log.warning("reading the runs consumer's counts failed: %r", exc)
            failing = True
        except Exception:  # a bug here must not stop the watch (nor the runner)
            log.exception("reading the runs consumer's counts failed unexpectedly")
        else:
            if failing:
                log.info("reading the runs consumer's counts works again")
            failing = False
            pending = info.num_pending or 0
            metrics.BUS_PENDING.labels(**labels).set(pending)
            metrics.BUS_ACK_PENDING.labels(**labels).set(info.num_ack_pending or 0)
            metrics.BUS_REDELIVERED.labels(**labels).set(info.num_redelivered or 0)
            metrics.RUNS_QUEUED.set(pending)
        await asyncio.sleep(interval_s)


# --- helpers -------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClawbusError):
        return exc.info.message
    return f"{type(exc).__name__}: {exc}"


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ClawbusError):
        kind = exc.info.details.get("kind")
        return str(kind) if isinstance(kind, str) else str(exc.info.code)
    return type(exc).__name__
