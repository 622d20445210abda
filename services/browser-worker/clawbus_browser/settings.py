"""browser-worker settings (env prefix CLAWBUS_).

The network policy is not here: pages reach what `ClawbusSettings.net_allow` opens, the same
allow-list `web_fetch` uses, so a deployment names its internal hosts once.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from clawbus_protocol.settings import ClawbusSettings
from pydantic import Field, field_validator

# A worker id becomes a NATS subject token (its direct subject) and part of Redis values.
_WORKER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _default_worker_id() -> str:
    # Unique per process: a restarted worker must not answer for its predecessor's pages.
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class BrowserSettings(ClawbusSettings):
    browser_worker_id: str = Field(default_factory=_default_worker_id)
    # The system Chromium (Debian's `chromium` package; `make run` installs it).
    browser_chromium_path: Path = Path("/usr/bin/chromium")
    # Extra Chromium switches, e.g. ["--disable-gpu"].
    browser_args: list[str] = Field(default_factory=list)
    # Chromium's sandbox: unset means on, except as root (where Chromium refuses it).
    browser_sandbox: bool | None = None
    # Browser contexts (one per session, or per named profile) one worker keeps open; a new
    # one evicts the least recently used idle context, and is refused (503) if none is idle.
    browser_max_contexts: int = Field(default=16, ge=1, le=1000)
    # A context unused this long is closed (a profile's cookies and storage saved first).
    browser_idle_s: float = Field(default=600.0, gt=0)
    # Every operation finishes within this (a navigation within its own `timeout_ms`, when
    # given): callers wait longer (clawbus_core.browser_client waits 90 s).
    browser_op_timeout_s: float = Field(default=30.0, gt=0, le=120)
    # Operations running at once in this worker (one at a time per page, whatever this says)
    # and requests accepted while they wait; past that a request is refused with 503.
    browser_concurrency: int = Field(default=8, ge=1, le=256)
    browser_max_pending: int = Field(default=64, ge=1, le=10_000)
    # Caps on what a page hands back.
    browser_max_text_chars: int = Field(default=100_000, ge=1000, le=200_000)
    browser_max_screenshot_bytes: int = Field(default=10 * 2**20, ge=1024, le=20 * 2**20)
    browser_max_profile_bytes: int = Field(default=5 * 2**20, ge=1024)
    browser_viewport_width: int = Field(default=1280, ge=200, le=4096)
    browser_viewport_height: int = Field(default=800, ge=200, le=4096)

    @field_validator("browser_worker_id")
    @classmethod
    def _valid_worker_id(cls, value: str) -> str:
        if not _WORKER_ID.match(value):
            raise ValueError(f"browser_worker_id {value!r} must match {_WORKER_ID.pattern}")
        return value
