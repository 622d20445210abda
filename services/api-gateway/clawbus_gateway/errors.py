"""Rendering errors: every failure leaves the gateway as the one error envelope."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorCode,
    ErrorInfo,
    InternalError,
    NotFound,
    PayloadTooLarge,
)

log = logging.getLogger(__name__)


def error_response(info: ErrorInfo) -> web.Response:
    headers = {}
    if info.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, -(-info.retry_after_ms // 1000)))
    if info.code is ErrorCode.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="clawbus"'
    return web.Response(
        status=info.http_status,
        body=info.envelope().model_dump_json(),
        content_type="application/json",
        headers=headers,
    )


def _from_http_exception(exc: web.HTTPException) -> ClawbusError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(f"request body is larger than the limit: {exc.text}")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ClawbusError(
            f"method {exc.method} not allowed here; allowed: {allowed}",
            code=ErrorCode.INVALID_REQUEST,
        )
    return ClawbusError(exc.reason, code=ErrorCode.INVALID_REQUEST)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClawbusError as exc:
        return error_response(exc.info)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc).info)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(InternalError("internal error; see the gateway log").info)
