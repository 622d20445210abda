"""A fake OpenTelemetry collector: OTLP/HTTP with protobuf bodies, as the real exporter sends.

It accepts `POST /v1/traces` (ExportTraceServiceRequest, optionally gzip-encoded), answers
with an ExportTraceServiceResponse, and keeps every span it received with the resource's
`service.name`, so a test can follow one trace across the processes that exported it.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from clawbus_fakes._serve import Served, http_url, serve

_PROTOBUF = "application/x-protobuf"
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    kind: int
    attributes: dict[str, str]


class FakeCollector(Served):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.received = asyncio.Event()  # set on every export
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/traces", self._traces)
        self._runner, self.port = await serve(app, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != _PROTOBUF:
            return web.Response(status=415, text=f"expected {_PROTOBUF}")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        try:
            export.ParseFromString(body)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError, a bad body is a 400
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = resource.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={
                                a.key: a.value.string_value or str(a.value.int_value)
                                for a in span.attributes
                            },
                        )
                    )
        self.requests += 1
        self.received.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type=_PROTOBUF
        )
