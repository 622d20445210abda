"""Log records as they leave a process: one JSON object per line on stderr (`log_format=json`),
the entries of the recent-logs Redis stream, and what 003's /api/logs/recent and
/api/logs/live answer.

An entry's message, traceback and stack are redacted before the entry is made (see
clawbus_core.logs); the ids say which run, session and trace the record belongs to.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class LogEntry(BaseModel):
    # RFC 3339, UTC, milliseconds: 2026-05-10T00:00:00.000Z
    time: str
    level: str
    service: str | None = None
    instance: str | None = None
    logger: str | None = None
    msg: str
    run_id: str | None = None
    session_key: str | None = None
    agent: str | None = None
    channel: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    exc: str | None = None  # the formatted traceback
    stack: str | None = None  # the stack, when the call asked for stack_info


class LogList(BaseModel):
    """GET /api/logs/recent (003): the latest entries of every service, newest last."""

    ok: Literal[True] = True
    logs: list[LogEntry]


class LogEntryFrame(BaseModel):
    """GET /api/logs/live (003): one frame per new entry."""

    ok: Literal[True] = True
    type: Literal["log_entry"] = "log_entry"
    entry: LogEntry


class LogErrorFrame(BaseModel):
    """GET /api/logs/live (003): the tail broke after the upgrade; the socket closes next."""

    ok: Literal[False] = False
    error: str
