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
    # How long an idle slot's pull request waits for a run before asking again; a stopping
    # runner waits this long at most for its idle slots.
    runner_fetch_wait_s: float = Field(default=2.0, gt=0, le=30)
    # JetStream deliveries per message: unlimited, since a run waiting for its busy session
    # is handed back until its turn; runaway retries are capped by attempts instead.
    runner_max_deliver: int = Field(default=-1, ge=-1)
    # Claims of one run (crashes, lost leases) before it is failed for good.
    runner_max_attempts: int = Field(default=5, ge=1)
    # Messages of a session's history sent to the model (oldest dropped first).
    runner_history_limit: int = Field(default=200, ge=1)
    # Time a stopping runner gives its in-flight runs before handing them back to the queue.
    runner_drain_s: float = Field(default=20.0, ge=0)
    runner_run_timeout_s: float = Field(default=600.0, gt=0)
    runner_db_pool_size: int = Field(default=20, ge=2)
    # A session's lane lease: renewed every third of it while its holder runs; a dead
    # holder's lease expires after this and the session's next run proceeds.
    runner_lease_s: float = Field(default=10.0, ge=1.0)
    # Runs parked (waiting for their busy session) per replica; beyond it they are requeued.
    runner_max_parked: int = Field(default=1024, ge=1)
    # Tool loop: model steps that call tools, per run; same call repeated = a loop.
    runner_max_tool_steps: int = Field(default=24, ge=1)
    runner_tool_loop_repeats: int = Field(default=3, ge=2)
    runner_tool_timeout_s: float = Field(default=120.0, gt=0)
    # Tools a client may invoke directly over HTTP (001's /api/tools/:name/invoke) beyond
    # the read-only ones: e.g. ["write", "web_fetch"]. Deny by default.
    runner_tools_http_allow: list[str] = Field(default_factory=list)
    # History is compacted when it reaches this share of the agent's context budget.
    runner_compact_at: float = Field(default=0.8, gt=0, le=1)
    # How often the runner copies the runs consumer's counts (pending, redelivered...) into
    # its metrics.
    runner_queue_poll_s: float = Field(default=5.0, gt=0, le=300)
