"""A run's trace context: the W3C `traceparent` (and `tracestate`) of the span that created it.

The run message carries it in its NATS headers; a runner that executes the run from the
database (the session's lane holder running a run whose message another replica received)
reads it here, so the run's spans join the trace of the request that made it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE runs ADD COLUMN trace_context jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE runs DROP COLUMN trace_context")
