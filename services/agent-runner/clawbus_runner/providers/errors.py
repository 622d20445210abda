"""Provider failures, mapped once from HTTP status to the one error model."""

from __future__ import annotations

from types import ModuleType

import aiohttp
from clawbus_protocol.errors import ClawbusError, ErrorCode, ModelNotFound, UpstreamError


def _http_client() -> ModuleType:
    # The provider SDKs moved from httpx to httpx2; a dropped stream can surface as the
    # HTTP library's own error (the anthropic SDK does not wrap it).
    try:
        import httpx2
    except ImportError:  # pragma: no cover - older SDKs
        import httpx as httpx2  # type: ignore[no-redef,import-not-found,unused-ignore]
    return httpx2


TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    _http_client().TransportError,
    aiohttp.ClientError,  # the SDKs' aiohttp transport (what the runner uses)
    OSError,
)


def _retry_after_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        return None


def upstream_error(
    provider: str,
    status: int | None,
    message: str,
    *,
    model: str,
    retry_after: str | None = None,
) -> ClawbusError:
    where = f"{provider} ({model})"
    if status is None:
        return UpstreamError(f"{where} could not be reached: {message}", provider=provider)
    if status == 429:
        return UpstreamError(
            f"{where} is rate limiting requests: {message}",
            code=ErrorCode.UPSTREAM_RATE_LIMITED,
            retry_after_ms=_retry_after_ms(retry_after),
            provider=provider,
            upstream_status=status,
        )
    if status == 404:
        return ModelNotFound(
            f"{where} does not know this model: {message}", param="model", model=model
        )
    if status in (401, 403):
        return UpstreamError(
            f"{where} rejected the configured credentials: {message}",
            retryable=False,
            provider=provider,
            upstream_status=status,
        )
    if 400 <= status < 500:
        return UpstreamError(
            f"{where} rejected the request: {message}",
            retryable=False,
            provider=provider,
            upstream_status=status,
        )
    return UpstreamError(
        f"{where} failed with HTTP {status}: {message}",
        retry_after_ms=_retry_after_ms(retry_after),
        provider=provider,
        upstream_status=status,
    )
