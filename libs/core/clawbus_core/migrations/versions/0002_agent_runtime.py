"""The agent runtime: workspaces, skills, session lanes, abort, failover usage, compaction.

* workspace_files: each agent's files (AGENTS.md, MEMORY.md, memory/*.md, ...) live in
  Postgres, never on the host disk; `search` is a generated full-text vector for memory.
* skills: SKILL.md folders, per agent (agent_id) or shared by the tenant (agent_id NULL).
* runs.input / options / reply_to keep the run request, so whichever runner holds the
  session's lane can run any of its queued runs; runs.seq orders them (FIFO lanes); queue_mode says what a run does when its
  session is busy; abort_requested_at marks a run to stop; merged_into links a `collect` run
  to the run that answered it.
* sessions.lease_*: the cluster-wide lane lease (one active run per session).
* messages.kind / covers_upto: compaction summaries (a summary covers messages up to an id).
* usage: one row per (run, model), since a run may fail over between models.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from clawbus_core.bootstrap import BOOTSTRAP_FILES, DEFAULT_FILES

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BOOTSTRAP = ", ".join(f"'{name}'" for name in BOOTSTRAP_FILES)


def _execute_all(sql: str) -> None:
    for statement in sql.split(";"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _execute_all(
        """
        CREATE TABLE workspace_files (
            tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            path        text NOT NULL,
            content     text NOT NULL DEFAULT '',
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            search      tsvector GENERATED ALWAYS AS
                        (to_tsvector('english', path || ' ' || content)) STORED,
            PRIMARY KEY (agent_id, path)
        );
        CREATE INDEX workspace_files_tenant ON workspace_files (tenant_id, agent_id);
        CREATE INDEX workspace_files_search ON workspace_files USING gin (search);

        CREATE TABLE skills (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            agent_id     uuid REFERENCES agents(id) ON DELETE CASCADE,
            name         text NOT NULL,
            description  text NOT NULL DEFAULT '',
            body         text NOT NULL DEFAULT '',
            files        jsonb NOT NULL DEFAULT '{}',
            enabled      boolean NOT NULL DEFAULT true,
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX skills_name ON skills
            (tenant_id, coalesce(agent_id, '00000000-0000-0000-0000-000000000000'::uuid), name);

        ALTER TABLE agents
            ADD COLUMN queue_mode text NOT NULL DEFAULT 'followup'
                CHECK (queue_mode IN ('followup', 'collect', 'interrupt')),
            ADD COLUMN context_tokens integer NOT NULL DEFAULT 32000;

        ALTER TABLE runs
            ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY,
            ADD COLUMN queue_mode text NOT NULL DEFAULT 'followup'
                CHECK (queue_mode IN ('followup', 'collect', 'interrupt')),
            ADD COLUMN abort_requested_at timestamptz,
            ADD COLUMN merged_into uuid REFERENCES runs(id) ON DELETE SET NULL,
            ADD COLUMN steps integer NOT NULL DEFAULT 0,
            ADD COLUMN input jsonb,
            ADD COLUMN options jsonb,
            ADD COLUMN reply_to text;
        CREATE INDEX runs_session_queue ON runs (session_id, seq)
            WHERE status IN ('queued', 'running');

        ALTER TABLE sessions
            ADD COLUMN lease_owner text,
            ADD COLUMN lease_until timestamptz;

        ALTER TABLE messages
            ADD COLUMN kind text NOT NULL DEFAULT 'message'
                CHECK (kind IN ('message', 'summary')),
            ADD COLUMN covers_upto bigint,
            ADD COLUMN tokens integer;

        ALTER TABLE usage DROP CONSTRAINT usage_run_id_key;
        ALTER TABLE usage ADD CONSTRAINT usage_run_model UNIQUE (run_id, model)
        """
    )
    # An agent's `updated_at` is the version of everything its prompt is built from, so a
    # runner can reuse the context it loaded while the version holds: bootstrap files and
    # skills (a shared skill touches every agent of its tenant) bump it.
    op.execute(
        f"""
        CREATE FUNCTION clawbus_touch_agent_files() RETURNS trigger AS $$
        DECLARE
            touched boolean := false;
            agent uuid;
        BEGIN
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                touched := NEW.path IN ({_BOOTSTRAP});
                agent := NEW.agent_id;
            END IF;
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                touched := touched OR OLD.path IN ({_BOOTSTRAP});
                agent := OLD.agent_id;
            END IF;
            IF touched THEN
                UPDATE agents SET updated_at = clock_timestamp() WHERE id = agent;
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql
        """  # noqa: S608 (constant file names, not input)
    )
    op.execute(
        """
        CREATE FUNCTION clawbus_touch_agent_skills() RETURNS trigger AS $$
        DECLARE
            skill skills%ROWTYPE;
        BEGIN
            IF TG_OP = 'DELETE' THEN skill := OLD; ELSE skill := NEW; END IF;
            UPDATE agents SET updated_at = clock_timestamp()
            WHERE tenant_id = skill.tenant_id
              AND (skill.agent_id IS NULL OR id = skill.agent_id);
            RETURN NULL;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        """
        CREATE FUNCTION clawbus_agent_updated() RETURNS trigger AS $$
        BEGIN
            NEW.updated_at := clock_timestamp();
            RETURN NEW;
        END $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER agents_updated BEFORE UPDATE ON agents "
        "FOR EACH ROW EXECUTE FUNCTION clawbus_agent_updated()"
    )
    op.execute(
        "CREATE TRIGGER workspace_files_touch_agent AFTER INSERT OR UPDATE OR DELETE "
        "ON workspace_files FOR EACH ROW EXECUTE FUNCTION clawbus_touch_agent_files()"
    )
    op.execute(
        "CREATE TRIGGER skills_touch_agent AFTER INSERT OR UPDATE OR DELETE "
        "ON skills FOR EACH ROW EXECUTE FUNCTION clawbus_touch_agent_skills()"
    )
    # Agents that exist already get the default workspace files new agents are seeded with.
    for path, content in DEFAULT_FILES.items():
        op.get_bind().execute(
            sa.text(
                "INSERT INTO workspace_files (tenant_id, agent_id, path, content) "
                "SELECT tenant_id, id, :path, :content FROM agents "
                "ON CONFLICT (agent_id, path) DO NOTHING"
            ),
            {"path": path, "content": content},
        )


def downgrade() -> None:
    _execute_all(
        """
        DROP TRIGGER agents_updated ON agents;
        DROP FUNCTION clawbus_agent_updated();
        DROP TRIGGER workspace_files_touch_agent ON workspace_files;
        DROP TRIGGER skills_touch_agent ON skills;
        DROP FUNCTION clawbus_touch_agent_files();
        DROP FUNCTION clawbus_touch_agent_skills();
        ALTER TABLE usage DROP CONSTRAINT usage_run_model;
        ALTER TABLE usage ADD CONSTRAINT usage_run_id_key UNIQUE (run_id);
        ALTER TABLE messages DROP COLUMN kind, DROP COLUMN covers_upto, DROP COLUMN tokens;
        ALTER TABLE sessions DROP COLUMN lease_owner, DROP COLUMN lease_until;
        ALTER TABLE runs DROP COLUMN seq, DROP COLUMN queue_mode,
            DROP COLUMN abort_requested_at, DROP COLUMN merged_into, DROP COLUMN steps,
            DROP COLUMN input, DROP COLUMN options, DROP COLUMN reply_to;
        ALTER TABLE agents DROP COLUMN queue_mode, DROP COLUMN context_tokens;
        DROP TABLE skills;
        DROP TABLE workspace_files
        """
    )
