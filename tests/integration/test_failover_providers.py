"""Model failover through the real openai and anthropic SDKs against the fake model server.

`ModelFailover` is driven directly over a real `Providers` registry and catalog built from
settings pointing at the fake; backoffs are a few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from clawbus_core.models import ModelCatalog
from clawbus_fakes.models import FakeModelServer, Reply
from clawbus_protocol.errors import ClawbusError, ErrorCode, ModelErrorKind, UpstreamError
from clawbus_protocol.runs import ChatMessage
from clawbus_protocol.settings import ClawbusSettings, ProviderConfig
from clawbus_runner.failover import (
    ContextLengthExceeded,
    FailoverStream,
    ModelFailover,
    RetryPolicy,
)
from clawbus_runner.providers import Finish, ModelCall, ProviderEvent, Providers, TextDelta

from tests.system import wait_for

GPT = "openai/gpt-a"
GPT_B = "openai/gpt-b"
CLAUDE = "anthropic/claude-a"
FAST = RetryPolicy(base_backoff_s=0.001, max_backoff_s=0.005)


def fake_name(model_id: str) -> str:
    return model_id.split("/", 1)[1]


@pytest.fixture
def catalog(fake_models: FakeModelServer) -> ModelCatalog:
    settings = ClawbusSettings(
        providers={
            "openai": ProviderConfig(
                kind="openai", api_key="sk-fake", base_url=f"{fake_models.url}/v1", timeout_s=5
            ),
            "anthropic": ProviderConfig(
                kind="anthropic", api_key="sk-ant-fake", base_url=fake_models.url, timeout_s=5
            ),
            # One SDK retry-free client with a short SDK timeout, for the timeout test.
            "impatient": ProviderConfig(
                kind="openai", api_key="sk-fake", base_url=f"{fake_models.url}/v1", timeout_s=0.1
            ),
        },
    )
    return ModelCatalog.from_settings(settings)


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    registry = Providers()
    try:
        yield registry
    finally:
        await registry.aclose()


def failover(
    catalog: ModelCatalog, providers: Providers, policy: RetryPolicy = FAST
) -> ModelFailover:
    return ModelFailover(providers, catalog, policy)


def model_call(catalog: ModelCatalog, model_id: str, text: str = "hello") -> ModelCall:
    return ModelCall(
        model=catalog.resolve(model_id),
        system="",
        messages=[ChatMessage(role="user", content=text)],
    )


async def drain(stream: FailoverStream, into: list[ProviderEvent] | None = None) -> str:
    """The streamed text; events are kept in `into` as they come, so a failure keeps them."""
    events: list[ProviderEvent] = [] if into is None else into
    async for event in stream:
        events.append(event)
    assert isinstance(events[-1], Finish)
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def attempts(error: ClawbusError) -> list[tuple[str, str]]:
    return [(a["model"], a["kind"]) for a in error.info.details["attempts"]]


@pytest.mark.parametrize(("primary", "fallback"), [(GPT, CLAUDE), (CLAUDE, GPT)])
async def test_rate_limited_primary_fails_over_after_its_retries(
    fake_models: FakeModelServer,
    catalog: ModelCatalog,
    providers: Providers,
    primary: str,
    fallback: str,
) -> None:
    # ProviderConfig.max_retries (2) applies: three tries of the primary, then the fallback.
    limited = Reply(status=429, retry_after_s=0)
    fake_models.script(fake_name(primary), limited, limited, limited)
    fake_models.script(fake_name(fallback), Reply(text="from the fallback"))
    stream = failover(catalog, providers).stream(model_call(catalog, primary), [fallback])
    assert await drain(stream) == "from the fallback"
    assert stream.model is not None and stream.model.id == fallback
    assert [(a.model, a.kind) for a in stream.attempts] == [(primary, "rate_limit")] * 3
    assert len(fake_models.requests_for(fake_name(primary))) == 3
    assert len(fake_models.requests_for(fake_name(fallback))) == 1


@pytest.mark.parametrize("model", [GPT, CLAUDE])
async def test_server_errors_are_retried_on_the_same_model(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers, model: str
) -> None:
    fake_models.script(fake_name(model), Reply(status=500), Reply(status=500))
    stream = failover(catalog, providers).stream(model_call(catalog, model), [GPT_B])
    assert await drain(stream) == "echo: hello"
    assert stream.model is not None and stream.model.id == model
    assert [a.kind for a in stream.attempts] == ["unknown", "unknown"]
    assert len(fake_models.requests_for(fake_name(model))) == 3
    assert fake_models.requests_for(fake_name(GPT_B)) == []


async def test_when_every_model_fails_the_error_lists_each_attempt(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers
) -> None:
    fake_models.set_default(fake_name(GPT), Reply(status=500))
    fake_models.set_default(fake_name(GPT_B), Reply(status=401))
    fake_models.set_default(fake_name(CLAUDE), Reply(status=529))
    policy = RetryPolicy(retries=1, base_backoff_s=0.001)
    stream = failover(catalog, providers, policy).stream(
        model_call(catalog, GPT), [GPT_B, CLAUDE, GPT]
    )
    with pytest.raises(UpstreamError) as raised:
        await drain(stream)
    error = raised.value
    assert error.info.details["kind"] == "rate_limit"  # the last failure: Anthropic overloaded
    assert attempts(error) == [
        (GPT, "unknown"),
        (GPT, "unknown"),
        (GPT_B, "unknown"),  # 401: not retried
        (CLAUDE, "rate_limit"),
        (CLAUDE, "rate_limit"),
    ]
    assert all(a["message"] for a in error.info.details["attempts"])
    message = error.info.message
    assert f"{GPT} (2 attempts), {GPT_B} (1 attempt), {CLAUDE} (2 attempts)" in message
    assert "overloaded" in message
    assert error.info.retryable
    assert stream.model is None


@pytest.mark.parametrize("model", [GPT, CLAUDE])
async def test_context_length_is_returned_at_once_without_fallbacks(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers, model: str
) -> None:
    fake_models.script(fake_name(model), Reply(error="context_length_exceeded"))
    stream = failover(catalog, providers).stream(model_call(catalog, model), [GPT_B])
    with pytest.raises(ContextLengthExceeded) as raised:
        await drain(stream)
    assert raised.value.info.details["kind"] == ModelErrorKind.CONTEXT_LENGTH
    assert not raised.value.info.retryable
    assert len(fake_models.requests_for(fake_name(model))) == 1
    assert fake_models.requests_for(fake_name(GPT_B)) == []


@pytest.mark.parametrize(("model", "reason"), [(GPT, "content_filter"), (CLAUDE, "refusal")])
async def test_a_refusal_is_not_retried_and_fails_over(
    fake_models: FakeModelServer,
    catalog: ModelCatalog,
    providers: Providers,
    model: str,
    reason: str,
) -> None:
    fake_models.set_default(fake_name(model), Reply(finish_reason=reason))
    alone = failover(catalog, providers).stream(model_call(catalog, model))
    with pytest.raises(UpstreamError) as raised:
        await drain(alone)
    assert raised.value.info.details["kind"] == ModelErrorKind.REFUSAL
    assert attempts(raised.value) == [(model, "refusal")]
    assert len(fake_models.requests_for(fake_name(model))) == 1

    fake_models.script(fake_name(GPT_B), Reply(text="I can help"))
    stream = failover(catalog, providers).stream(model_call(catalog, model), [GPT_B])
    assert await drain(stream) == "I can help"
    assert stream.model is not None and stream.model.id == GPT_B
    assert [(a.model, a.kind) for a in stream.attempts] == [(model, "refusal")]


async def test_a_refusal_after_text_is_raised_as_is(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers
) -> None:
    fake_models.script(fake_name(CLAUDE), Reply(text="Let me", finish_reason="refusal"))
    stream = failover(catalog, providers).stream(model_call(catalog, CLAUDE), [GPT_B])
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as raised:
        await drain(stream, received)
    assert received == [TextDelta("Let"), TextDelta(" me")]
    assert raised.value.info.details["kind"] == ModelErrorKind.REFUSAL
    assert "attempts" not in raised.value.info.details
    assert fake_models.requests_for(fake_name(GPT_B)) == []


@pytest.mark.parametrize("model", [GPT, CLAUDE])
async def test_a_stream_dropped_after_a_delta_is_not_retried(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers, model: str
) -> None:
    fake_models.script(fake_name(model), Reply(text="one two three", drop_after_chunks=1))
    stream = failover(catalog, providers).stream(model_call(catalog, model), [GPT_B])
    received: list[ProviderEvent] = []
    with pytest.raises(ClawbusError) as raised:
        await drain(stream, received)
    assert received == [TextDelta("one")]
    assert raised.value.info.details["kind"] == ModelErrorKind.UNKNOWN
    assert stream.model is not None and stream.model.id == model
    assert len(fake_models.requests_for(fake_name(model))) == 1
    assert fake_models.requests_for(fake_name(GPT_B)) == []


@pytest.mark.parametrize("model", [GPT, CLAUDE])
async def test_a_stream_dropped_before_any_delta_is_retried(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers, model: str
) -> None:
    fake_models.script(fake_name(model), Reply(text="lost", drop_after_chunks=0))
    stream = failover(catalog, providers).stream(model_call(catalog, model))
    assert await drain(stream) == "echo: hello"
    assert [a.kind for a in stream.attempts] == ["unknown"]
    assert len(fake_models.requests_for(fake_name(model))) == 2


@pytest.mark.parametrize(
    ("model", "policy"),
    [
        ("impatient/slow", RetryPolicy(retries=0)),  # the SDK's timeout (timeout_s=0.1)
        (GPT, RetryPolicy(retries=0, first_event_timeout_s=0.05)),  # failover's own
    ],
    ids=["sdk", "first-event"],
)
async def test_a_timeout_fails_over(
    fake_models: FakeModelServer,
    catalog: ModelCatalog,
    providers: Providers,
    model: str,
    policy: RetryPolicy,
) -> None:
    fake_models.script(fake_name(model), Reply(text="too late", delay_s=0.4))
    stream = failover(catalog, providers, policy).stream(model_call(catalog, model), [CLAUDE])
    assert await drain(stream) == "echo: hello"
    assert stream.model is not None and stream.model.id == CLAUDE
    assert [(a.model, a.kind) for a in stream.attempts] == [(model, "timeout")]


async def test_retry_after_is_honoured_within_the_wait_budget(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers
) -> None:
    # The server asks for 30 s; the budget allows 0.2 s in all, across both models.
    fake_models.set_default(fake_name(GPT), Reply(status=429, retry_after_s=30))
    fake_models.set_default(fake_name(CLAUDE), Reply(status=429, retry_after_s=30))
    policy = RetryPolicy(retries=2, max_total_wait_s=0.2)
    stream = failover(catalog, providers, policy).stream(model_call(catalog, GPT), [CLAUDE])
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        await drain(stream)
    assert 0.2 <= time.monotonic() - started < 2
    assert raised.value.info.code is ErrorCode.UPSTREAM_RATE_LIMITED
    assert raised.value.info.retry_after_ms == 30_000
    # GPT: a try, 0.2 s of wait (capped), a try, no budget left; CLAUDE: one try.
    assert attempts(raised.value) == [
        (GPT, "rate_limit"),
        (GPT, "rate_limit"),
        (CLAUDE, "rate_limit"),
    ]


async def test_a_backoff_sleep_is_cancellable(
    fake_models: FakeModelServer,
    catalog: ModelCatalog,
    providers: Providers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_models.set_default(fake_name(GPT), Reply(status=500))
    policy = RetryPolicy(base_backoff_s=30, max_backoff_s=30, jitter=0)
    stream = failover(catalog, providers, policy).stream(model_call(catalog, GPT))
    caplog.set_level(logging.INFO, logger="clawbus_runner.failover")
    task = asyncio.create_task(drain(stream))
    try:
        # Logged just before the sleep, with no await in between: the task is now sleeping.
        await wait_for(
            lambda: any("retry 1 in 30" in r.getMessage() for r in caplog.records), timeout_s=5
        )
    finally:
        started = time.monotonic()
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1
    assert len(fake_models.requests_for(fake_name(GPT))) == 1


async def test_an_unknown_fallback_fails_before_any_call(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers
) -> None:
    with pytest.raises(ClawbusError) as raised:
        failover(catalog, providers).stream(model_call(catalog, GPT), ["nowhere/model"])
    assert raised.value.info.code is ErrorCode.MODEL_NOT_FOUND
    assert fake_models.requests == []


async def test_closing_the_stream_early_closes_the_provider_stream(
    fake_models: FakeModelServer, catalog: ModelCatalog, providers: Providers
) -> None:
    fake_models.script(fake_name(GPT), Reply(text="a b c d"))
    stream = failover(catalog, providers).stream(model_call(catalog, GPT))
    first: Any = await anext(stream)
    assert first == TextDelta("a")
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
