"""Failure kinds from real SDK exceptions, and the retry policy's arithmetic."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest
from clawbus_core.models import ModelRef
from clawbus_protocol.errors import (
    ClawbusError,
    ErrorCode,
    ModelErrorKind,
    ModelNotFound,
    RateLimited,
    Timeout,
    UpstreamError,
)
from clawbus_protocol.settings import ProviderConfig
from clawbus_runner.failover import RetryPolicy, kind_of
from clawbus_runner.providers.errors import ContextLengthExceeded, sdk_failure, upstream_error

RATE_LIMIT = ModelErrorKind.RATE_LIMIT
TIMEOUT = ModelErrorKind.TIMEOUT
CONTEXT = ModelErrorKind.CONTEXT_LENGTH
REFUSAL = ModelErrorKind.REFUSAL
UNKNOWN = ModelErrorKind.UNKNOWN

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


def response(status: int, url: str, body: object, headers: dict[str, str] | None = None) -> Any:
    return httpx2.Response(
        status, json=body, headers=headers or {}, request=httpx2.Request("POST", url)
    )


def openai_error(
    cls: type[openai.APIStatusError],
    status: int,
    error: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    """As the openai SDK builds it: the message quotes the body, `body` is its `error` object."""
    body = {"error": {"param": None, "code": None, **error}}
    return cls(
        f"Error code: {status} - {body}",
        response=response(status, OPENAI_URL, body, headers),
        body=body["error"],
    )


def anthropic_error(
    cls: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> anthropic.APIStatusError:
    """As the anthropic SDK builds it: `body` is the whole body."""
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "r"}
    return cls(
        f"Error code: {status} - {body}",
        response=response(status, ANTHROPIC_URL, body, headers),
        body=body,
    )


OPENAI_REQUEST = httpx2.Request("POST", OPENAI_URL)
ANTHROPIC_REQUEST = httpx2.Request("POST", ANTHROPIC_URL)

CASES: list[tuple[str, Exception, ModelErrorKind, bool]] = [
    (
        "openai 429",
        openai_error(openai.RateLimitError, 429, {"type": "requests", "message": "Slow down."}),
        RATE_LIMIT,
        True,
    ),
    (
        "anthropic 429",
        anthropic_error(anthropic.RateLimitError, 429, "rate_limit_error", "Too many requests"),
        RATE_LIMIT,
        True,
    ),
    (
        "anthropic 529 overloaded",
        anthropic_error(anthropic.OverloadedError, 529, "overloaded_error", "Overloaded"),
        RATE_LIMIT,
        True,
    ),
    (
        # An `event: error` inside a stream that began with 200: the SDK raises with that response.
        "anthropic overloaded mid-stream",
        anthropic_error(anthropic.APIStatusError, 200, "overloaded_error", "Overloaded"),
        RATE_LIMIT,
        True,
    ),
    ("openai SDK timeout", openai.APITimeoutError(OPENAI_REQUEST), TIMEOUT, True),
    ("anthropic SDK timeout", anthropic.APITimeoutError(ANTHROPIC_REQUEST), TIMEOUT, True),
    ("raw read timeout", httpx2.ReadTimeout("timed out", request=OPENAI_REQUEST), TIMEOUT, True),
    ("asyncio timeout", TimeoutError(), TIMEOUT, True),
    (
        "anthropic 504",
        anthropic_error(anthropic.GatewayTimeoutError, 504, "timeout_error", "Request timed out"),
        TIMEOUT,
        True,
    ),
    (
        "openai context length",
        openai_error(
            openai.BadRequestError,
            400,
            {
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
                "param": "messages",
                "message": "This model's maximum context length is 128000 tokens. However, your "
                "messages resulted in 131072 tokens. Please reduce the length of the messages.",
            },
        ),
        CONTEXT,
        False,
    ),
    (
        "openai-compatible context length (vLLM: no code)",
        openai_error(
            openai.BadRequestError,
            400,
            {
                "type": "BadRequestError",
                "message": "This model's maximum context length is 4096 tokens. However, you "
                "requested 5000 tokens.",
            },
        ),
        CONTEXT,
        False,
    ),
    (
        "anthropic prompt too long",
        anthropic_error(
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
        ),
        CONTEXT,
        False,
    ),
    (
        "openai content filter",
        openai_error(
            openai.BadRequestError,
            400,
            {
                "type": "invalid_request_error",
                "code": "content_filter",
                "message": "The response was filtered due to the prompt triggering a content "
                "management policy.",
            },
        ),
        REFUSAL,
        False,
    ),
    (
        "openai 401",
        openai_error(
            openai.AuthenticationError,
            401,
            {"type": "invalid_request_error", "code": "invalid_api_key", "message": "Bad key."},
        ),
        UNKNOWN,
        False,
    ),
    (
        "anthropic 403",
        anthropic_error(anthropic.PermissionDeniedError, 403, "permission_error", "No access."),
        UNKNOWN,
        False,
    ),
    (
        "openai 400",
        openai_error(
            openai.BadRequestError,
            400,
            {"type": "invalid_request_error", "message": "Invalid value for 'temperature'."},
        ),
        UNKNOWN,
        False,
    ),
    (
        "openai 404",
        openai_error(
            openai.NotFoundError,
            404,
            {"type": "invalid_request_error", "code": "model_not_found", "message": "No model."},
        ),
        UNKNOWN,
        False,
    ),
    (
        "openai 409",
        openai_error(openai.ConflictError, 409, {"type": "conflict", "message": "Lock timeout."}),
        UNKNOWN,
        True,
    ),
    (
        "openai 500",
        openai_error(openai.InternalServerError, 500, {"type": "server_error", "message": "Oops."}),
        UNKNOWN,
        True,
    ),
    (
        "anthropic 500",
        anthropic_error(anthropic.InternalServerError, 500, "api_error", "Internal server error"),
        UNKNOWN,
        True,
    ),
    (
        # OpenAI's error chunk inside a stream: an APIError with a body but no status.
        "openai error mid-stream",
        openai.APIError("The server had an error", OPENAI_REQUEST, body={"type": "server_error"}),
        UNKNOWN,
        True,
    ),
    ("openai connection error", openai.APIConnectionError(request=OPENAI_REQUEST), UNKNOWN, True),
    (
        "dropped stream (raw transport error)",
        httpx2.RemoteProtocolError("peer closed connection", request=ANTHROPIC_REQUEST),
        UNKNOWN,
        True,
    ),
]


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_sdk_failure_has_one_kind(
    exc: Exception, kind: ModelErrorKind, retryable: bool
) -> None:
    error = sdk_failure("p", exc, model="p/m")
    assert error.info.details["kind"] == kind
    assert error.info.retryable is retryable
    assert kind_of(error) is kind
    assert isinstance(error, ContextLengthExceeded) is (kind is CONTEXT)
    assert error.info.message.startswith("p (p/m) ")


def test_messages_come_from_the_error_body_not_the_sdk_repr() -> None:
    exc = anthropic_error(
        anthropic.BadRequestError,
        400,
        "invalid_request_error",
        "prompt is too long: 208310 tokens > 200000 maximum",
    )
    error = sdk_failure("anthropic", exc, model="anthropic/claude")
    assert error.info.message == (
        "anthropic (anthropic/claude) cannot take a prompt this long: "
        "prompt is too long: 208310 tokens > 200000 maximum"
    )


def test_codes_stay_as_they_were() -> None:
    limited = sdk_failure(
        "openai", openai_error(openai.RateLimitError, 429, {"message": "x"}), model="openai/m"
    )
    assert limited.info.code is ErrorCode.UPSTREAM_RATE_LIMITED
    assert limited.info.details["upstream_status"] == 429
    overloaded = sdk_failure(
        "a",
        anthropic_error(anthropic.OverloadedError, 529, "overloaded_error", "Overloaded"),
        model="a/m",
    )
    assert overloaded.info.code is ErrorCode.UPSTREAM_ERROR
    missing = sdk_failure(
        "openai", openai_error(openai.NotFoundError, 404, {"message": "x"}), model="openai/m"
    )
    assert isinstance(missing, ModelNotFound)
    assert missing.info.code is ErrorCode.MODEL_NOT_FOUND


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2000),
        ({"retry-after": "0.25"}, 250),
        ({"retry-after": "0"}, 0),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1500),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_from_the_response(
    headers: dict[str, str], expected: int | None
) -> None:
    exc = openai_error(openai.RateLimitError, 429, {"message": "x"}, headers)
    assert sdk_failure("openai", exc, model="openai/m").info.retry_after_ms == expected


def test_a_stream_that_ends_early_is_a_retryable_unknown() -> None:
    error = upstream_error("p", None, "the stream ended before the model finished", model="p/m")
    assert error.info.details["kind"] == UNKNOWN
    assert error.info.retryable


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RateLimited("ours"), RATE_LIMIT),
        (UpstreamError("x", code=ErrorCode.UPSTREAM_RATE_LIMITED), RATE_LIMIT),
        (Timeout("slow"), TIMEOUT),
        (UpstreamError("x"), UNKNOWN),
        (UpstreamError("x", kind="not-a-kind"), UNKNOWN),
        (UpstreamError("x", kind="refusal"), REFUSAL),
        (ClawbusError("bug"), UNKNOWN),
    ],
)
def test_kind_of_errors_raised_elsewhere(error: ClawbusError, kind: ModelErrorKind) -> None:
    assert kind_of(error) is kind


# --------------------------------------------------------------------------- backoff


def delay(policy: RetryPolicy, retry: int, **kw: Any) -> float | None:
    kw.setdefault("retry_after_ms", None)
    kw.setdefault("waited_s", 0.0)
    kw.setdefault("rand", 0.0)
    return policy.delay_s(retry, **kw)


def test_backoff_doubles_up_to_the_maximum() -> None:
    policy = RetryPolicy(base_backoff_s=0.5, max_backoff_s=8.0, max_total_wait_s=100)
    assert [delay(policy, n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_only_shortens_the_backoff() -> None:
    policy = RetryPolicy(base_backoff_s=1.0, jitter=0.25)
    assert delay(policy, 0, rand=0.0) == 1.0
    assert delay(policy, 0, rand=0.5) == 0.875
    assert delay(policy, 0, rand=0.999999) == pytest.approx(0.75)
    assert delay(RetryPolicy(base_backoff_s=1.0, jitter=0.0), 0, rand=0.9) == 1.0


def test_retry_after_wins_over_the_backoff_either_way() -> None:
    policy = RetryPolicy(base_backoff_s=0.5)
    assert delay(policy, 0, retry_after_ms=3000) == 3.0
    assert delay(policy, 3, retry_after_ms=100, rand=0.7) == 0.1
    assert delay(policy, 0, retry_after_ms=0) == 0.0


def test_the_total_wait_budget_caps_every_delay() -> None:
    policy = RetryPolicy(base_backoff_s=4.0, max_total_wait_s=30.0)
    assert delay(policy, 0, waited_s=28.0) == 2.0
    assert delay(policy, 0, retry_after_ms=60_000, waited_s=10.0) == 20.0
    assert delay(policy, 0, waited_s=30.0) is None
    assert delay(policy, 0, retry_after_ms=5000, waited_s=31.0) is None
    # A retry that costs no wait is never out of budget.
    assert delay(policy, 0, retry_after_ms=0, waited_s=30.0) == 0.0


def test_retries_default_to_the_provider_config() -> None:
    ref = ModelRef("openai", "m", ProviderConfig(kind="openai", max_retries=4))
    assert RetryPolicy().retries_for(ref) == 4
    assert RetryPolicy(retries=1).retries_for(ref) == 1
    assert RetryPolicy().retries_for(ModelRef("o", "m", ProviderConfig(kind="openai"))) == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"retries": -1},
        {"base_backoff_s": -0.1},
        {"max_total_wait_s": -1},
        {"jitter": 1.5},
        {"first_event_timeout_s": 0},
    ],
)
def test_policy_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**bad)
