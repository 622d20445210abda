"""Provider failures, mapped once from HTTP status to the one error model."""

from __future__ import annotations

import aiohttp
import httpx2
from clawbus_protocol.errors import ClawbusError, ErrorCode, ModelNotFound, UpstreamError

# A dropped stream can surface as the HTTP layer's own error: the anthropic SDK does not
# wrap it, and the runner runs both SDKs over their aiohttp transport.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx2.TransportError,
    aiohttp.ClientError,
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


def sdk_failure(provider: str, exc: Exception, *, model: str) -> ClawbusError:
    """Map an SDK or transport exception; the openai and anthropic SDKs share these shapes."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        response = getattr(exc, "response", None)
        return upstream_error(
            provider,
            status,
            getattr(exc, "message", str(exc)),
            model=model,
            retry_after=response.headers.get("retry-after") if response is not None else None,
        )
    return upstream_error(provider, None, str(exc) or repr(exc), model=model)
