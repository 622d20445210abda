"""What the gateway tells operators about its HTTP edge: a span and metrics for every request,
and a gauge of the streams it holds open.

`observe_middleware` is the outermost middleware, so it sees the answer the client gets:
errors rendered by error_middleware, auth's 401s and the rate limiter's 429s included.
For every request it

- runs the handler inside an OpenTelemetry SERVER span named `<METHOD> <route template>`,
  continuing the client's W3C `traceparent` if it sent one. The span is current while the
  handler runs, so a run published from it carries its traceparent to the runner (see
  RunService._publish) and the gateway's log records carry its trace id;
- counts it in `clawbus_http_requests_total{route, method, status}` and times it in
  `clawbus_http_request_duration_seconds{route, method}` (a stream: until its handler
  returns); an error answer also counts in `clawbus_http_errors_total{route, code}`.

The route label is the matched route's template (`/v1/sessions/{session_key}`), or
`unmatched` when no route matched the path and method (aiohttp's 404 and 405): never the raw
path, which would make a series per id. Methods outside HTTP's standard set are `_OTHER`. The
error code is the one error_middleware rendered (`unknown` for an error answer it did not
render). The span records the path without its query string, which may carry a credential
(`?token=`).

A handler cancelled before it answered (the gateway shutting down) sent nothing and is not
counted. Every other failure reaches this middleware as error_middleware's answer.

`connection(kind)` holds `clawbus_connections_active{kind}` one higher while a WebSocket or
an SSE stream is open, whichever way it ends.

Every answer carries `traceresponse: 00-<trace id>-<span id>-<flags>` (W3C Trace Context
Level 2): the request's server span, so a client can find its request's trace (streams and
errors included: `stamp_traceresponse` is an `on_response_prepare` hook).
"""

from __future__ import annotations

import time
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from clawbus_core import metrics, tracing
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client.context_managers import InprogressTracker

from clawbus_gateway.errors import ERROR_CODE

UNMATCHED = "unmatched"
OTHER_METHOD = "_OTHER"
# HTTP's standard methods (RFC 9110 and PATCH); any other keeps one label value.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
_TRACE_HEADERS = ("traceparent", "tracestate")
TRACERESPONSE = "traceresponse"
_TRACERESPONSE: web.RequestKey[str] = web.RequestKey("traceresponse", str)

ConnectionKind = Literal["ws", "sse"]

for _kind in ("ws", "sse"):  # the series exist, at 0, before the first stream opens
    metrics.CONNECTIONS_ACTIVE.labels(kind=_kind)


def connection(kind: ConnectionKind) -> InprogressTracker:
    """`with connection("sse"):` around the time a long-lived connection is open."""
    return metrics.CONNECTIONS_ACTIVE.labels(kind=kind).track_inprogress()


def route_template(request: web.Request) -> str | None:
    """The matched route's template; None when no route matched the request."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def _incoming_context(request: web.Request) -> Context:
    # The propagator looks names up as given: hand it lower-case ones whatever the client sent.
    headers = {name: request.headers[name] for name in _TRACE_HEADERS if name in request.headers}
    return tracing.extract_context(headers)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    template = route_template(request)
    route = template or UNMATCHED
    method = request.method if request.method in _METHODS else OTHER_METHOD
    attributes: dict[str, str] = {"http.request.method": method, "url.path": request.path}
    if template is not None:
        attributes["http.route"] = template
    started = time.perf_counter()
    with tracing.tracer().start_as_current_span(
        f"{method} {template}" if template is not None else method,
        context=_incoming_context(request),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        context = span.get_span_context()
        if context.is_valid:
            request[_TRACERESPONSE] = (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects: error_middleware renders every error
            _answered(span, route, method, status=exc.status, code=None, started=started)
            raise
        code = response.get(ERROR_CODE)
        _answered(span, route, method, status=response.status, code=code, started=started)
        return response


def _answered(
    span: Span, route: str, method: str, *, status: int, code: str | None, started: float
) -> None:
    metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    metrics.HTTP_DURATION.labels(route=route, method=method).observe(time.perf_counter() - started)
    if status >= 400:
        metrics.HTTP_ERRORS.labels(route=route, code=code or "unknown").inc()
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR, code)


async def stamp_traceresponse(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the request's server span, for the client to find its trace."""
    value = request.get(_TRACERESPONSE)
    if value is not None:
        response.headers[TRACERESPONSE] = value
