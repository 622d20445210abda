"""Logging set-up shared by every service (one line per record, service name first).

Context fields: code that works for a run wraps it in `log_context(run_id=..., session_key=...)`;
every record logged inside carries those fields (`record.run_id`, `record.session_key`), and
the current trace's ids (`record.trace_id`, `record.span_id`) when a span is on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from clawbus_core import tracing

# The fields `log_context` may set; records carry each (None when unset).
CONTEXT_FIELDS = ("run_id", "session_key", "agent", "channel")

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "clawbus_log_context", default=MappingProxyType({})
)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Records logged inside the block (in this task and tasks it starts) carry `fields`."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields {sorted(unknown)}; known: {CONTEXT_FIELDS}")
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Stamp every record with the context fields and the current trace and span ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in CONTEXT_FIELDS:
            setattr(record, name, context.get(name))
        ids = tracing.current_ids()
        record.trace_id, record.span_id = ids if ids else (None, None)
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log every request at INFO; their URLs may carry secrets.
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "openai",
        "anthropic",
        "aiohttp.access",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
