"""OpenTelemetry traces: one trace from the HTTP request through the bus into the runner.

Every service calls `setup_tracing(service)` once at start. Spans are always recorded (so
trace ids reach the logs); they leave the process only when an exporter is configured: OTLP
over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
set, with the SDK's usual `OTEL_*` variables, or the exporter a test passes in.

Across the bus the context travels as W3C `traceparent` / `tracestate` headers on the NATS
message (`inject_headers` when publishing, `extract_context` when consuming).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

TRACER_NAME = "clawbus"

_OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def setup_tracing(
    service: str, *, instance: str | None = None, processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install the process's tracer provider (once; later calls only add `processor`).

    `processor` is for tests (a SimpleSpanProcessor over an InMemorySpanExporter)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current
    attributes: dict[str, str] = {SERVICE_NAME: service}
    if instance:
        attributes[SERVICE_INSTANCE_ID] = instance
    provider = TracerProvider(resource=Resource.create(attributes))
    exporter = _otlp_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2048))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def _otlp_exporter() -> SpanExporter | None:
    if not any(os.environ.get(name) for name in _OTLP_VARIABLES):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout from the OTEL_* variables


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's `traceparent` (and `tracestate`) to NATS headers; returns them."""
    inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a message's headers carry (an empty context if none)."""
    return extract(dict(headers or {}))


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id as hex (what logs carry), if a span is on."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
