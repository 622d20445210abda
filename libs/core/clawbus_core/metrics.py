"""Every Prometheus metric clawbus exports, in one place.

Each service serves the process's default registry on its operations port (`/metrics`, see
clawbus_core.ops); a metric only appears in the services that touch it. Names and labels
are the same on every replica, so Prometheus sums across them. Label values come from small
fixed sets (route templates, not paths; model names as configured; tool names), never from
ids or user input, so the number of series stays bounded.

docs/observability.md lists them with what each one means.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets (seconds): HTTP answers are milliseconds; model calls and runs are seconds.
_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

BUILD_INFO = Gauge(
    "clawbus_build_info",
    "Always 1; the labels say which service and version.",
    ["service", "version"],
)

# --- api-gateway -----------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "clawbus_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "clawbus_http_request_duration_seconds",
    "Time to answer an HTTP request (for streams: until the stream ended).",
    ["route", "method"],
    buckets=_FAST,
)
HTTP_ERRORS = Counter(
    "clawbus_http_errors_total",
    "Requests answered with an error, by route template and clawbus error code.",
    ["route", "code"],
)
CONNECTIONS_ACTIVE = Gauge(
    "clawbus_connections_active",
    "Open long-lived client connections: kind is `ws` or `sse`.",
    ["kind"],
)
RUNS_SUBMITTED = Counter(
    "clawbus_runs_submitted_total",
    "Runs stored and published for the runners (new runs, not idempotent repeats), by the "
    "channel they came from (api, openai, telegram, discord, webhook, cron, ...).",
    ["channel"],
)

# --- agent-runner ----------------------------------------------------------------------------

RUNS_QUEUED = Gauge(
    "clawbus_runs_queued",
    "Runs waiting in the work queue for a runner (the runs consumer's pending count).",
)
RUNS_ACTIVE = Gauge("clawbus_runs_active", "Runs this runner is executing now.")
RUNS_FINISHED = Counter(
    "clawbus_runs_finished_total",
    "Runs that ended, by status: completed, failed, aborted.",
    ["status"],
)
RUN_DURATION = Histogram(
    "clawbus_run_duration_seconds",
    "Time from a runner taking a run to its end, by status.",
    ["status"],
    buckets=_SLOW,
)
MODEL_DURATION = Histogram(
    "clawbus_model_request_duration_seconds",
    "Time of one model call (request to last token), by provider, model and outcome (ok, error).",
    ["provider", "model", "outcome"],
    buckets=_SLOW,
)
MODEL_TTFT = Histogram(
    "clawbus_model_time_to_first_token_seconds",
    "Time from sending a model call to its first streamed token.",
    ["provider", "model"],
    buckets=_FAST,
)
MODEL_TOKENS = Counter(
    "clawbus_model_tokens_total",
    "Tokens the models reported, by provider, model and kind (input, output).",
    ["provider", "model", "kind"],
)
TOOL_CALLS = Counter(
    "clawbus_tool_calls_total",
    "Tool calls, by tool and outcome (ok, error, denied).",
    ["tool", "outcome"],
)
TOOL_DURATION = Histogram(
    "clawbus_tool_duration_seconds", "Time one tool call took, by tool.", ["tool"], buckets=_FAST
)
BUS_PENDING = Gauge(
    "clawbus_bus_consumer_pending",
    "Messages a JetStream consumer has not delivered yet (its lag).",
    ["stream", "consumer"],
)
BUS_ACK_PENDING = Gauge(
    "clawbus_bus_consumer_ack_pending",
    "Messages a JetStream consumer delivered and is waiting to have acknowledged.",
    ["stream", "consumer"],
)
BUS_REDELIVERED = Gauge(
    "clawbus_bus_consumer_redelivered",
    "Messages a JetStream consumer is redelivering (as the server counts them).",
    ["stream", "consumer"],
)
BUS_REDELIVERIES = Counter(
    "clawbus_bus_redeliveries_total",
    "Messages this process received again (delivery count above 1), by stream.",
    ["stream"],
)

# --- channel-bridge --------------------------------------------------------------------------

CHANNEL_MESSAGES = Counter(
    "clawbus_channel_messages_total",
    "Chat-app messages, by channel type (telegram, discord, webhook) and direction "
    "(in: received from a person; out: a reply chunk delivered).",
    ["channel_type", "direction"],
)
CHANNELS_CONNECTED = Gauge(
    "clawbus_channels_connected",
    "Channels whose connection this replica holds and has up, by channel type.",
    ["channel_type"],
)

# --- browser-worker --------------------------------------------------------------------------

BROWSER_CONTEXTS = Gauge(
    "clawbus_browser_contexts", "Browser contexts (sessions and profiles) open in this worker."
)
BROWSER_CONTEXTS_MAX = Gauge(
    "clawbus_browser_contexts_max", "The most browser contexts this worker keeps open."
)
BROWSER_OPERATIONS = Counter(
    "clawbus_browser_operations_total",
    "Browser calls answered, by operation and outcome (ok, or the error code).",
    ["op", "outcome"],
)
BROWSER_LAUNCHES = Counter(
    "clawbus_browser_launches_total", "Times this worker started Chromium (first start included)."
)

# --- scheduler -------------------------------------------------------------------------------

SCHEDULER_FIRINGS = Counter(
    "clawbus_scheduler_firings_total",
    "Due times handled, by kind (cron, heartbeat) and outcome (submitted: a run started; "
    "skipped: a heartbeat with nothing to check; failed; missed: passed over without a firing, "
    "under the `skip` policy or outside active hours).",
    ["kind", "outcome"],
)
SCHEDULER_LEADER = Gauge(
    "clawbus_scheduler_leader", "1 while this scheduler replica is the leader, else 0."
)

# --- every service ---------------------------------------------------------------------------

LOG_RECORDS_DROPPED = Counter(
    "clawbus_log_records_dropped_total",
    "Log records that never reached the recent-logs stream in Redis, by reason (overflow: the "
    "queue was full; redis: the write failed; closed: still queued at shutdown; error).",
    ["reason"],
)
