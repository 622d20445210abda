"""Channels: chat-app accounts the channel-bridge connects agents to, and what exactly-once
delivery needs.

* channels: one row per bot account (GoClaw's channel instance) of a deployment (the
  `CLAWBUS_NAMESPACE` its services share, as config_overrides is): its `type`, the agent it
  routes to, `credentials` encrypted at rest (Fernet with the deployment's key; the JSON
  credentials never stored in the clear), `settings` (JSON), the DM policy, the enabled flag;
  the live `status` (+ `status_reason`, and the `account` it is connected as, e.g.
  `@mybot`) the replica holding its lease writes, its counters,
  and `poll_offset`: the next Telegram update id to ask for, advanced only after the updates
  before it are stored, so a standby that takes over re-reads nothing it must not and loses
  nothing (updates it reads twice are deduplicated by their runs' idempotency keys).
* channel_senders: who may talk to a channel under the `pairing` policy: a pending sender
  holds a short code until it expires; an operator's approval stamps `approved_at`.
* channel_deliveries: the outbox, one row per reply a run owes a chat. Written with the run;
  a replica claims it when the run has ended and sends its chunks in order, recording the
  chunk it is about to send (`sending_chunk`) and each one sent (`chunks_sent`,
  `platform_ids`), so a crash or a second replica never sends a chunk twice and never skips one.
* media: photos and documents received from chats, passed to the agent by reference.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_STATEMENTS = (
    """
    CREATE TABLE channels (
        id                 uuid PRIMARY KEY,
        namespace          text NOT NULL,
        tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name               text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
        type               text NOT NULL CHECK (type IN ('telegram', 'discord', 'webhook')),
        agent_id           uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        credentials        bytea,
        settings           jsonb NOT NULL DEFAULT '{}'::jsonb,
        dm_policy          text NOT NULL DEFAULT 'pairing'
                           CHECK (dm_policy IN ('pairing', 'allowlist', 'open')),
        allow_from         text[] NOT NULL DEFAULT '{}',
        enabled            boolean NOT NULL DEFAULT true,
        status             text NOT NULL DEFAULT 'connecting'
                           CHECK (status IN ('connected', 'connecting', 'error', 'disabled',
                                             'not_configured')),
        status_reason      text,
        account            text,
        messages_received  bigint NOT NULL DEFAULT 0,
        messages_sent      bigint NOT NULL DEFAULT 0,
        poll_offset        bigint NOT NULL DEFAULT 0,
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        UNIQUE (namespace, tenant_id, name)
    )
    """,
    """
    CREATE TABLE channel_senders (
        channel_id       uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
        sender_id        text NOT NULL,
        display_name     text,
        code             text,
        code_expires_at  timestamptz,
        code_sent_at     timestamptz,
        approved_at      timestamptz,
        approved_by      text,
        created_at       timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (channel_id, sender_id)
    )
    """,
    """
    CREATE UNIQUE INDEX channel_senders_code ON channel_senders (channel_id, code)
        WHERE code IS NOT NULL
    """,
    """
    CREATE TABLE channel_deliveries (
        run_id         uuid PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
        channel_id     uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
        target         jsonb NOT NULL,
        state          text NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        chunks_sent    integer NOT NULL DEFAULT 0,
        sending_chunk  integer,
        platform_ids   text[] NOT NULL DEFAULT '{}',
        claimed_by     text,
        claim_until    timestamptz,
        attempts       integer NOT NULL DEFAULT 0,
        last_error     text,
        created_at     timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE INDEX channel_deliveries_open ON channel_deliveries (created_at)
        WHERE state IN ('pending', 'sending')
    """,
    """
    CREATE TABLE media (
        id          uuid PRIMARY KEY,
        tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        channel_id  uuid REFERENCES channels(id) ON DELETE SET NULL,
        kind        text NOT NULL,
        file_name   text,
        mime_type   text,
        size        integer NOT NULL CHECK (size >= 0),
        sha256      bytea NOT NULL,
        content     bytea NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    )
    """,
)


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE media, channel_deliveries, channel_senders, channels")
