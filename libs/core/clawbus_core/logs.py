"""Logging set-up shared by every service: one line per record, secrets redacted, recent records
of every replica in one Redis stream.

Formats (`log_format`): `json`, one object per line (clawbus_protocol.logs.LogEntry: time,
level, service, instance, logger, msg, the context ids when set, exc); `text`, one readable
line (`<time> <service> <LEVEL> <logger>: <msg> trace=<id> run=<id>`), for a terminal.

Context fields: code that works for a run wraps it in `log_context(run_id=..., session_key=...)`;
every record logged inside carries those fields (`record.run_id`, `record.session_key`), and
the current trace's ids (`record.trace_id`, `record.span_id`) when a span is on.

Redaction: `REDACT`, one `RedactSecrets` filter on every handler set up here, rewrites each
record before any formatter sees it: its message (with its args applied), traceback and stack.
It removes bearer tokens, API keys (goclaw_..., sk-..., sk-ant-...), Telegram bot tokens,
`token=`/`password=`/`secret=`/`key=`/`api_key=` values, Authorization and X-OpenClaw-Password
header values, passwords in URLs, and the literal values `register_secrets` was given (the
process's own token, password and keys).

Recent logs: `async with RedisLogSink(redis, names, service=..., instance=...)` copies INFO and
above to the capped stream `names.logs_stream_key` (what /api/logs/recent reads and
/api/logs/live tails) while the block runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Literal

import redis.asyncio as aioredis
from clawbus_protocol.logs import LogEntry
from clawbus_protocol.names import Names
from pydantic import BaseModel, SecretStr

from clawbus_core import metrics, tracing

LogFormat = Literal["json", "text"]

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


# --- redaction --------------------------------------------------------------------------------

REDACTED = "<redacted>"
# Shorter literal secrets are not registered: they would redact ordinary words.
MIN_SECRET_CHARS = 8

_SENSITIVE_KEYS = (
    r"api[_-]?key|access[_-]?token|refresh[_-]?token|client[_-]?secret|secret[_-]?key"
    r"|token|password|passwd|secret|key"
)
# Each rule: (what is kept, the secret that follows it). Only non-capturing groups inside:
# `_compile` numbers the rules by their own groups.
_RULES: tuple[tuple[str, str], ...] = (
    # Header values, as text (`Authorization: Bearer x`) or in a dict's repr ('...': '...').
    (
        r"(?i:\b(?:proxy-)?authorization|\bx-openclaw-password|\bx-api-key)['\"]?\s*[:=]\s*['\"]?"
        r"(?i:(?:bearer|basic|token)\s+)?",
        r"[^\s'\",;}]+",
    ),
    (r"\b[Bb]earer\s+", r"[A-Za-z0-9._~+/=-]{8,}"),
    # key=value, in query strings and text; "key": "value" in JSON and reprs.
    (rf"(?<![\w-])(?i:{_SENSITIVE_KEYS})=", r"[^\s&'\",;]+"),
    (rf"['\"](?i:{_SENSITIVE_KEYS})['\"]\s*:\s*['\"]", r"[^'\"]+"),
    # scheme://user:password@host
    (r"(?i:\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)", r"[^\s@/]+(?=@)"),
    # Telegram bot tokens, in every Bot API URL: …/bot<id>:<secret>/method
    (r"\bbot", r"\d+:[A-Za-z0-9_-]+"),
    # API keys: GoClaw's, OpenAI's (sk-..., sk-proj-...), Anthropic's (sk-ant-...).
    ("", r"\bgoclaw_[0-9a-f]{32}\b"),
    ("", r"\bsk-[A-Za-z0-9_-]{8,}"),
)

# Text that any rule matches holds one of these (lowercased): most records hold none and skip
# the alternation, which Python's re tries at every position.
_TRIGGERS = (
    "authorization",
    "password",
    "passwd",
    "bearer",
    "token",
    "secret",
    "key",
    "://",
    "bot",
    "goclaw_",
    "sk-",
)


class _Redactor:
    """One compiled alternation of every rule plus the registered secrets."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._pattern = self._compile()

    def _compile(self) -> re.Pattern[str]:
        parts = [f"(?P<r{i}>(?P<k{i}>{keep}){secret})" for i, (keep, secret) in enumerate(_RULES)]
        if self._secrets:
            literals = sorted(self._secrets, key=len, reverse=True)  # longest wins
            parts.append(f"(?P<lit>{'|'.join(re.escape(s) for s in literals)})")
        return re.compile("|".join(parts))

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            wanted = self._secrets | {v for v in values if len(v) >= MIN_SECRET_CHARS}
            if wanted != self._secrets:
                self._secrets = frozenset(wanted)
                self._pattern = self._compile()  # one assignment: readers see old or new

    @staticmethod
    def _replace(match: re.Match[str]) -> str:
        rule = match.lastgroup  # the outermost group of the rule that matched
        if rule is None or rule == "lit":
            return REDACTED
        return match.group(f"k{rule[1:]}") + REDACTED

    def __call__(self, text: str) -> str:
        lowered = text.lower()
        if any(t in lowered for t in _TRIGGERS) or any(s in text for s in self._secrets):
            return self._pattern.sub(self._replace, text)
        return text


_redactor = _Redactor()


def redact(text: str) -> str:
    """`text` with every secret the rules know, and every registered one, replaced."""
    return _redactor(text)


def register_secrets(*values: str | SecretStr | None) -> None:
    """Redact these literal values wherever they appear (None and short values are skipped)."""
    _redactor.add(
        v.get_secret_value() if isinstance(v, SecretStr) else v for v in values if v is not None
    )


def secret_values(settings: BaseModel) -> list[SecretStr]:
    """Every SecretStr in `settings`, nested models, lists and dicts included: what a
    service's main() passes to `register_secrets`."""
    found: list[SecretStr] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return found


_TRACEBACKS = logging.Formatter()


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback and stack with the secrets redacted. Installed
    on every handler (a filter on a logger would miss what its children propagate); the
    first handler does the work, the others see the record marked done."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "clawbus_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad args must not break the caller's log call
            message = f"{record.msg!s} (unformattable log arguments: {record.args!r})"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.clawbus_redacted = True
        return True


# The one redaction filter of the process.
REDACT = RedactSecrets()


# --- formats ----------------------------------------------------------------------------------


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def log_entry(record: logging.LogRecord, service: str, instance: str) -> LogEntry:
    """The record as the JSON format and the recent-logs stream carry it."""
    exc = record.exc_text
    if record.exc_info and not exc:  # a record that skipped REDACT: still never a secret
        exc = redact(_TRACEBACKS.formatException(record.exc_info))
    return LogEntry(
        time=_rfc3339(record.created),
        level=record.levelname,
        service=service,
        instance=instance,
        logger=record.name,
        msg=record.getMessage(),
        run_id=getattr(record, "run_id", None),
        session_key=getattr(record, "session_key", None),
        agent=getattr(record, "agent", None),
        channel=getattr(record, "channel", None),
        trace_id=getattr(record, "trace_id", None),
        span_id=getattr(record, "span_id", None),
        exc=exc or None,
        stack=record.stack_info or None,
    )


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        return log_entry(record, self.service, self.instance).model_dump_json(exclude_none=True)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        trace_id = getattr(record, "trace_id", None)
        run_id = getattr(record, "run_id", None)
        if trace_id:
            line += f" trace={trace_id}"
        if run_id:
            line += f" run={run_id}"
        return line


# Client libraries log every request at INFO; their URLs may carry secrets.
_NOISY = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic", "aiohttp.access")


def setup_logging(
    service: str,
    level: str = "INFO",
    *,
    fmt: LogFormat | None = None,
    instance: str | None = None,
) -> None:
    """Log to stderr in `fmt` (default json), every record through ContextFilter and REDACT."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(REDACT)
    if fmt == "text":
        handler.setFormatter(TextFormatter(service))
    else:
        handler.setFormatter(JsonFormatter(service, instance or socket.gethostname()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- recent logs in Redis ---------------------------------------------------------------------

# Records waiting for Redis; past this the oldest are dropped (and counted).
SINK_CAPACITY = 10_000
SINK_BATCH = 200
STREAM_MAXLEN = 5_000  # approximate (MAXLEN ~): Redis trims whole nodes
# After a failed write, before the next one: a Redis outage must not become a busy loop.
SINK_RETRY_S = 1.0
# How long leaving the block waits for the last records to reach Redis.
SINK_FLUSH_S = 2.0


def _not_from_sink(record: logging.LogRecord) -> bool:
    # Writing a record to Redis must never produce a record to write.
    name = record.name
    return not (name in (__name__, "redis") or name.startswith("redis."))


class _SinkHandler(logging.Handler):
    """Queues each record's entry (JSON) for the sink's drainer; never blocks, never raises."""

    def __init__(self, sink: RedisLogSink, level: int) -> None:
        super().__init__(level)
        self.sink = sink
        self.addFilter(_not_from_sink)
        self.addFilter(ContextFilter())
        self.addFilter(REDACT)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = log_entry(record, self.sink.service, self.sink.instance)
            self.sink.put(entry.model_dump_json(exclude_none=True))
        except Exception:  # noqa: BLE001 - logging must not fail the caller
            self.sink.count_dropped("error")


class RedisLogSink:
    """`async with RedisLogSink(redis, names, service=..., instance=...)`: while the block runs,
    this process's records of `level` and above go to `names.logs_stream_key` (XADD MAXLEN ~
    STREAM_MAXLEN, in pipelined batches), from a bounded queue that drops its oldest when
    Redis cannot keep up."""

    def __init__(
        self,
        redis: aioredis.Redis,
        names: Names,
        *,
        service: str,
        instance: str,
        level: int = logging.INFO,
        capacity: int = SINK_CAPACITY,
    ) -> None:
        self.redis = redis
        self.key = names.logs_stream_key
        self.service = service
        self.instance = instance
        self.dropped = 0
        self._queue: deque[str] = deque(maxlen=capacity)
        self._handler = _SinkHandler(self, level)
        self._wake = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisLogSink:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._drain(), name=f"log-sink-{self.service}")
        logging.getLogger().addHandler(self._handler)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        logging.getLogger().removeHandler(self._handler)
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):  # wait_for cancelled the drainer
                await asyncio.wait_for(self._task, timeout=SINK_FLUSH_S)
        if self._queue:
            self.count_dropped("closed", len(self._queue))
            self._queue.clear()

    def count_dropped(self, reason: str, count: int = 1) -> None:
        self.dropped += count
        metrics.LOG_RECORDS_DROPPED.labels(reason).inc(count)

    def put(self, entry: str) -> None:
        """From any thread: queue `entry` and wake the drainer."""
        if len(self._queue) == self._queue.maxlen:
            self.count_dropped("overflow")
        self._queue.append(entry)  # deque: atomic, drops the oldest when full
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(SINK_BATCH, len(self._queue)))]
                try:
                    await self._write(batch)
                except Exception:  # noqa: BLE001 - a broken sink must not stop the service
                    self.count_dropped("redis", len(batch))
                    if self._closing:
                        return
                    await asyncio.sleep(SINK_RETRY_S)
            if self._closing:
                return

    async def _write(self, batch: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in batch:
                pipe.xadd(self.key, {"entry": entry}, maxlen=STREAM_MAXLEN, approximate=True)
            await pipe.execute()
