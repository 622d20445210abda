"""Runtime configuration overrides (001's PATCH /api/config).

* config_overrides: one row per deployment namespace (the `CLAWBUS_NAMESPACE` its NATS
  subjects and Redis keys carry, so deployments and test systems sharing one database do not
  see each other's overrides). `doc` is the overrides document: the keys that may change
  while the services run (`clawbus_protocol.config.ConfigOverrides`), on top of the settings
  each service read at start. No row: no overrides.
* `version` grows by one on every change; a patch is written only if the version it read is
  still current (optimistic concurrency), and services apply whatever the row holds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE config_overrides (
            namespace   text PRIMARY KEY,
            doc         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(doc) = 'object'),
            version     bigint NOT NULL CHECK (version > 0),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            updated_by  text NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE config_overrides")
