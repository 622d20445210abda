"""agent-runner settings (env prefix CLAWBUS_)."""

from __future__ import annotations

import os
import socket

from clawbus_protocol.settings import ClawbusSettings
from pydantic import Field


class RunnerSettings(ClawbusSettings):
    runner_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Runs this replica executes at once; more replicas scale further.
    runner_concurrency: int = Field(default=64, ge=1, le=4096)
    # JetStream redelivers a run whose runner stopped acking for this long (crash recovery).
    runner_ack_wait_s: float = Field(default=30.0, ge=1.0)
    runner_max_deliver: int = Field(default=5, ge=1)
    # Messages of a session's history sent to the model (oldest dropped first).
    runner_history_limit: int = Field(default=200, ge=1)
    # Time a stopping runner gives its in-flight runs before handing them back to the queue.
    runner_drain_s: float = Field(default=20.0, ge=0)
    runner_run_timeout_s: float = Field(default=600.0, gt=0)
    runner_db_pool_size: int = Field(default=20, ge=2)
