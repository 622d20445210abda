"""Spans a test can read: an in-memory exporter on the process's tracer provider.

The provider is process-wide and installed once (clawbus_core.tracing.setup_tracing), so the
exporter is too: `memory_exporter()` installs it on first use and returns the same one after.
A test calls `.clear()` on it before acting, then reads `.get_finished_spans()`.
"""

from __future__ import annotations

import functools

from clawbus_core.tracing import setup_tracing
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@functools.cache
def memory_exporter() -> InMemorySpanExporter:
    """The process's in-memory span exporter (installed on the first call)."""
    exporter = InMemorySpanExporter()
    setup_tracing("clawbus-tests", processor=SimpleSpanProcessor(exporter))
    return exporter
