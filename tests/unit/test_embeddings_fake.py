"""The fake's OpenAI `/v1/embeddings` endpoint through the real openai SDK, and the runner's
Embedder against it: vectors, batching, and failures mapped to the one error model."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import openai
import pytest
from clawbus_core.models import ModelCatalog
from clawbus_fakes.models import FakeModelServer, Reply, fake_embedding
from clawbus_protocol.errors import (
    ErrorCode,
    ModelErrorKind,
    ModelNotFound,
    UpstreamError,
)
from clawbus_protocol.settings import ClawbusSettings, ProviderConfig
from clawbus_runner.embeddings import Embedder

MODEL = "text-embedding-3-small"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
async def fake() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


@pytest.fixture
async def oa(fake: FakeModelServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="x", max_retries=0) as client:
        yield client


def settings_for(
    fake: FakeModelServer, embedding_model: str | None = f"openai/{MODEL}"
) -> ClawbusSettings:
    return ClawbusSettings(
        providers={
            "openai": ProviderConfig(
                kind="openai", api_key="sk-fake", base_url=f"{fake.url}/v1", timeout_s=5
            ),
            "anthropic": ProviderConfig(kind="anthropic", api_key="sk-ant", base_url=fake.url),
        },
        embedding_model=embedding_model,
    )


@pytest.fixture
async def embedder(fake: FakeModelServer) -> AsyncIterator[Embedder]:
    made = Embedder.from_settings(settings_for(fake))
    assert made is not None
    try:
        yield made
    finally:
        await made.aclose()


# --------------------------------------------------------------------------- the fake


def test_fake_embedding_is_a_deterministic_bag_of_word_stems() -> None:
    food = fake_embedding("Dana is vegetarian and never eats meat.")
    assert len(food) == 256
    assert math.isclose(math.fsum(x * x for x in food), 1.0)
    assert food == fake_embedding("Dana is vegetarian and never eats meat.")
    # Same five-letter stems, different Postgres lexemes ("veget" vs "vegetarian").
    assert cosine(fake_embedding("vegetables"), food) > 0.3
    assert cosine(fake_embedding("Flights to Lisbon"), food) == 0
    # Case, stop words and short words do not count.
    assert fake_embedding("The VEGETARIAN of it") == fake_embedding("vegetarian")
    # A text with no word still gets a unit vector.
    assert math.isclose(math.fsum(x * x for x in fake_embedding("?!")), 1.0)
    assert len(fake_embedding("x", 8)) == 8


async def test_openai_sdk_reads_float_and_default_base64_embeddings(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    texts = ["vegetarian dishes", "flights to Lisbon"]
    floats = await oa.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == fake_embedding(texts[0])
    assert floats.model == MODEL
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 5
    # The SDK asks for base64 by default and decodes it (float32, so nearly equal).
    packed = await oa.embeddings.create(model=MODEL, input="vegetarian dishes")
    assert len(packed.data) == 1
    assert all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
        for a, b in zip(packed.data[0].embedding, floats.data[0].embedding, strict=True)
    )
    assert fake.requests[-1].body["encoding_format"] == "base64"
    assert fake.requests[-1].path == "/v1/embeddings"
    tokens = await oa.embeddings.create(
        model=MODEL, input=[[1, 2, 3], [4]], dimensions=16, encoding_format="float"
    )
    assert [len(d.embedding) for d in tokens.data] == [16, 16]
    one = await oa.embeddings.create(model=MODEL, input=[1, 2, 3], encoding_format="float")
    assert one.data[0].embedding == fake_embedding("token1 token2 token3")


async def test_fake_embeddings_refuse_bad_input_and_obey_scripted_failures(
    fake: FakeModelServer, oa: openai.AsyncOpenAI
) -> None:
    for bad in ("", ["ok", ""], []):
        with pytest.raises(openai.BadRequestError, match="input"):
            await oa.embeddings.create(model=MODEL, input=bad, encoding_format="float")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        await oa.embeddings.create(model=MODEL, input="x", dimensions=0, encoding_format="float")
    fake.script(MODEL, Reply(status=500), Reply(status=429, retry_after_s=2))
    with pytest.raises(openai.InternalServerError):
        await oa.embeddings.create(model=MODEL, input="x", encoding_format="float")
    with pytest.raises(openai.RateLimitError) as limited:
        await oa.embeddings.create(model=MODEL, input="x", encoding_format="float")
    assert limited.value.response.headers["retry-after"] == "2"
    # The queue is used up: back to vectors.
    ok = await oa.embeddings.create(model=MODEL, input="x", encoding_format="float")
    assert len(ok.data) == 1


# --------------------------------------------------------------------------- the Embedder


async def test_embedder_returns_unit_vectors_in_order_in_batches(
    fake: FakeModelServer, embedder: Embedder
) -> None:
    assert embedder.model == f"openai/{MODEL}"
    texts = [f"note number {n} about topic{n}" for n in range(5)]
    embedder.batch_size = 2
    vectors = await embedder.embed(texts)
    assert vectors == [fake_embedding(t) for t in texts]
    calls = fake.requests_for(MODEL)
    assert [c.body["input"] for c in calls] == [texts[0:2], texts[2:4], texts[4:5]]
    assert all(c.body["encoding_format"] == "float" for c in calls)
    assert calls[0].headers["authorization"] == "Bearer sk-fake"
    assert await embedder.embed([]) == []
    assert len(fake.requests_for(MODEL)) == 3


@pytest.mark.parametrize(
    ("reply", "code", "kind", "retryable"),
    [
        (Reply(status=500), ErrorCode.UPSTREAM_ERROR, ModelErrorKind.UNKNOWN, True),
        (Reply(status=429), ErrorCode.UPSTREAM_RATE_LIMITED, ModelErrorKind.RATE_LIMIT, True),
        (Reply(status=401), ErrorCode.UPSTREAM_ERROR, ModelErrorKind.UNKNOWN, False),
        # The SDK's aiohttp transport reports a dropped connection as a timeout.
        (Reply(drop_after_chunks=0), ErrorCode.UPSTREAM_ERROR, ModelErrorKind.TIMEOUT, True),
    ],
)
async def test_embedder_failures_are_upstream_errors(
    fake: FakeModelServer,
    embedder: Embedder,
    reply: Reply,
    code: ErrorCode,
    kind: ModelErrorKind,
    retryable: bool,
) -> None:
    fake.script(MODEL, reply)
    with pytest.raises(UpstreamError) as failed:
        await embedder.embed(["hello"])
    info = failed.value.info
    assert (info.code, info.details["kind"], info.retryable) == (code, kind, retryable)
    assert info.details["provider"] == "openai"
    assert f"openai/{MODEL}" in info.message
    assert len(fake.requests_for(MODEL)) == 1  # no retries: the caller falls back instead


async def test_embedder_timeout_and_unknown_model(fake: FakeModelServer) -> None:
    made = Embedder(ModelCatalog.from_settings(settings_for(fake)).resolve("openai/gone"))
    try:
        fake.script("gone", Reply(status=404))
        with pytest.raises(ModelNotFound, match="does not know this model"):
            await made.embed(["hello"])
    finally:
        await made.aclose()
    ref = ModelCatalog.from_settings(settings_for(fake)).resolve(f"openai/{MODEL}")
    slow = Embedder(ref, timeout_s=0.1)
    try:
        fake.script(MODEL, Reply(delay_s=1))
        with pytest.raises(UpstreamError) as failed:
            await slow.embed(["hello"])
        assert failed.value.info.details["kind"] == ModelErrorKind.TIMEOUT
    finally:
        await slow.aclose()


async def test_embedder_from_settings_fails_fast_on_a_bad_model(fake: FakeModelServer) -> None:
    assert Embedder.from_settings(settings_for(fake, embedding_model=None)) is None
    with pytest.raises(ModelNotFound, match="not configured"):
        Embedder.from_settings(settings_for(fake, embedding_model="nowhere/emb"))
    with pytest.raises(ModelNotFound, match="OpenAI-compatible"):
        Embedder.from_settings(settings_for(fake, embedding_model="anthropic/claude"))


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"data": None},
        {"data": [{"index": 0, "embedding": [1.0, 0.0]}]},  # one vector for two inputs
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 0.0]}]},
        {"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": []}]},
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": ["x"]}]},
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [math.nan]}]},
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
    ],
)
async def test_embedder_refuses_malformed_answers(embedder: Embedder, body: object) -> None:
    with pytest.raises(UpstreamError, match=r"embeddings|data") as failed:
        embedder._vectors(body, 2)
    assert failed.value.info.retryable is False


async def test_embedder_normalises_and_orders_by_index(embedder: Embedder) -> None:
    body = {"data": [{"index": 1, "embedding": [0, 2]}, {"index": 0, "embedding": [3.0, 4.0]}]}
    assert embedder._vectors(body, 2) == [[0.6, 0.8], [0.0, 1.0]]
