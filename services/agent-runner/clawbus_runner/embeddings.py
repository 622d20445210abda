"""Embeddings for memory search: text to vectors through the OpenAI-compatible `/embeddings`
endpoint of the provider that `embedding_model` (settings) names, e.g.
`openai/text-embedding-3-small` or `ollama/nomic-embed-text` with an `openai`-kind provider.

    embedder = Embedder.from_settings(settings)   # None when no embedding model is set
    vectors = await embedder.embed(texts)         # L2-normalised, in input order

A failed call raises the providers' errors (see `providers.errors`): UpstreamError carrying a
ModelErrorKind, ModelNotFound for a model the provider does not know. There are no retries
here: memory search answers by keywords when a call fails, and the next search calls again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import openai
from clawbus_core.models import ModelCatalog, ModelRef
from clawbus_protocol.errors import ModelErrorKind, ModelNotFound, UpstreamError
from clawbus_protocol.settings import ClawbusSettings

from clawbus_runner.providers.errors import TRANSPORT_ERRORS, sdk_failure

# Inputs per request: well under OpenAI's 2 048, and what memory search sends in one call.
DEFAULT_BATCH = 256
# A search waits for its embeddings; a provider slower than this is treated as failing.
DEFAULT_TIMEOUT_S = 30.0

_FAILURES: tuple[type[Exception], ...] = (openai.APIError, *TRANSPORT_ERRORS)


def normalize(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to length 1 (a zero vector stays zero), so cosine is a dot product."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [0.0 for _ in vector]


def _numbers(values: list[object]) -> bool:
    return all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in values
    )


class Embedder:
    """One pooled client of the embedding model's provider; close it with `aclose`."""

    def __init__(
        self,
        ref: ModelRef,
        *,
        batch_size: int = DEFAULT_BATCH,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if ref.config.kind != "openai":
            raise ModelNotFound(
                f"embedding model {ref.id!r} cannot embed: provider {ref.provider!r} is "
                f"{ref.config.kind!r}, and embeddings need an OpenAI-compatible provider "
                "(kind 'openai')",
                param="embedding_model",
                model=ref.id,
            )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.ref = ref
        self.batch_size = batch_size
        self._client = openai.AsyncOpenAI(
            api_key=ref.config.api_key.get_secret_value() if ref.config.api_key else "unused",
            base_url=ref.config.base_url,
            max_retries=0,
            timeout=min(ref.config.timeout_s, timeout_s),
            http_client=openai.DefaultAioHttpClient(),
        )

    @classmethod
    def from_settings(cls, settings: ClawbusSettings) -> Embedder | None:
        """The embedder of `settings.embedding_model`, None if unset; an unknown model or a
        provider that cannot embed fails here, at start."""
        if not settings.embedding_model:
            return None
        ref = ModelCatalog.from_settings(settings).resolve(settings.embedding_model)
        return cls(ref)

    @property
    def model(self) -> str:
        """The `provider/model` id, recorded with every stored vector."""
        return self.ref.id

    async def aclose(self) -> None:
        await self._client.close()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per text (none may be empty), `batch_size` per request."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors += await self._batch(list(texts[start : start + self.batch_size]))
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        try:
            # The generic post, as the chat providers do: the body comes back as plain JSON,
            # checked here, rather than as SDK models that do not validate what they hold.
            body = await self._client.post(
                "/embeddings",
                # Not the SDK's default base64: "float" is what every compatible server speaks.
                body={"model": self.ref.name, "input": texts, "encoding_format": "float"},
                cast_to=object,
            )
        except _FAILURES as exc:
            raise sdk_failure(self.ref.provider, exc, model=self.ref.id) from exc
        return self._vectors(body, len(texts))

    def _vectors(self, body: object, count: int) -> list[list[float]]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._malformed("answered without a `data` list")
        by_index: dict[int, list[float]] = {}
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(index, int) and isinstance(vector, list) and _numbers(vector):
                by_index[index] = [float(x) for x in vector]
        vectors = [by_index[i] for i in range(count) if i in by_index]
        sizes = sorted({len(v) for v in vectors})
        if len(vectors) != count or len(data) != count or len(sizes) != 1 or sizes == [0]:
            raise self._malformed(
                f"returned {len(vectors)} usable embeddings (of {len(data)}; sizes {sizes}) "
                f"for {count} inputs"
            )
        return [normalize(v) for v in vectors]

    def _malformed(self, problem: str) -> UpstreamError:
        return UpstreamError(
            f"{self.ref.provider} ({self.ref.id}) {problem}",
            retryable=False,
            provider=self.ref.provider,
            kind=ModelErrorKind.UNKNOWN,
        )
