"""Provider failures, mapped once from SDK and HTTP failures to the one error model.

Every failure gets exactly one `ModelErrorKind` in `details["kind"]` and a `retryable` flag;
failover (`clawbus_runner.failover`) decides from those two alone:

    kind            raised as                          retryable
    rate_limit      UpstreamError (429: code           yes   429, 529, `overloaded_error`
                    upstream_rate_limited)
    timeout         UpstreamError                      yes   SDK/transport timeouts, 408, 504
    context_length  ContextLengthExceeded              no    the caller compacts and calls again
    refusal         UpstreamError                      no    a 4xx content-filter rejection
    unknown         UpstreamError / ModelNotFound      5xx, 409, dropped streams: yes;
                                                       401, 403, 404, other 4xx: no

A refusal that arrives as a finish reason (not an HTTP error) is reported by the providers as
`Finish(reason="content_filter")`; failover turns it into a refusal error (`refusal_error`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorCode,
    ModelErrorKind,
    ModelNotFound,
    UpstreamError,
)

# A dropped stream can surface as the HTTP layer's own error: the anthropic SDK does not
# wrap it, and the runner runs both SDKs over their aiohttp transport.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx2.TransportError,
    aiohttp.ClientError,
    OSError,
)
# TimeoutError covers asyncio's and aiohttp's (ServerTimeoutError subclasses it).
TIMEOUT_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    httpx2.TimeoutException,
    openai.APITimeoutError,
    anthropic.APITimeoutError,
)
# Finish reasons that mean the model refused (OpenAI's name; Anthropic's `refusal` maps to it).
REFUSAL_FINISH_REASONS = frozenset({"content_filter", "refusal"})

# How providers say the prompt does not fit: OpenAI's code and message, Anthropic's message,
# vLLM's ("maximum context length"), llama.cpp's (`exceed_context_size_error`).
_CONTEXT_LENGTH = re.compile(
    r"context_length_exceeded|maximum context length|prompt is too long|exceed_context_size"
    r"|exceeds the available context size|context window",
    re.IGNORECASE,
)
# OpenAI / Azure reject a prompt their content filter flags with a 400 and one of these codes.
_REFUSAL_CODES = frozenset({"content_filter", "content_policy_violation"})
_RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "overloaded_error", "rate_limit_exceeded"})


class ContextLengthExceeded(UpstreamError):
    """The prompt is too long for the model: never retried nor failed over, the caller compacts."""

    retryable_default = False


def classify(
    status: int | None,
    *,
    error_type: str = "",
    error_code: str = "",
    message: str = "",
    timed_out: bool = False,
) -> tuple[ModelErrorKind, bool]:
    """The kind of a failed model call and whether calling the same model again may help.

    `status` is None when no HTTP error status applies (transport failures, errors sent
    inside a stream); `error_type` / `error_code` come from the provider's error body.
    """
    if timed_out or status in (408, 504) or error_type == "timeout_error":
        return ModelErrorKind.TIMEOUT, True
    if status in (429, 529) or error_type in _RATE_LIMIT_TYPES or error_code in _RATE_LIMIT_TYPES:
        return ModelErrorKind.RATE_LIMIT, True
    if status is not None and 400 <= status < 500:
        if _CONTEXT_LENGTH.search(f"{error_code} {error_type} {message}"):
            return ModelErrorKind.CONTEXT_LENGTH, False
        if error_code in _REFUSAL_CODES:
            return ModelErrorKind.REFUSAL, False
        # 409 is a lock timeout upstream: the SDKs retry it, so failover does too.
        return ModelErrorKind.UNKNOWN, status == 409
    return ModelErrorKind.UNKNOWN, True


def _retry_after_ms(headers: Mapping[str, str] | None) -> int | None:
    """`retry-after-ms` (OpenAI) or `retry-after` in seconds; HTTP dates are ignored."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1.0), ("retry-after", 1000.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            return max(0, int(float(value) * scale))
        except ValueError:
            continue
    return None


def upstream_error(
    provider: str,
    status: int | None,
    message: str,
    *,
    model: str,
    retry_after_ms: int | None = None,
    error_type: str = "",
    error_code: str = "",
    timed_out: bool = False,
) -> ClawbusError:
    where = f"{provider} ({model})"
    kind, retryable = classify(
        status, error_type=error_type, error_code=error_code, message=message, timed_out=timed_out
    )
    if status == 404:
        return ModelNotFound(
            f"{where} does not know this model: {message}",
            param="model",
            model=model,
            kind=kind,
        )
    details: dict[str, Any] = {"provider": provider, "kind": kind}
    if status is not None:
        details["upstream_status"] = status
    code = ErrorCode.UPSTREAM_RATE_LIMITED if status == 429 else ErrorCode.UPSTREAM_ERROR
    if kind is ModelErrorKind.CONTEXT_LENGTH:
        return ContextLengthExceeded(
            f"{where} cannot take a prompt this long: {message}", **details
        )
    if kind is ModelErrorKind.TIMEOUT:
        text = f"{where} timed out: {message}"
    elif kind is ModelErrorKind.RATE_LIMIT:
        busy = "is rate limiting requests" if status == 429 else "is overloaded"
        text = f"{where} {busy}: {message}"
    elif kind is ModelErrorKind.REFUSAL:
        text = f"{where} refused the request: {message}"
    elif status is None:
        text = f"{where} could not be reached: {message}"
    elif status in (401, 403):
        text = f"{where} rejected the configured credentials: {message}"
    elif 400 <= status < 500:
        text = f"{where} rejected the request: {message}"
    elif status >= 500:
        text = f"{where} failed with HTTP {status}: {message}"
    else:  # an error event inside a stream that began with 200
        text = f"{where} failed mid-stream: {message}"
    return UpstreamError(
        text, code=code, retryable=retryable, retry_after_ms=retry_after_ms, **details
    )


def refusal_error(provider: str, *, model: str, reason: str) -> ClawbusError:
    """A model that answered with a refusal finish reason."""
    return UpstreamError(
        f"{provider} ({model}) refused to answer (finish reason {reason!r})",
        retryable=False,
        provider=provider,
        kind=ModelErrorKind.REFUSAL,
    )


def _error_fields(exc: Exception) -> tuple[str, str, str | None]:
    """`type`, `code` and `message` of the provider's error body, when there is one.

    The openai SDK keeps the inner `error` object as `body`; the anthropic SDK the whole body.
    """
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", "", None
    message = error.get("message")
    return (
        str(error.get("type") or ""),
        str(error.get("code") or ""),
        message if isinstance(message, str) and message else None,
    )


def sdk_failure(provider: str, exc: Exception, *, model: str) -> ClawbusError:
    """Map an SDK or transport exception; the openai and anthropic SDKs share these shapes."""
    error_type, error_code, body_message = _error_fields(exc)
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return upstream_error(
        provider,
        status if isinstance(status, int) else None,
        body_message or getattr(exc, "message", None) or str(exc) or repr(exc),
        model=model,
        retry_after_ms=_retry_after_ms(headers),
        error_type=error_type,
        error_code=error_code,
        timed_out=isinstance(exc, TIMEOUT_ERRORS),
    )
