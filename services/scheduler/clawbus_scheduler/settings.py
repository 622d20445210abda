"""scheduler settings (env prefix CLAWBUS_)."""

from __future__ import annotations

import os
import socket

from clawbus_protocol.settings import ClawbusSettings
from pydantic import Field


class SchedulerSettings(ClawbusSettings):
    scheduler_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # The leader looks for due jobs and ended runs at least this often (sooner when a job is
    # due sooner, or when `cron.changed` says a job was edited).
    scheduler_tick_s: float = Field(default=1.0, gt=0, le=60)
    # A standby tries to become the leader this often: at most this long after a leader
    # dies, another one fires its jobs.
    scheduler_standby_retry_s: float = Field(default=2.0, gt=0, le=60)
    # A due time seen later than this was missed (the scheduler was down): a job with the
    # `skip` policy does not fire it.
    scheduler_misfire_grace_s: float = Field(default=60.0, ge=0)
    # Firings recorded, started and finished per step of the leader's loop.
    scheduler_batch: int = Field(default=100, ge=1, le=1000)
    # A webhook delivery's whole request, and the answer's size read back.
    scheduler_webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
