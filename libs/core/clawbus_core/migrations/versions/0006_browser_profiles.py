"""Browser profiles: a named browser identity of a tenant whose cookies and storage outlive
the browser context that used them.

* browser_profiles: `storage_state` is Playwright's storage state (cookies, and each
  origin's localStorage) as JSON, written by the browser-worker when it closes or evicts the
  profile's context and read when it opens one again, on any worker.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One statement per call: asyncpg runs a single statement per execute.
    op.execute(
        """
        CREATE TABLE browser_profiles (
            tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            name           text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
            storage_state  jsonb NOT NULL,
            updated_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, name)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE browser_profiles")
