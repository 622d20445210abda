"""The browser-worker's /metrics and its spans: a real `clawbus browser-worker` process with the
system Chromium, a page on loopback, calls through the one client (clawbus_core.browser_client)
from inside a span of this test, so the worker's `browser <op>` spans continue that trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from clawbus_core.config import Endpoints
from clawbus_fakes.otlp import FakeCollector, ReceivedSpan
from clawbus_protocol.browser import (
    BrowserReply,
    CloseCall,
    NavigateCall,
    PageInfo,
    ScreenshotCall,
    ScreenshotResult,
    StatusResult,
)
from clawbus_protocol.errors import ErrorCode
from clawbus_protocol.names import Names
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace import TracerProvider

from tests.integration.test_browser_worker import BOX, Caller, Site, html, serve, target
from tests.metrics_support import Scrape, ops_listener, readyz, scrape
from tests.system import processes, wait_for

OPERATIONS = "clawbus_browser_operations_total"
CONTEXTS = "clawbus_browser_contexts"
SERVER = 2  # span kind in the OTLP protobuf


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async def box(_: web.Request) -> web.Response:
        return html(BOX, "Box")

    async with serve({"/box": box}) as found:
        yield found


@pytest.fixture
async def nc(endpoints: Endpoints) -> AsyncIterator[NatsClient]:
    client = await nats.connect(endpoints.nats_url)
    try:
        yield client
    finally:
        await client.close()


def ops(scraped: Scrape, op: str, outcome: str) -> float:
    return scraped.value(OPERATIONS, op=op, outcome=outcome)


async def test_browser_metrics_move_with_calls_and_spans_continue_the_callers_trace(
    endpoints: Endpoints, namespace: str, nc: NatsClient, site: Site, tmp_path: Path
) -> None:
    caller = Caller(nc, Names(namespace))
    # The caller's own tracer (not the process-wide one): its span is what the client sends.
    tracer = TracerProvider().get_tracer("browser-metrics-test")
    redis = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        async with FakeCollector() as collector:
            env = {
                "CLAWBUS_NATS_URL": endpoints.nats_url,
                "CLAWBUS_DATABASE_URL": endpoints.database_url,
                "CLAWBUS_REDIS_URL": endpoints.redis_url,
                "CLAWBUS_NAMESPACE": namespace,
                "CLAWBUS_DATA_DIR": str(tmp_path),
                "CLAWBUS_NET_ALLOW": '["127.0.0.1"]',
                "CLAWBUS_BROWSER_WORKER_ID": "metered",
                "CLAWBUS_BROWSER_MAX_CONTEXTS": "3",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
            }
            with processes() as spawn:
                worker = spawn("browser-worker", ["browser-worker"], env, tmp_path / "worker.log")
                listener = await ops_listener(redis, namespace, "browser-worker", worker.pid)
                assert await readyz(listener.url) == 200
                start = await scrape(listener.url)
                assert start.value("clawbus_browser_contexts_max") == 3
                assert start.value("clawbus_browser_launches_total") == 1  # Chromium at start
                assert start.value(CONTEXTS) == 0

                t = target()
                with tracer.start_as_current_span("caller") as span:
                    page = await caller(NavigateCall(target=t, url=site.url("/box")), PageInfo)
                    assert page.title == "Box"
                    shot = await caller(ScreenshotCall(target=t, selector="#box"), ScreenshotResult)
                    assert (shot.width, shot.height) == (40, 30)
                context = span.get_span_context()
                after = await scrape(listener.url)
                assert ops(after, "navigate", "ok") == ops(start, "navigate", "ok") + 1
                assert ops(after, "screenshot", "ok") == ops(start, "screenshot", "ok") + 1
                assert after.value(CONTEXTS) == 1

                # Errors count under their code; a call that cannot be read, under `unknown`.
                refused = await caller.error(
                    NavigateCall(target=t, url="http://169.254.169.254/latest/")
                )
                assert refused.info.code == ErrorCode.FORBIDDEN
                answer = await nc.request(Names(namespace).browser_subject, b"{}", timeout=30)
                bad = BrowserReply.model_validate_json(answer.data).error
                assert bad is not None and bad.code == ErrorCode.INVALID_REQUEST
                closed = await caller(CloseCall(target=t), StatusResult)
                assert closed.contexts == 0
                end = await scrape(listener.url)
                assert ops(end, "navigate", "forbidden") == ops(after, "navigate", "forbidden") + 1
                assert ops(end, "unknown", "invalid_request") == (
                    ops(after, "unknown", "invalid_request") + 1
                )
                assert ops(end, "close", "ok") == ops(after, "close", "ok") + 1
                assert ops(end, "navigate", "ok") == ops(after, "navigate", "ok")
                assert end.value(CONTEXTS) == 0
                assert end.value("clawbus_browser_launches_total") == 1
                assert end.label_values(OPERATIONS, "op") == {
                    "navigate",
                    "screenshot",
                    "close",
                    "unknown",
                }

                # The worker's spans are children of the caller's span, in its trace.
                trace_id = format(context.trace_id, "032x")

                def worker_spans() -> list[ReceivedSpan] | None:
                    spans = [s for s in collector.trace(trace_id) if s.service == "browser-worker"]
                    return spans if len(spans) >= 2 else None

                spans = await wait_for(worker_spans, timeout_s=20)
                assert sorted(s.name for s in spans) == ["browser navigate", "browser screenshot"]
                assert {s.parent_span_id for s in spans} == {format(context.span_id, "016x")}
                assert {s.kind for s in spans} == {SERVER}
                assert worker.stop() == 0, (tmp_path / "worker.log").read_text()
    finally:
        await redis.aclose()


pytestmark = pytest.mark.timeout(150)
