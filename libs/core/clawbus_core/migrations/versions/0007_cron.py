"""Cron jobs and heartbeats, and the history of their firings.

* cron_jobs: one row per job of a deployment (`namespace`, as channels.namespace) and
  tenant, run by one agent. `schedule_kind` cron (`cron_expr` in `tz`), every (`every_ms`
  on the grid from `anchor_at`) or at (`at_time`); `payload` (JSON: kind message |
  system_event, its text, an optional model); `session_target` job (the job's own
  `cron:<jobId>` session), isolated (a new session per firing) or main (the agent's main
  session); `delivery` (JSON: mode none | channel {channel_id, to} | webhook {url});
  `heartbeat` (JSON, set for an agent's heartbeat: active hours; at most one per agent);
  `missed`: what a time missed while no scheduler ran does (run_once: fire once now; skip);
  the failure backoff (`consecutive_failures`, `next_retry_at`); `next_run_at`, the next
  time it is due (NULL: never again), which the scheduler advances in the same transaction
  that records the firing.
* cron_runs: one row per firing, UNIQUE (job_id, scheduled_for): the time a firing is for
  can be recorded once, whoever records it and however often. `run_id` is the run it
  started (idempotency key `cron:<job id>:<scheduled_for>`), NULL while `pending`; then its
  status, start, end, duration, error, the answer (`result`, cut to 16 000 characters) and
  what became of its delivery.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


_STATEMENTS = (
    """
    CREATE TABLE cron_jobs (
        id                    uuid PRIMARY KEY,
        namespace             text NOT NULL,
        tenant_id             uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        agent_id              uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        enabled               boolean NOT NULL DEFAULT true,
        schedule_kind         text NOT NULL CHECK (schedule_kind IN ('cron', 'every', 'at')),
        cron_expr             text,
        tz                    text,
        every_ms              bigint CHECK (every_ms > 0),
        anchor_at             timestamptz,
        at_time               timestamptz,
        payload               jsonb NOT NULL,
        session_target        text NOT NULL DEFAULT 'job'
                              CHECK (session_target IN ('job', 'isolated', 'main')),
        delivery              jsonb NOT NULL DEFAULT '{"mode": "none"}'::jsonb,
        heartbeat             jsonb,
        missed                text NOT NULL DEFAULT 'run_once'
                              CHECK (missed IN ('run_once', 'skip')),
        delete_after_run      boolean NOT NULL DEFAULT false,
        consecutive_failures  integer NOT NULL DEFAULT 0,
        next_retry_at         timestamptz,
        next_run_at           timestamptz,
        last_run_at           timestamptz,
        created_at            timestamptz NOT NULL DEFAULT now(),
        updated_at            timestamptz NOT NULL DEFAULT now(),
        UNIQUE (namespace, tenant_id, name),
        CHECK (schedule_kind <> 'cron' OR cron_expr IS NOT NULL),
        CHECK (schedule_kind <> 'every' OR (every_ms IS NOT NULL AND anchor_at IS NOT NULL)),
        CHECK (schedule_kind <> 'at' OR at_time IS NOT NULL)
    )
    """,
    """
    CREATE INDEX cron_jobs_due ON cron_jobs (namespace, next_run_at)
        WHERE enabled AND next_run_at IS NOT NULL
    """,
    """
    CREATE UNIQUE INDEX cron_jobs_one_heartbeat ON cron_jobs (namespace, agent_id)
        WHERE heartbeat IS NOT NULL
    """,
    """
    CREATE TABLE cron_runs (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id           uuid NOT NULL REFERENCES cron_jobs(id) ON DELETE CASCADE,
        scheduled_for    timestamptz NOT NULL,
        manual           boolean NOT NULL DEFAULT false,
        run_id           uuid REFERENCES runs(id) ON DELETE SET NULL,
        status           text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                           'aborted', 'skipped')),
        started_at       timestamptz,
        finished_at      timestamptz,
        duration_ms      integer,
        error            jsonb,
        result           text,
        delivery_status  text CHECK (delivery_status IN ('none', 'queued', 'delivered',
                                                         'suppressed', 'failed')),
        delivery_error   text,
        created_at       timestamptz NOT NULL DEFAULT now(),
        UNIQUE (job_id, scheduled_for)
    )
    """,
    """
    CREATE INDEX cron_runs_open ON cron_runs (status, job_id)
        WHERE status IN ('pending', 'running')
    """,
    """
    CREATE INDEX cron_runs_history ON cron_runs (job_id, scheduled_for DESC)
    """,
)


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE cron_runs, cron_jobs")
