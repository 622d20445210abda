"""Model failover: one streamed model call, retried with backoff, then tried on the next model.

    failover = ModelFailover(providers, catalog, RetryPolicy())
    stream = failover.stream(call, fallbacks=["anthropic/claude-x"])
    async for event in stream:      # TextDelta / ToolCallOut / Finish, as from a Provider
        ...
    stream.model                    # the ModelRef that answered: record usage against it

What happens on a failure depends on its kind (`details["kind"]`, see `providers/errors.py`):

    rate_limit, timeout, retryable unknown (5xx, dropped stream)
                    retried on the same model with backoff, then the next model
    refusal, non-retryable unknown (401, 403, 404, other 4xx)
                    the next model at once
    context_length  raised at once as `ContextLengthExceeded`, no fallback: the caller
                    compacts the conversation and calls again

A refusal finish reason (`content_filter`, `refusal`) is turned into a refusal error here, so a
refused answer fails over like a refused request. Once any event has reached the caller the call
is committed: a later failure (a refusal finish included) is raised as is, never retried nor
failed over, since the user would see the text twice. When every model has failed, an
`UpstreamError` names each model tried and the last error, with `details["kind"]` (the last
failure's) and `details["attempts"]` (one `{"model", "kind", "message"}` per attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Self, cast

from clawbus_core.models import ModelCatalog, ModelRef
from clawbus_protocol.errors import ClawbusError, ErrorCode, ModelErrorKind, UpstreamError

from clawbus_runner import observe
from clawbus_runner.providers import Finish, ModelCall, ProviderEvent, Providers
from clawbus_runner.providers.errors import (
    REFUSAL_FINISH_REASONS,
    ContextLengthExceeded,
    refusal_error,
    upstream_error,
)

__all__ = [
    "Attempt",
    "ContextLengthExceeded",
    "FailoverStream",
    "ModelFailover",
    "RetryPolicy",
    "kind_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one model call; the only place retries and backoff are named."""

    # Retries per model after its first attempt; None: the model's ProviderConfig.max_retries.
    retries: int | None = None
    base_backoff_s: float = 0.5  # doubled on each retry of the same model
    max_backoff_s: float = 8.0
    jitter: float = 0.25  # a backoff is drawn from [b * (1 - jitter), b]
    max_total_wait_s: float = 30.0  # every sleep of one call, across all its models
    # An attempt that yields nothing for this long fails as a timeout; None leaves it to the
    # SDK's `timeout_s`. Only until the first event: a long answer is never cut.
    first_event_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.retries is not None and self.retries < 0:
            raise ValueError("RetryPolicy.retries must be >= 0")
        if min(self.base_backoff_s, self.max_backoff_s, self.max_total_wait_s) < 0:
            raise ValueError("RetryPolicy backoffs and wait budget must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy.jitter must be within [0, 1]")
        if self.first_event_timeout_s is not None and self.first_event_timeout_s <= 0:
            raise ValueError("RetryPolicy.first_event_timeout_s must be > 0")

    def retries_for(self, ref: ModelRef) -> int:
        return ref.config.max_retries if self.retries is None else self.retries

    def delay_s(
        self, retry: int, *, retry_after_ms: int | None, waited_s: float, rand: float
    ) -> float | None:
        """Seconds to sleep before retry number `retry` (0 is the first), None if out of budget.

        The provider's `retry_after_ms` wins over the backoff; either is capped by what is
        left of `max_total_wait_s` after `waited_s`. `rand` is uniform in [0, 1).
        """
        if retry_after_ms is not None:
            delay = retry_after_ms / 1000
        else:
            delay = min(self.max_backoff_s, self.base_backoff_s * 2**retry)
            delay *= 1 - self.jitter * rand
        if delay <= 0:
            return 0.0
        remaining = self.max_total_wait_s - waited_s
        if remaining <= 0:
            return None
        return min(delay, remaining)


@dataclass(frozen=True)
class Attempt:
    """One failed try of one model."""

    model: str
    kind: ModelErrorKind
    message: str

    def detail(self) -> dict[str, str]:
        return {"model": self.model, "kind": str(self.kind), "message": self.message}


def kind_of(error: ClawbusError) -> ModelErrorKind:
    """The failure kind an error carries, or the one its code implies."""
    kind = error.info.details.get("kind")
    if isinstance(kind, str):
        with contextlib.suppress(ValueError):
            return ModelErrorKind(kind)
    if error.info.code in (ErrorCode.UPSTREAM_RATE_LIMITED, ErrorCode.RATE_LIMITED):
        return ModelErrorKind.RATE_LIMIT
    if error.info.code is ErrorCode.TIMEOUT:
        return ModelErrorKind.TIMEOUT
    return ModelErrorKind.UNKNOWN


def _exhausted(attempts: list[Attempt], last: ClawbusError) -> ClawbusError:
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[attempt.model] = counts.get(attempt.model, 0) + 1
    tried = ", ".join(f"{m} ({n} attempt{'' if n == 1 else 's'})" for m, n in counts.items())
    details: dict[str, Any] = {
        **last.info.details,
        "kind": kind_of(last),
        "attempts": [a.detail() for a in attempts],
    }
    return UpstreamError(
        f"model call failed on {tried}; last error: {last.info.message}",
        code=last.info.code,
        retryable=last.info.retryable,
        retry_after_ms=last.info.retry_after_ms,
        **details,
    )


async def _aclose(events: AsyncIterator[ProviderEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await cast(AsyncGenerator[ProviderEvent, None], events).aclose()


class FailoverStream:
    """One model call across retries and models; iterate it like `Provider.stream(call)`.

    `model` is None until the first event reaches the caller, then the model answering;
    `attempts` lists the failed tries so far (also on success, for logs and metrics).
    """

    def __init__(self, failover: ModelFailover, call: ModelCall, chain: list[ModelRef]) -> None:
        self.model: ModelRef | None = None
        self.attempts: list[Attempt] = []
        self._failover = failover
        self._events = self._run(call, chain)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ProviderEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _run(
        self, call: ModelCall, chain: list[ModelRef]
    ) -> AsyncGenerator[ProviderEvent, None]:
        policy = self._failover.policy
        waited = 0.0
        last: ClawbusError | None = None
        for ref in chain:
            retries = policy.retries_for(ref)
            for retry in range(retries + 1):
                try:
                    # aclosing: an early close by the caller closes the provider's stream now.
                    async with contextlib.aclosing(
                        self._attempt(replace(call, model=ref))
                    ) as events:
                        async for event in events:
                            yield event
                    return
                except ClawbusError as exc:
                    if self.model is not None:
                        raise  # committed: the caller already has part of this answer
                    last = exc
                kind = kind_of(last)
                self.attempts.append(Attempt(ref.id, kind, last.info.message))
                if kind is ModelErrorKind.CONTEXT_LENGTH:
                    raise last
                if not last.info.retryable or retry == retries:
                    break
                delay = policy.delay_s(
                    retry,
                    retry_after_ms=last.info.retry_after_ms,
                    waited_s=waited,
                    rand=self._failover.rand(),
                )
                if delay is None:
                    break
                log.info("model %s failed (%s); retry %d in %.3fs", ref.id, kind, retry + 1, delay)
                waited += delay
                await asyncio.sleep(delay)
            if last is not None and ref is not chain[-1]:
                log.info("model %s failed (%s); trying the next model", ref.id, kind_of(last))
        assert last is not None  # the chain is never empty
        raise _exhausted(self.attempts, last)

    async def _attempt(self, call: ModelCall) -> AsyncGenerator[ProviderEvent, None]:
        ref = call.model
        limit_s = self._failover.policy.first_event_timeout_s
        with observe.model_call(ref) as observed:
            events = self._failover.providers.get(ref).stream(call)
            try:
                while True:
                    try:
                        if limit_s is None or self.model is not None:
                            event = await anext(events)
                        else:
                            event = await self._first(events, limit_s, ref)
                    except StopAsyncIteration:
                        return
                    observed.saw(event)  # a refused answer's tokens were used all the same
                    if isinstance(event, Finish) and event.reason in REFUSAL_FINISH_REASONS:
                        raise refusal_error(ref.provider, model=ref.id, reason=event.reason)
                    self.model = ref
                    yield event
            finally:
                await _aclose(events)

    @staticmethod
    async def _first(
        events: AsyncIterator[ProviderEvent], limit_s: float, ref: ModelRef
    ) -> ProviderEvent:
        try:
            async with asyncio.timeout(limit_s) as deadline:
                return await anext(events)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise upstream_error(
                ref.provider,
                None,
                f"no answer within {limit_s:g}s",
                model=ref.id,
                timed_out=True,
            ) from exc


@dataclass
class ModelFailover:
    """Streams model calls with retries and fallbacks; one per runner, shared by all runs."""

    providers: Providers
    catalog: ModelCatalog
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # Jitter's source, uniform in [0, 1); tests pin it.
    rand: Callable[[], float] = random.random

    def chain(self, primary: ModelRef, fallbacks: Iterable[str] = ()) -> list[ModelRef]:
        """`[primary, *fallbacks]` resolved, each model once; unknown ids raise ModelNotFound."""
        refs = {primary.id: primary}
        for model_id in fallbacks:
            ref = self.catalog.resolve(model_id)
            refs.setdefault(ref.id, ref)
        return list(refs.values())

    def stream(self, call: ModelCall, fallbacks: Iterable[str] = ()) -> FailoverStream:
        """Stream `call` on `call.model`, then on each fallback in order, as the policy allows.

        Fallbacks are resolved now, so a misconfigured one fails before any model is called.
        """
        return FailoverStream(self, call, self.chain(call.model, fallbacks))
