"""Every NATS subject, JetStream stream/consumer name and Redis key, in one place.

All names derive from a namespace (default "clawbus"), so tests and tenants of a shared
NATS/Redis can run side by side without seeing each other's traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from uuid import UUID

_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


@dataclass(frozen=True)
class Names:
    namespace: str = "clawbus"

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} must match {_NAMESPACE.pattern} "
                "(it becomes part of NATS subjects and stream names)"
            )

    # --- NATS JetStream ---------------------------------------------------------------
    @property
    def runs_stream(self) -> str:
        """Work-queue stream holding RunRequests until a runner acks them."""
        return f"{self.namespace.upper()}_RUNS"

    @property
    def runs_subject(self) -> str:
        return f"{self.namespace}.runs.request"

    @property
    def runners_consumer(self) -> str:
        """The one durable pull consumer every agent-runner replica shares."""
        return "agent-runners"

    # --- NATS core (fire-and-forget notices; the database stays the source of truth) ---
    @property
    def runs_abort_subject(self) -> str:
        """Every runner hears abort requests and stops the run if it is executing it."""
        return f"{self.namespace}.runs.abort"

    @property
    def gateway_events_subject(self) -> str:
        """Session events (001's WebSocket events) every gateway replica fans out to its
        clients, whichever replica the session's run went through."""
        return f"{self.namespace}.gateway.events"

    @property
    def config_subject(self) -> str:
        """The runtime configuration changed (PATCH /api/config): every gateway replica and
        agent-runner reads the overrides from Postgres again and applies them."""
        return f"{self.namespace}.config.changed"

    @property
    def tools_list_subject(self) -> str:
        """Request/reply: a gateway asks any runner for the tools an agent is offered."""
        return f"{self.namespace}.tools.list"

    @property
    def tools_invoke_subject(self) -> str:
        """Request/reply: a gateway asks any runner to run one tool outside a run."""
        return f"{self.namespace}.tools.invoke"

    @property
    def channels_changed_subject(self) -> str:
        """A channel was created, changed, enabled, disabled or deleted: every
        channel-bridge replica re-reads the channels at once."""
        return f"{self.namespace}.channels.changed"

    def channel_inbound_subject(self, channel_id: UUID) -> str:
        """Request/reply: a gateway hands a channel's webhook request to the bridge replica
        holding that channel (only the holder subscribes)."""
        return f"{self.namespace}.channels.inbound.{channel_id}"

    @property
    def cron_changed_subject(self) -> str:
        """A cron job was created, changed, enabled, disabled, deleted or asked to run now:
        the scheduler's leader looks at the jobs again at once."""
        return f"{self.namespace}.cron.changed"

    @property
    def browser_subject(self) -> str:
        """Request/reply: browser operations, answered by any browser-worker replica."""
        return f"{self.namespace}.browser.request"

    def browser_worker_subject(self, worker_id: str) -> str:
        """Request/reply: one browser-worker's own subject, where the replica that received a
        call forwards it to the replica holding the call's page."""
        return f"{self.namespace}.browser.worker.{worker_id}"

    # --- Redis ------------------------------------------------------------------------
    def run_events_key(self, run_id: UUID) -> str:
        """Capped stream of a run's events, for replay and gap filling."""
        return f"{self.namespace}:run:{run_id}:events"

    def run_fence_key(self, run_id: UUID) -> str:
        """Highest attempt allowed to write the run's events (older attempts are fenced)."""
        return f"{self.namespace}:run:{run_id}:fence"

    def gateway_channel(self, instance_id: str) -> str:
        """Pub/sub channel a gateway replica reads live events for its clients from."""
        return f"{self.namespace}:gw:{instance_id}"

    def browser_holder_key(self, target_key: str) -> str:
        """Which browser-worker holds a target's browser context (its worker id, with a TTL)."""
        return f"{self.namespace}:browser:holder:{target_key}"

    def ops_instance_key(self, service: str, instance: str) -> str:
        """Where one service instance's operations listener is (JSON, with a TTL): what
        `clawbus status` reads to find every instance's /readyz and /metrics."""
        return f"{self.namespace}:ops:{service}:{instance}"

    @property
    def ops_instance_pattern(self) -> str:
        return f"{self.namespace}:ops:*"

    @property
    def logs_stream_key(self) -> str:
        """Capped Redis stream of recent log records of every service (newest last), read
        by /api/logs/recent and tailed by /api/logs/live."""
        return f"{self.namespace}:logs"
