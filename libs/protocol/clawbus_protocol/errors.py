"""The one error model, used on every surface (HTTP, SSE, WS, bus events).

    ClawbusError                 every error clawbus raises on purpose; carries an ErrorInfo
    ├── InvalidRequest           400  bad input: malformed JSON, missing or mistyped fields
    ├── Unauthorized             401  no credentials or wrong ones
    ├── Forbidden                403  credentials without the needed permission
    ├── NotFound                 404  unknown resource (model_not_found for models)
    │                            405  method_not_allowed: a route that exists, another method
    ├── Conflict                 409  a resource or run already exists / is in progress
    ├── PayloadTooLarge          413  body over the configured limit
    ├── UnsupportedMediaType     415  body that is not JSON where JSON is required
    ├── RateLimited              429  too many requests (ours or the upstream's)
    ├── UpstreamError            502  the model provider failed
    ├── ServiceUnavailable       503  a dependency (bus, database, service) is missing
    ├── Timeout                  504  a run did not finish within the limit
    └── InternalError            500  a bug: never raised on purpose for bad input

The HTTP status of each code is defined once, in `HTTP_STATUS`. A failed model call also
names its `ModelErrorKind` in `details["kind"]`, which decides retry and failover.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    UPSTREAM_ERROR = "upstream_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    INTERNAL_ERROR = "internal_error"


class ModelErrorKind(StrEnum):
    """Why a model call failed; exactly one per failure, in `ErrorInfo.details["kind"]`."""

    RATE_LIMIT = "rate_limit"  # 429, overloaded (529, `overloaded_error`)
    TIMEOUT = "timeout"  # SDK or transport timeout, 408/504, our per-attempt timeout
    CONTEXT_LENGTH = "context_length"  # the prompt does not fit the model: compact and retry
    REFUSAL = "refusal"  # content filter or refusal stop reason
    UNKNOWN = "unknown"  # everything else: 5xx and dropped streams (retryable), other 4xx (not)


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UPSTREAM_RATE_LIMITED: 429,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.ABORTED: 409,
    ErrorCode.INTERNAL_ERROR: 500,
}

# The `type` field OpenAI clients read; derived from the code so it is never chosen by hand.
_OPENAI_TYPE: dict[ErrorCode, str] = {
    ErrorCode.UNAUTHORIZED: "authentication_error",
    ErrorCode.FORBIDDEN: "permission_error",
    ErrorCode.NOT_FOUND: "not_found_error",
    ErrorCode.MODEL_NOT_FOUND: "not_found_error",
    ErrorCode.RATE_LIMITED: "rate_limit_error",
    ErrorCode.UPSTREAM_RATE_LIMITED: "rate_limit_error",
    ErrorCode.UPSTREAM_ERROR: "api_error",
    ErrorCode.SERVICE_UNAVAILABLE: "api_error",
    ErrorCode.TIMEOUT: "api_error",
    ErrorCode.INTERNAL_ERROR: "api_error",
}


class ErrorInfo(BaseModel):
    """What every error carries, wherever it travels."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str
    retryable: bool = False
    retry_after_ms: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(
            error=ErrorBody(
                code=self.code,
                message=self.message,
                type=_OPENAI_TYPE.get(self.code, "invalid_request_error"),
                param=self.details.get("param"),
                retryable=self.retryable,
                retryAfterMs=self.retry_after_ms,
                details=self.details,
            )
        )


class ErrorBody(BaseModel):
    """The HTTP shape: OpenAI's `error` object, plus the fields GoClaw and OpenClaw name."""

    code: ErrorCode
    message: str
    type: str
    param: str | None = None
    retryable: bool = False
    retryAfterMs: int | None = None  # noqa: N815 (wire name)
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class ClawbusError(Exception):
    """An error that is data: raise it anywhere, render it once at the edge."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
    retryable_default: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        code: ErrorCode | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.info = ErrorInfo(
            code=code or self.code,
            message=message,
            retryable=self.retryable_default if retryable is None else retryable,
            retry_after_ms=retry_after_ms,
            details=details,
        )

    @classmethod
    def from_info(cls, info: ErrorInfo) -> ClawbusError:
        err = cls(info.message)
        err.info = info
        return err


class InvalidRequest(ClawbusError):
    code = ErrorCode.INVALID_REQUEST


class Unauthorized(ClawbusError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ClawbusError):
    code = ErrorCode.FORBIDDEN


class NotFound(ClawbusError):
    code = ErrorCode.NOT_FOUND


class ModelNotFound(ClawbusError):
    code = ErrorCode.MODEL_NOT_FOUND


class Conflict(ClawbusError):
    code = ErrorCode.CONFLICT


class PayloadTooLarge(ClawbusError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ClawbusError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RateLimited(ClawbusError):
    code = ErrorCode.RATE_LIMITED
    retryable_default = True


class UpstreamError(ClawbusError):
    code = ErrorCode.UPSTREAM_ERROR
    retryable_default = True


class ServiceUnavailable(ClawbusError):
    code = ErrorCode.SERVICE_UNAVAILABLE
    retryable_default = True


class Timeout(ClawbusError):
    code = ErrorCode.TIMEOUT
    retryable_default = True


class InternalError(ClawbusError):
    code = ErrorCode.INTERNAL_ERROR
