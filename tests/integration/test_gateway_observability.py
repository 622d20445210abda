"""The gateway's observability end to end: its operations listener (/metrics parsed by
prometheus_client's own parser, /livez, /readyz), request metrics labelled by route template,
the gauge of open SSE streams and WebSockets, and the server span of each request continuing
the client's W3C traceparent into the run published on NATS."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
import redis.asyncio as aioredis
from clawbus_core import bus
from clawbus_fakes.models import Reply
from clawbus_protocol.names import Names
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.integration.test_http_000 import sse_frames
from tests.metrics_support import ops_listener, scrape
from tests.system import System, wait_for
from tests.tracing_support import memory_exporter

REQUESTS = "clawbus_http_requests_total"
ERRORS = "clawbus_http_errors_total"
DURATION_COUNT = "clawbus_http_request_duration_seconds_count"
CONNECTIONS = "clawbus_connections_active"


def auth(system: System, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.token}", **extra}


@pytest.fixture
async def ops_url(system: System) -> AsyncIterator[str]:
    """The gateway's operations listener (the gateway runs in this process)."""
    redis = aioredis.Redis.from_url(system.endpoints.redis_url)
    try:
        yield (await ops_listener(redis, system.namespace, "api-gateway", os.getpid())).url
    finally:
        await redis.aclose()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = memory_exporter()
    exporter.clear()
    return exporter


# --- the operations listener ------------------------------------------------------------------


async def test_livez_and_readyz_on_the_ops_listener(ops_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ops_url}/livez") as r:
            assert r.status == 200
            live = await r.json()
        async with http.get(f"{ops_url}/readyz") as r:
            assert r.status == 200
            ready = await r.json()
    assert live["status"] == "ok"
    assert live["service"] == "api-gateway"
    assert ready["status"] == "ready"
    assert ready["service"] == "api-gateway"
    assert ready["checks"] == {"nats": "ok", "postgres": "ok", "redis": "ok"}


# --- request metrics --------------------------------------------------------------------------


async def test_requests_are_counted_by_route_template_method_and_status(
    system: System, ops_url: str
) -> None:
    missing = f"missing-{system.namespace}"
    unknown = f"/no-such-{system.namespace}/path"
    before = await scrape(ops_url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{system.url}/v1/sessions", headers=auth(system)) as r:
            assert r.status == 200
        async with http.get(f"{system.url}/v1/sessions") as r:
            assert r.status == 401
        async with http.get(f"{system.url}/v1/sessions/{missing}", headers=auth(system)) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with http.get(f"{system.url}{unknown}", headers=auth(system)) as r:
            assert r.status == 404
        async with http.post(f"{system.url}/v1/sessions", headers=auth(system)) as r:
            assert r.status == 405
        async with http.get(f"{system.url}/v1/browser/status", headers=auth(system)) as r:
            assert r.status == 503  # no browser-worker in this deployment
    after = await scrape(ops_url)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    sessions, session = "/v1/sessions", "/v1/sessions/{session_key}"
    browser = "/v1/browser/status"
    assert delta(REQUESTS, route=sessions, method="GET", status="200") == 1
    assert delta(REQUESTS, route=sessions, method="GET", status="401") == 1
    assert delta(REQUESTS, route=session, method="GET", status="404") == 1
    assert delta(REQUESTS, route="unmatched", method="GET", status="404") == 1
    assert delta(REQUESTS, route="unmatched", method="POST", status="405") == 1
    assert delta(REQUESTS, route=browser, method="GET", status="503") == 1
    assert delta(DURATION_COUNT, route=sessions, method="GET") == 2
    assert delta(DURATION_COUNT, route=session, method="GET") == 1
    assert delta(DURATION_COUNT, route="unmatched", method="GET") == 1
    assert delta(ERRORS, route=sessions, code="unauthorized") == 1
    assert delta(ERRORS, route=session, code="not_found") == 1
    assert delta(ERRORS, route="unmatched", code="not_found") == 1
    assert delta(ERRORS, route="unmatched", code="method_not_allowed") == 1
    assert delta(ERRORS, route=browser, code="service_unavailable") == 1
    # A success is no error; and no label carries a raw path.
    error_routes = {
        s.labels["route"]
        for s in after.samples
        if s.name == ERRORS and s.value != before.value(ERRORS, **s.labels)
    }
    assert error_routes == {sessions, session, "unmatched", browser}
    assert not any(system.namespace in v for s in after.samples for v in s.labels.values())
    builds = [s for s in after.samples if s.name == "clawbus_build_info"]
    assert [s.value for s in builds if s.labels["service"] == "api-gateway"] == [1]


# --- open connections -------------------------------------------------------------------------


async def test_an_open_sse_stream_is_counted_until_it_ends(
    system: System, ops_url: str, spans: InMemorySpanExporter
) -> None:
    # The first chunk streams at once, the next only after a long pause: the stream stays
    # open until the test aborts the run.
    system.fake.script("gpt-held", Reply(chunks=["first", " second"], chunk_delay_s=120))
    before = (await scrape(ops_url)).value(CONNECTIONS, kind="sse")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{system.url}/v1/agent/run/stream",
            headers=auth(system),
            json={
                "message": "hold on",
                "sessionKey": f"held-{system.namespace}",
                "options": {"model": "openai/gpt-held"},
            },
        ) as r,
    ):
        assert r.status == 200
        run_id = r.headers["x-clawbus-run-id"]
        # A stream's headers name its request's span too (`spans`: the SDK records spans).
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", r.headers["traceresponse"])
        frames = sse_frames(r)
        first = await anext(frames)
        assert first.event == "delta"
        assert first.json()["delta"] == "first"
        assert (await scrape(ops_url)).value(CONNECTIONS, kind="sse") == before + 1
        async with http.post(f"{system.url}/v1/runs/{run_id}/abort", headers=auth(system)) as a:
            assert a.status == 200
            assert (await a.json())["aborted"] is True
        rest = [frame async for frame in frames]
    assert rest and rest[-1].event == "done"
    assert rest[-1].json()["finishReason"] == "aborted"

    async def closed() -> bool:
        return (await scrape(ops_url)).value(CONNECTIONS, kind="sse") == before

    await wait_for(closed)


async def test_an_open_websocket_is_counted_until_it_closes(system: System, ops_url: str) -> None:
    before = (await scrape(ops_url)).value(CONNECTIONS, kind="ws")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws{system.url.removeprefix('http')}/ws", headers=auth(system)) as ws,
    ):
        connected = json.loads((await ws.receive()).data)
        assert connected["type"] == "connected"
        assert (await scrape(ops_url)).value(CONNECTIONS, kind="ws") == before + 1

    async def closed() -> bool:
        return (await scrape(ops_url)).value(CONNECTIONS, kind="ws") == before

    await wait_for(closed)


# --- traces -----------------------------------------------------------------------------------


def _traceparent() -> tuple[str, str, str]:
    """A client's traceparent, with its trace id and span id (hex)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _server_spans(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.SERVER and format(span.context.trace_id, "032x") == trace_id
    ]


async def test_a_request_continues_the_clients_trace_into_the_published_run(
    system: System, spans: InMemorySpanExporter
) -> None:
    traceparent, trace_id, client_span = _traceparent()
    nc = await nats.connect(system.endpoints.nats_url)
    try:
        published = await nc.subscribe(Names(system.namespace).runs_subject)
        await bus.settle(nc)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{system.url}/v1/agent/run",
                headers=auth(system, traceparent=traceparent),
                json={"message": "trace me", "sessionKey": f"traced-{system.namespace}"},
            ) as r,
        ):
            assert r.status == 200
            traceresponse = r.headers["traceresponse"]
        message = await published.next_msg(timeout=15)
    finally:
        await nc.close()

    [span] = _server_spans(spans, trace_id)
    assert span.name == "POST /v1/agent/run"
    assert span.parent is not None and format(span.parent.span_id, "016x") == client_span
    # The answer names the request's server span (W3C traceresponse).
    assert traceresponse == f"00-{trace_id}-{format(span.context.span_id, '016x')}-01"
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/agent/run",
        "url.path": "/v1/agent/run",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    # The run went out on the bus inside the request's span: the runner continues the trace.
    assert message.headers is not None
    version, sent_trace, sent_parent, _ = message.headers["traceparent"].split("-")
    assert (version, sent_trace) == ("00", trace_id)
    ours = {
        format(s.context.span_id, "016x")
        for s in spans.get_finished_spans()
        if format(s.context.trace_id, "032x") == trace_id
    }
    assert sent_parent in ours


async def test_spans_name_the_template_never_the_query_and_mark_5xx(
    system: System, spans: InMemorySpanExporter
) -> None:
    # A WebSocket upgrade may carry the credential as ?token=: the span must not.
    ws_parent, ws_trace, _ = _traceparent()
    missing_parent, missing_trace, _ = _traceparent()
    failing_parent, failing_trace, _ = _traceparent()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"ws{system.url.removeprefix('http')}/ws?token={system.token}",
            headers={"traceparent": ws_parent},
        ) as ws:
            assert json.loads((await ws.receive()).data)["type"] == "connected"
        async with http.get(
            f"{system.url}/v1/sessions/nobody-{system.namespace}?limit=5",
            headers=auth(system, traceparent=missing_parent),
        ) as r:
            assert r.status == 404
        async with http.get(
            f"{system.url}/v1/browser/status", headers=auth(system, traceparent=failing_parent)
        ) as r:
            assert r.status == 503

    [ws_span] = await wait_for(lambda: _server_spans(spans, ws_trace))  # ends once closed
    assert ws_span.name == "GET /ws"
    ws_attributes = dict(ws_span.attributes or {})
    assert ws_attributes["url.path"] == "/ws"
    assert ws_attributes["http.route"] == "/ws"
    assert ws_attributes["http.response.status_code"] == 101
    assert not any(system.token in str(value) for value in ws_attributes.values())

    [missing] = _server_spans(spans, missing_trace)
    assert missing.name == "GET /v1/sessions/{session_key}"
    attributes = dict(missing.attributes or {})
    assert attributes["url.path"] == f"/v1/sessions/nobody-{system.namespace}"
    assert attributes["http.response.status_code"] == 404
    assert not any("limit" in str(value) for value in attributes.values())
    assert missing.status.status_code is StatusCode.UNSET  # a 4xx is the client's error

    [failing] = _server_spans(spans, failing_trace)
    assert failing.name == "GET /v1/browser/status"
    assert dict(failing.attributes or {})["http.response.status_code"] == 503
    assert failing.status.status_code is StatusCode.ERROR
