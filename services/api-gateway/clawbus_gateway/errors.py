"""Rendering errors: every failure leaves the gateway as the one error model, in the envelope
of the document its path belongs to.

    /api/v1/...   002's envelope  {"error": {"code": "RATE_LIMITED", "message", "retryAfter"}}
    /api/...      001's envelope  {"error": {"code": "INVALID_REQUEST", "message", "details"}}
    anything else clawbus's own   {"error": {"code": "invalid_request", "message", "type", ...}}

The status code and headers (Retry-After, WWW-Authenticate) are the same whatever the
envelope. Auth and rate-limit refusals pass through here too (their middlewares sit inside).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from clawbus_protocol import openclaw_api, openclaw_v1
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorCode,
    ErrorInfo,
    InternalError,
    NotFound,
    PayloadTooLarge,
)

log = logging.getLogger(__name__)

# The code of the error a response carries (what the metrics count it under).
ERROR_CODE: web.ResponseKey[ErrorCode] = web.ResponseKey("error_code", ErrorCode)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def render(info: ErrorInfo, path: str) -> str:
    """The error's JSON in the envelope of the document `path` belongs to."""
    if _under(path, "/api/v1"):
        return openclaw_v1.ErrorEnvelope.of(info).model_dump_json(exclude_none=True)
    if _under(path, "/api"):
        return openclaw_api.ErrorEnvelope.of(info).model_dump_json()
    return info.envelope().model_dump_json()


def error_response(info: ErrorInfo, path: str = "") -> web.Response:
    headers = {}
    if info.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, -(-info.retry_after_ms // 1000)))
    if info.code is ErrorCode.METHOD_NOT_ALLOWED:
        headers["Allow"] = ", ".join(info.details.get("allowed", ()))
    if info.code is ErrorCode.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="clawbus"'
    response = web.Response(
        status=info.http_status,
        body=render(info, path),
        content_type="application/json",
        headers=headers,
    )
    response[ERROR_CODE] = info.code
    return response


def _from_http_exception(exc: web.HTTPException) -> ClawbusError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(f"request body is larger than the limit: {exc.text}")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        return ClawbusError(
            f"method {exc.method} not allowed here; allowed: {', '.join(allowed)}",
            code=ErrorCode.METHOD_NOT_ALLOWED,
            allowed=allowed,
        )
    return ClawbusError(exc.reason, code=ErrorCode.INVALID_REQUEST)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClawbusError as exc:
        return error_response(exc.info, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc).info, request.path)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            InternalError("internal error; see the gateway log").info, request.path
        )
