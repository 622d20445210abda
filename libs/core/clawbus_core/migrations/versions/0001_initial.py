"""Initial schema: tenants, API keys, agents, sessions, messages, runs, usage.

Every tenant-owned row carries tenant_id from the start. Runs are fenced by `attempt`
(a runner's late write for an older attempt matches no row). Messages written by a run
are unique per (run_id, run_step), so a redelivered run never stores a message twice.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DEFAULT_TENANT = "00000000-0000-0000-0000-000000000001"
DEFAULT_AGENT = "00000000-0000-0000-0000-000000000002"


def _execute_all(sql: str) -> None:
    # asyncpg prepares each statement: one statement per call.
    for statement in sql.split(";"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _execute_all(
        """
        CREATE TABLE tenants (
            id          uuid PRIMARY KEY,
            slug        text NOT NULL UNIQUE,
            name        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE api_keys (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name         text NOT NULL,
            prefix       text NOT NULL,
            key_sha256   bytea NOT NULL UNIQUE,
            scopes       text[] NOT NULL DEFAULT '{}',
            created_at   timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at   timestamptz
        );
        CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

        CREATE TABLE agents (
            id             uuid PRIMARY KEY,
            tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            key            text NOT NULL,
            name           text NOT NULL,
            model          text,
            fallbacks      text[] NOT NULL DEFAULT '{}',
            system_prompt  text NOT NULL DEFAULT '',
            tool_policy    jsonb NOT NULL DEFAULT '{}',
            workspace      text,
            created_at     timestamptz NOT NULL DEFAULT now(),
            updated_at     timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, key)
        );

        CREATE TABLE sessions (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            agent_id     uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            session_key  text NOT NULL,
            channel      text NOT NULL DEFAULT 'api',
            title        text,
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, session_key)
        );
        CREATE INDEX sessions_agent ON sessions (tenant_id, agent_id, updated_at DESC);

        CREATE TABLE runs (
            id               uuid PRIMARY KEY,
            tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            session_id       uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            agent_id         uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            idempotency_key  text NOT NULL,
            status           text NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued', 'running', 'completed', 'failed', 'aborted')),
            model            text,
            attempt          integer NOT NULL DEFAULT 0,
            runner_id        text,
            finish_reason    text,
            error            jsonb,
            created_at       timestamptz NOT NULL DEFAULT now(),
            started_at       timestamptz,
            finished_at      timestamptz,
            UNIQUE (tenant_id, idempotency_key)
        );
        CREATE INDEX runs_session ON runs (session_id, created_at);
        CREATE INDEX runs_active ON runs (status) WHERE status IN ('queued', 'running');

        CREATE TABLE messages (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            session_id   uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            run_id       uuid REFERENCES runs(id) ON DELETE SET NULL,
            run_step     integer,
            role         text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content      text NOT NULL DEFAULT '',
            tool_calls   jsonb,
            tool_call_id text,
            created_at   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (run_id, run_step)
        );
        CREATE INDEX messages_session ON messages (session_id, id);

        CREATE TABLE usage (
            id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            run_id             uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            session_id         uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            agent_id           uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            model              text NOT NULL,
            prompt_tokens      integer NOT NULL DEFAULT 0,
            completion_tokens  integer NOT NULL DEFAULT 0,
            total_tokens       integer NOT NULL DEFAULT 0,
            created_at         timestamptz NOT NULL DEFAULT now(),
            UNIQUE (run_id)
        );
        CREATE INDEX usage_tenant_time ON usage (tenant_id, created_at);
        """
    )
    _execute_all(
        f"""
        INSERT INTO tenants (id, slug, name) VALUES ('{DEFAULT_TENANT}', 'default', 'Default');
        INSERT INTO agents (id, tenant_id, key, name, system_prompt)
        VALUES ('{DEFAULT_AGENT}', '{DEFAULT_TENANT}', 'main', 'Main agent',
                'You are a helpful assistant.');
        """  # noqa: S608 (constants, not input)
    )


def downgrade() -> None:
    op.execute("DROP TABLE usage, messages, runs, sessions, agents, api_keys, tenants CASCADE")
